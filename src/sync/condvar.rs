//! A condition variable for kvant's [`Mutex`].
//!
//! The raw part implements `lock_api::RawCondvar` for [`RawMutex`]; the
//! public [`Condvar`] is a thin wrapper over `lock_api::Condvar` that adds
//! std's method names (`wait_timeout`, `wait_timeout_while`).
//!
//! A waiter joins the queue *before* it unlocks the mutex, so a notification
//! sent by anyone who locks the mutex after that cannot miss it. A waiter
//! returns only when notified or timed out: there are no spurious wake-ups,
//! and `notify_one` / `notify_all` report exactly how many waiters they woke
//! (a waiter that timed out at the same moment is counted by exactly one side,
//! settled under the condvar's internal lock).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lock_api::{GuardSend, RawMutex as _};

pub use lock_api::WaitTimeoutResult;

use super::mutex::{MutexGuard, RawMutex};
use super::waiters::{self, Internal, OnUnwind, WAITING, Waiter};
use crate::task::WaitingOn;

const NOTIFIED: u8 = 1;

/// The raw condition variable behind [`Condvar`].
pub struct RawCondvar {
    queue: Internal<VecDeque<Arc<Waiter>>>,
}

impl std::fmt::Debug for RawCondvar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawCondvar").finish_non_exhaustive()
    }
}

impl RawCondvar {
    /// Unlock `mutex`, wait for a notification or `deadline`, relock.
    /// Returns true if it timed out.
    fn wait_on(&self, mutex: &RawMutex, guard: &mut GuardSend, deadline: Option<Instant>) -> bool {
        let w = Waiter::new();
        self.queue.lock().push_back(w.clone());
        // SAFETY: the caller holds `mutex` with guard state `guard` (the
        // RawCondvar::wait contract); we relock it before returning, and the
        // unwind path below relocks it before unwinding further.
        unsafe { mutex.unlock(std::mem::take(guard)) };
        let relock = OnUnwind::new(|| {
            self.withdraw(&w);
            // Cancelled tasks cannot switch out, so this spins until free.
            *guard = mutex.lock();
        });
        let timed_out =
            w.park(deadline, WaitingOn::Condvar(self as *const Self as usize)) == WAITING && {
                let mut q = self.queue.lock();
                w.state() == WAITING && waiters::remove(&mut q, &w)
            };
        relock.disarm();
        *guard = mutex.lock();
        timed_out
    }

    /// Unwinding out of a wait: leave the queue, and if a notification was
    /// already ours, pass it to the next waiter instead of swallowing it.
    fn withdraw(&self, w: &Arc<Waiter>) {
        let mut q = self.queue.lock();
        if w.state() == WAITING {
            waiters::remove(&mut q, w);
        } else if let Some(next) = q.pop_front() {
            next.resolve(NOTIFIED);
            let _no_preempt = q.unlock();
            next.wake();
        }
    }
}

// SAFETY: `wait_on` queues the waiter before unlocking the mutex (so it is
// atomic with respect to notifications), relocks before returning, and on
// unwind relocks before unwinding further, restoring `guard`. The condvar
// does not care which mutex a waiter uses.
unsafe impl lock_api::RawCondvar for RawCondvar {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: RawCondvar = RawCondvar {
        queue: Internal::new(VecDeque::new()),
    };

    type RawMutex = RawMutex;

    unsafe fn wait(&self, mutex: &RawMutex, guard: &mut GuardSend) {
        self.wait_on(mutex, guard, None);
    }

    fn notify_one(&self) -> bool {
        let mut q = self.queue.lock();
        let Some(w) = q.pop_front() else {
            return false;
        };
        w.resolve(NOTIFIED);
        let _no_preempt = q.unlock();
        w.wake();
        true
    }

    fn notify_all(&self) -> usize {
        let mut q = self.queue.lock();
        let all = std::mem::take(&mut *q);
        for w in &all {
            w.resolve(NOTIFIED);
        }
        let _no_preempt = q.unlock();
        let n = all.len();
        waiters::wake_all(all);
        n
    }
}

// SAFETY: same protocol as `wait`, with a deadline; see `wait_on`.
unsafe impl lock_api::RawCondvarTimed for RawCondvar {
    fn checked_duration_to_instant(timeout: &Duration) -> Option<Instant> {
        waiters::deadline_after(*timeout)
    }

    unsafe fn wait_until(
        &self,
        mutex: &RawMutex,
        guard: &mut GuardSend,
        timeout: &Instant,
    ) -> bool {
        self.wait_on(mutex, guard, Some(*timeout))
    }
}

/// A condition variable: wait (parking only the green thread) until another
/// task or thread changes the data behind a [`Mutex`](super::Mutex) and
/// notifies.
///
/// Waits take the guard by `&mut` (like `parking_lot`) and relock before
/// returning. There are no spurious wake-ups, but as always the condition
/// should be checked in a loop ([`wait_while`](Self::wait_while) does it),
/// because another waiter may have changed it first.
///
/// ```
/// use std::sync::Arc;
/// use kvant::sync::{Condvar, Mutex};
///
/// let rt = kvant::Runtime::builder().workers(1).build().unwrap();
/// let pair = Arc::new((Mutex::new(false), Condvar::new()));
/// let p = pair.clone();
/// let waiter = rt.spawn(move || {
///     let (ready, cv) = &*p;
///     let mut g = ready.lock();
///     cv.wait_while(&mut g, |ready| !*ready);
///     "woken"
/// });
/// let (ready, cv) = &*pair;
/// *ready.lock() = true;
/// cv.notify_all();
/// assert_eq!(waiter.join().unwrap(), "woken");
/// ```
#[derive(Default)]
pub struct Condvar(lock_api::Condvar<RawCondvar>);

impl Condvar {
    /// A new condition variable (usable in a `static`).
    pub const fn new() -> Condvar {
        Condvar(lock_api::Condvar::new())
    }

    /// Wake one waiter. Returns whether there was one.
    pub fn notify_one(&self) -> bool {
        self.0.notify_one()
    }

    /// Wake every current waiter. Returns how many there were.
    pub fn notify_all(&self) -> usize {
        self.0.notify_all()
    }

    /// Unlock, wait for a notification, relock.
    pub fn wait<T: ?Sized>(&self, guard: &mut MutexGuard<'_, T>) {
        self.0.wait(guard)
    }

    /// Wait as long as `condition` returns true (checked first, then after
    /// every wake-up, always with the lock held).
    pub fn wait_while<T: ?Sized, F>(&self, guard: &mut MutexGuard<'_, T>, condition: F)
    where
        F: FnMut(&mut T) -> bool,
    {
        self.0.wait_while(guard, condition)
    }

    /// Like [`wait`](Self::wait), giving up after `timeout`.
    pub fn wait_timeout<T: ?Sized>(
        &self,
        guard: &mut MutexGuard<'_, T>,
        timeout: Duration,
    ) -> WaitTimeoutResult {
        self.0.wait_for(guard, timeout)
    }

    /// Like [`wait`](Self::wait), giving up at `deadline`.
    pub fn wait_until<T: ?Sized>(
        &self,
        guard: &mut MutexGuard<'_, T>,
        deadline: Instant,
    ) -> WaitTimeoutResult {
        self.0.wait_until(guard, deadline)
    }

    /// Like [`wait_while`](Self::wait_while), giving up after `timeout`;
    /// `timed_out()` is true if the condition still held then.
    pub fn wait_timeout_while<T: ?Sized, F>(
        &self,
        guard: &mut MutexGuard<'_, T>,
        condition: F,
        timeout: Duration,
    ) -> WaitTimeoutResult
    where
        F: FnMut(&mut T) -> bool,
    {
        self.0.wait_while_for(guard, condition, timeout)
    }

    /// Like [`wait_while`](Self::wait_while), giving up at `deadline`.
    pub fn wait_while_until<T: ?Sized, F>(
        &self,
        guard: &mut MutexGuard<'_, T>,
        condition: F,
        deadline: Instant,
    ) -> WaitTimeoutResult
    where
        F: FnMut(&mut T) -> bool,
    {
        self.0.wait_while_until(guard, condition, deadline)
    }
}

impl std::fmt::Debug for Condvar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad("Condvar { .. }")
    }
}
