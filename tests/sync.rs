//! kvant::sync: every primitive parks only the green thread, works from OS
//! threads and across the two, and keeps its guarantees under preemption.
//! Every wait on a task goes through `join_ok()`, a generous `join_timeout` that
//! fails the test instead of hanging it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use kvant::Runtime;
use kvant::sync::{Barrier, Condvar, Mutex, Semaphore};

mod common;
use common::{burn, join_ok, rt, wait_for};

const Q50: Option<Duration> = Some(Duration::from_micros(50));
const Q1MS: Option<Duration> = Some(Duration::from_millis(1));

#[test]
fn mutex_counter_on_1_2_4_workers_preemptive_and_cooperative() {
    for workers in [1, 2, 4] {
        for quantum in [None, Q50, Q1MS] {
            let rt = rt(workers, quantum);
            let m = Arc::new(Mutex::new(0u64));
            let inside = Arc::new(AtomicUsize::new(0));
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    let (m, inside) = (m.clone(), inside.clone());
                    rt.spawn(move || {
                        for i in 0..300 {
                            let mut g = m.lock();
                            assert_eq!(inside.fetch_add(1, SeqCst), 0, "two holders at once");
                            let v = *g; // a non-atomic read-modify-write
                            burn(0, 1000); // long enough for the quantum to hit in here
                            if i % 7 == 0 {
                                kvant::yield_now(); // contention in cooperative mode too
                            }
                            *g = v + 1;
                            inside.fetch_sub(1, SeqCst);
                        }
                    })
                })
                .collect();
            tasks.into_iter().for_each(join_ok);
            assert_eq!(*m.lock(), 16 * 300, "workers={workers} quantum={quantum:?}");
        }
    }
}

#[test]
fn waiting_for_a_lock_parks_only_the_green_thread() {
    // One cooperative worker: if B's lock() blocked the worker, C could never
    // run, A would never release, and the hang guard would fire.
    let rt = rt(1, None);
    let m = Arc::new(Mutex::new(()));
    let (held, c_ran) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let a = {
        let (m, held, c_ran) = (m.clone(), held.clone(), c_ran.clone());
        rt.spawn(move || {
            let _g = m.lock();
            held.store(true, SeqCst);
            while !c_ran.load(SeqCst) {
                kvant::yield_now();
            }
        })
    };
    let b = {
        let (m, held) = (m.clone(), held.clone());
        rt.spawn(move || {
            while !held.load(SeqCst) {
                kvant::yield_now();
            }
            drop(m.lock());
        })
    };
    let c = {
        let c_ran = c_ran.clone();
        rt.spawn(move || c_ran.store(true, SeqCst))
    };
    join_ok(a);
    join_ok(b);
    join_ok(c);
}

#[test]
fn mutex_try_lock_and_timeouts() {
    // Usable in statics (const constructors).
    static GLOBAL: Mutex<u32> = Mutex::new(0);
    static _CV: Condvar = Condvar::new();
    static _SEM: Semaphore = Semaphore::new(1);
    static _BARRIER: Barrier = Barrier::new(1);
    *GLOBAL.lock() += 1;
    let m = Mutex::new(1);
    let g = m.lock();
    assert!(m.try_lock().is_none());
    let t0 = Instant::now();
    assert!(m.try_lock_for(Duration::from_millis(20)).is_none());
    assert!(t0.elapsed() >= Duration::from_millis(20));
    drop(g);
    assert_eq!(*m.try_lock_for(Duration::from_millis(20)).unwrap(), 1);

    // The same from a task, against a lock held by an OS thread.
    let rt = rt(1, None);
    let m = Arc::new(Mutex::new(0));
    let g = m.lock();
    let m2 = m.clone();
    let t = rt.spawn(move || m2.try_lock_for(Duration::from_millis(20)).is_none());
    assert!(join_ok(t));
    drop(g);
}

#[test]
fn contended_waiter_is_not_starved_by_a_barging_loop() {
    // A hog relocks in a tight loop; the other task must still get the lock
    // (the hand-off after FAIR_AFTER bounds its wait).
    for quantum in [None, Q50] {
        let rt = rt(2, quantum);
        let m = Arc::new(Mutex::new(0u64));
        let stop = Arc::new(AtomicBool::new(false));
        let hog = {
            let (m, stop) = (m.clone(), stop.clone());
            rt.spawn(move || {
                while !stop.load(SeqCst) {
                    let mut g = m.lock();
                    *g = g.wrapping_add(burn(0, 200));
                    if quantum.is_none() {
                        drop(g);
                        kvant::yield_now();
                    }
                }
            })
        };
        let other = {
            let (m, stop) = (m.clone(), stop.clone());
            rt.spawn(move || {
                for _ in 0..50 {
                    drop(m.lock());
                }
                stop.store(true, SeqCst);
            })
        };
        join_ok(other);
        join_ok(hog);
    }
}

#[test]
fn cross_thread_and_task_locking() {
    let rt = rt(1, None);
    let m = Arc::new(Mutex::new(Vec::new()));

    // An OS thread holds the lock; a task waits for it while another task on
    // the only worker keeps running.
    let g = m.lock();
    let waiter = {
        let m = m.clone();
        rt.spawn(move || m.lock().push("task"))
    };
    let other = rt.spawn(|| 7);
    assert_eq!(join_ok(other), 7);
    std::thread::sleep(Duration::from_millis(5));
    assert!(!waiter.is_finished());
    drop(g);
    join_ok(waiter);

    // A task holds the lock; an OS thread waits for it.
    let (held, go) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let holder = {
        let (m, held, go) = (m.clone(), held.clone(), go.clone());
        rt.spawn(move || {
            let mut g = m.lock();
            held.store(true, SeqCst);
            while !go.load(SeqCst) {
                kvant::sleep(Duration::from_millis(1));
            }
            g.push("holder");
        })
    };
    wait_for("the task holds the lock", || held.load(SeqCst));
    let thread = {
        let m = m.clone();
        std::thread::spawn(move || m.lock().push("thread"))
    };
    go.store(true, SeqCst);
    thread.join().unwrap();
    join_ok(holder);
    assert_eq!(*m.lock(), ["task", "holder", "thread"]);

    // Mixed counter: two OS threads and four tasks on two workers.
    let rt = Runtime::builder().workers(2).quantum(Q50).build().unwrap();
    let m = Arc::new(Mutex::new(0u64));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || (0..2000).for_each(|_| *m.lock() += 1))
        })
        .collect();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let m = m.clone();
            rt.spawn(move || (0..2000).for_each(|_| *m.lock() += 1))
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    tasks.into_iter().for_each(join_ok);
    assert_eq!(*m.lock(), 6 * 2000);
}

type Player = Box<dyn FnOnce() + Send>;

/// Two players that alternate strictly through a Mutex + Condvar for
/// `rounds` turns in total.
fn ping_pong(rounds: u64) -> (Player, Player) {
    let state = Arc::new((Mutex::new((0usize, 0u64)), Condvar::new()));
    let player = |me: usize| {
        let state = state.clone();
        Box::new(move || {
            let (m, cv) = &*state;
            let mut g = m.lock();
            loop {
                cv.wait_while(&mut g, |(turn, n)| *turn != me && *n < rounds);
                if g.1 >= rounds {
                    cv.notify_all();
                    return;
                }
                g.1 += 1;
                g.0 = 1 - me;
                cv.notify_one();
            }
        }) as Player
    };
    (player(0), player(1))
}

#[test]
fn mutex_condvar_ping_pong_has_no_lost_wakeup() {
    for (workers, quantum) in [(1, None), (2, Q50), (4, Q1MS), (2, None)] {
        let rt = rt(workers, quantum);
        let (a, b) = ping_pong(2000);
        let (a, b) = (rt.spawn(a), rt.spawn(b));
        join_ok(a);
        join_ok(b);
    }
    // Task against OS thread.
    let rt = rt(1, None);
    let (a, b) = ping_pong(500);
    let task = rt.spawn(a);
    let thread = std::thread::spawn(b);
    join_ok(task);
    thread.join().unwrap();
}

#[test]
fn condvar_timeouts_fire_and_notify_counts_are_exact() {
    let rt = rt(2, Q1MS);
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let p = pair.clone();
    let t = rt.spawn(move || {
        let (m, cv) = &*p;
        let mut g = m.lock();
        let t0 = Instant::now();
        let r = cv.wait_timeout(&mut g, Duration::from_millis(20));
        let r2 = cv.wait_timeout_while(&mut g, |ready| !*ready, Duration::from_millis(10));
        (r.timed_out(), r2.timed_out(), t0.elapsed())
    });
    let (timed_out, timed_out2, elapsed) = join_ok(t);
    assert!(timed_out && timed_out2);
    assert!(elapsed >= Duration::from_millis(30), "{elapsed:?}");

    // From an OS thread too.
    let (m, cv) = &*pair;
    let mut g = m.lock();
    assert!(
        cv.wait_timeout(&mut g, Duration::from_millis(5))
            .timed_out()
    );
    drop(g);
    assert!(!cv.notify_one());
    assert_eq!(cv.notify_all(), 0);

    // notify_all wakes exactly the waiters registered before it.
    let state = Arc::new((Mutex::new((0usize, false)), Condvar::new()));
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let s = state.clone();
            rt.spawn(move || {
                let (m, cv) = &*s;
                let mut g = m.lock();
                g.0 += 1; // registered as a waiter before the lock is released
                cv.wait_while(&mut g, |(_, go)| !*go);
            })
        })
        .collect();
    let (m, cv) = &*state;
    wait_for("all five wait", || {
        let mut g = m.lock();
        if g.0 < 5 {
            return false;
        }
        g.1 = true;
        assert_eq!(cv.notify_all(), 5);
        true
    });
    waiters.into_iter().for_each(join_ok);
}
