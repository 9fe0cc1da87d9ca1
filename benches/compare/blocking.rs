//! (h) A task that blocks its worker thread: one task calls
//! `std::thread::sleep` in a loop (a stand-in for any blocking call: a
//! `read`, `std::sync::mpsc`, a C library) beside one computing task per
//! worker. Printed: the computing tasks' throughput as a share of their
//! throughput without the blocking task, on the same system in the same run.
//!
//! kvant notices the blocked worker and hands its queue to a compensating
//! thread (or switches the blocked task out at its quantum when what waits
//! is pinned there); tokio without `block_in_place` loses the worker; with
//! it, tokio moves the worker's other tasks off first; std threads are
//! scheduled by the kernel.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::util::{Mode, Table, burn, calibrate_burn, fmt_dur, median};

/// Each blocking call.
const NAP: Duration = Duration::from_millis(2);

#[derive(Clone, Copy, PartialEq)]
enum System {
    KvantPreemptive,
    KvantCooperative,
    Tokio,
    TokioBlockInPlace,
    Threads,
}

impl System {
    fn label(self) -> &'static str {
        match self {
            System::KvantPreemptive => "kvant (10 ms quantum)",
            System::KvantCooperative => "kvant (cooperative, hogs yield)",
            System::Tokio => "tokio (blocking call in the task)",
            System::TokioBlockInPlace => "tokio (block_in_place)",
            System::Threads => "std::thread (one per task)",
        }
    }
}

/// Units of work the computing tasks complete in `window` (with or without
/// the blocking task), and compensating threads kvant started.
fn one_run(sys: System, w: usize, unit: u64, window: Duration, blocker: bool) -> (u64, u64) {
    let units = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let measure = |units: &AtomicU64| {
        std::thread::sleep(window / 10); // everyone is running
        let a = units.load(Ordering::Relaxed);
        std::thread::sleep(window);
        units.load(Ordering::Relaxed) - a
    };
    let yields = sys != System::KvantPreemptive && sys != System::Threads;
    let hog = {
        let (units, stop) = (units.clone(), stop.clone());
        move || {
            while !stop.load(Ordering::Relaxed) {
                std::hint::black_box(burn(unit));
                units.fetch_add(1, Ordering::Relaxed);
                if yields {
                    kvant::yield_now();
                }
            }
        }
    };
    let nap = {
        let stop = stop.clone();
        move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(NAP);
            }
        }
    };
    match sys {
        System::KvantPreemptive | System::KvantCooperative => {
            let q = (sys == System::KvantPreemptive).then_some(Duration::from_millis(10));
            let rt = kvant::Runtime::builder()
                .workers(w)
                .quantum(q)
                .build()
                .expect("kvant");
            rt.block_on(|| ());
            // The blocking task first: what it blocks is then still queued.
            let b = blocker.then(|| rt.spawn(nap.clone()));
            let hs: Vec<_> = (0..w).map(|_| rt.spawn(hog.clone())).collect();
            let done = measure(&units);
            stop.store(true, Ordering::Relaxed);
            for h in hs {
                h.join().expect("hog");
            }
            if let Some(b) = b {
                b.join().expect("blocker");
            }
            (done, rt.metrics().total().compensations)
        }
        System::Tokio | System::TokioBlockInPlace => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(w)
                .build()
                .expect("tokio");
            let in_place = sys == System::TokioBlockInPlace;
            let b = blocker.then(|| {
                let stop = stop.clone();
                rt.spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        if in_place {
                            tokio::task::block_in_place(|| std::thread::sleep(NAP));
                        } else {
                            std::thread::sleep(NAP);
                        }
                        tokio::task::yield_now().await;
                    }
                })
            });
            let hs: Vec<_> = (0..w)
                .map(|_| {
                    let (units, stop) = (units.clone(), stop.clone());
                    rt.spawn(async move {
                        while !stop.load(Ordering::Relaxed) {
                            std::hint::black_box(burn(unit));
                            units.fetch_add(1, Ordering::Relaxed);
                            tokio::task::yield_now().await;
                        }
                    })
                })
                .collect();
            let done = measure(&units);
            stop.store(true, Ordering::Relaxed);
            rt.block_on(async {
                for h in hs {
                    h.await.expect("hog");
                }
                if let Some(b) = b {
                    b.await.expect("blocker");
                }
            });
            (done, 0)
        }
        System::Threads => {
            let b = blocker.then(|| std::thread::spawn(nap.clone()));
            let hs: Vec<_> = (0..w).map(|_| std::thread::spawn(hog.clone())).collect();
            let done = measure(&units);
            stop.store(true, Ordering::Relaxed);
            for h in hs {
                h.join().expect("hog");
            }
            if let Some(b) = b {
                b.join().expect("blocker");
            }
            (done, 0)
        }
    }
}

pub fn run(mode: &Mode) {
    let w = mode.workers;
    let reps = mode.reps();
    let window = Duration::from_millis(mode.pick(100, 300));
    let unit = calibrate_burn(Duration::from_micros(20));
    let systems = [
        System::KvantPreemptive,
        System::KvantCooperative,
        System::Tokio,
        System::TokioBlockInPlace,
        System::Threads,
    ];
    let mut shares: Vec<Vec<f64>> = vec![Vec::new(); systems.len()];
    let mut comps: Vec<u64> = vec![0; systems.len()];
    one_run(System::KvantPreemptive, w, unit, window / 4, true); // warm-up
    for _ in 0..reps {
        // Interleaved, so background load hits every system alike.
        for (i, &sys) in systems.iter().enumerate() {
            let (solo, _) = one_run(sys, w, unit, window, false);
            let (with, c) = one_run(sys, w, unit, window, true);
            shares[i].push(with as f64 / solo.max(1) as f64);
            comps[i] += c;
        }
    }
    let kvant = median(&shares[0]);
    let mut t = Table::new(
        &format!(
            "(h) one task blocking in std::thread::sleep({}) beside {w} computing tasks on {w} workers",
            fmt_dur(NAP)
        ),
        &[
            "system",
            "computing tasks' throughput vs without the blocking task",
            "kvant (10 ms) / system",
            "compensating threads started/run",
        ],
    );
    for (i, &sys) in systems.iter().enumerate() {
        let share = median(&shares[i]);
        t.row(vec![
            sys.label().to_string(),
            format!("{:.0}%", 100.0 * share),
            format!("{:.2}x", kvant / share),
            if i < 2 {
                format!("{:.1}", comps[i] as f64 / reps as f64)
            } else {
                "-".into()
            },
        ]);
    }
    t.note(format!(
        "Each computing task repeats ~20 µs units (the cooperative ones yield after each); \
         throughput is units done in {} with the blocking task, over units done in {} without \
         it, same system, median of {reps} interleaved runs. 100% means the blocking task costs \
         the others nothing; with {w} workers busy and one of them blocked, a system that loses \
         the worker drops toward {:.0}%.",
        fmt_dur(window),
        fmt_dur(window),
        100.0 * (w as f64 - 1.0) / w as f64,
    ));
    t.print();
}
