//! (b) Yield ping-pong: two tasks on ONE worker, each yielding N times. The
//! cost per yield is the total time over 2N yields: one switch out of a task,
//! one pick from the run queue, one switch into the other task.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use corosensei::{Coroutine, CoroutineResult, Yielder};

use super::util::{self, Mode, Stats, Table, fmt_n, measure, per_op, ratio, time};

struct Row {
    runtime: &'static str,
    setup: String,
    yields: u64,
    stats: Option<Stats>,
    note: Option<String>,
}

fn kvant_runtime(quantum: Option<Duration>) -> kvant::Runtime {
    kvant::Runtime::builder()
        .workers(1)
        .quantum(quantum)
        .build()
        .expect("kvant runtime")
}

/// One repetition of the ping-pong on `rt`: its time.
fn kvant_pingpong(rt: &kvant::Runtime, n: u64) -> Duration {
    time(|| {
        let a = rt.spawn(move || {
            for _ in 0..n {
                kvant::yield_now();
            }
        });
        let b = rt.spawn(move || {
            for _ in 0..n {
                kvant::yield_now();
            }
        });
        a.join().expect("task a");
        b.join().expect("task b");
    })
}

/// A message to an echo task and back over two `bounded(1)` channels on one
/// worker: each direction parks one task and unparks the other (a hop).
fn kvant_channel_hops(rt: &kvant::Runtime, n: u64) -> Duration {
    let (to_echo, back, echo) = util::kvant_echo(rt);
    let d = rt.block_on(move || {
        let t = std::time::Instant::now();
        for i in 0..n {
            to_echo.send(i).expect("echo alive");
            std::hint::black_box(back.recv().expect("echo reply"));
        }
        t.elapsed()
    });
    echo.join().expect("echo");
    d
}

pub fn run(mode: &Mode) {
    let n = mode.pick(100_000u64, 1_000_000);
    let n_os = mode.pick(20_000u64, 200_000);
    let reps = mode.reps();
    let mut rows = Vec::new();

    // Compared with each other (goals: the quantum costs <= 1.1x, a hop
    // <= 4x a yield): their repetitions are interleaved.
    let coop = kvant_runtime(None);
    let quantum = kvant_runtime(Some(kvant::DEFAULT_QUANTUM));
    let hop = kvant::Runtime::builder()
        .workers(1)
        .build()
        .expect("kvant runtime");
    // Three times the repetitions, each a third as long: a host stretch
    // then spoils fewer of them.
    let (k_reps, k_n) = (3 * reps, n / 3);
    let stats = util::measure_interleaved(
        k_reps,
        &mut [
            &mut || kvant_pingpong(&coop, k_n),
            &mut || kvant_pingpong(&quantum, k_n),
            &mut || kvant_channel_hops(&hop, k_n / 4),
        ],
    );
    drop((coop, quantum, hop));
    let setups = [
        "1 worker, quantum None (cooperative)".to_string(),
        format!("1 worker, quantum {:?} (default)", kvant::DEFAULT_QUANTUM),
        "1 worker, channel hop (park + unpark, bounded(1) echo)".to_string(),
    ];
    for ((setup, stats), yields) in
        setups
            .into_iter()
            .zip(stats)
            .zip([2 * k_n, 2 * k_n, 2 * (k_n / 4)])
    {
        rows.push(Row {
            runtime: "kvant",
            setup,
            yields,
            stats: Some(stats),
            note: None,
        });
    }

    let trt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    rows.push(Row {
        runtime: "tokio",
        setup: "current_thread, task::yield_now".into(),
        yields: 2 * n,
        stats: Some(measure(reps, || {
            trt.block_on(async move {
                let t = Instant::now();
                let a = tokio::spawn(async move {
                    for _ in 0..n {
                        tokio::task::yield_now().await;
                    }
                });
                let b = tokio::spawn(async move {
                    for _ in 0..n {
                        tokio::task::yield_now().await;
                    }
                });
                a.await.expect("task a");
                b.await.expect("task b");
                t.elapsed()
            })
        })),
        note: None,
    });
    drop(trt);

    // may's scheduler is global: one worker needs a process of its own.
    let out = util::run_child(
        "may-yield",
        &[n.to_string(), reps.to_string()],
        Duration::from_secs(120),
    );
    let may_stats = out
        .num("median_ns")
        .zip(out.num("min_ns"))
        .map(|(m, lo)| Stats {
            median: Duration::from_nanos(m as u64),
            min: Duration::from_nanos(lo as u64),
        });
    rows.push(Row {
        runtime: "may",
        setup: "1 worker (child process), coroutine::yield_now".into(),
        yields: 2 * n,
        stats: may_stats,
        note: out.error,
    });

    let cpus = util::allowed_cpus();
    let cpu = *cpus.last().unwrap_or(&0);
    rows.push(Row {
        runtime: "std::thread",
        setup: format!("2 threads pinned to CPU {cpu}, thread::yield_now"),
        yields: 2 * n_os,
        stats: Some(measure(reps, || os_pingpong(cpu, n_os))),
        note: None,
    });

    rows.push(Row {
        runtime: "corosensei (raw)",
        setup: "resume + suspend, 1 thread".into(),
        yields: 2 * n,
        stats: Some(measure(reps, || {
            let mut c = Coroutine::new(move |y: &Yielder<(), ()>, ()| {
                for _ in 0..2 * n {
                    y.suspend(());
                }
            });
            time(|| while let CoroutineResult::Yield(()) = c.resume(()) {})
        })),
        note: None,
    });

    let base = rows
        .first()
        .and_then(|r| r.stats.map(|s| per_op(s.median, r.yields)))
        .unwrap_or(f64::NAN);
    let mut t = Table::new(
        "(b) yield ping-pong: 2 tasks on one worker (ns per yield)",
        &[
            "runtime",
            "setup",
            "yields",
            "ns/yield",
            "(min)",
            "peer/kvant",
        ],
    );
    for r in &rows {
        match r.stats {
            Some(s) => {
                let ns = per_op(s.median, r.yields);
                t.row(vec![
                    r.runtime.into(),
                    r.setup.clone(),
                    fmt_n(r.yields),
                    format!("{ns:.1}"),
                    format!("({:.1})", per_op(s.min, r.yields)),
                    if r.runtime == "kvant" && r.setup.contains("cooperative") {
                        "1 (base)".into()
                    } else {
                        ratio(ns, base)
                    },
                ]);
            }
            None => t.row(vec![
                r.runtime.into(),
                r.setup.clone(),
                fmt_n(r.yields),
                "failed".into(),
                r.note.clone().unwrap_or_default(),
                "-".into(),
            ]),
        }
    }
    t.note(
        "A yield here is one switch out of a task plus one switch into the other (raw corosensei: \
         one resume/suspend round trip, which is the same two stack switches with no scheduler). \
         Base: kvant cooperative. The channel-hop row counts one direction of a message to an \
         echo task and back (each parks the sender's partner and unparks the other): goal <= 4x \
         a yield. The three kvant rows are measured interleaved, one repetition of each in turn, \
         with three times the repetitions of a third of the yields each (this host has \
         stretches where the same switch takes 1.4x longer).",
    );
    t.print();
}

/// Two OS threads on one CPU taking turns with `sched_yield`.
fn os_pingpong(cpu: usize, n: u64) -> Duration {
    let start = Arc::new(Barrier::new(3));
    let hs: Vec<_> = (0..2)
        .map(|_| {
            let start = start.clone();
            std::thread::spawn(move || {
                util::pin_current_thread(cpu);
                start.wait();
                for _ in 0..n {
                    std::thread::yield_now();
                }
            })
        })
        .collect();
    start.wait();
    let t = Instant::now();
    for h in hs {
        h.join().expect("thread");
    }
    t.elapsed()
}

/// Child process: may with one worker; args: yields per coroutine, repetitions.
pub fn may_child(args: &[String]) {
    let n: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let reps: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    may::config().set_workers(1);
    let s = measure(reps, || {
        time(|| {
            let a = may::go!(move || {
                for _ in 0..n {
                    may::coroutine::yield_now();
                }
            });
            let b = may::go!(move || {
                for _ in 0..n {
                    may::coroutine::yield_now();
                }
            });
            a.join().expect("coroutine a");
            b.join().expect("coroutine b");
        })
    });
    println!(
        "RESULT median_ns={} min_ns={}",
        s.median.as_nanos(),
        s.min.as_nanos()
    );
}
