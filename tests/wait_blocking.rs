//! Waiting with deadlines (`join_timeout`, `wait`), sleeping, and
//! `spawn_blocking`: a program that bounds its waits stays responsive.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kvant::{Runtime, WaitFor, wait};

fn rt(workers: usize) -> Runtime {
    Runtime::builder()
        .workers(workers)
        .quantum(Some(Duration::from_millis(1)))
        .build()
        .unwrap()
}

/// A task that runs until `stop` is set, parking in between.
fn sleeper(r: &Runtime, stop: &Arc<AtomicBool>) -> kvant::JoinHandle<u32> {
    let stop = stop.clone();
    r.spawn(move || {
        while !stop.load(Ordering::Acquire) {
            kvant::sleep(Duration::from_millis(1));
        }
        7
    })
}

#[test]
fn wait_first_completed_returns_early_and_leaves_the_rest_running() {
    let r = rt(2);
    let stop = Arc::new(AtomicBool::new(false));
    let handles = vec![sleeper(&r, &stop), r.spawn(|| 1), sleeper(&r, &stop)];
    let res = wait(
        &handles,
        Some(Duration::from_secs(60)),
        WaitFor::FirstCompleted,
    );
    assert!(res.done.contains(&1), "{res:?}");
    assert!(
        res.pending.contains(&0) && res.pending.contains(&2),
        "{res:?}"
    );
    stop.store(true, Ordering::Release);
    let all = wait(
        &handles,
        Some(Duration::from_secs(60)),
        WaitFor::AllCompleted,
    );
    assert!(all.all_done(), "{all:?}");
    let vals: Vec<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(vals, vec![7, 1, 7]);
}

#[test]
fn wait_times_out_with_pending_tasks() {
    let r = rt(2);
    let stop = Arc::new(AtomicBool::new(false));
    let handles = vec![sleeper(&r, &stop), sleeper(&r, &stop)];
    let t = Instant::now();
    let res = wait(
        &handles,
        Some(Duration::from_millis(30)),
        WaitFor::AllCompleted,
    );
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert_eq!(res.done, Vec::<usize>::new());
    assert_eq!(res.pending, vec![0, 1]);
    stop.store(true, Ordering::Release);
    for h in handles {
        assert_eq!(
            h.join().unwrap(),
            7,
            "pending tasks kept running and finish normally"
        );
    }
}

#[test]
fn wait_first_panic_stops_at_the_panic() {
    let r = rt(2);
    let stop = Arc::new(AtomicBool::new(false));
    let handles = vec![
        sleeper(&r, &stop),
        r.spawn(|| -> u32 {
            kvant::sleep(Duration::from_millis(2));
            panic!("first failure")
        }),
    ];
    let res = wait(&handles, Some(Duration::from_secs(60)), WaitFor::FirstPanic);
    assert_eq!(
        (res.done.clone(), res.pending.clone()),
        (vec![1], vec![0]),
        "{res:?}"
    );
    stop.store(true, Ordering::Release);
    let mut hs = handles.into_iter();
    assert_eq!(hs.next().unwrap().join().unwrap(), 7);
    assert!(hs.next().unwrap().join().unwrap_err().is_panic());
}

#[test]
fn wait_inside_a_task_parks_only_that_task() {
    let r = rt(1);
    let progress = Arc::new(AtomicUsize::new(0));
    let p = progress.clone();
    // One worker: if `wait` blocked the worker, the counter task never ran.
    let counter = r.spawn(move || {
        for _ in 0..20 {
            p.fetch_add(1, Ordering::SeqCst);
            kvant::yield_now();
        }
    });
    let seen = r.block_on(move || {
        let slow = vec![kvant::spawn(|| kvant::sleep(Duration::from_millis(20)))];
        let res = wait(&slow, None, WaitFor::AllCompleted);
        assert!(res.all_done());
        counter.join().unwrap();
        0
    });
    assert_eq!(seen, 0);
    assert_eq!(progress.load(Ordering::SeqCst), 20);
}

#[test]
fn wait_on_no_handles_returns_at_once() {
    let none: Vec<kvant::JoinHandle<()>> = Vec::new();
    let res = wait(&none, None, WaitFor::FirstCompleted);
    assert!(res.done.is_empty() && res.pending.is_empty());
}

#[test]
fn sleep_orders_wakeups_by_deadline() {
    let r = rt(2);
    let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let hs: Vec<_> = [30u64, 10, 20]
        .into_iter()
        .map(|ms| {
            let order = order.clone();
            r.spawn(move || {
                kvant::sleep(Duration::from_millis(ms));
                order.lock().push(ms);
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(*order.lock(), vec![10, 20, 30]);
}

#[test]
fn sleep_never_returns_early() {
    let r = rt(2);
    let slept = r.block_on(|| {
        let t = Instant::now();
        kvant::sleep(Duration::from_millis(15));
        t.elapsed()
    });
    assert!(slept >= Duration::from_millis(15), "{slept:?}");
    let t = Instant::now();
    kvant::sleep(Duration::from_millis(5)); // outside a runtime: the OS thread sleeps
    assert!(t.elapsed() >= Duration::from_millis(5));
}

#[test]
fn spawn_blocking_runs_on_other_threads_and_joins_from_tasks() {
    let r = rt(1);
    let worker_name = r.block_on(|| std::thread::current().name().map(str::to_owned));
    let (v, name) = r.block_on(|| {
        let h = kvant::spawn_blocking(|| {
            std::thread::sleep(Duration::from_millis(10));
            (42, std::thread::current().name().map(str::to_owned))
        });
        h.join().unwrap()
    });
    assert_eq!(v, 42);
    assert_ne!(
        name, worker_name,
        "blocking work must not run on the worker"
    );
    assert!(name.unwrap().contains("blocking"));
    let h = r.spawn_blocking(|| -> u8 { panic!("blocking boom") });
    assert!(h.join().unwrap_err().is_panic());
}

#[test]
fn blocking_work_does_not_stall_the_worker() {
    let r = rt(1);
    let done = r.block_on(|| {
        let blockers: Vec<_> = (0..4)
            .map(|_| kvant::spawn_blocking(|| std::thread::sleep(Duration::from_millis(50))))
            .collect();
        // While they block their threads, this worker keeps running tasks.
        let quick = kvant::spawn(|| 5);
        let q = quick.join().unwrap();
        for b in blockers {
            b.join().unwrap();
        }
        q
    });
    assert_eq!(done, 5);
}
