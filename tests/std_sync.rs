//! std::sync used the way users write it, inside preemptible and cooperative
//! tasks: a plain `lock()` while another task on the same worker holds the
//! guard (preempted, yielded or asleep), `RwLock`, `Condvar`, `LazyLock`,
//! `OnceLock` and `Barrier`. A contended wait blocks the worker thread in the
//! kernel; unless the runtime switches the waiter out there, the holder
//! (pinned to that worker) never runs again and the worker deadlocks.
//!
//! Every case runs on 1 and 2 workers at a 1 ms and a 50 µs quantum, bounded
//! by a watchdog: a deadlock fails the test instead of hanging the suite.

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Condvar, LazyLock, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use kvant::{JoinHandle, Runtime};

/// A run that takes well under a second takes this long only when deadlocked.
const WATCHDOG: Duration = Duration::from_secs(30);

const MATRIX: [(usize, Duration); 4] = [
    (1, Duration::from_millis(1)),
    (1, Duration::from_micros(50)),
    (2, Duration::from_millis(1)),
    (2, Duration::from_micros(50)),
];

/// About `n` × a few ns of arithmetic the optimizer cannot remove.
#[inline(never)]
fn work(n: u64) -> u64 {
    let mut x = 0u64;
    for i in 0..n {
        x = x.wrapping_mul(31).wrapping_add(black_box(i));
    }
    x
}

fn runtime(workers: usize, quantum: Option<Duration>) -> Runtime {
    Runtime::builder()
        .workers(workers)
        .quantum(quantum)
        .build()
        .unwrap()
}

/// Join every handle before one shared deadline; name the case on failure.
fn join_all<T: Send + 'static>(case: &str, handles: Vec<JoinHandle<T>>) -> Vec<T> {
    let deadline = Instant::now() + WATCHDOG;
    handles
        .into_iter()
        .enumerate()
        .map(|(i, h)| match h.join_deadline(deadline) {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => panic!("{case}: task {i} failed: {e}"),
            Err(_) => panic!("{case}: task {i} still blocked after {WATCHDOG:?}: deadlock"),
        })
        .collect()
}

/// The headline: tasks keep a std `Mutex` guard while computing.
#[test]
fn mutex_guard_held_while_computing() {
    for (workers, q) in MATRIX {
        guard_held_while_computing(workers, q, false);
    }
}

/// The same with the quantum on the workers' CPU clocks: a waiter blocked
/// in the futex uses no CPU, so its clock never ticks; the monitor must
/// still switch it out for the holder preempted beside it (this hung the
/// storm before the monitor kept that case).
#[test]
fn mutex_guard_held_while_computing_cpu_clock_quantum() {
    for (workers, q) in MATRIX {
        guard_held_while_computing(workers, q, true);
    }
}

fn guard_held_while_computing(workers: usize, q: Duration, cpu_clock: bool) {
    {
        let case = format!("{workers} worker(s), quantum {q:?}, cpu clock {cpu_clock}");
        let rt = Runtime::builder()
            .workers(workers)
            .quantum(Some(q))
            .cpu_clock_quantum(cpu_clock)
            .build()
            .unwrap();
        let m = Arc::new(Mutex::new(0u64));
        let handles = (0..8)
            .map(|_| {
                let m = m.clone();
                rt.spawn(move || {
                    for _ in 0..100 {
                        let mut g = m.lock().unwrap();
                        black_box(work(5_000));
                        *g += 1;
                    }
                })
            })
            .collect();
        join_all(&case, handles);
        assert_eq!(*m.lock().unwrap(), 800, "{case}");
        let t = rt.metrics().total();
        eprintln!(
            "{case}: {} preemptions, {} sync-wait switches",
            t.preemptions, t.sync_switches
        );
        assert!(rt.preemption_mode().is_preemptive(), "{case}");
    }
}

/// The switch really is what saves it: on one worker, holders are preempted
/// while holding, and waiters are switched out.
#[test]
fn sync_wait_switches_are_counted() {
    let rt = runtime(1, Some(Duration::from_millis(1)));
    let m = Arc::new(Mutex::new(0u64));
    let handles = (0..4)
        .map(|_| {
            let m = m.clone();
            rt.spawn(move || {
                for _ in 0..20 {
                    let mut g = m.lock().unwrap();
                    // Hold across several quanta: the holder is preempted
                    // with the lock held, and the next task blocks on it.
                    let until = Instant::now() + Duration::from_millis(3);
                    while Instant::now() < until {
                        black_box((&mut *g, work(100)));
                    }
                    *g += 1;
                }
            })
        })
        .collect();
    join_all("1 worker, 1 ms", handles);
    assert_eq!(*m.lock().unwrap(), 80);
    let t = rt.metrics().total();
    assert!(t.preemptions > 0 && t.sync_switches > 0, "{t:?}");
}

#[test]
fn rwlock_readers_and_writers() {
    for (workers, q) in MATRIX {
        let case = format!("{workers} worker(s), quantum {q:?}");
        let rt = runtime(workers, Some(q));
        let l = Arc::new(RwLock::new(vec![0u64; 16]));
        let reads = Arc::new(AtomicU64::new(0));
        let handles = (0..8)
            .map(|i| {
                let (l, reads) = (l.clone(), reads.clone());
                rt.spawn(move || {
                    for _ in 0..60 {
                        if i % 2 == 0 {
                            let mut g = l.write().unwrap();
                            for v in g.iter_mut() {
                                *v += 1;
                            }
                            black_box(work(2_000));
                        } else {
                            let g = l.read().unwrap();
                            let first = g[0];
                            black_box(work(2_000));
                            // A writer never runs while a reader holds it.
                            assert!(g.iter().all(|&v| v == first));
                            reads.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        join_all(&case, handles);
        assert!(l.read().unwrap().iter().all(|&v| v == 4 * 60), "{case}");
        assert_eq!(reads.load(Ordering::Relaxed), 4 * 60, "{case}");
    }
}

#[test]
fn condvar_producer_consumer() {
    for (workers, q) in MATRIX {
        let case = format!("{workers} worker(s), quantum {q:?}");
        let rt = runtime(workers, Some(q));
        let state = Arc::new((Mutex::new(Vec::<u64>::new()), Condvar::new()));
        const PER: u64 = 200;
        let consumers: Vec<_> = (0..3)
            .map(|_| {
                let state = state.clone();
                rt.spawn(move || {
                    let (m, cv) = &*state;
                    let mut got = Vec::new();
                    loop {
                        let mut q = m.lock().unwrap();
                        while q.is_empty() {
                            q = cv.wait(q).unwrap();
                        }
                        let v = q.remove(0);
                        drop(q);
                        if v == u64::MAX {
                            return got;
                        }
                        got.push(v);
                        black_box(work(500));
                    }
                })
            })
            .collect();
        let producers: Vec<_> = (0..3u64)
            .map(|p| {
                let state = state.clone();
                rt.spawn(move || {
                    let (m, cv) = &*state;
                    for i in 0..PER {
                        let mut q = m.lock().unwrap();
                        q.push(p * PER + i);
                        black_box(work(300));
                        drop(q);
                        cv.notify_one();
                    }
                })
            })
            .collect();
        join_all(&case, producers);
        {
            let (m, cv) = &*state;
            m.lock().unwrap().extend([u64::MAX; 3]);
            cv.notify_all();
        }
        let mut all: Vec<u64> = join_all(&case, consumers).into_iter().flatten().collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..3 * PER).collect::<Vec<_>>(),
            "{case}: messages conserved"
        );
    }
}

/// A slow initialiser hit by many tasks at once: they wait in `Once`.
#[test]
fn slow_lazylock_initialiser() {
    for (workers, q) in MATRIX {
        let case = format!("{workers} worker(s), quantum {q:?}");
        let rt = runtime(workers, Some(q));
        let inits = Arc::new(AtomicU64::new(0));
        let lazy = {
            let inits = inits.clone();
            Arc::new(LazyLock::new(move || {
                inits.fetch_add(1, Ordering::Relaxed);
                let until = Instant::now() + Duration::from_millis(20);
                while Instant::now() < until {
                    black_box(work(100));
                }
                7
            }))
        };
        let once = Arc::new(OnceLock::new());
        let handles = (0..12)
            .map(|i| {
                let (lazy, once) = (lazy.clone(), once.clone());
                rt.spawn(move || {
                    let v = **lazy
                        + *once.get_or_init(|| {
                            black_box(work(1_000));
                            1
                        });
                    black_box(work(1_000 * i));
                    v
                })
            })
            .collect();
        assert!(join_all(&case, handles).iter().all(|&v| v == 8), "{case}");
        assert_eq!(inits.load(Ordering::Relaxed), 1, "{case}");
    }
}

#[test]
fn barrier_among_tasks() {
    for (workers, q) in MATRIX {
        let case = format!("{workers} worker(s), quantum {q:?}");
        let rt = runtime(workers, Some(q));
        let n = 6;
        let barrier = Arc::new(Barrier::new(n));
        let phase = Arc::new(AtomicU64::new(0));
        let handles = (0..n)
            .map(|_| {
                let (b, phase) = (barrier.clone(), phase.clone());
                rt.spawn(move || {
                    for round in 0..5u64 {
                        black_box(work(3_000));
                        phase.fetch_add(1, Ordering::SeqCst);
                        b.wait();
                        // Everyone arrived before anyone leaves.
                        assert!(phase.load(Ordering::SeqCst) >= (round + 1) * n as u64);
                        b.wait();
                    }
                })
            })
            .collect();
        join_all(&case, handles);
    }
}

/// Without a quantum nothing is preempted, but a holder may still switch out
/// with the guard held (it yields or sleeps): the waiter's futex wait must
/// not block the worker forever.
#[test]
fn cooperative_holder_yields_or_sleeps_with_the_guard() {
    for workers in [1, 2] {
        for sleep in [false, true] {
            let case = format!("{workers} worker(s), quantum None, sleep {sleep}");
            let rt = runtime(workers, None);
            assert_eq!(rt.preemption_mode(), kvant::PreemptionMode::Cooperative);
            let m = Arc::new(Mutex::new(0u64));
            let handles = (0..4)
                .map(|_| {
                    let m = m.clone();
                    rt.spawn(move || {
                        for _ in 0..10 {
                            let mut g = m.lock().unwrap();
                            if sleep {
                                kvant::sleep(Duration::from_millis(1));
                            } else {
                                kvant::yield_now();
                            }
                            *g += 1;
                        }
                    })
                })
                .collect();
            join_all(&case, handles);
            assert_eq!(*m.lock().unwrap(), 40, "{case}");
            let t = rt.metrics().total();
            assert_eq!(
                t.preemptions, 0,
                "{case}: cooperative runtimes never preempt"
            );
        }
    }
}

/// A lock held by a plain OS thread: tasks wait for it without losing
/// anything (the waits are switched out or simply block, both fine).
#[test]
fn lock_held_by_an_os_thread() {
    let rt = runtime(1, Some(Duration::from_millis(1)));
    let m = Arc::new(Mutex::new(0u64));
    let g = m.lock().unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let m = m.clone();
            rt.spawn(move || *m.lock().unwrap() += 1)
        })
        .collect();
    let other = rt.spawn(|| work(1_000));
    common::join_ok(other);
    std::thread::sleep(Duration::from_millis(20));
    drop(g);
    join_all("os-thread holder", handles);
    assert_eq!(*m.lock().unwrap(), 4);
}

/// With the quantum on the workers' CPU clocks, a holder is preempted while
/// holding a std `Mutex` and the other task then blocks the only worker in
/// the futex: its CPU clock stands still, so no tick ever comes for it. The
/// monitor must switch it out (a deadlock until the watchdog otherwise).
#[test]
fn a_futex_waiter_is_switched_out_under_the_cpu_clock_quantum() {
    let rt = Runtime::builder()
        .workers(1)
        .quantum(Some(Duration::from_millis(4)))
        .cpu_clock_quantum(true)
        .build()
        .unwrap();
    assert_eq!(rt.preemption_mode(), kvant::PreemptionMode::LineTables);
    let m = Arc::new(Mutex::new(0u64));
    let handles = (0..2)
        .map(|_| {
            let m = m.clone();
            rt.spawn(move || {
                for _ in 0..3 {
                    let mut g = m.lock().unwrap();
                    // ~30 ms of CPU while holding: several CPU-clock ticks.
                    let until = Instant::now() + Duration::from_millis(30);
                    while Instant::now() < until {
                        black_box(work(100));
                    }
                    *g += 1;
                }
            })
        })
        .collect();
    join_all("cpu clock, futex waiter", handles);
    assert_eq!(*m.lock().unwrap(), 6);
    let t = rt.metrics().total();
    eprintln!("{t:?}");
    assert!(t.preemptions > 0, "the holder was never preempted: {t:?}");
}
