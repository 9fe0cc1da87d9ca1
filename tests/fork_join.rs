//! `kvant::join` and scoped tasks: results are right, borrows work, panics
//! propagate after both sides finished, and splitting really runs in parallel.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

mod common;
use common::rt;

fn fib(n: u64) -> u64 {
    if n < 10 {
        return (1..=n).fold((0u64, 1u64), |(a, b), _| (b, a + b)).0;
    }
    let (x, y) = kvant::join(|| fib(n - 1), || fib(n - 2));
    x + y
}

#[test]
fn join_computes_fib_on_every_configuration() {
    for workers in [1, 2, 4] {
        for q in [
            None,
            Some(Duration::from_micros(50)),
            Some(Duration::from_millis(1)),
        ] {
            let r = rt(workers, q);
            assert_eq!(
                r.block_on(|| fib(25)),
                75025,
                "workers={workers} quantum={q:?}"
            );
        }
    }
}

#[test]
fn join_outside_a_runtime_runs_both_sides() {
    assert_eq!(kvant::join(|| 1, || 2), (1, 2));
    assert_eq!(fib(20), 6765);
}

#[test]
fn join_borrows_from_the_caller() {
    let r = rt(2, None);
    let total = r.block_on(|| {
        let data: Vec<u64> = (0..10_000).collect();
        let (a, b) = data.split_at(5_000);
        let (x, y) = kvant::join(|| a.iter().sum::<u64>(), || b.iter().sum::<u64>());
        x + y
    });
    assert_eq!(total, (0..10_000u64).sum::<u64>());
}

#[test]
fn join_splits_onto_idle_workers() {
    // With two workers and a second side that blocks until the first side
    // has run, the work only finishes if `b` really ran elsewhere or after `a`.
    let r = rt(2, None);
    let ran_b = std::sync::Arc::new(AtomicUsize::new(0));
    let rb = ran_b.clone();
    let (a, b) = r.block_on(move || {
        kvant::join(
            || {
                kvant::sleep(Duration::from_millis(5));
                1
            },
            move || {
                rb.fetch_add(1, Ordering::SeqCst);
                2
            },
        )
    });
    assert_eq!((a, b), (1, 2));
    assert_eq!(ran_b.load(Ordering::SeqCst), 1, "b runs exactly once");
}

#[test]
fn join_propagates_panics_after_both_sides_finish() {
    let r = rt(2, None);
    for side in 0..2 {
        let finished = std::sync::Arc::new(AtomicUsize::new(0));
        let f = finished.clone();
        let res = r.block_on(move || {
            catch_unwind(AssertUnwindSafe(|| {
                kvant::join(
                    || {
                        if side == 0 {
                            panic!("left side");
                        }
                        f.fetch_add(1, Ordering::SeqCst);
                    },
                    || {
                        if side == 1 {
                            panic!("right side");
                        }
                        kvant::sleep(Duration::from_millis(2));
                        f.fetch_add(1, Ordering::SeqCst);
                    },
                )
            }))
            .is_err()
        });
        assert!(res, "the panic of side {side} reaches the caller");
        assert_eq!(
            finished.load(Ordering::SeqCst),
            1,
            "the other side still ran to completion"
        );
    }
}

#[test]
fn scope_joins_every_task_before_returning() {
    let r = rt(2, Some(Duration::from_millis(1)));
    let counter = AtomicUsize::new(0);
    let mut data = vec![1u64; 1000];
    r.scope(|s| {
        for chunk in data.chunks_mut(100) {
            let counter = &counter;
            s.spawn(move || {
                for x in chunk.iter_mut() {
                    *x *= 2;
                }
                counter.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    assert_eq!(counter.load(Ordering::SeqCst), 10);
    assert!(data.iter().all(|&x| x == 2));
}

#[test]
fn scope_inside_a_task_and_nested_spawns() {
    let r = rt(2, None);
    let n = r.block_on(|| {
        let hits = AtomicUsize::new(0);
        kvant::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    hits.fetch_add(1, Ordering::SeqCst);
                    s.spawn(|| hits.fetch_add(1, Ordering::SeqCst));
                });
            }
        });
        hits.load(Ordering::SeqCst)
    });
    assert_eq!(n, 16);
}

#[test]
fn scope_panics_if_an_unjoined_task_panicked() {
    let r = rt(2, None);
    let res = catch_unwind(AssertUnwindSafe(|| {
        r.scope(|s| {
            s.spawn(|| panic!("scoped boom"));
        })
    }));
    let msg = res.unwrap_err();
    let msg = msg
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| msg.downcast_ref::<String>().cloned())
        .unwrap();
    assert!(msg.contains("scoped kvant task panicked"), "{msg}");
    // A joined panic is the caller's to handle: no second panic.
    let ok = r.scope(|s| s.spawn(|| panic!("handled")).join().is_err());
    assert!(ok);
}

#[test]
fn scope_outside_a_runtime_panics_clearly() {
    let res = catch_unwind(|| kvant::scope(|_| ()));
    let p = res.unwrap_err();
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap();
    assert!(
        msg.contains("kvant::scope called outside a kvant runtime"),
        "{msg}"
    );
}

/// Order of two events, as the test saw them.
#[derive(Default)]
struct Order(std::sync::Mutex<Vec<&'static str>>);

impl Order {
    fn log(&self, what: &'static str) {
        self.0.lock().unwrap().push(what);
    }
}

/// Logs when it is dropped: the joiner's frame is gone.
struct FrameGone(std::sync::Arc<Order>);
impl Drop for FrameGone {
    fn drop(&mut self) {
        self.0.log("joiner frame gone");
    }
}

/// Takes a while to unwind, so the stolen half finishes well after the
/// joiner was cancelled.
struct SlowUnwind(std::sync::Arc<Order>);
impl Drop for SlowUnwind {
    fn drop(&mut self) {
        let until = std::time::Instant::now() + std::time::Duration::from_millis(50);
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
        self.0.log("stolen half done");
    }
}

/// Once the borrowing half has started, shut down with no grace (cancelling
/// the borrowed-from task) and check that the borrower finished before the
/// frame it borrows from was gone.
fn cancel_and_check_order(
    rt: kvant::Runtime,
    started: &std::sync::atomic::AtomicBool,
    order: &Order,
    what: &str,
) {
    common::wait_for(what, || started.load(std::sync::atomic::Ordering::SeqCst));
    let report = rt.shutdown_timeout(std::time::Duration::ZERO);
    let seen = order.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        ["stolen half done", "joiner frame gone"],
        "{report:?}"
    );
}

/// Shutdown cancels a task inside `kvant::join` while the stolen half runs
/// on another worker. The half borrows the joiner's frame (its result slot),
/// so that frame must outlive it, even while the joiner is being unwound.
#[test]
fn join_joiner_frame_outlives_the_stolen_half_under_cancellation() {
    let rt = kvant::Runtime::builder()
        .workers(2)
        .quantum(None)
        .build()
        .unwrap();
    let order = std::sync::Arc::new(Order::default());
    let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (o, s) = (order.clone(), started.clone());
    let _h = rt.spawn(move || {
        let _frame = FrameGone(o.clone());
        kvant::join(
            || loop {
                kvant::yield_now();
            },
            || {
                let _slow = SlowUnwind(o.clone());
                s.store(true, std::sync::atomic::Ordering::SeqCst);
                loop {
                    kvant::yield_now();
                }
            },
        )
    });
    cancel_and_check_order(rt, &started, &order, "the second half to be stolen");
}

/// The same for `scope`: the scope's frame outlives its children.
#[test]
fn scope_frame_outlives_its_children_under_cancellation() {
    let rt = kvant::Runtime::builder()
        .workers(2)
        .quantum(None)
        .build()
        .unwrap();
    let order = std::sync::Arc::new(Order::default());
    let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (o, s) = (order.clone(), started.clone());
    let _h = rt.spawn(move || {
        let _frame = FrameGone(o.clone());
        kvant::scope(|sc| {
            sc.spawn(|| {
                let _slow = SlowUnwind(o.clone());
                s.store(true, std::sync::atomic::Ordering::SeqCst);
                loop {
                    kvant::yield_now();
                }
            });
            loop {
                kvant::yield_now();
            }
        })
    });
    cancel_and_check_order(rt, &started, &order, "the child to start");
}

/// `Runtime::install` runs borrowing work on the pool and resumes its panic
/// in the caller.
#[test]
fn install_runs_borrowing_work_and_resumes_its_panic() {
    let rt = kvant::Runtime::builder().workers(2).build().unwrap();
    let data: Vec<u64> = (1..=10_000).collect();
    let mut seen_on = String::new();
    let sum = rt.install(|| {
        seen_on = std::thread::current().name().unwrap_or("").to_string();
        let (a, b) = data.split_at(data.len() / 2);
        let (x, y) = kvant::join(|| a.iter().sum::<u64>(), || b.iter().sum::<u64>());
        x + y
    });
    assert_eq!(sum, 50_005_000);
    assert!(seen_on.contains("worker"), "ran on {seen_on:?}");
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.install(|| -> u64 { panic!("install panics on purpose") })
    }));
    let msg = panicked.unwrap_err();
    assert_eq!(
        msg.downcast_ref::<&str>().copied(),
        Some("install panics on purpose")
    );
}
