//! Wake-up preemption: a task woken by a timer while every worker runs a
//! hog takes a worker at once (after the hog had `min_slice`), instead of
//! waiting for the quantum; and a task that keeps waking cannot starve the
//! hogs.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{join_ok, wait_for};
use kvant::Runtime;

fn rt(min_slice: Option<Duration>) -> Runtime {
    Runtime::builder()
        .workers(1)
        .quantum(Some(Duration::from_millis(10)))
        .min_slice(min_slice)
        .build()
        .unwrap()
}

fn hog(rt: &Runtime, units: &Arc<AtomicU64>, stop: &Arc<AtomicBool>) -> kvant::JoinHandle<()> {
    let (units, stop) = (units.clone(), stop.clone());
    rt.spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            std::hint::black_box((0..1000u64).sum::<u64>());
            units.fetch_add(1, Ordering::Relaxed);
        }
    })
}

#[test]
fn a_woken_task_does_not_wait_for_the_quantum() {
    woken_task_beside_hogs(rt(Some(kvant::DEFAULT_MIN_SLICE)));
}

/// The same with the quantum on the workers' CPU clocks: wake-up preemption
/// stays the monitor's.
#[test]
fn a_woken_task_does_not_wait_for_the_cpu_clock_quantum() {
    woken_task_beside_hogs(
        Runtime::builder()
            .workers(1)
            .quantum(Some(Duration::from_millis(10)))
            .cpu_clock_quantum(true)
            .build()
            .unwrap(),
    );
}

fn woken_task_beside_hogs(rt: Runtime) {
    assert_eq!(rt.preemption_mode(), kvant::PreemptionMode::LineTables);
    let (units, stop) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let hogs: Vec<_> = (0..2).map(|_| hog(&rt, &units, &stop)).collect();
    wait_for("the hogs to run", || units.load(Ordering::Relaxed) > 0);
    const WAKES: u32 = 30;
    let sleeper = rt.spawn(|| {
        let t0 = Instant::now();
        for _ in 0..WAKES {
            kvant::sleep(Duration::from_millis(1));
        }
        t0.elapsed()
    });
    let elapsed = join_ok(sleeper);
    stop.store(true, Ordering::Relaxed);
    for h in hogs {
        join_ok(h);
    }
    // Waiting for the quantum, 30 wake-ups take at least 30 x 10 ms; here
    // they take about 30 x 1.2 ms.
    assert!(
        elapsed < Duration::from_millis(10) * WAKES,
        "30 sleeps of 1 ms beside hogs took {elapsed:?}; {:?}",
        kvant::preempt::safe_point_verdicts()
    );
    let m = rt.metrics().total();
    assert!(m.preemptions >= u64::from(WAKES) / 2, "{m:?}");
}

#[test]
fn a_task_that_keeps_waking_cannot_starve_the_hogs() {
    let rt = rt(Some(kvant::DEFAULT_MIN_SLICE));
    let (units, stop) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let h = hog(&rt, &units, &stop);
    wait_for("the hog to run", || units.load(Ordering::Relaxed) > 0);
    let window = Duration::from_millis(200);
    let solo = {
        let a = units.load(Ordering::Relaxed);
        std::thread::sleep(window);
        units.load(Ordering::Relaxed) - a
    };
    let waking = Arc::new(AtomicBool::new(true));
    let waker = {
        let waking = waking.clone();
        rt.spawn(move || {
            let mut n = 0u64;
            while waking.load(Ordering::Relaxed) {
                kvant::sleep(Duration::from_micros(50));
                n += 1;
            }
            n
        })
    };
    let shared = {
        let a = units.load(Ordering::Relaxed);
        std::thread::sleep(window);
        units.load(Ordering::Relaxed) - a
    };
    waking.store(false, Ordering::Relaxed);
    let wakes = join_ok(waker);
    stop.store(true, Ordering::Relaxed);
    join_ok(h);
    // Each wake-up may take the worker only after the hog had min_slice.
    assert!(
        shared * 4 >= solo,
        "the hog made {shared} units beside a task woken {wakes} times, {solo} alone"
    );
}

#[test]
fn min_slice_none_waits_for_the_quantum_and_bad_values_are_errors() {
    let err = Runtime::builder()
        .min_slice(Some(Duration::from_micros(1)))
        .build()
        .unwrap_err();
    assert!(
        matches!(err, kvant::Error::MinSliceOutOfRange { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("min_slice(None)"), "{err}");
    let rt = rt(None);
    assert_eq!(rt.preemption_mode(), kvant::PreemptionMode::LineTables);
    let (units, stop) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let h = hog(&rt, &units, &stop);
    wait_for("the hog to run", || units.load(Ordering::Relaxed) > 0);
    let sleeper = rt.spawn(|| {
        for _ in 0..5 {
            kvant::sleep(Duration::from_millis(1));
        }
    });
    join_ok(sleeper);
    stop.store(true, Ordering::Relaxed);
    join_ok(h);
    // Every wake-up waited for the hog's quantum: 5 of them, or a few more
    // where a quantum ended while the sleeper slept.
    let m = rt.metrics().total();
    assert!(m.preemptions >= 5, "{m:?}");
}
