//! Quantum preemption: CPU hogs share a worker fairly, cooperative mode
//! starves (deterministically), `preempt::disable` sections and
//! non-preemptible tasks are never interrupted, and only busy workers get
//! signals.
//!
//! Fairness and timing are asserted with generous bounds (the machine may be
//! shared); the measured values are printed (`--nocapture`) for the record.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kvant::Runtime;

mod common;
use common::{HANG, join_ok, wait_for, worker_name};

const QUANTUM: Duration = Duration::from_millis(1);

fn preemptive(workers: usize) -> Runtime {
    Runtime::builder()
        .workers(workers)
        .quantum(Some(QUANTUM))
        .build()
        .unwrap()
}

/// Busy-wait (no switch point) for `d`.
fn spin_for(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// Jain's fairness index: 1 when all equal, 1/n when one gets everything.
fn jain(xs: &[u64]) -> f64 {
    let sum: f64 = xs.iter().map(|&x| x as f64).sum();
    let sq: f64 = xs.iter().map(|&x| (x as f64) * (x as f64)).sum();
    sum * sum / (xs.len() as f64 * sq)
}

/// `n` hogs (counting loops, no switch point) for 400 ms on `rt`: their
/// iteration counts and task stats.
fn run_hogs(rt: &Runtime, n: usize) -> (Vec<u64>, Vec<kvant::TaskStats>) {
    let stop = Arc::new(AtomicBool::new(false));
    let hogs: Vec<_> = (0..n)
        .map(|_| {
            let stop = stop.clone();
            rt.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                }
                (n, kvant::current().stats())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    stop.store(true, Ordering::Relaxed);
    hogs.into_iter().map(join_ok).unzip()
}

#[test]
fn hogs_share_one_worker_fairly() {
    let rt = preemptive(1);
    let (counts, stats) = run_hogs(&rt, 4);
    let index = jain(&counts);
    let m = rt.metrics();
    eprintln!(
        "iterations {counts:?}; Jain index {index:.4}; {:?}",
        m.total()
    );
    for (i, (n, stats)) in counts.iter().zip(&stats).enumerate() {
        assert!(*n > 0, "hog {i} never ran: {counts:?}");
        assert!(
            stats.preemptions > 0,
            "hog {i} was never preempted: {stats:?}"
        );
    }
    assert!(index >= 0.8, "unfair sharing: Jain {index:.3}, {counts:?}");
    let t = m.total();
    assert!(t.preemptions > 0, "{t:?}");
    for w in &m.workers {
        assert!(
            w.signals >= w.preemptions,
            "each preemption takes a signal: {w:?}"
        );
    }
}

#[test]
fn cooperative_mode_starves_behind_a_hog() {
    let rt = Runtime::builder().workers(1).quantum(None).build().unwrap();
    let seq = Arc::new(AtomicUsize::new(0));
    let hog_running = Arc::new(AtomicBool::new(false));
    let (s, r) = (seq.clone(), hog_running.clone());
    let hog = rt.spawn(move || {
        r.store(true, Ordering::Release);
        spin_for(Duration::from_millis(200));
        (s.fetch_add(1, Ordering::SeqCst), kvant::current().stats())
    });
    wait_for("the hog to start", || hog_running.load(Ordering::Acquire));
    let s = seq.clone();
    let victim = rt.spawn(move || s.fetch_add(1, Ordering::SeqCst));
    let (hog_end, hog_stats) = join_ok(hog);
    let victim_start = join_ok(victim);
    assert_eq!(
        (hog_end, victim_start),
        (0, 1),
        "the second task must only run after the hog ends"
    );
    assert_eq!(hog_stats.preemptions, 0);
    assert_eq!(
        hog_stats.slices, 0,
        "the running slice is counted when it ends"
    );
    let t = rt.metrics().total();
    assert_eq!((t.preemptions, t.signals), (0, 0), "{t:?}");
}

#[test]
fn preemptive_mode_does_not_starve() {
    // Same shape as the cooperative test, but the hog waits for the second
    // task: it can only see the flag if it was preempted.
    let rt = preemptive(1);
    let flag = Arc::new(AtomicBool::new(false));
    let hog_running = Arc::new(AtomicBool::new(false));
    let (f, r) = (flag.clone(), hog_running.clone());
    let hog = rt.spawn(move || {
        r.store(true, Ordering::Release);
        let deadline = Instant::now() + HANG;
        while !f.load(Ordering::Acquire) && Instant::now() < deadline {
            std::hint::spin_loop();
        }
        f.load(Ordering::Acquire)
    });
    wait_for("the hog to start", || hog_running.load(Ordering::Acquire));
    let f = flag.clone();
    let started = Instant::now();
    let victim = rt.spawn(move || f.store(true, Ordering::Release));
    join_ok(victim);
    let latency = started.elapsed();
    assert!(join_ok(hog), "the hog never saw the second task run");
    eprintln!("second task ran {latency:?} after spawn beside a hog");
    assert!(latency < Duration::from_secs(5), "{latency:?}");
    assert!(rt.metrics().total().preemptions > 0);
}

#[test]
fn disabled_sections_are_never_preempted() {
    let rt = preemptive(1);
    // A competitor on the same (only) worker: it can only make progress
    // while the task under test is switched out.
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let (s, p) = (stop.clone(), progress.clone());
    let competitor = rt.spawn(move || {
        while !s.load(Ordering::Relaxed) {
            p.fetch_add(1, Ordering::Relaxed);
        }
    });
    let p = progress.clone();
    let checked = rt.spawn(move || {
        let me = kvant::current();
        let mut taken_at_drop = 0;
        for _ in 0..5 {
            assert!(!kvant::preempt::is_disabled());
            let before = me.stats().preemptions;
            let (inside, other_moved) = {
                let _g = kvant::preempt::disable();
                assert!(kvant::preempt::is_disabled());
                let seen = p.load(Ordering::Relaxed);
                spin_for(QUANTUM * 20);
                (me.stats().preemptions, p.load(Ordering::Relaxed) != seen)
            };
            assert_eq!(inside, before, "preempted inside a disabled section");
            assert!(!other_moved, "the competitor ran during a disabled section");
            // The request that arrived meanwhile was taken at the drop.
            if me.stats().preemptions > before {
                taken_at_drop += 1;
            }
        }
        taken_at_drop
    });
    let taken = join_ok(checked);
    stop.store(true, Ordering::Relaxed);
    join_ok(competitor);
    assert_eq!(
        taken, 5,
        "every deferred preemption is taken when the guard drops"
    );
    let t = rt.metrics().total();
    assert!(
        t.deferrals >= 5,
        "signals during the sections were deferred: {t:?}"
    );
}

#[test]
fn nested_guards_defer_to_the_outermost_drop() {
    let rt = preemptive(1);
    let (before, after_inner, after_outer, disabled_between) = rt.block_on(|| {
        // A task alone on its worker is never preempted (there is nothing
        // to switch to); a yielding companion makes the preemption due.
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let companion = kvant::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                kvant::yield_now();
            }
        });
        let me = kvant::current();
        let before = me.stats().preemptions;
        let outer = kvant::preempt::disable();
        let inner = kvant::preempt::disable();
        // Long enough for the monitor to ask for a preemption even when the
        // machine is busy with other tests (it only has to happen once).
        spin_for(QUANTUM * 20);
        drop(inner);
        let disabled_between = kvant::preempt::is_disabled();
        let after_inner = me.stats().preemptions;
        spin_for(QUANTUM * 2);
        drop(outer);
        let after_outer = me.stats().preemptions;
        stop.store(true, Ordering::Relaxed);
        companion.join().unwrap();
        (before, after_inner, after_outer, disabled_between)
    });
    assert!(disabled_between, "the outer guard still disables");
    assert_eq!(
        after_inner, before,
        "dropping the inner guard must not switch"
    );
    assert!(
        after_outer > before,
        "the pending preemption is taken at the outer drop"
    );
}

/// Every switch raises the task's preemption count across itself (the
/// switch is inlined into the caller, see src/preempt/README.md): a yield,
/// a sleep, a blocked channel call and a join each leave the count as they
/// found it, at zero and inside a guard, and a preemption deferred inside a
/// guard is still taken at its drop after those switches.
#[test]
fn switches_leave_the_preemption_count_as_they_found_it() {
    let rt = preemptive(1);
    let (tx, rx) = kvant::channel::bounded::<u32>(0);
    let echo = rt.spawn(move || {
        for _ in 0..2 {
            tx.send(7).unwrap();
        }
    });
    // A task alone on its worker is never preempted; a yielding companion
    // makes the preemption due.
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let companion = rt.spawn(move || {
        while !s.load(Ordering::Relaxed) {
            kvant::yield_now();
        }
    });
    let checked = rt.spawn(move || {
        let switch_all = |rx: &kvant::channel::Receiver<u32>| {
            kvant::yield_now();
            kvant::sleep(Duration::from_millis(1));
            assert_eq!(rx.recv().unwrap(), 7);
            kvant::spawn(|| ()).join().unwrap();
        };
        switch_all(&rx);
        let free_after = !kvant::preempt::is_disabled();
        let me = kvant::current();
        let before = me.stats().preemptions;
        let g = kvant::preempt::disable();
        spin_for(QUANTUM * 20); // a preemption falls due and is deferred
        switch_all(&rx);
        let held_after = kvant::preempt::is_disabled();
        drop(g);
        let taken = me.stats().preemptions > before;
        (
            free_after,
            held_after,
            taken,
            !kvant::preempt::is_disabled(),
        )
    });
    let (free_after, held_after, taken, free_at_end) = join_ok(checked);
    stop.store(true, Ordering::Relaxed);
    join_ok(companion);
    join_ok(echo);
    assert!(free_after, "a switch left the count raised");
    assert!(held_after, "a switch lowered the guard's count");
    assert!(taken, "the deferred preemption was not taken at the drop");
    assert!(free_at_end);
}

#[test]
fn disable_outside_a_task_is_a_no_op() {
    let g = kvant::preempt::disable();
    assert!(!kvant::preempt::is_disabled());
    drop(g);
}

#[test]
fn non_preemptible_tasks_are_never_preempted() {
    // Alone on its runtime: no preemptible slice, so not even a signal.
    let rt = preemptive(1);
    let h = kvant::task::Builder::new()
        .preemptible(false)
        .spawn_on(&rt, || {
            spin_for(QUANTUM * 30);
            kvant::current().is_preemptible()
        })
        .unwrap();
    let stats_handle = h.id();
    assert!(!join_ok(h), "{stats_handle}");
    let t = rt.metrics().total();
    assert_eq!((t.preemptions, t.signals), (0, 0), "{t:?}");

    // Beside a preemptible hog on one worker: the hog is preempted, the
    // non-preemptible task holds the worker for its whole run.
    let rt = preemptive(1);
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let (s, p) = (stop.clone(), progress.clone());
    let hog = rt.spawn(move || {
        while !s.load(Ordering::Relaxed) {
            p.fetch_add(1, Ordering::Relaxed);
        }
        kvant::current().stats()
    });
    wait_for("the hog to run", || progress.load(Ordering::Relaxed) > 0);
    let p = progress.clone();
    let np = kvant::task::Builder::new()
        .preemptible(false)
        .spawn_on(&rt, move || {
            let seen = p.load(Ordering::Relaxed);
            spin_for(QUANTUM * 30);
            let moved = p.load(Ordering::Relaxed) != seen;
            (moved, kvant::current().stats())
        })
        .unwrap();
    let (hog_moved, np_stats) = join_ok(np);
    stop.store(true, Ordering::Relaxed);
    let hog_stats = join_ok(hog);
    assert!(
        !hog_moved,
        "the hog ran while the non-preemptible task held the worker"
    );
    assert_eq!(np_stats.preemptions, 0, "{np_stats:?}");
    assert!(hog_stats.preemptions > 0, "{hog_stats:?}");
}

/// `Builder::cpu_clock_quantum`: the workers' own CPU-clock timers enforce
/// the quantum; hogs still share a worker round-robin, and the monitor sends
/// no signal at all (nothing is woken here, so no wake-up preemption).
#[test]
fn cpu_clock_quantum_shares_a_worker_without_the_monitor() {
    let rt = Runtime::builder()
        .workers(1)
        .quantum(Some(Duration::from_millis(10)))
        .cpu_clock_quantum(true)
        .build()
        .unwrap();
    assert_eq!(rt.preemption_mode(), kvant::PreemptionMode::LineTables);
    let (counts, stats) = run_hogs(&rt, 3);
    let t = rt.metrics().total();
    eprintln!("iterations {counts:?}; Jain {:.3}; {t:?}", jain(&counts));
    for (i, (n, stats)) in counts.iter().zip(&stats).enumerate() {
        assert!(*n > 0 && stats.preemptions > 0, "hog {i}: {stats:?}");
    }
    assert!(jain(&counts) >= 0.8, "unfair sharing: {counts:?}");
    assert_eq!(t.signals, 0, "the monitor signalled: {t:?}");
}

#[test]
fn idle_workers_get_no_signals() {
    // One hog on a 4-worker runtime: the other workers are idle and must
    // never be signalled, and since nothing else wants the hog's worker,
    // preempting the hog would be pure overhead: no signal at all.
    let rt = preemptive(4);
    let hog = rt.spawn(|| {
        spin_for(Duration::from_millis(100));
        kvant::current().stats()
    });
    let stats = join_ok(hog);
    let m = rt.metrics();
    let signals: Vec<u64> = m.workers.iter().map(|w| w.signals).collect();
    eprintln!("signals per worker {signals:?}; hog {stats:?}");
    assert_eq!(stats.preemptions, 0, "{stats:?}");
    assert!(
        signals.iter().all(|&s| s == 0),
        "no worker may be signalled: {signals:?}"
    );
}

#[test]
fn preempted_tasks_stay_on_their_worker() {
    // Default `migrate_preempted(false)`: a hog that never yields is only
    // ever switched out by preemption, so it runs on one thread for life.
    let rt = preemptive(2);
    let hogs: Vec<_> = (0..4)
        .map(|_| {
            rt.spawn(|| {
                let mut threads = HashSet::new();
                let until = Instant::now() + Duration::from_millis(100);
                while Instant::now() < until {
                    threads.insert(worker_name());
                }
                (threads.len(), kvant::current().stats())
            })
        })
        .collect();
    // A hog alone on its worker is not preempted (nothing else to run), but
    // with 4 hogs on 2 workers at least one worker holds two: by pigeonhole
    // some hogs are preempted, and no hog may ever change threads.
    let mut preempted = 0;
    for h in hogs {
        let (threads, stats) = join_ok(h);
        preempted += stats.preemptions;
        assert_eq!(
            threads, 1,
            "a preempted task moved to another worker: {stats:?}"
        );
    }
    assert!(preempted > 0, "no hog was preempted");
}
