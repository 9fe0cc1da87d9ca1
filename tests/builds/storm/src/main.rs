//! A preemption storm as users write it: many tasks `println!`, `format!`,
//! `eprint!`, allocate, share a `std::sync::Mutex` with plain `lock()` held
//! while computing, a `RwLock`, a `LazyLock` and an mpsc-free `Condvar`
//! hand-off, on 1 and 2 workers at 50 µs and 1 ms; tasks that compute for
//! a few µs to a quantum and then `yield_now` or a channel round trip
//! (both are inlined into their loop, so preemption signals land in and
//! around their switches); then calls that block the worker's thread (std
//! mpsc between tasks, a blocking read whose writer is a task,
//! `thread::sleep` beside a computing task) on one worker. Exits
//! non-zero on any lost update or wrong mode; a watchdog thread ends a hung
//! run.
//!
//! Usage: kvant-storm EXPECTED_MODE SECONDS
//! where EXPECTED_MODE is `preemptive` or `cooperative`.

use std::collections::HashMap;
use std::hint::black_box;
use std::io::Write as _;
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::{Duration, Instant};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

static TABLE: LazyLock<Vec<u64>> = LazyLock::new(|| {
    std::thread::sleep(Duration::from_millis(5));
    (0..1024).map(|i| i * i).collect()
});

fn main() {
    let mut args = std::env::args().skip(1);
    let expect = args.next().unwrap_or_else(|| "preemptive".into());
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let watchdog = Duration::from_secs_f64(secs * 8.0 + 60.0);
    std::thread::spawn(move || {
        std::thread::sleep(watchdog);
        eprintln!("kvant-storm: HUNG after {watchdog:?}");
        std::process::exit(3);
    });
    for workers in [1, 2] {
        for q in [Duration::from_micros(50), Duration::from_millis(1)] {
            storm(workers, q, &expect, Duration::from_secs_f64(secs / 4.0));
        }
    }
    for workers in [1, 2] {
        yields(workers, &expect, Duration::from_secs_f64(secs / 4.0));
    }
    for q in [None, Some(Duration::from_millis(10))] {
        blocking(q);
    }
    println!("kvant-storm: ok");
}

/// Calls that block the worker's thread, on one worker: std mpsc between
/// tasks, a blocking read whose writer is a task, `thread::sleep` beside a
/// task that computes. Each must complete (the watchdog ends a hang).
fn blocking(q: Option<Duration>) {
    use std::io::Read as _;
    let rt = kvant::Runtime::builder()
        .workers(1)
        .quantum(q)
        .build()
        .expect("runtime");
    let (to_b, from_a) = std::sync::mpsc::channel::<u64>();
    let (to_a, from_b) = std::sync::mpsc::channel::<u64>();
    let a = rt.spawn(move || {
        (0..20u64)
            .map(|i| {
                to_b.send(i).unwrap();
                from_b.recv().unwrap()
            })
            .sum::<u64>()
    });
    let b = rt.spawn(move || {
        for _ in 0..20 {
            let v = from_a.recv().unwrap();
            to_a.send(v + 1).unwrap();
        }
    });
    assert_eq!(
        a.join().unwrap(),
        (1..=20).sum::<u64>(),
        "mpsc, quantum {q:?}"
    );
    b.join().unwrap();
    let (mut reader, mut writer) = std::os::unix::net::UnixStream::pair().unwrap();
    let r = rt.spawn(move || {
        let mut buf = [0u8; 4];
        reader.read_exact(&mut buf).unwrap();
        buf
    });
    let w = rt.spawn(move || writer.write_all(b"ping").unwrap());
    assert_eq!(&r.join().unwrap(), b"ping", "pipe, quantum {q:?}");
    w.join().unwrap();
    let units = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sleeper = {
        let units = units.clone();
        rt.spawn(move || {
            let mut progressed = 0;
            for _ in 0..10 {
                let before = units.load(std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
                progressed += u32::from(units.load(std::sync::atomic::Ordering::Relaxed) > before);
            }
            progressed
        })
    };
    let hog = {
        let (units, stop) = (units.clone(), stop.clone());
        rt.spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                black_box((0..1000u64).sum::<u64>());
                units.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let progressed = sleeper.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    hog.join().unwrap();
    assert!(
        progressed >= 5,
        "sleep, quantum {q:?}: the other task advanced in {progressed} of 10"
    );
    let m = rt.metrics().total();
    eprintln!(
        "kvant-storm: blocking calls on 1 worker, quantum {q:?}: {} blocked episodes, {} compensations",
        m.kernel_blocks, m.compensations
    );
}

fn storm(workers: usize, q: Duration, expect: &str, run_for: Duration) {
    // KVANT_STORM_CPU_CLOCK=1: the quantum on the workers' own CPU clocks.
    let cpu_clock = std::env::var_os("KVANT_STORM_CPU_CLOCK").is_some_and(|v| v == "1");
    let rt = kvant::Runtime::builder()
        .workers(workers)
        .quantum(Some(q))
        .cpu_clock_quantum(cpu_clock)
        .build()
        .expect("runtime");
    let mode = rt.preemption_mode();
    let want_preemptive = expect == "preemptive";
    assert_eq!(
        mode.is_preemptive(),
        want_preemptive,
        "mode {mode:?}, expected {expect}"
    );
    let shared = Arc::new(Mutex::new(HashMap::<usize, u64>::new()));
    let rw = Arc::new(RwLock::new(0u64));
    let until = Instant::now() + run_for;
    let handles: Vec<_> = (0..8)
        .map(|me| {
            let (shared, rw) = (shared.clone(), rw.clone());
            rt.spawn(move || {
                let mut n = 0u64;
                let mut v: Vec<String> = Vec::new();
                while Instant::now() < until {
                    n += 1;
                    v.push(format!("task {me} iteration {n} {:?}", (me, n, "x")));
                    if v.len() > 64 {
                        v.clear();
                    }
                    {
                        // Held while computing: the holder gets preempted.
                        let mut g = shared.lock().unwrap();
                        let mut x = 0u64;
                        for i in 0..200u64 {
                            x = x.wrapping_add(black_box(i) * TABLE[(i % 1024) as usize]);
                        }
                        black_box(x);
                        *g.entry(me).or_default() += 1;
                    }
                    if n.is_multiple_of(7) {
                        *rw.write().unwrap() += 1;
                    } else {
                        black_box(*rw.read().unwrap());
                    }
                    if n.is_multiple_of(4096) {
                        println!("task {me}: {n} {:?}", v.last());
                        eprint!("{me}.");
                        let _ = std::io::stderr().flush();
                    }
                }
                n
            })
        })
        .collect();
    let counts: Vec<u64> = handles
        .into_iter()
        .map(|h| h.join().expect("task"))
        .collect();
    let g = shared.lock().unwrap();
    for (me, &n) in counts.iter().enumerate() {
        assert_eq!(
            g.get(&me).copied().unwrap_or(0),
            n,
            "task {me}: lost updates"
        );
    }
    let t = rt.metrics().total();
    eprintln!(
        "\nkvant-storm: {workers} worker(s) q={q:?}{} mode={mode:?}: {} iterations, {} preemptions, \
         {} sync-wait switches, {} deferrals",
        if cpu_clock { " (CPU clock)" } else { "" },
        counts.iter().sum::<u64>(),
        t.preemptions,
        t.sync_switches,
        t.deferrals
    );
    if want_preemptive {
        assert!(t.preemptions > 0, "no preemption at {q:?}");
    } else {
        assert_eq!(t.preemptions, 0, "preempted although the mode is {mode:?}");
    }
}

/// Tasks that compute for a pseudo-random 0–100 µs and then yield or make a
/// channel round trip, under a 50 µs quantum: preemption signals land all
/// over their loops, in and around the switches (inlined into this code;
/// with no line tables the code map sees them as this crate's code). Every
/// task's checksum must equal the same sequence computed without a runtime:
/// a switch torn by a signal would crash or corrupt a register.
fn yields(workers: usize, expect: &str, run_for: Duration) {
    fn step(seed: &mut u64, acc: &mut u64) {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let n = (*seed >> 33) % 160_000; // 0–100 µs here
        for i in 0..n {
            *acc = acc.rotate_left(5) ^ black_box(i);
        }
    }
    let rt = kvant::Runtime::builder()
        .workers(workers)
        .quantum(Some(Duration::from_micros(50)))
        .build()
        .expect("runtime");
    let until = Instant::now() + run_for;
    let handles: Vec<_> = (0..8u64)
        .map(|me| {
            // Every other step ends in a round trip through an echo task
            // instead: kvant's channel send and receive are inlined too.
            let (to_echo, echo_rx) = kvant::channel::bounded::<u64>(1);
            let (echo_tx, back) = kvant::channel::bounded::<u64>(0);
            rt.spawn(move || {
                for v in echo_rx {
                    if echo_tx.send(v.rotate_left(1)).is_err() {
                        break;
                    }
                }
            });
            rt.spawn(move || {
                let (mut seed, mut acc, mut n) = (me, 0u64, 0u64);
                while Instant::now() < until {
                    step(&mut seed, &mut acc);
                    if n % 2 == 0 {
                        kvant::yield_now();
                    } else {
                        to_echo.send(acc).expect("echo alive");
                        let v = back.recv().expect("echo alive");
                        assert_eq!(v, acc.rotate_left(1), "task {me}: echo");
                    }
                    n += 1;
                }
                (n, acc)
            })
        })
        .collect();
    let mut total = 0;
    for (me, h) in handles.into_iter().enumerate() {
        let (n, acc) = h.join().expect("task");
        let (mut seed, mut want) = (me as u64, 0u64);
        for _ in 0..n {
            step(&mut seed, &mut want);
        }
        assert_eq!(acc, want, "task {me}: checksum after {n} yields");
        total += n;
    }
    let t = rt.metrics().total();
    eprintln!(
        "kvant-storm: {workers} worker(s) yielding at q=50µs mode={:?}: {total} yields and round trips, {} preemptions, {} deferrals",
        rt.preemption_mode(),
        t.preemptions,
        t.deferrals
    );
    if expect == "preemptive" {
        assert!(t.preemptions > 0, "no preemption among the yields");
    }
}
