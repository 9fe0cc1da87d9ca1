//! A C global allocator (mimalloc) under a 50 µs quantum on 1 and 2
//! workers: allocation storms from many tasks, with `println!` and a std
//! `Mutex`. mimalloc keeps a per-thread heap; a task preempted inside it
//! would let the next task on the same thread corrupt it (this crashed in
//! `_mi_page_malloc_zero` before preemption stopped at non-Rust code).
//! Its own test binary, so the allocator applies to nothing else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvant::Runtime;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WATCHDOG: Duration = Duration::from_secs(60);

fn storm(workers: usize, quantum: Duration, run_for: Duration) -> u64 {
    let rt = Runtime::builder()
        .workers(workers)
        .quantum(Some(quantum))
        .build()
        .unwrap();
    let total = Arc::new(Mutex::new(0u64));
    let until = Instant::now() + run_for;
    let handles: Vec<_> = (0..8u64)
        .map(|t| {
            let total = total.clone();
            rt.spawn(move || {
                let mut n = 0u64;
                let mut map: HashMap<u64, Vec<u8>> = HashMap::new();
                while Instant::now() < until {
                    let v: Vec<u8> = (0..(n % 300) as u8).collect();
                    map.insert(n % 64, v);
                    let s = format!(
                        "task {t} iteration {n} {:?}",
                        map.get(&(n % 7)).map(Vec::len)
                    );
                    if n.is_multiple_of(256) {
                        println!("{s}");
                    }
                    *total.lock().unwrap() += 1;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let deadline = Instant::now() + WATCHDOG;
    let mut sum = 0;
    for h in handles {
        match h.join_deadline(deadline) {
            Ok(Ok(n)) => sum += n,
            Ok(Err(e)) => panic!("{workers} worker(s): a task failed: {e}"),
            Err(_) => panic!("{workers} worker(s): still running after {WATCHDOG:?}"),
        }
    }
    assert_eq!(*total.lock().unwrap(), sum);
    assert_eq!(rt.preemption_mode(), kvant::PreemptionMode::LineTables);
    let m = rt.metrics().total();
    assert!(
        m.preemptions > 0,
        "{workers} worker(s): nothing was preempted: {m:?}"
    );
    sum
}

#[test]
fn mimalloc_allocation_storm_under_a_tiny_quantum() {
    let secs = std::env::var("KVANT_STRESS_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(1.0);
    for workers in [1, 2] {
        let n = storm(
            workers,
            Duration::from_micros(50),
            Duration::from_secs_f64(secs),
        );
        assert!(n > 0);
    }
}
