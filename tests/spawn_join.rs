//! Spawning and joining: values come back, trees of tasks work, joins park
//! only the green thread, and every misuse is a clear error or panic.
//!
//! Every wait in this file goes through [`join_ok`] (or a bounded
//! `join_timeout`), so a scheduler bug fails the test instead of hanging it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kvant::{Error, JoinHandle, Runtime};

mod common;
use common::{HANG, join_ok, panic_message, wait_for};

fn runtime(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).build().unwrap()
}

#[test]
fn many_tasks_return_their_values() {
    let rt = runtime(2);
    let handles: Vec<_> = (0..1000u64).map(|i| rt.spawn(move || i * 3)).collect();
    let sum: u64 = handles.into_iter().map(join_ok).sum();
    assert_eq!(sum, 3 * 999 * 1000 / 2);
}

#[test]
fn values_of_any_send_type() {
    let rt = runtime(2);
    let s = join_ok(rt.spawn(|| String::from("hello")));
    let v = join_ok(rt.spawn(|| vec![1u8; 1000]));
    let unit: () = join_ok(rt.spawn(|| ()));
    let boxed = join_ok(rt.spawn(|| Box::new([7u64; 64])));
    assert_eq!(s, "hello");
    assert_eq!(v.len(), 1000);
    assert_eq!(unit, ());
    assert_eq!(boxed[63], 7);
}

/// Fibonacci by spawning both halves as tasks and joining them from inside
/// a task: a tree of ~2 * fib(n) tasks, every join parks a green thread.
fn fib(n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    let a = kvant::spawn(move || fib(n - 1));
    let b = kvant::spawn(move || fib(n - 2));
    join_ok(a) + join_ok(b)
}

#[test]
fn nested_spawn_tree() {
    for workers in [1, 2, 4] {
        let rt = runtime(workers);
        assert_eq!(rt.block_on(|| fib(15)), 610, "{workers} workers");
        // A task is retired just after its joiner is woken: eventually zero.
        wait_for("live_tasks == 0", || rt.metrics().live_tasks == 0);
    }
}

#[test]
fn deep_spawn_chain() {
    // Each task spawns the next and joins it: 500 green threads parked at once.
    fn chain(depth: u32) -> u32 {
        if depth == 0 {
            return 0;
        }
        join_ok(kvant::spawn(move || chain(depth - 1))) + 1
    }
    let rt = runtime(2);
    assert_eq!(rt.block_on(|| chain(500)), 500);
}

#[test]
fn join_inside_a_task_parks_only_the_green_thread() {
    // One worker: the child can only run if the parent's join switched the
    // parent out instead of blocking the worker thread.
    let rt = runtime(1);
    let v = rt.block_on(|| {
        let child = kvant::spawn(|| {
            kvant::yield_now();
            21
        });
        join_ok(child) * 2
    });
    assert_eq!(v, 42);
    assert!(
        rt.metrics().total().blocked >= 1,
        "the parent's join should count as a blocked slice: {:?}",
        rt.metrics().total()
    );
}

#[test]
fn join_from_plain_threads() {
    let rt = runtime(2);
    let handles: Vec<_> = (0..8u32).map(|i| rt.spawn(move || i + 1)).collect();
    let threads: Vec<_> = handles
        .into_iter()
        .map(|h| std::thread::spawn(move || join_ok(h)))
        .collect();
    let sum: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(sum, 36);
}

#[test]
fn is_finished_tracks_completion() {
    let rt = runtime(2);
    let go = Arc::new(AtomicBool::new(false));
    let g = go.clone();
    let h = rt.spawn(move || {
        while !g.load(Ordering::Acquire) {
            kvant::yield_now();
        }
        5
    });
    // The task cannot finish before `go`: a deterministic "not yet".
    std::thread::sleep(Duration::from_millis(20));
    assert!(!h.is_finished());
    go.store(true, Ordering::Release);
    wait_for("is_finished", || h.is_finished());
    assert!(h.is_finished());
    assert_eq!(join_ok(h), 5);
}

#[test]
fn current_inside_tasks() {
    let rt = runtime(2);
    let h = rt.spawn(|| {
        let me = kvant::current();
        (me.id(), me.name().map(str::to_owned), me.is_preemptible())
    });
    let id = h.id();
    assert_eq!(h.name(), None);
    let (seen_id, name, preemptible) = join_ok(h);
    assert_eq!(seen_id, id);
    assert_eq!(name, None);
    assert!(preemptible);

    // Ids are unique and match their handles.
    let handles: Vec<_> = (0..50)
        .map(|_| rt.spawn(|| kvant::current().id()))
        .collect();
    let mut ids = Vec::new();
    for h in handles {
        let id = h.id();
        assert_eq!(join_ok(h), id);
        ids.push(id.as_u64());
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 50);

    // try_current works inside too; current() is stable across yields.
    let (a, b) = rt.block_on(|| {
        let a = kvant::try_current().expect("inside a task").id();
        kvant::yield_now();
        (a, kvant::current().id())
    });
    assert_eq!(a, b);
}

#[test]
fn current_outside_a_task_panics_clearly() {
    assert!(kvant::try_current().is_none());
    let err = catch_unwind(kvant::current).expect_err("current() outside a task must panic");
    let msg = panic_message(err);
    assert!(
        msg.contains("outside a kvant task"),
        "unclear message: {msg}"
    );
}

#[test]
fn spawn_outside_a_runtime_panics_clearly() {
    let err = catch_unwind(|| {
        drop(kvant::spawn(|| 1));
    })
    .expect_err("kvant::spawn outside a runtime must panic");
    let msg = panic_message(err);
    assert!(
        msg.contains("outside a kvant runtime") && msg.contains("Runtime::spawn"),
        "unclear message: {msg}"
    );
}

#[test]
fn yield_now_outside_a_runtime_is_harmless() {
    for _ in 0..10 {
        kvant::yield_now();
    }
}

#[test]
fn task_builder_options() {
    let rt = runtime(2);
    let h = kvant::task::Builder::new()
        .name("worker-bee")
        .stack_size(64 * 1024)
        .preemptible(false)
        .spawn_on(&rt, || {
            let me = kvant::current();
            // An 8 KiB local array fits in the requested 64 KiB stack
            // (debug builds may hold a few copies of it).
            let buf = std::hint::black_box([1u8; 8 * 1024]);
            (
                me.name().map(str::to_owned),
                me.is_preemptible(),
                buf.iter().map(|&b| b as u32).sum::<u32>(),
            )
        })
        .unwrap();
    assert_eq!(h.name(), Some("worker-bee"));
    let (name, preemptible, sum) = join_ok(h);
    assert_eq!(name.as_deref(), Some("worker-bee"));
    assert!(!preemptible);
    assert_eq!(sum, 8 * 1024);

    // Builder::spawn inside a task uses the task's runtime.
    let v = rt.block_on(|| {
        let h = kvant::task::Builder::new()
            .name("inner")
            .spawn(|| kvant::current().name().map(str::to_owned))
            .expect("spawn inside a task");
        join_ok(h)
    });
    assert_eq!(v.as_deref(), Some("inner"));
}

#[test]
fn task_builder_rejects_bad_stack_sizes() {
    let rt = runtime(1);
    for bad in [0, 1024, kvant::MIN_STACK_SIZE - 1] {
        let err = kvant::task::Builder::new()
            .stack_size(bad)
            .spawn_on(&rt, || ())
            .unwrap_err();
        assert!(
            matches!(err, Error::StackTooSmall { requested, min }
                if requested == bad && min == kvant::MIN_STACK_SIZE),
            "stack_size({bad}): {err:?}"
        );
    }
    let err = kvant::task::Builder::new()
        .stack_size(kvant::MAX_STACK_SIZE + 1)
        .spawn_on(&rt, || ())
        .unwrap_err();
    assert!(matches!(err, Error::StackTooLarge { .. }), "{err:?}");
    // A rejected spawn leaves nothing behind.
    assert_eq!(rt.metrics().live_tasks, 0);
    // The minimum is accepted.
    let h = kvant::task::Builder::new()
        .stack_size(kvant::MIN_STACK_SIZE)
        .spawn_on(&rt, || 1)
        .unwrap();
    assert_eq!(join_ok(h), 1);
}

#[test]
fn task_builder_spawn_outside_a_runtime_is_an_error() {
    let err = kvant::task::Builder::new().spawn(|| ()).unwrap_err();
    assert!(matches!(err, Error::NoRuntime), "{err:?}");
}

#[test]
fn join_timeout_hands_the_handle_back() {
    let rt = runtime(2);
    let go = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let (g, p) = (go.clone(), progress.clone());
    let h = rt.spawn(move || {
        while !g.load(Ordering::Acquire) {
            p.fetch_add(1, Ordering::Relaxed);
            kvant::sleep(Duration::from_millis(1));
        }
        "done"
    });
    let started = Instant::now();
    let h = match h.join_timeout(Duration::from_millis(50)) {
        Ok(r) => panic!("the task cannot finish before `go`, got {r:?}"),
        Err(h) => h,
    };
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert!(!h.is_finished());
    // The task keeps running after the timeout.
    let before = progress.load(Ordering::Relaxed);
    wait_for("progress after join_timeout", || {
        progress.load(Ordering::Relaxed) > before
    });
    // A zero timeout is a poll.
    let h = h
        .join_timeout(Duration::ZERO)
        .expect_err("still not finished");
    go.store(true, Ordering::Release);
    assert_eq!(join_ok(h), "done");
}

#[test]
fn join_timeout_inside_a_task() {
    let rt = runtime(1);
    let r = rt.block_on(|| {
        let go = Arc::new(AtomicBool::new(false));
        let g = go.clone();
        let h = kvant::spawn(move || {
            while !g.load(Ordering::Acquire) {
                kvant::yield_now();
            }
            9
        });
        // On one worker the timed join must park the green thread (the
        // child runs meanwhile) and time out through the timer thread.
        let h = h
            .join_timeout(Duration::from_millis(20))
            .expect_err("the child waits for `go`");
        go.store(true, Ordering::Release);
        h.join_timeout(HANG)
    });
    assert_eq!(r.expect("finished in time").expect("no panic"), 9);
}

#[test]
fn join_timeout_on_a_finished_task_returns_at_once() {
    let rt = runtime(1);
    let h = rt.spawn(|| 3);
    wait_for("is_finished", || h.is_finished());
    let t = Instant::now();
    assert_eq!(h.join_timeout(Duration::ZERO).unwrap().unwrap(), 3);
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn block_on_inside_a_task_panics_clearly() {
    let rt = Arc::new(runtime(1));
    let inner = rt.clone();
    let msg = rt.block_on(move || {
        let err = catch_unwind(AssertUnwindSafe(|| inner.block_on(|| 1)))
            .expect_err("block_on inside a task must panic");
        panic_message(err)
    });
    assert!(
        msg.contains("inside a kvant task") && msg.contains("join"),
        "unclear message: {msg}"
    );
    // The runtime is still fine afterwards.
    assert_eq!(rt.block_on(|| 2), 2);
}

#[test]
fn hundred_thousand_tiny_tasks_reuse_stacks() {
    const N: usize = 100_000;
    let rt = runtime(2);
    let ran = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let ran = ran.clone();
            rt.spawn(move || {
                ran.fetch_add(1, Ordering::Relaxed);
                i
            })
        })
        .collect();
    let mut sum = 0usize;
    for h in handles {
        sum += join_ok(h);
    }
    assert_eq!(ran.load(Ordering::Relaxed), N);
    assert_eq!(sum, N * (N - 1) / 2);
    // A worker counts a task as completed just after waking its joiner.
    wait_for("all tasks counted", || {
        rt.metrics().total().completed == N as u64
    });
    let m = rt.metrics();
    eprintln!(
        "{N} tasks in {:?}; stacks mapped: {}; {:?}",
        started.elapsed(),
        m.stacks_mapped,
        m.total()
    );
    assert!(
        m.stacks_mapped < (N / 20) as u64,
        "stacks are not being reused: {} mapped for {N} tasks",
        m.stacks_mapped
    );
}

#[test]
fn tasks_spawned_inside_tasks_on_many_workers() {
    let rt = runtime(4);
    let total = rt.block_on(|| {
        let handles: Vec<_> = (0..100u64)
            .map(|i| kvant::spawn(move || (0..10u64).map(|j| i * j).sum::<u64>()))
            .collect();
        handles.into_iter().map(join_ok).sum::<u64>()
    });
    assert_eq!(total, 45 * 99 * 100 / 2);
    assert!(rt.metrics().total().spawned >= 101);
}

#[test]
fn dropped_handle_detaches_the_task() {
    let rt = runtime(2);
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    drop(rt.spawn(move || r.store(true, Ordering::Release)));
    wait_for("the detached task to run", || ran.load(Ordering::Acquire));
    wait_for("live_tasks == 0", || rt.metrics().live_tasks == 0);
}

#[test]
fn join_timeout_with_an_unrepresentable_deadline_waits() {
    let rt = runtime(1);
    let h = rt.spawn(|| 12);
    // Instant::now() + Duration::MAX overflows: this is a plain join.
    assert_eq!(h.join_timeout(Duration::MAX).unwrap().unwrap(), 12);
}

#[test]
fn a_task_joining_itself_panics_clearly() {
    let rt = runtime(1);
    let slot: Arc<std::sync::Mutex<Option<JoinHandle<()>>>> = Arc::default();
    let message: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let (s, m) = (slot.clone(), message.clone());
    let h = rt.spawn(move || {
        let me = loop {
            if let Some(h) = s.lock().unwrap().take() {
                break h;
            }
            kvant::yield_now();
        };
        let err = catch_unwind(AssertUnwindSafe(move || me.join()))
            .expect_err("joining yourself must panic, not hang");
        *m.lock().unwrap() = Some(panic_message(err));
    });
    let id = h.id();
    *slot.lock().unwrap() = Some(h);
    wait_for("the self-join attempt", || {
        message.lock().unwrap().is_some()
    });
    let msg = message.lock().unwrap().take().unwrap();
    assert!(
        msg.contains("join itself") && msg.contains(&id.to_string()),
        "unclear message: {msg}"
    );
}

#[test]
fn tasks_join_tasks_of_another_runtime() {
    let a = runtime(1);
    let b = Runtime::builder().workers(1).name("bside").build().unwrap();
    let go = Arc::new(AtomicBool::new(false));
    let g = go.clone();
    let in_b = b.spawn(move || {
        while !g.load(Ordering::Acquire) {
            kvant::yield_now();
        }
        "from b"
    });
    // A task of runtime A parks on B's task; B's completion wakes it on A.
    let waiter = a.spawn(move || join_ok(in_b));
    std::thread::sleep(Duration::from_millis(10));
    assert!(!waiter.is_finished());
    go.store(true, Ordering::Release);
    assert_eq!(join_ok(waiter), "from b");
    // And a task of A can spawn onto B explicitly.
    let b = Arc::new(b);
    let b2 = b.clone();
    let name = a.block_on(move || {
        let h = kvant::task::Builder::new()
            .spawn_on(&b2, worker_name)
            .unwrap();
        join_ok(h)
    });
    assert_eq!(name, "bside-worker-0", "spawn_on(&b) must run on B");
}

/// The current thread's name (not inlined: looked up afresh on each call).
#[inline(never)]
fn worker_name() -> String {
    std::thread::current().name().unwrap_or("").to_owned()
}

/// The live-task count is derived from each thread's own spawn and
/// completion counters (no shared counter): it must still be exact once
/// things settle, whichever threads spawned and finished the tasks. Tasks
/// spawned from two outside threads and from tasks on every worker (and
/// their children) park on a gate; the count is checked while they wait,
/// then after they all finished.
#[test]
fn live_tasks_is_exact_across_spawning_and_finishing_threads() {
    let rt = runtime(3);
    let (open_tx, open_rx) = kvant::channel::unbounded::<()>();
    let parents = 12;
    let children = 5;
    let outside: Vec<_> = (0..2)
        .map(|_| {
            let h = rt.handle();
            let rx = open_rx.clone();
            std::thread::spawn(move || {
                (0..parents / 2)
                    .map(|_| {
                        let rx = rx.clone();
                        h.spawn(move || {
                            let kids: Vec<_> = (0..children)
                                .map(|_| {
                                    let rx = rx.clone();
                                    kvant::spawn(move || {
                                        let _ = rx.recv();
                                    })
                                })
                                .collect();
                            let _ = rx.recv();
                            kids
                        })
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let handles: Vec<_> = outside
        .into_iter()
        .flat_map(|t| t.join().expect("spawning thread"))
        .collect();
    let expected = (parents + parents * children) as u64;
    wait_for("every task parked", || rt.metrics().live_tasks == expected);
    for _ in 0..expected {
        open_tx.send(()).expect("gate");
    }
    for h in handles {
        for kid in join_ok(h) {
            join_ok(kid);
        }
    }
    wait_for("live_tasks == 0", || rt.metrics().live_tasks == 0);
    let m = rt.metrics();
    let total = m.total();
    assert_eq!(total.spawned, expected, "{m:?}");
    assert_eq!(total.completed, expected, "{m:?}");
    let report = rt.shutdown_timeout(HANG);
    assert!(report.all_finished, "{report:?}");
}
