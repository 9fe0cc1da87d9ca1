//! Shutdown: every task ends finished, cancelled (unwound, destructors run)
//! or reported leaked, and the caller gets control back in bounded time even
//! when a task never yields.
//!
//! Bounds here are generous (seconds) because the machine may be loaded; the
//! runtime's own bound is `grace + 2 × STOP_GRACE` (500 ms each).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kvant::{Error, JoinError, JoinHandle, Runtime};

mod common;
use common::{HANG, wait_for};

/// How long a shutdown that has to cancel or detach may take at most.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(3);

/// Sets its flag when dropped: proves a destructor ran.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

fn flag() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

/// Join a task that shutdown ended: its error, failing the test on a hang.
fn join_failure<T: Send + std::fmt::Debug + 'static>(h: JoinHandle<T>) -> JoinError {
    match h.join_timeout(HANG) {
        Ok(Ok(v)) => panic!("expected the task to be cancelled or leaked, it returned {v:?}"),
        Ok(Err(e)) => e,
        Err(h) => panic!("{h:?} still not complete {HANG:?} after shutdown"),
    }
}

#[test]
fn all_finished_when_nothing_is_left() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let handles: Vec<_> = (0..100u32).map(|i| rt.spawn(move || i)).collect();
    for h in handles {
        h.join_timeout(HANG).expect("finished").expect("no panic");
    }
    let t = Instant::now();
    let report = rt.shutdown_timeout(Duration::from_secs(1));
    assert_eq!(
        report,
        kvant::ShutdownReport {
            all_finished: true,
            cancelled: 0,
            leaked: 0,
            stuck_workers: 0,
        }
    );
    assert!(t.elapsed() < SHUTDOWN_BOUND, "{:?}", t.elapsed());
}

#[test]
fn grace_period_lets_running_tasks_finish() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let finished = Arc::new(AtomicUsize::new(0));
    for _ in 0..10 {
        let f = finished.clone();
        // Detached on purpose: shutdown must still wait for them.
        drop(rt.spawn(move || {
            kvant::sleep(Duration::from_millis(50));
            // Tasks may spawn during the grace period; their children count too.
            let f2 = f.clone();
            let child = kvant::spawn(move || {
                kvant::yield_now();
                f2.fetch_add(1, Ordering::Relaxed);
            });
            child.join().unwrap();
            f.fetch_add(1, Ordering::Relaxed);
        }));
    }
    let t = Instant::now();
    let report = rt.shutdown_timeout(HANG);
    assert!(report.all_finished, "{report:?}");
    assert_eq!(report.cancelled + report.leaked + report.stuck_workers, 0);
    assert_eq!(finished.load(Ordering::Relaxed), 20);
    // Shutdown returns when the last task ends, not at the end of the grace.
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[test]
fn parked_tasks_are_cancelled_and_unwound() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let drops: Vec<_> = (0..5).map(|_| flag()).collect();

    // A: asleep for an hour (timer wait).
    let (s, d) = (started.clone(), drops[0].clone());
    let sleeper = rt.spawn(move || {
        let _g = DropFlag(d);
        s.fetch_add(1, Ordering::Release);
        kvant::sleep(Duration::from_secs(3600));
    });
    // B: asleep "forever" (untimed park).
    let (s, d) = (started.clone(), drops[1].clone());
    let forever = rt.spawn(move || {
        let _g = DropFlag(d);
        s.fetch_add(1, Ordering::Release);
        kvant::sleep(Duration::MAX);
    });
    // C: joins another sleeper (D), so it is parked on a join.
    let (s, d, d2) = (started.clone(), drops[2].clone(), drops[3].clone());
    let joiner = rt.spawn(move || {
        let _g = DropFlag(d);
        let inner = kvant::spawn(move || {
            let _g = DropFlag(d2);
            kvant::sleep(Duration::from_secs(3600));
        });
        s.fetch_add(1, Ordering::Release);
        let _ = inner.join();
    });
    // E: a non-preemptible task yielding in a loop: cancelled at its yield.
    let (s, d) = (started.clone(), drops[4].clone());
    let yielder = kvant::task::Builder::new()
        .preemptible(false)
        .spawn_on(&rt, move || {
            let _g = DropFlag(d);
            s.fetch_add(1, Ordering::Release);
            loop {
                kvant::yield_now();
            }
        })
        .unwrap();
    // F: a plain OS thread blocked in join on a sleeping task.
    let os_waited = rt.spawn(|| kvant::sleep(Duration::from_secs(3600)));
    let os_thread = std::thread::spawn(move || os_waited.join());

    wait_for("all tasks to start", || {
        started.load(Ordering::Acquire) == 4
    });
    std::thread::sleep(Duration::from_millis(20)); // let them reach their waits

    let t = Instant::now();
    let report = rt.shutdown_timeout(Duration::from_millis(50));
    let took = t.elapsed();
    eprintln!("{report:?} in {took:?}");
    assert!(took < SHUTDOWN_BOUND, "shutdown took {took:?}");
    assert!(!report.all_finished);
    assert_eq!(report.stuck_workers, 0, "{report:?}");
    assert_eq!(report.leaked, 0, "no task was preempted: {report:?}");
    // sleeper, forever, joiner, inner, yielder, os_waited.
    assert_eq!(report.cancelled, 6, "{report:?}");

    for (i, d) in drops.iter().enumerate() {
        assert!(d.load(Ordering::Acquire), "destructor {i} did not run");
    }
    for e in [
        join_failure(sleeper),
        join_failure(forever),
        join_failure(joiner),
        join_failure(yielder),
    ] {
        assert!(e.is_cancelled(), "{e}");
        assert!(!e.is_panic() && !e.is_leaked());
    }
    let from_thread = os_thread.join().expect("the OS thread's join returned");
    let e = from_thread.expect_err("cancelled, not finished");
    assert!(e.is_cancelled(), "{e}");
}

#[test]
fn cancelled_join_error_api() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    let h = kvant::task::Builder::new()
        .name("sleepy")
        .spawn_on(&rt, || kvant::sleep(Duration::from_secs(3600)))
        .unwrap();
    let id = h.id();
    wait_for("the task to park", || rt.metrics().total().blocked >= 1);
    let report = rt.shutdown_timeout(Duration::ZERO);
    assert_eq!(report.cancelled, 1, "{report:?}");
    let e = join_failure(h);
    assert!(e.is_cancelled());
    assert_eq!(e.task_id(), id);
    assert_eq!(e.task_name(), Some("sleepy"));
    let shown = e.to_string();
    assert!(
        shown.contains("'sleepy'") && shown.contains("cancelled"),
        "{shown}"
    );
    let e = e.try_into_panic().expect_err("not a panic");
    assert!(e.is_cancelled());
    let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.into_panic()))
        .expect_err("into_panic on a cancelled task panics");
    let msg = p.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("did not panic"), "{msg}");
}

#[test]
fn never_started_tasks_are_dropped_with_their_closures() {
    // One cooperative worker held by a task that waits (spinning, no yield)
    // for a flag: the tasks queued behind it never start.
    let rt = Runtime::builder().workers(1).quantum(None).build().unwrap();
    let stop = flag();
    let running = flag();
    let (s, r) = (stop.clone(), running.clone());
    let hog = rt.spawn(move || {
        r.store(true, Ordering::Release);
        let deadline = Instant::now() + HANG;
        while !s.load(Ordering::Acquire) && Instant::now() < deadline {
            std::hint::spin_loop();
        }
        // The runtime is stopped by now: spawning is refused with an error.
        matches!(
            kvant::task::Builder::new().spawn(|| ()),
            Err(Error::Shutdown)
        )
    });
    wait_for("the hog to start", || running.load(Ordering::Acquire));
    let captured: Vec<_> = (0..3).map(|_| flag()).collect();
    let queued: Vec<_> = captured
        .iter()
        .map(|c| {
            let g = DropFlag(c.clone());
            rt.spawn(move || drop(g))
        })
        .collect();

    let t = Instant::now();
    let report = rt.shutdown_timeout(Duration::ZERO);
    let took = t.elapsed();
    eprintln!("{report:?} in {took:?}");
    assert!(took < SHUTDOWN_BOUND, "shutdown took {took:?}");
    assert_eq!(report.stuck_workers, 1, "{report:?}");
    assert_eq!(report.cancelled, 3, "{report:?}");
    for (i, c) in captured.iter().enumerate() {
        assert!(c.load(Ordering::Acquire), "closure {i} was not dropped");
    }
    for h in queued {
        assert!(join_failure(h).is_cancelled());
    }
    // Release the stuck worker; the hog finishes normally.
    stop.store(true, Ordering::Release);
    let refused = hog
        .join_timeout(HANG)
        .expect("the hog ends once released")
        .expect("the hog did not panic");
    assert!(refused, "spawn after shutdown must be Err(Error::Shutdown)");
}

#[test]
fn drop_with_a_cooperative_hog_returns_in_bounded_time() {
    let rt = Runtime::builder().workers(1).quantum(None).build().unwrap();
    let stop = flag();
    let running = flag();
    let (s, r) = (stop.clone(), running.clone());
    let hog = rt.spawn(move || {
        r.store(true, Ordering::Release);
        let deadline = Instant::now() + HANG;
        while !s.load(Ordering::Acquire) && Instant::now() < deadline {
            std::hint::spin_loop();
        }
        7
    });
    wait_for("the hog to start", || running.load(Ordering::Acquire));
    let t = Instant::now();
    drop(rt);
    let took = t.elapsed();
    assert!(
        took < SHUTDOWN_BOUND,
        "Drop took {took:?} with a stuck worker"
    );
    assert!(!hog.is_finished());
    stop.store(true, Ordering::Release);
    assert_eq!(
        hog.join_timeout(HANG).expect("released").expect("no panic"),
        7
    );
}

#[test]
fn preempted_hog_is_leaked_not_unwound() {
    let rt = Runtime::builder()
        .workers(1)
        .quantum(Some(Duration::from_millis(1)))
        .build()
        .unwrap();
    let stop = flag();
    let dropped = flag();
    let (s, d) = (stop.clone(), dropped.clone());
    let hog = rt.spawn(move || {
        let _g = DropFlag(d);
        let deadline = Instant::now() + HANG;
        while !s.load(Ordering::Acquire) && Instant::now() < deadline {
            std::hint::spin_loop();
        }
    });
    // A lone task is not preempted (nothing else wants its worker): a
    // yielding companion makes the quantum matter. At shutdown the companion
    // is unwound at its yield (cancelled), the hog leaked.
    let s2 = stop.clone();
    let companion = rt.spawn(move || {
        while !s2.load(Ordering::Acquire) {
            kvant::yield_now();
        }
    });
    wait_for("the hog to be preempted", || hog.stats().preemptions >= 2);
    let t = Instant::now();
    let report = rt.shutdown_timeout(Duration::ZERO);
    let took = t.elapsed();
    eprintln!("{report:?} in {took:?}");
    assert!(took < SHUTDOWN_BOUND, "shutdown took {took:?}");
    assert_eq!(
        report.stuck_workers, 0,
        "preemption frees the worker: {report:?}"
    );
    assert_eq!(report.leaked, 1, "{report:?}");
    assert_eq!(report.cancelled, 1, "{report:?}");
    assert!(join_failure(companion).is_cancelled());
    let e = join_failure(hog);
    assert!(e.is_leaked(), "{e}");
    assert!(!e.is_cancelled() && !e.is_panic());
    assert!(e.to_string().contains("leaked"), "{e}");
    // Leaked means never resumed: its destructors do not run.
    assert!(!dropped.load(Ordering::Acquire));
    stop.store(true, Ordering::Release);
}

#[test]
fn drop_of_an_idle_runtime_is_quick() {
    for quantum in [None, Some(Duration::from_millis(1))] {
        let rt = Runtime::builder()
            .workers(4)
            .quantum(quantum)
            .build()
            .unwrap();
        assert_eq!(rt.block_on(|| 1), 1);
        let t = Instant::now();
        drop(rt);
        assert!(
            t.elapsed() < SHUTDOWN_BOUND,
            "{quantum:?}: {:?}",
            t.elapsed()
        );
    }
}

#[test]
fn many_runtimes_start_and_stop() {
    // Threads, timers and monitors are all released: no resource runs out.
    for i in 0..20 {
        let rt = Runtime::builder()
            .workers(2)
            .quantum(if i % 2 == 0 {
                None
            } else {
                Some(Duration::from_millis(1))
            })
            .build()
            .unwrap();
        let h = rt.spawn(move || i * 2);
        assert_eq!(h.join().unwrap(), i * 2);
        let report = rt.shutdown_timeout(Duration::from_secs(1));
        assert!(report.all_finished, "{report:?}");
    }
}

#[test]
fn try_spawn_blocking_says_why_it_cannot() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    let h = rt
        .try_spawn_blocking(|| 5)
        .expect("a running runtime takes blocking work");
    assert_eq!(h.join().unwrap(), 5);
    let handle = rt.handle();
    let report = rt.shutdown_timeout(Duration::from_secs(1));
    assert_eq!(report.stuck_workers, 0);
    assert!(matches!(
        handle.try_spawn_blocking(|| 5),
        Err(Error::Shutdown)
    ));
}
