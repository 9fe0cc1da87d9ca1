//! When to start and retire compensating threads.
//!
//! Go's sysmon hands the P of a thread stuck in a syscall to another
//! thread (`retake`/`handoffp` in proc.go); kvant's queues belong to worker
//! slots, so the equivalent is to put another thread on the *work*: a
//! blocked worker's deque is stealable and the global queue is shared, so
//! any thread that steals runs them. The rule, applied on every look:
//!
//! * `blocked` = slots (regular or compensating) in an episode ready for
//!   hand-off;
//! * if work could be stolen and a regular worker is asleep or searching,
//!   make sure one is awake: it will take the work, no new thread needed;
//! * else, if work could be stolen, keep `min(blocked, max_compensation)`
//!   compensating threads active (a retiring one is reactivated before a
//!   new one is started);
//! * never keep more active than there are blocked slots: the extra ones
//!   retire (they finish what is pinned to them first).
//!
//! A CPU-only workload has no blocked slot, so it never starts one.

use super::{Policy, Watch};
use crate::runtime::Shared;
use std::sync::Arc;

pub(super) fn balance(shared: &Arc<Shared>, watches: &mut [Watch], now: u64, policy: &Policy) {
    let comp = &shared.compensation;
    comp.reap();
    let blocked: Vec<usize> = watches
        .iter()
        .enumerate()
        .filter(|(_, w)| {
            w.episode
                .as_ref()
                .is_some_and(|e| e.handoff_ready(now, policy))
        })
        .map(|(i, _)| i)
        .collect();
    let mut active = comp.active();
    while active > blocked.len() && comp.retire_one() {
        active -= 1;
    }
    if blocked.is_empty() || !shared.stealable_work() {
        return;
    }
    if shared.idle.wants_work() {
        shared.idle.notify_one();
        return;
    }
    let want = blocked.len().min(shared.config.max_compensation);
    while active < want {
        if !(comp.reactivate_one() || comp.start(shared)) {
            break;
        }
        active += 1;
        // Credit the start to a blocked worker not yet compensated for.
        if let Some(&i) = blocked
            .iter()
            .find(|&&i| watches[i].episode.as_ref().is_some_and(|e| !e.compensated))
        {
            if let Some(e) = watches[i].episode.as_mut() {
                e.compensated = true;
            }
            shared.workers[i].counters.compensations.add(1);
        }
    }
}
