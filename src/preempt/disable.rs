//! Critical sections that the quantum timer must not interrupt.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use crate::task::{Task, current};

/// While alive, the current task is not preempted. Guards nest; a preemption
/// requested meanwhile is taken when the last guard drops (the task yields
/// there). Outside a task the guard does nothing.
#[must_use = "preemption is re-enabled as soon as the guard is dropped"]
#[derive(Debug)]
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
    let in_task = current::with_current(|t| t.preempt.raise()).is_some();
    DisableGuard {
        in_task,
        _not_send: PhantomData,
    }
}

/// kvant's own critical sections: a [`DisableGuard`] that keeps the task it
/// was made on instead of looking the running task up again when it drops.
/// Sound because kvant never hands one to another task: it lives in the
/// frame (or the internal lock guard) that made it, on that task's stack,
/// so the task is alive and running whenever it drops.
pub(crate) struct NoPreempt {
    task: Option<NonNull<Task>>,
    _not_send: PhantomData<*const ()>,
}

/// [`disable`] for kvant's own code (see [`NoPreempt`]).
#[inline]
pub(crate) fn no_preempt() -> NoPreempt {
    let task = current::current_ptr();
    if let Some(t) = task {
        // SAFETY: CURRENT is the running task, whose Arc the worker holds
        // for the whole slice.
        unsafe { t.as_ref() }.preempt.raise();
    }
    NoPreempt {
        task,
        _not_send: PhantomData,
    }
}

impl Drop for NoPreempt {
    #[inline]
    fn drop(&mut self) {
        if let Some(t) = self.task {
            // SAFETY: the task that made this guard is the one running its
            // drop (it never leaves that task's frames, see `NoPreempt`), so
            // it is alive; the count is its own.
            if unsafe { t.as_ref() }.preempt.lower() {
                current::take_deferred();
            }
        }
    }
}

/// Whether the current task has preemption disabled by a live guard.
pub fn is_disabled() -> bool {
    current::with_current(|t| t.preempt.disabled.load(Ordering::Relaxed) > 0).unwrap_or(false)
}

impl Drop for DisableGuard {
    fn drop(&mut self) {
        if self.in_task && current::with_current(|t| t.preempt.lower()) == Some(true) {
            current::take_deferred();
        }
    }
}
