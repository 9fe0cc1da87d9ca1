//! kvant::sync coordination primitives (Semaphore, Barrier, WaitGroup,
//! RwLock) and shutdown of their waiters; Mutex and Condvar are in
//! `tests/sync.rs`. Same rules: green parking, OS threads, preemption.
//! Every wait on a task goes through `join_ok()`, a generous `join_timeout` that
//! fails the test instead of hanging it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use kvant::sync::{Barrier, Condvar, Mutex, RwLock, Semaphore, WaitGroup};

mod common;
use common::{HANG, burn, join_ok, rt, wait_for};

const Q50: Option<Duration> = Some(Duration::from_micros(50));
const Q1MS: Option<Duration> = Some(Duration::from_millis(1));

#[test]
fn semaphore_limits_concurrency() {
    for (workers, quantum) in [(1, None), (4, Q50)] {
        let rt = rt(workers, quantum);
        let sem = Arc::new(Semaphore::new(3));
        let (inside, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                let (sem, inside, max) = (sem.clone(), inside.clone(), max.clone());
                rt.spawn(move || {
                    for _ in 0..20 {
                        let _p = if i % 2 == 0 {
                            sem.acquire()
                        } else {
                            sem.acquire_timeout(HANG).unwrap()
                        };
                        let n = inside.fetch_add(1, SeqCst) + 1;
                        max.fetch_max(n, SeqCst);
                        kvant::yield_now();
                        burn(0, 100);
                        inside.fetch_sub(1, SeqCst);
                    }
                })
            })
            .collect();
        tasks.into_iter().for_each(join_ok);
        let max = max.load(SeqCst);
        assert!((1..=3).contains(&max), "max concurrent {max}");
        assert_eq!(sem.available_permits(), 3);
    }
}

#[test]
fn semaphore_try_timeout_forget_and_add_permits() {
    let sem = Arc::new(Semaphore::new(1));
    let p = sem.try_acquire().unwrap();
    assert!(sem.try_acquire().is_none());
    let t0 = Instant::now();
    assert!(sem.acquire_timeout(Duration::from_millis(10)).is_none());
    assert!(t0.elapsed() >= Duration::from_millis(10));
    p.forget();
    assert_eq!(sem.available_permits(), 0);
    sem.release();
    assert_eq!(sem.available_permits(), 1);

    // A waiting task gets permits added later; an owned permit moves into a task.
    let rt = rt(1, None);
    let _held = sem.try_acquire().unwrap();
    let s = sem.clone();
    let waiter = rt.spawn(move || s.acquire_owned());
    std::thread::sleep(Duration::from_millis(5));
    assert!(!waiter.is_finished());
    sem.add_permits(1);
    let owned = join_ok(waiter);
    assert_eq!(sem.available_permits(), 0);
    drop(owned);
    assert_eq!(sem.available_permits(), 1);
}

#[test]
fn barrier_releases_all_with_exactly_one_leader() {
    const N: usize = 5;
    const ROUNDS: usize = 4;
    let rt = rt(2, Q50);
    let barrier = Arc::new(Barrier::new(N));
    let arrived: Arc<Vec<AtomicUsize>> =
        Arc::new((0..ROUNDS).map(|_| AtomicUsize::new(0)).collect());
    let leaders: Arc<Vec<AtomicUsize>> =
        Arc::new((0..ROUNDS).map(|_| AtomicUsize::new(0)).collect());
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let (b, arrived, leaders) = (barrier.clone(), arrived.clone(), leaders.clone());
            rt.spawn(move || {
                for r in 0..ROUNDS {
                    arrived[r].fetch_add(1, SeqCst);
                    if b.wait().is_leader() {
                        leaders[r].fetch_add(1, SeqCst);
                    }
                    assert_eq!(
                        arrived[r].load(SeqCst),
                        N,
                        "released before everyone arrived"
                    );
                }
            })
        })
        .collect();
    tasks.into_iter().for_each(join_ok);
    for l in leaders.iter() {
        assert_eq!(l.load(SeqCst), 1);
    }
    assert!(Barrier::new(0).wait().is_leader());
}

#[test]
fn waitgroup_waits_for_every_clone() {
    let rt = rt(2, Q1MS);
    let wg = WaitGroup::new();
    let hits = Arc::new(AtomicUsize::new(0));
    for _ in 0..10 {
        let (wg, hits) = (wg.clone(), hits.clone());
        rt.spawn(move || {
            kvant::yield_now();
            hits.fetch_add(1, SeqCst);
            drop(wg);
        });
    }
    wg.wait();
    assert_eq!(hits.load(SeqCst), 10);

    // Waiting inside a task, and a timeout while a clone is held.
    let wg = WaitGroup::new();
    let held = wg.clone();
    let t = rt.spawn(move || wg.wait_timeout(Duration::from_millis(10)));
    assert!(!join_ok(t));
    assert_eq!(held.count(), 1);
    let inner = held.clone();
    let t = rt.spawn(move || inner.wait());
    drop(held);
    join_ok(t);
}

#[test]
fn rwlock_many_readers_and_writers_stay_consistent() {
    for (workers, quantum) in [(1, None), (2, Q50), (4, Q1MS)] {
        let rt = rt(workers, quantum);
        let lock = Arc::new(RwLock::new((0u64, 0u64)));
        let writers: Vec<_> = (0..3)
            .map(|_| {
                let l = lock.clone();
                rt.spawn(move || {
                    for _ in 0..200 {
                        let mut g = l.write();
                        g.0 += 1;
                        kvant::yield_now(); // readers must not see the halfway state
                        g.1 += 1;
                    }
                })
            })
            .collect();
        let readers: Vec<_> = (0..6)
            .map(|_| {
                let l = lock.clone();
                rt.spawn(move || {
                    for _ in 0..300 {
                        let g = l.read();
                        assert_eq!(g.0, g.1, "torn read");
                        burn(0, 20);
                    }
                })
            })
            .collect();
        writers.into_iter().chain(readers).for_each(join_ok);
        assert_eq!(*lock.read(), (600, 600));
    }
}

#[test]
fn rwlock_readers_share_and_a_queued_writer_blocks_new_readers() {
    let rt = rt(1, None);
    let lock = Arc::new(RwLock::new(0));
    let r1 = lock.read();
    let r2 = lock.try_read().expect("readers share");
    assert!(lock.try_write().is_none());
    let writer = {
        let l = lock.clone();
        rt.spawn(move || *l.write() += 1)
    };
    wait_for("the writer queued", || lock.try_read().is_none());
    assert!(
        lock.try_read().is_none(),
        "a queued writer must block new readers"
    );
    assert!(lock.try_read_for(Duration::from_millis(5)).is_none());
    drop((r1, r2));
    join_ok(writer);
    let w = lock.write();
    let r = kvant::sync::RwLockWriteGuard::downgrade(w);
    assert_eq!(*r, 1);
    assert!(lock.try_read().is_some());
}

#[test]
fn shutdown_withdraws_cancelled_waiters() {
    // Tasks parked in every primitive are cancelled by a shutdown; none of
    // them may stay queued, or a later unlock/permit/message would be handed
    // to a dead waiter and lost.
    let rt = rt(2, None);
    let m = Arc::new(Mutex::new(0));
    let cv = Arc::new(Condvar::new());
    let sem = Arc::new(Semaphore::new(0));
    let rw = Arc::new(RwLock::new(0));
    let barrier = Arc::new(Barrier::new(2));
    let (tx, rx) = kvant::channel::unbounded::<u32>();
    let g = m.lock();
    let r = rw.read();
    let parked = Arc::new(AtomicUsize::new(0));
    let mut n = 0;
    let mut spawn = |f: Box<dyn FnOnce() + Send>| {
        let parked = parked.clone();
        n += 1;
        drop(rt.spawn(move || {
            parked.fetch_add(1, SeqCst);
            f()
        }));
    };
    for _ in 0..2 {
        let m = m.clone();
        spawn(Box::new(move || drop(m.lock())));
        let rw = rw.clone();
        spawn(Box::new(move || drop(rw.write())));
        let sem = sem.clone();
        spawn(Box::new(move || drop(sem.acquire())));
        let rx = rx.clone();
        spawn(Box::new(move || {
            let _ = rx.recv();
        }));
    }
    let (m2, cv2) = (Arc::new(Mutex::new(())), cv.clone());
    let m3 = m2.clone();
    spawn(Box::new(move || cv2.wait(&mut m3.lock())));
    let b = barrier.clone();
    spawn(Box::new(move || {
        b.wait();
    }));
    wait_for("every task started", || parked.load(SeqCst) == n);
    std::thread::sleep(Duration::from_millis(20)); // let them reach their park
    let report = rt.shutdown_timeout(Duration::from_millis(10));
    assert_eq!(report.cancelled, n, "{report:?}");

    std::thread::sleep(kvant::sync::FAIR_AFTER * 2); // a hand-off would be due now
    drop(g);
    assert!(
        m.try_lock_for(Duration::from_secs(5)).is_some(),
        "mutex handed to a dead waiter"
    );
    drop(r);
    assert!(rw.try_write().is_some(), "rwlock granted to a dead waiter");
    sem.add_permits(1);
    assert_eq!(sem.available_permits(), 1, "permit handed to a dead waiter");
    assert!(
        !cv.notify_one(),
        "a cancelled condvar waiter is still queued"
    );
    tx.send(5).unwrap();
    assert_eq!(rx.try_recv(), Ok(5), "message handed to a dead receiver");
    let b2 = barrier.clone();
    let t = std::thread::spawn(move || b2.wait().is_leader());
    let leader = barrier.wait().is_leader();
    assert!(
        leader != t.join().unwrap(),
        "the barrier round is off by the cancelled party"
    );
}
