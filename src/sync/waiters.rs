//! Building blocks shared by every blocking primitive in `sync` and `channel`.
//!
//! Each primitive keeps its state behind one short internal lock ([`Internal`])
//! and a FIFO queue of [`Waiter`]s. A waiter is *resolved* (its state leaves
//! [`WAITING`]) only by someone holding that internal lock, who also removes
//! it from the queue. That gives every race a single referee: a waiter whose
//! deadline passed takes the internal lock and looks at its own state; if it is
//! still `WAITING` it is still queued and may leave, otherwise the resolution
//! (a lock hand-off, a message, a notification) already happened and must be
//! honoured. Nothing is ever lost or granted twice.
//!
//! The internal lock is a `parking_lot` mutex that is never held across a
//! park: it only guards a few field updates. Preemption is disabled while it
//! is held, because a task switched out by the quantum timer while holding it
//! would make every other task that touches the primitive block its worker
//! OS thread (and deadlock a worker whose next task needs the same lock).
//! The safe-point code map already refuses to preempt inside `kvant` and
//! `parking_lot` frames, but generic or `#[inline]` code can be inlined into a
//! user function and lose those frames; the explicit guard does not depend on
//! how the compiler inlined things.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crate::preempt::{self, NoPreempt};
use crate::task::WaitingOn;
use crate::task::park::{self, Unparker};

/// A waiter's state before anyone resolved it.
pub(crate) const WAITING: u8 = 0;

/// A `parking_lot` mutex that also keeps the current task from being
/// preempted while it is held.
pub(crate) struct Internal<T>(parking_lot::Mutex<T>);

/// Guard of an [`Internal`] lock. Field order matters: the mutex guard drops
/// first, then preemption is re-enabled (which may switch the task out, now
/// safely, if the quantum expired meanwhile).
pub(crate) struct InternalGuard<'a, T> {
    guard: parking_lot::MutexGuard<'a, T>,
    _no_preempt: NoPreempt,
}

impl<T> Internal<T> {
    pub(crate) const fn new(value: T) -> Self {
        Internal(parking_lot::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> InternalGuard<'_, T> {
        let no_preempt = preempt::no_preempt();
        InternalGuard {
            guard: self.0.lock(),
            _no_preempt: no_preempt,
        }
    }
}

impl<'a, T> InternalGuard<'a, T> {
    /// Release the lock but keep preemption disabled until the returned
    /// guard drops: callers wake the waiters they just resolved first, so a
    /// pending preemption cannot delay those wake-ups by a whole quantum.
    pub(crate) fn unlock(self) -> NoPreempt {
        let InternalGuard { guard, _no_preempt } = self;
        drop(guard);
        _no_preempt
    }
}

impl<T> Deref for InternalGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for InternalGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

/// One blocked caller: who to wake, and how its wait was resolved.
pub(crate) struct Waiter {
    unparker: Unparker,
    state: AtomicU8,
    /// When it started waiting, for the mutex's fairness rule (the only
    /// reader; other waiters skip the clock read).
    pub(crate) since: Option<Instant>,
}

impl Waiter {
    /// A waiter for the calling task or OS thread.
    pub(crate) fn new() -> Arc<Waiter> {
        Arc::new(Waiter::current())
    }

    /// A waiter that notes when it started waiting (`since`).
    pub(crate) fn new_timed() -> Arc<Waiter> {
        let mut w = Waiter::current();
        w.since = Some(Instant::now());
        Arc::new(w)
    }

    /// Like [`Waiter::new`], for embedding in a bigger shared waiter.
    pub(crate) fn current() -> Waiter {
        Waiter {
            unparker: park::current_unparker(),
            state: AtomicU8::new(WAITING),
            since: None,
        }
    }

    /// Make a finished waiter (no longer in any queue, its unparker
    /// forgotten) wait again, for the calling task or OS thread.
    #[inline]
    pub(crate) fn renew(&mut self) {
        *self.state.get_mut() = WAITING;
        self.unparker = park::current_unparker();
    }

    /// Let go of whoever it woke, before it is kept for reuse.
    #[inline]
    pub(crate) fn forget(&mut self) {
        self.unparker = park::Unparker::Nobody;
    }

    /// The current state (`WAITING` until resolved).
    #[inline]
    pub(crate) fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    /// Record how the wait ended. Call with the owning primitive's internal
    /// lock held and after removing the waiter from its queue; wake it with
    /// [`Waiter::wake`] after releasing that lock. The release store pairs
    /// with the acquire load in [`Waiter::state`], so whatever the resolver
    /// wrote before (a handed-off lock's data, a message) is visible.
    #[inline]
    pub(crate) fn resolve(&self, state: u8) {
        debug_assert_ne!(state, WAITING);
        self.state.store(state, Ordering::Release);
    }

    /// Restore a resolved waiter to `WAITING` (it re-queues itself).
    pub(crate) fn reset(&self) {
        self.state.store(WAITING, Ordering::Relaxed);
    }

    /// Wake the waiter's task or thread. Preemption stays off while the
    /// runtime queues the task.
    #[inline]
    pub(crate) fn wake(&self) {
        let _no_preempt = preempt::no_preempt();
        self.unparker.unpark();
    }

    /// Park until resolved or `deadline` passes. Returns the state seen:
    /// `WAITING` means the deadline passed first, and the caller must settle
    /// the race under the internal lock (the waiter may be resolved by then).
    /// Inlined, switch and all, into each primitive's wait (and through
    /// the channel's into the user's code): see `current::park_current`.
    /// `on` is what the dump says the task waits for.
    #[inline(always)]
    pub(crate) fn park(&self, deadline: Option<Instant>, on: WaitingOn) -> u8 {
        loop {
            let s = self.state();
            if s != WAITING {
                return s;
            }
            if !park::park_deadline(deadline, on) {
                return WAITING;
            }
        }
    }
}

/// Remove `w` from `queue` if it is there. Returns whether it was.
pub(crate) fn remove(queue: &mut std::collections::VecDeque<Arc<Waiter>>, w: &Arc<Waiter>) -> bool {
    match queue.iter().position(|x| Arc::ptr_eq(x, w)) {
        Some(i) => {
            queue.remove(i);
            true
        }
        None => false,
    }
}

/// Wake every waiter in `list` (call after releasing the internal lock).
pub(crate) fn wake_all(list: impl IntoIterator<Item = Arc<Waiter>>) {
    for w in list {
        w.wake();
    }
}

/// `now + d`, or `None` ("wait forever") if that is not representable.
pub(crate) fn deadline_after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

pub(crate) use crate::task::park::OnUnwind;
