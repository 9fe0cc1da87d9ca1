//! Critical sections that the quantum timer must not interrupt.

use std::marker::PhantomData;
use std::sync::atomic::{Ordering, compiler_fence};

use crate::task::current;

/// While alive, the current task is not preempted. Guards nest; a preemption
/// requested meanwhile is taken when the last guard drops (the task yields
/// there). Outside a task the guard does nothing.
#[must_use = "preemption is re-enabled as soon as the guard is dropped"]
pub struct DisableGuard {
    in_task: bool,
    // The count lives in the task, so the guard must drop on the task that made it.
    _not_send: PhantomData<*const ()>,
}

/// Disable preemption of the current task until the guard drops.
///
/// ```
/// let rt = kvant::Runtime::builder().workers(1).build().unwrap();
/// rt.block_on(|| {
///     let _g = kvant::preempt::disable();
///     assert!(kvant::preempt::is_disabled());
/// });
/// ```
pub fn disable() -> DisableGuard {
    let in_task = current::with_current(|t| {
        // Only the task itself changes its count (a guard is `!Send`, and
        // one task runs on one thread at a time); the signal handler, on
        // the same thread, only reads it. So a plain load and store do: a
        // signal lands before or after the store, never inside it, and a
        // locked add (three guards per blocked channel operation) would
        // buy nothing.
        let d = &t.preempt.disabled;
        d.store(d.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        // A signal fence: the critical section after this cannot be moved
        // before the store, as seen by a handler on this thread.
        compiler_fence(Ordering::SeqCst);
    })
    .is_some();
    DisableGuard {
        in_task,
        _not_send: PhantomData,
    }
}

/// Whether the current task has preemption disabled by a live guard.
pub fn is_disabled() -> bool {
    current::with_current(|t| t.preempt.disabled.load(Ordering::Relaxed) > 0).unwrap_or(false)
}

impl Drop for DisableGuard {
    fn drop(&mut self) {
        if !self.in_task {
            return;
        }
        let take_it = current::with_current(|t| {
            let p = &t.preempt;
            // Saturating: a guard dropped on another task than the one
            // that made it (moved through a worker's thread-local) must not
            // wrap that task's count and leave it unpreemptible for good.
            let left = p.disabled.load(Ordering::Relaxed).saturating_sub(1);
            // The critical section stays before the store (see `disable`).
            compiler_fence(Ordering::SeqCst);
            p.disabled.store(left, Ordering::Relaxed);
            // And the look at `pending` after it: a handler that ran before
            // the store saw the count above zero and set `pending`; one that
            // runs after it sees zero and never touches `pending`, so the
            // load and the store below cannot race with it.
            compiler_fence(Ordering::SeqCst);
            let take = left == 0 && p.pending.load(Ordering::Relaxed);
            if take {
                p.pending.store(false, Ordering::Relaxed);
            }
            take
        })
        .unwrap_or(false);
        if take_it {
            // Not a cancellation point: the guard drops where a primitive
            // just changed state (a message taken, a waiter queued) and has
            // not returned yet; unwinding here would lose that change.
            let _shield = current::shield_cancel();
            current::suspend(crate::task::coroutine::Switch::Preempted);
        }
    }
}
