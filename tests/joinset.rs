//! `JoinSet`: results come out in completion order, every task exactly
//! once, from a task or an OS thread; dropping the set aborts what is left.
//! Completion order is made deterministic by releasing tasks one at a time
//! through channels, never by sleeping.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{HANG, join_ok, rt, wait_for};
use kvant::JoinSet;
use kvant::channel::{Sender, unbounded};
use proptest::prelude::*;

/// `n` tasks, task `i` returns `i` once released through its channel.
fn gated(set: &mut JoinSet<usize>, rt: &kvant::Runtime, n: usize) -> Vec<Sender<()>> {
    gated_abortable(set, rt, n)
        .into_iter()
        .map(|(tx, _)| tx)
        .collect()
}

fn gated_abortable(
    set: &mut JoinSet<usize>,
    rt: &kvant::Runtime,
    n: usize,
) -> Vec<(Sender<()>, kvant::task::AbortHandle)> {
    (0..n)
        .map(|i| {
            let (tx, rx) = unbounded::<()>();
            let a = set.spawn_on(rt, move || {
                let _ = rx.recv();
                i
            });
            (tx, a)
        })
        .collect()
}

fn next_within(set: &mut JoinSet<usize>) -> Option<Result<usize, kvant::JoinError>> {
    set.join_next_timeout(HANG).expect("join_next hung")
}

#[test]
fn results_come_in_completion_order_on_an_os_thread() {
    let rt = rt(2, Some(Duration::from_millis(1)));
    let mut set = JoinSet::new();
    let gates = gated(&mut set, &rt, 5);
    assert_eq!(set.len(), 5);
    for i in [3, 0, 4, 1, 2] {
        gates[i].send(()).unwrap();
        assert_eq!(next_within(&mut set).unwrap().unwrap(), i);
    }
    assert!(set.is_empty());
    assert!(set.join_next().is_none());
}

#[test]
fn join_next_inside_a_task_parks_only_the_green_thread() {
    let rt = rt(1, None);
    let r = rt.block_on(|| {
        let mut set = JoinSet::new();
        for i in 0..50u64 {
            set.spawn(move || {
                kvant::yield_now();
                i * 2
            });
        }
        let mut seen = Vec::new();
        while let Some(r) = set.join_next() {
            seen.push(r.unwrap());
        }
        seen.sort_unstable();
        seen
    });
    assert_eq!(r, (0..50).map(|i| i * 2).collect::<Vec<_>>());
}

#[test]
fn timeout_and_try_join_next() {
    let rt = rt(1, None);
    let mut set = JoinSet::new();
    let gates = gated(&mut set, &rt, 2);
    assert!(set.try_join_next().is_none());
    assert!(matches!(
        set.join_next_timeout(Duration::from_millis(20)),
        Err(kvant::task::Elapsed)
    ));
    assert_eq!(set.len(), 2, "a timeout keeps the tasks");
    gates[1].send(()).unwrap();
    let mut got = None;
    wait_for("task 1", || {
        got = set.try_join_next();
        got.is_some()
    });
    assert_eq!(got.unwrap().unwrap(), 1);
    gates[0].send(()).unwrap();
    assert_eq!(next_within(&mut set).unwrap().unwrap(), 0);
    assert!(matches!(set.join_next_timeout(Duration::ZERO), Ok(None)));
}

#[test]
fn abort_all_reports_every_task() {
    let rt = rt(2, None);
    let mut set = JoinSet::new();
    let _gates = gated(&mut set, &rt, 10);
    set.abort_all();
    let mut ids = HashSet::new();
    while let Some(r) = next_within(&mut set) {
        let e = r.unwrap_err();
        assert!(e.is_cancelled());
        assert!(ids.insert(e.task_id()));
    }
    assert_eq!(ids.len(), 10);
}

#[test]
fn dropping_the_set_aborts_and_detach_all_does_not() {
    let rt = rt(2, None);
    let drops = Arc::new(AtomicUsize::new(0));
    struct D(Arc<AtomicUsize>);
    impl Drop for D {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    {
        let mut set = JoinSet::new();
        for _ in 0..4 {
            let d = D(drops.clone());
            set.spawn_on(&rt, move || {
                let _d = d;
                kvant::sleep(Duration::from_secs(3600));
            });
        }
    }
    wait_for("the dropped set's tasks to unwind", || {
        drops.load(Ordering::SeqCst) == 4
    });

    let finished = Arc::new(AtomicBool::new(false));
    let f = finished.clone();
    let (tx, rx) = unbounded::<()>();
    let mut set = JoinSet::new();
    set.spawn_on(&rt.handle(), move || {
        rx.recv().unwrap();
        f.store(true, Ordering::SeqCst);
    });
    set.detach_all();
    assert!(set.is_empty());
    drop(set);
    tx.send(()).unwrap();
    wait_for("the detached task", || finished.load(Ordering::SeqCst));
}

#[test]
fn insert_an_existing_handle_and_shutdown() {
    let rt = rt(1, None);
    let mut set = JoinSet::new();
    let done = rt.spawn(|| 7usize);
    wait_for("done", || done.is_finished());
    set.insert(done); // already complete: ready at once
    let _gates = gated(&mut set, &rt, 3);
    assert_eq!(set.try_join_next().unwrap().unwrap(), 7);
    set.shutdown();
    assert!(set.is_empty());
    join_ok(rt.spawn(|| ()));
}

#[test]
fn spawn_outside_a_runtime_panics_with_a_clear_message() {
    let r = std::panic::catch_unwind(|| {
        let mut set = JoinSet::new();
        set.spawn(|| 1);
    });
    let msg = common::panic_message(r.unwrap_err());
    assert!(msg.contains("outside a kvant runtime"), "{msg}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24)
    ))]

    /// Random workers, quanta down to 50 µs, random releases and aborts:
    /// `join_next` returns exactly the task just released (or aborted), each
    /// task exactly once, then `None`.
    #[test]
    fn completion_order_matches_the_model(
        workers in 1usize..=4,
        quantum_us in prop_oneof![Just(None), (50u64..2_000).prop_map(Some)],
        n in 1usize..24,
        picks in proptest::collection::vec((any::<bool>(), any::<prop::sample::Index>()), 24),
    ) {
        let rt = rt(workers, quantum_us.map(Duration::from_micros));
        let mut set = JoinSet::new();
        let tasks = gated_abortable(&mut set, &rt, n);
        let mut left: Vec<usize> = (0..n).collect();
        let mut seen = HashSet::new();
        for (abort, idx) in picks.iter().take(n) {
            let i = left.remove(idx.index(left.len()));
            let (gate, handle) = &tasks[i];
            if *abort {
                handle.abort();
                let e = next_within(&mut set).unwrap().unwrap_err();
                prop_assert!(e.is_aborted(), "{}", e);
                prop_assert_eq!(e.task_id(), handle.id());
            } else {
                gate.send(()).unwrap();
                prop_assert_eq!(next_within(&mut set).unwrap().unwrap(), i);
            }
            prop_assert!(seen.insert(i));
            prop_assert_eq!(set.len(), n - seen.len());
        }
        prop_assert!(set.join_next().is_none());
        prop_assert_eq!(seen.len(), n);
    }
}
