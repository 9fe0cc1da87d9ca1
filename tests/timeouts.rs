//! Every wait a user may make has a bounded form.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{join_ok, rt};
use kvant::sync::{Barrier, Semaphore, WaitGroup};
use kvant::task::{WaitFor, wait_owned};

#[test]
fn barrier_wait_timeout_leaves_the_round() {
    let rt = rt(2, None);
    let b = Arc::new(Barrier::new(2));
    let b2 = b.clone();
    // Alone: times out, and the round does not count it.
    assert!(join_ok(rt.spawn(move || b2.wait_timeout(Duration::from_millis(5)))).is_none());
    assert!(b.wait_timeout(Duration::from_millis(5)).is_none());
    // Two parties: released, one leader.
    let b3 = b.clone();
    let h = rt.spawn(move || {
        b3.wait_timeout(Duration::from_secs(60))
            .map(|r| r.is_leader())
    });
    let me = b
        .wait_timeout(Duration::from_secs(60))
        .map(|r| r.is_leader());
    let other = join_ok(h);
    assert!(me.is_some() && other.is_some());
    assert_ne!(me, other);
}

#[test]
fn waitgroup_and_semaphore_timeouts() {
    let rt = rt(1, None);
    let wg = WaitGroup::new();
    let member = wg.clone();
    let h = rt.spawn(move || {
        kvant::sleep(Duration::from_millis(50));
        drop(member);
    });
    assert!(!wg.clone().wait_timeout(Duration::from_millis(1)));
    assert!(wg.wait_timeout(Duration::from_secs(60)));
    join_ok(h);
    let s = Semaphore::new(0);
    assert!(s.acquire_timeout(Duration::from_millis(2)).is_none());
}

#[test]
fn wait_owned_returns_results_and_pending_handles() {
    let rt = rt(2, None);
    let hs = vec![
        rt.spawn(|| {
            kvant::sleep(Duration::from_secs(3600));
            0
        }),
        rt.spawn(|| 1),
    ];
    let w = wait_owned(hs, Some(Duration::from_secs(60)), WaitFor::FirstCompleted);
    assert_eq!(w.done.len(), 1);
    assert_eq!(w.done[0].0, 1);
    assert_eq!(*w.done[0].1.as_ref().unwrap(), 1);
    assert_eq!(w.pending.len(), 1);
    let (i, late) = w.pending.into_iter().next().unwrap();
    assert_eq!(i, 0);
    late.abort();
    assert!(late.join().unwrap_err().is_cancelled());
}
