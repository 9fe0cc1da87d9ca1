//! The bridge to async code: tokio awaits kvant tasks without blocking its
//! thread, and a kvant task drives futures parking only its green thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use kvant::{Runtime, block_on_future};

mod common;
use common::{HANG, burn, join_ok};

/// A tokio current-thread runtime awaits 10,000 kvant tasks while a tokio
/// interval on the same thread keeps ticking: had an `.await` blocked the
/// thread, no tick could happen until every task was done.
#[test]
fn tokio_awaits_ten_thousand_kvant_tasks_and_its_interval_keeps_ticking() {
    const TASKS: u64 = 10_000;
    let rt = Runtime::builder().workers(2).build().unwrap();
    let tokio_rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let expected: u64 = (0..TASKS).map(|i| burn(i, 20_000) & 0xff).sum();
    let (sum, ticks_during, late_p99) = tokio_rt.block_on(async {
        let done = Arc::new(AtomicBool::new(false));
        let ticker = {
            let done = done.clone();
            tokio::spawn(async move {
                let period = Duration::from_millis(2);
                let mut interval = tokio::time::interval(period);
                let mut lateness = Vec::new();
                let start = tokio::time::Instant::now();
                let mut n = 0u32;
                while !done.load(Ordering::Acquire) {
                    let at = interval.tick().await;
                    lateness.push(at.elapsed());
                    n += 1;
                    let _ = start;
                }
                lateness.sort();
                (n, lateness[lateness.len() * 99 / 100])
            })
        };
        let handles: Vec<_> = (0..TASKS)
            .map(|i| rt.spawn(move || burn(i, 20_000) & 0xff))
            .collect();
        let mut sum = 0;
        for h in handles {
            sum += h.await.unwrap();
        }
        done.store(true, Ordering::Release);
        let (n, p99) = ticker.await.unwrap();
        (sum, n, p99)
    });
    eprintln!(
        "awaited {TASKS} kvant tasks: the tokio interval ticked {ticks_during} times, lateness p99 {late_p99:?}"
    );
    assert_eq!(sum, expected);
    assert!(
        ticks_during >= 3,
        "the interval ticked {ticks_during} times while tokio awaited the tasks"
    );
}

/// A future that is ready after `left` polls, each woken from another
/// thread a little later.
struct Countdown {
    left: u32,
    polls: Arc<AtomicU64>,
}

impl Future for Countdown {
    type Output = &'static str;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<&'static str> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        if self.left == 0 {
            return Poll::Ready("done");
        }
        self.left -= 1;
        let waker = cx.waker().clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1));
            waker.wake();
        });
        Poll::Pending
    }
}

#[test]
fn a_task_drives_a_hand_written_future_and_its_worker_runs_others_meanwhile() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    let polls = Arc::new(AtomicU64::new(0));
    let other_ran = Arc::new(AtomicU64::new(0));
    let h = {
        let polls = polls.clone();
        rt.spawn(move || block_on_future(Countdown { left: 20, polls }))
    };
    // One worker: these run only while the first task is parked.
    let others: Vec<_> = (0..20)
        .map(|_| {
            let other_ran = other_ran.clone();
            rt.spawn(move || other_ran.fetch_add(1, Ordering::Relaxed))
        })
        .collect();
    assert_eq!(join_ok(h), "done");
    for o in others {
        join_ok(o);
    }
    assert_eq!(polls.load(Ordering::Relaxed), 21, "polled once per wake-up");
    assert_eq!(other_ran.load(Ordering::Relaxed), 20);
    // And outside a task, on an OS thread.
    let polls = Arc::new(AtomicU64::new(0));
    assert_eq!(block_on_future(Countdown { left: 3, polls }), "done");
}

/// A tokio oneshot filled by a tokio runtime on its own thread, received in
/// a kvant task on one worker: the sender waits until another kvant task
/// has run, which it can only while the receiver's green thread is parked.
#[test]
fn a_task_awaits_a_tokio_oneshot_and_its_worker_is_not_blocked() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<u64>();
    let other_ran = Arc::new(AtomicBool::new(false));
    let receiver = rt.spawn(move || block_on_future(rx).unwrap());
    {
        let other_ran = other_ran.clone();
        tokio_rt.spawn(async move {
            let deadline = Instant::now() + HANG;
            while !other_ran.load(Ordering::Acquire) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let _ = tx.send(7);
        });
    }
    // Spawned after the receiver: on one worker it runs only if the
    // receiver parked its green thread rather than the worker's thread.
    let other = {
        let other_ran = other_ran.clone();
        rt.spawn(move || other_ran.store(true, Ordering::Release))
    };
    assert_eq!(join_ok(receiver), 7);
    join_ok(other);
    assert_eq!(
        rt.metrics().total().kernel_blocks,
        0,
        "the worker's thread blocked"
    );
}

/// Aborting a task parked in `block_on_future` drops the future.
#[test]
fn aborting_a_task_drops_the_future_it_drives() {
    struct Never(Arc<AtomicBool>);
    impl Future for Never {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            Poll::Pending
        }
    }
    impl Drop for Never {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let rt = Runtime::builder().workers(1).build().unwrap();
    let dropped = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let h = {
        let (dropped, started) = (dropped.clone(), started.clone());
        rt.spawn(move || {
            started.store(true, Ordering::Release);
            block_on_future(Never(dropped))
        })
    };
    common::wait_for("the task to start", || started.load(Ordering::Acquire));
    h.abort_handle().abort();
    match h.join_timeout(HANG) {
        Ok(Err(e)) => assert!(e.is_aborted(), "{e}"),
        Ok(Ok(())) => panic!("a never-ready future completed"),
        Err(_) => panic!("the aborted task did not end"),
    }
    assert!(
        dropped.load(Ordering::Acquire),
        "the future was not dropped"
    );
}

/// A `JoinSet`'s results, awaited from tokio in completion order: the
/// quickest task first, every result once.
#[test]
fn tokio_awaits_a_join_sets_results_in_completion_order() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let tokio_rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut set = kvant::JoinSet::new();
    // One slow task first, then many quick ones.
    set.spawn_on(&rt, || {
        kvant::sleep(Duration::from_millis(200));
        u64::MAX
    });
    for i in 0..200u64 {
        set.spawn_on(&rt, move || burn(i, 1000) & 0xff);
    }
    let expected: u64 = (0..200u64).map(|i| burn(i, 1000) & 0xff).sum();
    let got = tokio_rt.block_on(async move {
        let mut order = Vec::new();
        while let Some(r) = set.join_next_async().await {
            order.push(r.unwrap());
        }
        order
    });
    assert_eq!(got.len(), 201);
    assert_eq!(*got.last().unwrap(), u64::MAX, "the slow task came last");
    assert_eq!(got[..200].iter().sum::<u64>(), expected);
}

/// A bounded `futures` channel between two green threads on one worker:
/// the sender's `send` and the receiver's `next` each park only their own
/// green thread (capacity 1 makes both wait in turn), every message
/// arrives once and in order, and the worker's thread never blocks.
#[test]
fn two_tasks_talk_over_a_futures_channel_on_one_worker() {
    use futures_util::{SinkExt, StreamExt};
    const N: u64 = 2_000;
    let rt = Runtime::builder().workers(1).build().unwrap();
    let (mut tx, mut rx) = futures_channel::mpsc::channel::<u64>(1);
    let consumer = rt.spawn(move || {
        let mut got = Vec::new();
        while let Some(v) = block_on_future(rx.next()) {
            got.push(v);
        }
        got
    });
    let producer = rt.spawn(move || {
        for i in 0..N {
            block_on_future(tx.send(i)).unwrap();
        }
    });
    join_ok(producer);
    assert_eq!(join_ok(consumer), (0..N).collect::<Vec<_>>());
    assert_eq!(
        rt.metrics().total().kernel_blocks,
        0,
        "the worker's thread blocked"
    );
    // A oneshot filled from an OS thread wakes a parked task.
    let (otx, orx) = futures_channel::oneshot::channel::<&str>();
    let h = rt.spawn(move || block_on_future(orx));
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(5));
        otx.send("filled").unwrap();
    });
    assert_eq!(join_ok(h), Ok("filled"));
}
