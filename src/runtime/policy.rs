//! The scheduling policy: which queue a worker takes its next task from,
//! how much it takes from the global queue, when it leaves fresh work to
//! others, when a worker that preempted its lone task steals, and when the
//! monitor may preempt at all. The mechanisms they steer (queues, stealing,
//! the idle protocol, the worker loop) are in `worker.rs` and `idle.rs`;
//! `README.md` in this folder explains the whole in prose.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::worker::WorkerCtx;
use super::{Shared, WorkerShared};
use crate::task::Task;

/// A worker that took from the global queue last time takes from it again
/// only every this many picks (a prime, so it does not fall into step with
/// a periodic workload): outside work is not starved by a busy local queue,
/// and a local queue is not starved by a flood from outside.
pub(super) const GLOBAL_EVERY: u32 = 61;

/// Most consecutive picks a worker leaves fresh (never started) work to an
/// idle or less loaded worker: fresh work waits a few slices at most.
pub(super) const LEAVE_FRESH_SLICES: u32 = 8;

/// Whether one more idle worker may start searching (stealing): not once
/// half the workers search already, since more searchers would only contend
/// on the same queues.
pub(super) fn may_start_searching(searching: usize, workers: usize) -> bool {
    2 * searching < workers.max(2)
}

/// What the pick order remembers between picks (one worker's, unshared).
#[derive(Default)]
pub(crate) struct PickState {
    pub(super) last_global: Cell<bool>,
    pub(super) prefer_pinned: Cell<bool>,
    pub(super) tick: Cell<u32>,
    /// Consecutive picks this worker left fresh work to others.
    pub(super) left_fresh: Cell<u32>,
}

impl WorkerCtx {
    /// Next task from this worker's own queues or the global queue, in this
    /// order:
    /// 1. the global queue, if it is non-empty and the previous pick did not
    ///    come from it (or every [`GLOBAL_EVERY`] picks if it did). Tasks woken
    ///    by timers and plain threads land there, so a sleeper beside CPU hogs
    ///    runs at the next switch rather than after a full round of the local
    ///    queue, and a flood of outside spawns does not starve local work;
    /// 2. the pinned queue (preempted tasks that must not migrate) and the
    ///    local deque, alternately. The deque is FIFO: yielded and preempted
    ///    tasks go to the back, so tasks sharing a worker take turns;
    /// 3. with only pinned tasks left, stealing first (pinned tasks are never
    ///    stolen, so this is how a worker with more of them is relieved).
    ///
    /// While [`leave_fresh_work`](Self::leave_fresh_work) says so, the global
    /// queue is skipped and a never-started local task yields its turn to a
    /// pinned one.
    /// `me`: this worker's shared state ([`me`](Self::me)).
    #[inline(always)]
    pub(super) fn next_local(&self, me: &WorkerShared) -> Option<Arc<Task>> {
        if me.pinned_len.load(Ordering::Relaxed) == 0 && self.shared.injector.is_empty() {
            // The common case (tasks that yield and park, nothing pinned,
            // nothing from outside): every rule below comes down to the
            // local deque, so skip their bookkeeping (inlined into the
            // worker loop, with the rules out of line). `leave_fresh_work`
            // would reset its count here, and the next global pick is
            // allowed at once.
            self.pick.left_fresh.set(0);
            self.pick.last_global.set(false);
            if let Some(t) = self.local.pop() {
                return Some(t);
            }
            // Nothing here; the rules below say the same, but pinned work
            // or a global push may have arrived meanwhile.
        }
        self.next_by_rules()
    }

    /// [`next_local`](Self::next_local) past its common case: the rules.
    #[inline(never)]
    fn next_by_rules(&self) -> Option<Arc<Task>> {
        let shared = &*self.shared;
        let tick = self.pick.tick.get().wrapping_add(1);
        self.pick.tick.set(tick);
        let leave = self.leave_fresh_work();
        if !leave
            && !shared.injector.is_empty()
            && (!self.pick.last_global.get() || tick.is_multiple_of(GLOBAL_EVERY))
            && let Some(t) = self.steal_global()
        {
            self.pick.last_global.set(true);
            return Some(t);
        }
        self.pick.last_global.set(false);
        let pinned_first = self.pick.prefer_pinned.get();
        self.pick.prefer_pinned.set(!pinned_first);
        if pinned_first && let Some(t) = self.pop_pinned() {
            return Some(t);
        }
        if let Some(t) = self.local.pop() {
            if leave
                && !t.state.snapshot().started()
                && let Some(p) = self.pop_pinned()
            {
                self.local.push(t);
                return Some(p);
            }
            return Some(t);
        }
        // Only tasks pinned here are left. Before resuming one, take movable
        // work others have queued: pinned tasks can never be stolen, so this
        // is the only way a worker whose preempted hogs outnumber another's
        // gets relieved (4 hogs on 2 workers would otherwise stay 3:1). Not
        // while a lighter worker is being left fresh work (`leave`): that
        // worker starts it, and this one, heavier, taking it instead made
        // the very 3:1 split this avoids (seen in traces, 1 round in 10).
        if !leave
            && self.pinned_len() > 0
            && let Some(t) = self.steal()
        {
            return Some(t);
        }
        self.pop_pinned()
    }

    /// Whether to leave fresh (never started) tasks to a worker that is idle
    /// or has fewer pinned tasks, and run this worker's pinned tasks
    /// meanwhile (the other worker's task is preempted because this work is
    /// stealable, and it then steals it). Once started
    /// here and preempted, a task is pinned here for good; at short quanta a
    /// busy worker would otherwise start every queued task before a sleeping
    /// worker has even woken up (at a 100 µs quantum, 4 hogs all started on
    /// one of 2 workers). Bounded, so fresh work waits a few slices at most.
    pub(super) fn leave_fresh_work(&self) -> bool {
        // Compensating slots count only while in use, and their pinned
        // queues are empty when they are not: comparing with the regular
        // workers is enough.
        let mine = self.pinned_len();
        if mine == 0 {
            // The common case, decided without looking at other workers.
            self.pick.left_fresh.set(0);
            return false;
        }
        let workers = &self.shared.workers[..self.shared.config.workers];
        // Another worker's load counts the task it is running: a preempted
        // hog there is pinned to it like the ones in its queue. Counting
        // only its queue, two workers with one hog each (one pinned here,
        // one running there) each saw the other as lighter and both left
        // the fresh hogs waiting for the whole bound (8 slices; seen in
        // traces).
        let load = |w: &WorkerShared| {
            w.pinned_len.load(Ordering::Relaxed)
                + usize::from(w.slot.task.load(Ordering::Relaxed) != 0)
        };
        let lighter_elsewhere = || {
            self.shared.idle.wants_work()
                || workers
                    .iter()
                    .enumerate()
                    .any(|(i, w)| i != self.index && load(w) < mine)
        };
        let leave = self.pick.left_fresh.get() < LEAVE_FRESH_SLICES && lighter_elsewhere();
        self.pick.left_fresh.set(if leave {
            self.pick.left_fresh.get() + 1
        } else {
            0
        });
        leave
    }

    /// How many tasks to take from the global queue at once: a fair share,
    /// not half. With 4 hogs queued and 2 workers, the first worker to wake
    /// must take 2, not 3 (a preempted task stays pinned, so a lopsided
    /// start would last).
    pub(super) fn global_share(&self) -> usize {
        self.shared
            .injector
            .len()
            .div_ceil(self.shared.config.workers)
            .max(1)
    }

    /// This worker just preempted the only task it had. The monitor does
    /// that only when other workers have work queued (`has_other_work`):
    /// take some of it, so hogs spread over workers instead of staying where
    /// they started (plain work stealing only steals when a worker runs
    /// dry, which a worker with a hog never does).
    pub(super) fn relieve_others(&self) {
        if let Some(t) = self.steal() {
            self.local.push(t);
        }
    }
}

impl Shared {
    /// Whether `kvant::join` should offer its second closure to other
    /// workers: only when one could take it now (a worker sleeps or
    /// searches). Otherwise both closures run inline, at the cost of one
    /// load (`spawning/fork.rs`).
    pub(crate) fn should_split_join(&self) -> bool {
        self.config.workers > 1 && self.idle.wants_work()
    }

    /// Whether worker `w` has another task it could switch to or steal (the monitor
    /// does not preempt a task that would just be resumed again: that costs
    /// a signal and can turn a blocking syscall into EINTR for nothing).
    pub(crate) fn has_other_work(&self, w: usize) -> bool {
        // Any stealable work anywhere counts: switching out lets this worker
        // take it (see `next_local`), which is how load spreads past tasks
        // that are pinned by preemption.
        self.workers[w].pinned_len.load(Ordering::Relaxed) > 0
            || !self.injector.is_empty()
            || self.live_stealers().iter().any(|s| !s.is_empty())
            // Shutdown needs the worker back to cancel (or leak) the task.
            || self.cancelling.load(Ordering::Relaxed)
            // The worker's thread lent it and wants it back (`standin.rs`).
            || crate::preempt::group_wanted(&self.workers[w].slot)
    }
}
