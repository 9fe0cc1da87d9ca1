//! A completion queue: where a `JoinSet`'s tasks report, in the order they
//! complete, and from which its owner takes them.
//!
//! Each task's result slot gets one extra waiter, an `Unparker::Set` that
//! does not wake a thread but appends the task's id here (and wakes the
//! owner if it waits), so results are taken in completion order, in O(1)
//! each, without scanning the set.

use std::collections::VecDeque;

use super::TaskId;
use super::park::Unparker;

/// Where completions are queued for the set's owner.
#[derive(Debug, Default)]
pub(crate) struct Ready {
    inner: parking_lot::Mutex<ReadyInner>,
}

#[derive(Debug, Default)]
struct ReadyInner {
    done: VecDeque<TaskId>,
    /// The owner, while it waits in `join_next`.
    waiter: Option<Unparker>,
}

impl Ready {
    /// A task of the set completed (called from `Packet::complete`).
    pub(crate) fn completed(&self, id: TaskId) {
        let waiter = {
            let mut inner = self.inner.lock();
            inner.done.push_back(id);
            inner.waiter.take()
        };
        if let Some(w) = waiter {
            w.unpark();
        }
    }

    pub(crate) fn pop(&self) -> Option<TaskId> {
        self.inner.lock().done.pop_front()
    }

    /// Register the caller to be woken by the next completion, unless one is
    /// already queued (then false: do not park).
    pub(crate) fn wait_here(&self, me: &Unparker) -> bool {
        let mut inner = self.inner.lock();
        if !inner.done.is_empty() {
            return false;
        }
        inner.waiter = Some(me.clone());
        true
    }

    pub(crate) fn stop_waiting(&self) {
        self.inner.lock().waiter = None;
    }
}
