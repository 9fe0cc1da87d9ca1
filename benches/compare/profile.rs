//! Profiling entry points: one kvant workload in a loop, nothing else in the
//! process, so `perf record -g` shows only kvant. Run the bench binary with
//! `KVANT_BENCH_CHILD=profile -- <what> [seconds]`, e.g.
//!
//! ```text
//! KVANT_BENCH_CHILD=profile perf record -g target/release/deps/compare-<hash> -- yield 5
//! ```
//!
//! `what`: `yield` (2 tasks, 1 worker, cooperative), `hop` (a channel hop
//! to an echo task and back, counted per direction), `spawn-inside`,
//! `spawn-outside` (empty tasks, default runtime), `hogs-1ms` / `hogs-100us`
//! (4 CPU hogs on the default worker count at that quantum), `hogs-coop`,
//! `hogs-split` (4 hogs at the default quantum, round after round: the
//! busiest worker's share of each round's work).

use std::time::{Duration, Instant};

use super::util::{Mode, burn, busiest_share, kvant_echo};

pub fn child(args: &[String], mode: &Mode) {
    let what = args.first().map_or("yield", String::as_str);
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut rounds = 0u64;
    let t = Instant::now();
    match what {
        "yield" => {
            let rt = kvant::Runtime::builder()
                .workers(1)
                .quantum(None)
                .build()
                .expect("kvant runtime");
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    rt.spawn(move || {
                        let mut n = 0u64;
                        while Instant::now() < end {
                            for _ in 0..10_000 {
                                kvant::yield_now();
                            }
                            n += 10_000;
                        }
                        n
                    })
                })
                .collect();
            rounds = hs.into_iter().map(|h| h.join().expect("task")).sum();
        }
        "hop" => {
            // (b)'s channel hop: a message to an echo task and back.
            let rt = kvant::Runtime::builder()
                .workers(1)
                .build()
                .expect("kvant runtime");
            let (to_echo, back, echo) = kvant_echo(&rt);
            rounds = rt.block_on(move || {
                let mut n = 0u64;
                while Instant::now() < end {
                    for i in 0..10_000 {
                        to_echo.send(i).expect("echo alive");
                        std::hint::black_box(back.recv().expect("echo reply"));
                    }
                    n += 20_000;
                }
                n
            });
            echo.join().expect("echo");
        }
        "spawn-inside" | "spawn-outside" => {
            let rt = kvant::Runtime::builder()
                .workers(mode.workers)
                .build()
                .expect("kvant runtime");
            let batch = |spawn: &dyn Fn() -> kvant::JoinHandle<()>| {
                let hs: Vec<_> = (0..10_000).map(|_| spawn()).collect();
                for h in hs {
                    h.join().expect("task");
                }
            };
            if what == "spawn-inside" {
                rounds = rt.block_on(move || {
                    let mut n = 0;
                    while Instant::now() < end {
                        batch(&|| kvant::spawn(|| ()));
                        n += 10_000;
                    }
                    n
                });
            } else {
                while Instant::now() < end {
                    batch(&|| rt.spawn(|| ()));
                    rounds += 10_000;
                }
            }
            for (i, w) in rt.metrics().workers.iter().enumerate() {
                println!(
                    "RESULT worker={i} tasks_run={} steal_ops={} stolen={} sleeps={} parks={}",
                    w.tasks_run, w.steal_ops, w.stolen_tasks, w.sleeps, w.blocked
                );
            }
        }
        "hogs-split" => {
            // (f)'s 10 ms row, one round at a time: how the 4 hogs' work
            // splits over the 2 workers (busiest worker's share per round).
            let rt = kvant::Runtime::builder()
                .workers(mode.workers)
                .build()
                .expect("kvant runtime");
            rt.block_on(|| ());
            while Instant::now() < end {
                let before = rt.metrics();
                let hs: Vec<_> = (0..4).map(|_| rt.spawn(|| burn(145_000_000))).collect();
                for h in hs {
                    h.join().expect("hog");
                }
                let share = busiest_share(&before, &rt.metrics());
                println!("RESULT busiest={share:.2}");
                rounds += 4;
            }
        }
        "hogs-1ms" | "hogs-100us" | "hogs-coop" => {
            let q = match what {
                "hogs-1ms" => Some(Duration::from_millis(1)),
                "hogs-100us" => Some(Duration::from_micros(100)),
                _ => None,
            };
            let rt = kvant::Runtime::builder()
                .workers(mode.workers)
                .quantum(q)
                .build()
                .expect("kvant runtime");
            while Instant::now() < end {
                let hs: Vec<_> = (0..4).map(|_| rt.spawn(|| burn(20_000_000))).collect();
                for h in hs {
                    h.join().expect("hog");
                }
                rounds += 4;
            }
            let m = rt.metrics().total();
            println!(
                "RESULT preemptions={} signals={} deferrals={}",
                m.preemptions, m.signals, m.deferrals
            );
        }
        other => {
            eprintln!("unknown profile workload {other:?}");
            std::process::exit(2);
        }
    }
    let el = t.elapsed();
    println!(
        "RESULT what={what} rounds={rounds} ns_per_round={:.1}",
        el.as_nanos() as f64 / rounds.max(1) as f64
    );
}
