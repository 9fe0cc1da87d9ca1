//! Cancelling one task: `JoinHandle::abort` and the cloneable `AbortHandle`.
//!
//! An abort uses the machinery shutdown uses, for one task. One transition
//! of the task's lifecycle word (`state.rs`, `cancel`) sets its `CANCELLED`
//! bit and wakes it if it is parked; the worker that next
//! resumes it unwinds it from the switch point it stopped at (destructors
//! run, `join` reports [`JoinError::is_cancelled`](crate::JoinError)). A
//! *switch point* is where the task would block or yield: `yield_now`, a
//! sleep, a join, a kvant lock, channel, select or condition that is not
//! ready. An operation that completes at once (a buffered `recv`, an
//! uncontended lock) is not one, so a loop over a channel that always has
//! messages is cancelled only when it finds it empty (or polls
//! [`is_cancelled`](super::is_cancelled)).
//!
//! - never started: the closure is dropped at once, on the aborting thread,
//!   and the task completes as aborted (it never takes a stack);
//! - parked (sleep, join, a kvant lock, channel, wait) or yielded: woken and
//!   unwound from that switch point;
//! - suspended inside a signal frame (preempted, or switched out of a
//!   `std::sync` wait): resumed normally, since unwinding through the
//!   kernel's frame is undefined; its next switch point unwinds it. Code that
//!   reaches no switch point runs to completion, and `join` returns its
//!   value; a long loop can poll [`is_cancelled`](super::is_cancelled);
//! - inside `kvant::join` or `scope` waiting for work that borrows its
//!   frame: that wait is shielded and goes on until the borrowers finish;
//!   the task unwinds at its first switch point after;
//! - `spawn_blocking` work runs on an OS thread and cannot be cancelled: an
//!   abort has no effect on it.

use std::sync::Arc;

use super::join::{BlockingCell, Completion, Handle, JoinHandle};
use super::{Task, TaskId};

/// Cancels a task without owning its result: cloneable, `Send + Sync`, from
/// [`JoinHandle::abort_handle`]. Aborting a finished task does nothing. It
/// keeps the task's allocation (and so a finished task's unjoined result)
/// alive while it exists; drop it when it is no longer needed.
#[derive(Clone)]
pub struct AbortHandle {
    target: Target,
}

#[derive(Clone)]
enum Target {
    Task(Arc<Task>),
    Blocking(Arc<BlockingCell<dyn Completion>>),
}

impl AbortHandle {
    /// Cancel the task at its next switch point (see the [`JoinHandle::abort`]
    /// rules). Returns at once; `join` tells how it ended.
    pub fn abort(&self) {
        if let Target::Task(t) = &self.target {
            abort_task(t);
        }
    }

    /// Whether the task has finished (with a value or an error).
    pub fn is_finished(&self) -> bool {
        self.completion().is_complete()
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        match &self.target {
            Target::Task(t) => t.id,
            Target::Blocking(b) => b.id,
        }
    }

    fn completion(&self) -> &dyn Completion {
        match &self.target {
            Target::Task(t) => &t.packet,
            Target::Blocking(b) => &b.packet,
        }
    }
}

impl std::fmt::Debug for AbortHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AbortHandle")
            .field("id", &self.id())
            .field("finished", &self.is_finished())
            .finish()
    }
}

pub(crate) fn abort_task(t: &Arc<Task>) {
    if t.packet.is_complete() {
        return;
    }
    // Parked: it comes out queued, and the caller queues it so a worker
    // unwinds it. Queued or running: it gets the flag (which its next
    // switch point acts on) and a harmless token. One transition of the
    // lifecycle word, so a wake-up racing it cannot queue it twice.
    let queue = t.state.cancel();
    if t.packet.abort_unstarted(t.owner()) {
        // Never started, so never parked: `queue` is false, and the
        // queue entry is discarded when a worker pops it.
        debug_assert!(!queue);
        return;
    }
    if queue {
        t.scheduler.wake(t.clone());
    }
}

impl<T: Send + 'static> JoinHandle<T> {
    /// Cancel the task at its next switch point (where it would block or
    /// yield), unwinding it from there as runtime shutdown does (destructors
    /// run); [`join`](Self::join) then
    /// returns an error with [`is_cancelled`](crate::JoinError::is_cancelled).
    ///
    /// A task that never started is dropped without running. A task
    /// suspended by preemption is resumed and cancelled at its next switch
    /// point (never unwound through the signal frame); one that reaches no
    /// switch point runs to completion, and `join` returns its value (poll
    /// [`kvant::task::is_cancelled`](super::is_cancelled) in long loops).
    /// Inside `kvant::join`/`scope`, the children finish first. No effect on
    /// `spawn_blocking` work.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let rt = kvant::Runtime::builder().workers(1).build().unwrap();
    /// let h = rt.spawn(|| kvant::sleep(Duration::from_secs(3600)));
    /// h.abort();
    /// assert!(h.join().unwrap_err().is_cancelled());
    /// ```
    pub fn abort(&self) {
        self.abort_handle().abort();
    }

    /// A cloneable handle that can abort the task while someone else holds
    /// the `JoinHandle`.
    pub fn abort_handle(&self) -> AbortHandle {
        let target = match &self.inner {
            Handle::Task(t) => Target::Task(t.clone()),
            Handle::Blocking(p) => Target::Blocking(p.clone()),
        };
        AbortHandle { target }
    }
}
