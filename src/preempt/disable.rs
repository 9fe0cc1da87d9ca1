//! Critical sections that the quantum timer must not interrupt.

use std::marker::PhantomData;
use std::sync::atomic::Ordering;

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
        t.preempt.disabled.fetch_add(1, Ordering::Relaxed);
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
            t.preempt.disabled.fetch_sub(1, Ordering::Relaxed) == 1
                && t.preempt.pending.swap(false, Ordering::Relaxed)
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
