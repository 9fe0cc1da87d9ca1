//! Cancelling one task (`JoinHandle::abort`, `AbortHandle`): wherever it
//! waits, it is unwound from there with its destructors run, and `join`
//! reports it cancelled. Every wait is bounded by the watchdog in `common`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{HANG, join_ok, rt, wait_for};
use kvant::JoinError;

/// Counts drops, to prove destructors ran on the unwound stack.
struct Dropped(Arc<AtomicUsize>);
impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn join_err<T: Send + 'static>(h: kvant::JoinHandle<T>) -> JoinError {
    match h.join_timeout(HANG) {
        Ok(Ok(_)) => panic!("the aborted task returned a value"),
        Ok(Err(e)) => e,
        Err(_) => panic!("the aborted task did not end within {HANG:?}"),
    }
}

/// Spawn `f` (which parks somewhere), wait until it started, abort it, and
/// check it was unwound (its guard dropped) and reported cancelled.
fn abort_parked(workers: usize, f: impl FnOnce() + Send + 'static) {
    let rt = rt(workers, Some(Duration::from_millis(1)));
    let drops = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicBool::new(false));
    let (d, s) = (drops.clone(), started.clone());
    let h = rt.spawn(move || {
        let _guard = Dropped(d);
        s.store(true, Ordering::SeqCst);
        f();
    });
    wait_for("the task to start", || started.load(Ordering::SeqCst));
    std::thread::sleep(Duration::from_millis(5)); // let it reach its wait
    let a = h.abort_handle();
    assert!(!a.is_finished());
    h.abort();
    let e = join_err(h);
    assert!(e.is_cancelled() && e.is_aborted(), "{e}");
    assert!(e.to_string().contains("aborted"), "{e}");
    assert_eq!(drops.load(Ordering::SeqCst), 1, "destructors did not run");
    assert!(a.is_finished());
}

#[test]
fn abort_a_sleeping_task() {
    let t = Instant::now();
    abort_parked(1, || kvant::sleep(Duration::from_secs(3600)));
    assert!(t.elapsed() < Duration::from_secs(30));
}

#[test]
fn abort_a_task_waiting_for_a_lock() {
    let m = Arc::new(kvant::sync::Mutex::new(0));
    let held = m.lock();
    let m2 = m.clone();
    abort_parked(2, move || {
        let _g = m2.lock();
        panic!("got a lock that is held");
    });
    drop(held);
    // The lock still works: the aborted waiter withdrew.
    *m.lock() += 1;
}

#[test]
fn abort_a_task_waiting_on_a_channel() {
    let (tx, rx) = kvant::channel::unbounded::<u32>();
    abort_parked(1, move || {
        let _ = rx.recv();
        panic!("received from a channel nobody sends on");
    });
    drop(tx);
}

#[test]
fn abort_a_task_joining_another() {
    let rt = rt(2, None);
    let forever = rt.spawn(|| kvant::sleep(Duration::from_secs(3600)));
    let stop = forever.abort_handle();
    abort_parked(1, move || {
        let _ = forever.join();
    });
    stop.abort();
}

#[test]
fn abort_a_task_that_never_started() {
    // One worker held by a cooperative hog: the victim stays queued.
    let rt = rt(1, None);
    let release = Arc::new(AtomicBool::new(false));
    let r = release.clone();
    let hog = rt.spawn(move || {
        while !r.load(Ordering::SeqCst) {
            std::hint::spin_loop();
        }
    });
    let drops = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicBool::new(false));
    let (d, ra) = (drops.clone(), ran.clone());
    let guard = Dropped(d);
    let victim = rt.spawn(move || {
        let _g = &guard;
        ra.store(true, Ordering::SeqCst);
    });
    victim.abort();
    // Dropped at once, without running, even though no worker is free.
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert!(victim.is_finished());
    release.store(true, Ordering::SeqCst);
    join_ok(hog);
    assert!(join_err(victim).is_aborted());
    assert!(!ran.load(Ordering::SeqCst));
}

#[test]
fn abort_a_preempted_hog_that_then_yields() {
    let rt = rt(1, Some(Duration::from_millis(1)));
    let spin = |stop: Arc<AtomicBool>| {
        move || {
            while !stop.load(Ordering::SeqCst) {
                std::hint::spin_loop();
            }
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let company = rt.spawn(spin(stop.clone()));
    let drops = Arc::new(AtomicUsize::new(0));
    let reached_yield = Arc::new(AtomicBool::new(false));
    let (d, ry, st) = (drops.clone(), reached_yield.clone(), stop.clone());
    let hog = rt.spawn(move || {
        let _g = Dropped(d);
        let me = kvant::current();
        // A hog with no switch point, preempted many times.
        while me.stats().preemptions < 5 {
            std::hint::spin_loop();
        }
        // Hold on until the abort arrived, then reach a switch point.
        while !kvant::task::is_cancelled() {
            std::hint::spin_loop();
        }
        ry.store(true, Ordering::SeqCst);
        kvant::yield_now();
        st.store(true, Ordering::SeqCst); // never reached: unwound at the yield
    });
    let a = hog.abort_handle();
    wait_for("the hog to be preempted", || hog.stats().preemptions >= 5);
    a.abort();
    let e = join_err(hog);
    assert!(e.is_aborted(), "{e}");
    assert!(reached_yield.load(Ordering::SeqCst));
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert!(!stop.load(Ordering::SeqCst));
    stop.store(true, Ordering::SeqCst);
    join_ok(company);
}

#[test]
fn a_hog_that_reaches_no_switch_point_runs_to_completion() {
    let rt = rt(1, Some(Duration::from_millis(1)));
    let started = Arc::new(AtomicBool::new(false));
    let s = started.clone();
    let h = rt.spawn(move || {
        s.store(true, Ordering::SeqCst);
        let end = Instant::now() + Duration::from_millis(30);
        let mut n = 0u64;
        while Instant::now() < end {
            n = std::hint::black_box(n + 1);
        }
        (kvant::task::is_cancelled(), n)
    });
    wait_for("the hog to start", || started.load(Ordering::SeqCst));
    h.abort();
    // Aborted after it started: it returns its value, having seen the flag.
    let (cancelled, n) = join_ok(h);
    assert!(cancelled && n > 0);
}

#[test]
fn a_task_that_catches_the_unwind_and_continues_stops_at_the_next_switch_point() {
    let rt = rt(1, None);
    let caught = Arc::new(AtomicUsize::new(0));
    let c = caught.clone();
    let h = rt.spawn(move || {
        // Catches the cancellation twice, then the third switch point ends it.
        for _ in 0..3 {
            let r = std::panic::catch_unwind(|| kvant::sleep(Duration::from_secs(3600)));
            if r.is_err() {
                c.fetch_add(1, Ordering::SeqCst);
            }
        }
        kvant::sleep(Duration::from_secs(3600));
    });
    std::thread::sleep(Duration::from_millis(5));
    h.abort();
    // Every later switch point unwinds again at once: bounded, no hang.
    let e = join_err(h);
    assert!(e.is_cancelled());
    assert_eq!(caught.load(Ordering::SeqCst), 3);
}

#[test]
fn aborting_a_finished_task_changes_nothing() {
    let rt = rt(1, None);
    let h = rt.spawn(|| 7);
    wait_for("the task to finish", || h.is_finished());
    h.abort();
    h.abort_handle().abort();
    assert_eq!(join_ok(h), 7);
}

#[test]
fn aborting_a_join_owner_lets_the_stolen_half_finish_first() {
    // Two workers: the owner runs half `a`; `b` is stolen and borrows the
    // owner's frame. Aborting the owner mid-join must not free that frame
    // before `b` is done.
    let rt = rt(2, Some(Duration::from_millis(1)));
    for _ in 0..20 {
        let b_done = Arc::new(AtomicBool::new(false));
        let b_started = Arc::new(AtomicBool::new(false));
        let in_join = Arc::new(AtomicBool::new(false));
        let (bd, bs, ij) = (b_done.clone(), b_started.clone(), in_join.clone());
        let owner = rt.spawn(move || {
            let data = vec![1u64; 1000]; // borrowed by both halves
            let (x, y) = kvant::join(
                || {
                    ij.store(true, Ordering::SeqCst);
                    kvant::sleep(Duration::from_millis(20));
                    data.iter().sum::<u64>()
                },
                || {
                    ij.store(true, Ordering::SeqCst);
                    bs.store(true, Ordering::SeqCst);
                    let end = Instant::now() + Duration::from_millis(10);
                    while Instant::now() < end {
                        std::hint::spin_loop();
                    }
                    let s = data.iter().sum::<u64>();
                    bd.store(true, Ordering::SeqCst);
                    s
                },
            );
            x + y
        });
        wait_for("the join to start", || in_join.load(Ordering::SeqCst));
        owner.abort();
        let r = owner.join_timeout(HANG).expect("owner hung");
        // The owner may have finished before the abort landed.
        if let Err(e) = r {
            assert!(e.is_cancelled(), "{e}");
        }
        // A half that started (stolen, or run inline) ended before the
        // owner did. (Unsplit, an unwind out of `a` skips `b`.)
        if b_started.load(Ordering::SeqCst) {
            assert!(
                b_done.load(Ordering::SeqCst),
                "the owner ended before its borrower"
            );
        }
    }
}

#[test]
fn abort_from_another_task_and_from_a_clone() {
    let rt = rt(2, None);
    let victim = rt.spawn(|| kvant::sleep(Duration::from_secs(3600)));
    let a = victim.abort_handle();
    let a2 = a.clone();
    assert_eq!(a.id(), victim.id());
    join_ok(rt.spawn(move || a2.abort()));
    assert!(join_err(victim).is_aborted());
    assert!(a.is_finished());
}

#[test]
fn shutdown_still_reports_its_own_cancellations() {
    let rt = rt(1, None);
    let h = rt.spawn(|| kvant::sleep(Duration::from_secs(3600)));
    std::thread::sleep(Duration::from_millis(5));
    let report = rt.shutdown_timeout(Duration::from_millis(10));
    assert_eq!(report.cancelled, 1, "{report:?}");
    let e = join_err(h);
    assert!(e.is_cancelled() && !e.is_aborted(), "{e}");
}

#[test]
fn a_destructor_that_waits_during_the_abort_unwind_parks_instead_of_spinning() {
    // One cooperative worker: a destructor spinning in its wait would keep
    // the sender below from ever running.
    let rt = rt(1, None);
    let (tx, rx) = kvant::channel::unbounded::<u32>();
    struct WaitsOnDrop(kvant::channel::Receiver<u32>);
    impl Drop for WaitsOnDrop {
        fn drop(&mut self) {
            let _ = self.0.recv();
        }
    }
    let h = rt.spawn(move || {
        let _g = WaitsOnDrop(rx);
        kvant::sleep(Duration::from_secs(3600));
    });
    std::thread::sleep(Duration::from_millis(5));
    h.abort();
    std::thread::sleep(Duration::from_millis(5));
    join_ok(rt.spawn(move || tx.send(1).unwrap()));
    assert!(join_err(h).is_cancelled());
}

/// Aborts landing anywhere in tasks that lock, send, receive, select and
/// sleep, under a 50 µs quantum on 1 and 2 workers: every task ends
/// (cancelled or not), nothing hangs, and the primitives still work after.
#[test]
fn abort_storm_under_preemption() {
    use kvant::channel::bounded;
    for workers in [1, 2] {
        let rt = rt(workers, Some(Duration::from_micros(50)));
        let m = Arc::new(kvant::sync::Mutex::new(0u64));
        let (tx, rx) = bounded::<u64>(4);
        let mut handles = Vec::new();
        for i in 0..64u64 {
            let (m, tx, rx) = (m.clone(), tx.clone(), rx.clone());
            handles.push(rt.spawn(move || {
                let mut n = 0u64;
                loop {
                    *m.lock() += 1;
                    let _ = tx.send_timeout(i, Duration::from_millis(1));
                    kvant::select! {
                        recv(rx) -> _ => n += 1,
                        default(Duration::from_micros(200)) => {}
                    }
                    if n.is_multiple_of(7) {
                        kvant::sleep(Duration::from_micros(50));
                    }
                    let spin = Instant::now() + Duration::from_micros(100);
                    while Instant::now() < spin {
                        std::hint::spin_loop();
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(20));
        for (k, h) in handles.iter().enumerate() {
            h.abort();
            if k.is_multiple_of(8) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        for h in handles {
            let e = join_err(h);
            assert!(e.is_cancelled(), "{e}");
        }
        // Nothing is left locked or wedged.
        *m.lock() += 1;
        while rx.try_recv().is_ok() {}
        tx.send(1).unwrap();
        assert_eq!(rx.recv_timeout(HANG), Ok(1));
        drop(rt);
    }
}
