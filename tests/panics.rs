//! A panicking task is contained: its joiner gets a `JoinError` carrying the
//! payload, the worker goes on running other tasks, and `block_on` resumes
//! the panic on the calling thread like `std::thread::spawn(..).join()` would
//! let it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use kvant::{JoinError, JoinHandle, Runtime};

mod common;
use common::{HANG, join_ok};

/// Join `h` expecting the task to have failed; fail the test on a hang.
fn join_err<T: Send + std::fmt::Debug + 'static>(h: JoinHandle<T>) -> JoinError {
    match h.join_timeout(HANG) {
        Ok(Ok(v)) => panic!("the task should have panicked, returned {v:?}"),
        Ok(Err(e)) => e,
        Err(h) => panic!("task {h:?} did not finish within {HANG:?}"),
    }
}

fn runtime(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).build().unwrap()
}

#[test]
fn str_payload() {
    let rt = runtime(1);
    let e = join_err(rt.spawn(|| -> u32 { panic!("static boom") }));
    assert!(e.is_panic());
    assert!(!e.is_cancelled() && !e.is_leaked() && !e.is_stack_overflow());
    let shown = e.to_string();
    assert!(shown.contains("panicked: static boom"), "{shown}");
    let payload = e.into_panic();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"static boom"));
}

#[test]
fn string_payload() {
    let rt = runtime(1);
    let n = 7;
    let e = join_err(rt.spawn(move || -> u32 { panic!("formatted boom {n}") }));
    assert!(e.is_panic());
    assert!(e.to_string().contains("formatted boom 7"), "{e}");
    let payload = e.into_panic();
    assert_eq!(
        payload.downcast_ref::<String>().map(String::as_str),
        Some("formatted boom 7")
    );
}

#[test]
fn custom_payload() {
    #[derive(Debug, PartialEq)]
    struct Code(u32);
    let rt = runtime(1);
    let e = join_err(rt.spawn(|| -> () { std::panic::panic_any(Code(404)) }));
    assert!(e.is_panic());
    // Not a string: the message says only that it panicked.
    assert!(e.to_string().ends_with("panicked"), "{e}");
    let payload = e.try_into_panic().expect("a panic payload");
    assert_eq!(payload.downcast_ref::<Code>(), Some(&Code(404)));
}

#[test]
fn join_error_names_the_task() {
    let rt = runtime(1);
    let h = kvant::task::Builder::new()
        .name("doomed")
        .spawn_on(&rt, || -> () { panic!("bye") })
        .unwrap();
    let id = h.id();
    let e = join_err(h);
    assert_eq!(e.task_id(), id);
    assert_eq!(e.task_name(), Some("doomed"));
    let shown = e.to_string();
    assert!(
        shown.contains("'doomed'") && shown.contains(&id.to_string()),
        "{shown}"
    );
    assert!(format!("{e:?}").contains("doomed"));
}

#[test]
fn worker_keeps_running_after_panics() {
    // One worker: every task below runs on the thread that saw the panics.
    let rt = runtime(1);
    let failed: Vec<_> = (0..20)
        .map(|i| rt.spawn(move || -> u32 { panic!("task {i} fails") }))
        .collect();
    for (i, h) in failed.into_iter().enumerate() {
        let e = join_err(h);
        assert!(e.to_string().contains(&format!("task {i} fails")), "{e}");
    }
    let ok: Vec<_> = (0..20u32).map(|i| rt.spawn(move || i)).collect();
    assert_eq!(ok.into_iter().map(join_ok).sum::<u32>(), 190);
    // Interleaved with ongoing work, including tasks that yield across it.
    let mixed: Vec<_> = (0..40u32)
        .map(|i| {
            rt.spawn(move || {
                kvant::yield_now();
                if i % 2 == 0 {
                    panic!("even {i}");
                }
                kvant::yield_now();
                i
            })
        })
        .collect();
    let mut sum = 0;
    for (i, h) in mixed.into_iter().enumerate() {
        match h.join_timeout(HANG).expect("finished") {
            Ok(v) => sum += v,
            Err(e) => {
                assert!(e.is_panic());
                assert_eq!(i % 2, 0);
            }
        }
    }
    assert_eq!(sum, (0..40).filter(|i| i % 2 == 1).sum::<u32>());
    // Counters are updated just after the joiner is woken: poll, bounded.
    let deadline = std::time::Instant::now() + HANG;
    while rt.metrics().total().completed < 80 {
        assert!(std::time::Instant::now() < deadline, "{:?}", rt.metrics());
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(rt.metrics().total().completed, 80);
}

#[test]
fn panic_inside_a_nested_task_reaches_its_parent() {
    let rt = runtime(2);
    let (payload_seen, after) = rt.block_on(|| {
        let child = kvant::spawn(|| -> u8 { panic!("child failed") });
        let e = join_err(child);
        let seen = e.into_panic().downcast_ref::<&str>().copied();
        // The parent goes on spawning and joining.
        (seen, join_ok(kvant::spawn(|| 5)))
    });
    assert_eq!(payload_seen, Some("child failed"));
    assert_eq!(after, 5);
}

#[test]
fn destructors_run_when_a_task_panics() {
    struct Guard(Arc<AtomicBool>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let rt = runtime(1);
    let dropped = Arc::new(AtomicBool::new(false));
    let d = dropped.clone();
    let e = join_err(rt.spawn(move || -> () {
        let _g = Guard(d);
        kvant::yield_now();
        panic!("unwind me");
    }));
    assert!(e.is_panic());
    assert!(
        dropped.load(Ordering::Acquire),
        "the guard must drop during unwinding"
    );
}

#[test]
fn block_on_resumes_the_panic() {
    let rt = runtime(1);
    let err = catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(|| -> u32 { panic!("resumed") })
    }))
    .expect_err("block_on must resume the task's panic");
    assert_eq!(err.downcast_ref::<&str>(), Some(&"resumed"));

    // A runtime argument: `panic!("x {}", 2)` with a literal is folded
    // into a `&'static str` payload by the compiler.
    let two = std::hint::black_box(2);
    let err = catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(move || -> u32 { panic!("resumed {two}") })
    }))
    .expect_err("block_on must resume the task's panic");
    assert_eq!(
        err.downcast_ref::<String>().map(String::as_str),
        Some("resumed 2")
    );
    // The runtime still works after resuming panics on this thread.
    assert_eq!(rt.block_on(|| 11), 11);
}

#[test]
fn many_panics_on_many_workers() {
    let rt = runtime(4);
    let ran = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..400u32)
        .map(|i| {
            let ran = ran.clone();
            rt.spawn(move || {
                ran.fetch_add(1, Ordering::Relaxed);
                if i % 3 == 0 {
                    panic!("{i}");
                }
                i
            })
        })
        .collect();
    let mut panics = 0;
    for h in handles {
        if let Err(e) = h.join_timeout(HANG).expect("finished") {
            assert!(e.is_panic());
            panics += 1;
        }
    }
    assert_eq!(panics, (0..400).filter(|i| i % 3 == 0).count());
    assert_eq!(ran.load(Ordering::Relaxed), 400);
}
