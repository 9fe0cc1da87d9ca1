//! A worker whose thread is parked by a wait that only a task preempted on
//! that thread can end is lent: a stand-in thread runs the pinned tasks
//! until the wait is over (`src/preempt/lend.rs`). Before, each of these
//! deadlocked the worker for good.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kvant::Runtime;

mod common;
use common::{burn, join_ok, wait_for};

fn runtime(workers: usize, quantum: Duration) -> Runtime {
    let rt = Runtime::builder()
        .workers(workers)
        .quantum(Some(quantum))
        .build()
        .unwrap();
    assert_eq!(rt.preemption_mode(), kvant::PreemptionMode::LineTables);
    rt
}

/// A holder takes a parking_lot guard and computes with it until the waiter
/// has run (on one worker, only possible if it was preempted meanwhile),
/// then runs `then` with the guard held; the waiter runs `wait` on the
/// lock, parking the worker's thread.
fn guard_held_across_a_preemption<R: Send + 'static>(
    rt: &Runtime,
    then: impl FnOnce(&mut u64) + Send + 'static,
    wait: impl FnOnce(&parking_lot::Mutex<u64>) -> R + Send + 'static,
) -> (kvant::JoinHandle<()>, kvant::JoinHandle<R>) {
    let lock = Arc::new(parking_lot::Mutex::new(0u64));
    let locked = Arc::new(AtomicBool::new(false));
    let waiting = Arc::new(AtomicBool::new(false));
    let holder = {
        let (lock, locked, waiting) = (lock.clone(), locked.clone(), waiting.clone());
        rt.spawn(move || {
            let mut g = lock.lock();
            locked.store(true, Ordering::Release);
            while !waiting.load(Ordering::Acquire) {
                *g = std::hint::black_box(*g + 1);
            }
            then(&mut g);
        })
    };
    wait_for("the holder to take the lock", || {
        locked.load(Ordering::Acquire)
    });
    let waiter = rt.spawn(move || {
        waiting.store(true, Ordering::Release);
        wait(&lock)
    });
    (holder, waiter)
}

/// The holder is preempted with the guard held (one worker: the waiter can
/// only run if it was), and the waiter parks the worker's thread on it.
#[test]
fn a_parking_lot_guard_held_across_a_preemption_does_not_deadlock_its_worker() {
    for q in [Duration::from_micros(50), Duration::from_millis(1)] {
        let rt = runtime(1, q);
        let (holder, waiter) = guard_held_across_a_preemption(
            &rt,
            // Computes on with the guard, preempted again wherever it runs now.
            |g| *g = burn(*g, 2_000_000),
            |lock| *lock.lock() += 1,
        );
        join_ok(holder);
        join_ok(waiter);
        let m = rt.metrics().total();
        assert!(m.preemptions > 0, "quantum {q:?}: never preempted");
        assert!(m.lends > 0, "quantum {q:?}: never lent: {m:?}");
    }
}

/// As users write it: every task adds to a shared total under a parking_lot
/// guard, computing its term while it holds the guard. Results equal the
/// sequential sum, on 1 and 2 workers.
#[test]
fn tasks_that_compute_under_a_parking_lot_guard_finish_with_the_right_total() {
    const TASKS: u64 = 8;
    const ADDS: u64 = 40;
    let expected: u64 = (0..TASKS)
        .flat_map(|t| (0..ADDS).map(move |i| burn(t * 1000 + i, 20_000) & 0xffff))
        .sum();
    for workers in [1, 2] {
        let rt = runtime(workers, Duration::from_micros(50));
        let total = Arc::new(parking_lot::Mutex::new(0u64));
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let total = total.clone();
                rt.spawn(move || {
                    for i in 0..ADDS {
                        let mut g = total.lock();
                        *g += burn(t * 1000 + i, 20_000) & 0xffff;
                    }
                })
            })
            .collect();
        for t in tasks {
            join_ok(t);
        }
        assert_eq!(*total.lock(), expected, "{workers} worker(s)");
        let m = rt.metrics().total();
        assert!(m.preemptions > 0, "{workers} worker(s): never preempted");
    }
}

/// `std::sync::mpsc` parks the thread (`thread::park`): a receiver on the
/// worker whose sender was preempted there.
#[test]
fn a_std_mpsc_receiver_waiting_for_a_preempted_sender_on_its_worker() {
    let rt = runtime(1, Duration::from_micros(50));
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let started = Arc::new(AtomicBool::new(false));
    let waiting = Arc::new(AtomicBool::new(false));
    let sender = {
        let (started, waiting) = (started.clone(), waiting.clone());
        rt.spawn(move || {
            started.store(true, Ordering::Release);
            while !waiting.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            tx.send(burn(7, 1_000_000)).unwrap();
        })
    };
    wait_for("the sender to start", || started.load(Ordering::Acquire));
    let receiver = {
        let waiting = waiting.clone();
        rt.spawn(move || {
            waiting.store(true, Ordering::Release);
            rx.recv().unwrap()
        })
    };
    join_ok(sender);
    assert_eq!(join_ok(receiver), burn(7, 1_000_000));
    let m = rt.metrics().total();
    assert!(m.preemptions > 0 && m.lends > 0, "{m:?}");
}

/// While the worker is lent, the stand-in is that worker: it runs queued
/// work too, in turns with the pinned tasks. Here the lender waits for a
/// message from a task queued after it blocked, while a pinned hog runs
/// until the message has arrived; no compensating thread may run it.
#[test]
fn a_lent_worker_runs_the_queued_task_its_lender_waits_for() {
    // No compensating thread: only the stand-in can run the sender.
    let rt = Runtime::builder()
        .workers(1)
        .quantum(Some(Duration::from_micros(50)))
        .max_compensation(0)
        .build()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let started = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicBool::new(false));
    let hog = {
        let (started, received) = (started.clone(), received.clone());
        rt.spawn(move || {
            started.store(true, Ordering::Release);
            let mut x = 0;
            while !received.load(Ordering::Acquire) {
                x = burn(x, 1000);
            }
            x
        })
    };
    wait_for("the hog to start", || started.load(Ordering::Acquire));
    let receiver = {
        let received = received.clone();
        rt.spawn(move || {
            let v = rx.recv().unwrap();
            received.store(true, Ordering::Release);
            v
        })
    };
    // Once the receiver has blocked the worker's thread (and the hog is
    // pinned there), queue the sender.
    wait_for("the worker to be blocked", || {
        rt.metrics().total().kernel_blocks > 0
    });
    let sender = rt.spawn(move || tx.send(burn(3, 100_000)).unwrap());
    assert_eq!(join_ok(receiver), burn(3, 100_000));
    join_ok(sender);
    join_ok(hog);
    let m = rt.metrics().total();
    assert!(m.preemptions > 0 && m.lends > 0, "{m:?}");
}

/// Timed waits are lent too, with the time they have left: a `try_lock_for`
/// long enough gets the guard; one shorter than the holder's hold times out
/// close to its deadline, not late and not never. (The short wait is long
/// enough to be lent on a starved host too: beside a CPU hog on 2 cores the
/// first lend took over 30 ms in 2 runs of 100.)
#[test]
fn timed_waits_are_lent_and_keep_their_deadline() {
    for (wait, gets_it) in [
        (Duration::from_secs(60), true),
        (Duration::from_millis(250), false),
    ] {
        let rt = runtime(1, Duration::from_micros(50));
        let release = Arc::new(AtomicBool::new(false));
        let (holder, waiter) = guard_held_across_a_preemption(
            &rt,
            {
                let release = release.clone();
                move |g| {
                    // Hold on (preempted, run by the stand-in) until released.
                    while !gets_it && !release.load(Ordering::Acquire) {
                        *g = burn(*g, 1000);
                    }
                    *g = burn(*g, 200_000);
                }
            },
            move |lock| {
                let t0 = std::time::Instant::now();
                let got = lock.try_lock_for(wait).map(|mut g| *g += 1).is_some();
                (got, t0.elapsed())
            },
        );
        let (got, took) = join_ok(waiter);
        release.store(true, Ordering::Release);
        join_ok(holder);
        assert_eq!(got, gets_it, "wait {wait:?}: took {took:?}");
        if !gets_it {
            assert!(
                took >= wait && took < wait + Duration::from_millis(500),
                "wait {wait:?}: timed out after {took:?}"
            );
        }
        let m = rt.metrics().total();
        assert!(m.preemptions > 0 && m.lends > 0, "wait {wait:?}: {m:?}");
    }
}
