//! A preemption storm as users write it: many tasks `println!`, `format!`,
//! `eprint!`, allocate, share a `std::sync::Mutex` with plain `lock()` held
//! while computing, a `RwLock`, a `LazyLock` and an mpsc-free `Condvar`
//! hand-off, on 1 and 2 workers at 50 µs and 1 ms. Exits non-zero on any
//! lost update or wrong mode; a watchdog thread ends a hung run.
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
    println!("kvant-storm: ok");
}

fn storm(workers: usize, q: Duration, expect: &str, run_for: Duration) {
    let rt = kvant::Runtime::builder()
        .workers(workers)
        .quantum(Some(q))
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
        "\nkvant-storm: {workers} worker(s) q={q:?} mode={mode:?}: {} iterations, {} preemptions, \
         {} sync-wait switches, {} deferrals",
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
