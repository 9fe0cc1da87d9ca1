//! A mutex that parks the green thread, not the worker.
//!
//! # State
//!
//! One byte of atomic state (`LOCKED`, `PARKED`) plus a FIFO queue of
//! [`Waiter`]s behind an internal lock. The uncontended lock and unlock are a
//! single compare-exchange each; only when `PARKED` says someone waits does an
//! unlock take the internal lock. `PARKED` is changed only under the internal
//! lock and always equals "the queue is not empty" there.
//!
//! # Fairness: barging with a bounded wait
//!
//! A normal unlock releases the lock and wakes the first waiter, which then
//! competes with any caller that arrives meanwhile ("barging"). That keeps
//! throughput high: with green threads, a woken waiter may sit in a run queue
//! for a while, and handing it the lock would leave the lock held by nobody
//! running (a *convoy*). A woken waiter that loses the race goes back to the
//! **front** of the queue, keeping its place.
//!
//! Starvation is bounded like `parking_lot`'s eventual fairness, but by rule
//! rather than by chance: once the first waiter has waited [`FAIR_AFTER`], the
//! next unlock hands the lock *directly* to it (the lock never becomes free,
//! so no one can barge). [`MutexGuard::unlock_fair`] forces a hand-off.
//!
//! # No poisoning
//!
//! Like `parking_lot`, a panic while holding the lock simply releases it. Use
//! the data's own invariants (or `std::panic::catch_unwind`) if a half-done
//! update must be detected.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use lock_api::GuardSend;

use super::waiters::{self, Internal, OnUnwind, WAITING, Waiter};
use crate::task::WaitingOn;

/// A waiter that has waited this long is handed the lock directly by the
/// next unlock instead of competing for it.
pub const FAIR_AFTER: Duration = Duration::from_micros(500);

const LOCKED: u8 = 1;
const PARKED: u8 = 2;

/// Waiter states: the lock was released, try again (from the queue's front).
const WOKEN: u8 = 1;
/// Waiter states: the lock was handed over; the waiter owns it now.
const HANDED: u8 = 2;

/// Spins before queueing, while the holder may be running on another worker.
const SPINS: u32 = 16;

/// The raw green-aware mutex behind [`Mutex`]. Use it through `Mutex<T>`;
/// it is public so that `lock_api` generics (and [`Condvar`](super::Condvar))
/// can name it.
pub struct RawMutex {
    state: AtomicU8,
    queue: Internal<VecDeque<Arc<Waiter>>>,
}

/// A mutual-exclusion lock whose `lock` parks only the calling green thread
/// (its worker runs other tasks meanwhile), and blocks a plain OS thread.
/// Tasks and OS threads can share one mutex freely.
///
/// Built on [`lock_api`], so it has the familiar API: `lock`, `try_lock`,
/// `try_lock_for`, `try_lock_until`, `MutexGuard::map`, `unlocked`,
/// `unlock_fair`, ... Guards are `Send`: the lock is not tied to an OS thread,
/// which matters because a green thread may resume on another worker.
///
/// Fairness: barging with a bounded wait (see [`FAIR_AFTER`]). No poisoning.
///
/// ```
/// use std::sync::Arc;
/// use kvant::sync::Mutex;
///
/// let rt = kvant::Runtime::builder().workers(2).build().unwrap();
/// let counter = Arc::new(Mutex::new(0u32));
/// let tasks: Vec<_> = (0..8)
///     .map(|_| {
///         let c = counter.clone();
///         rt.spawn(move || {
///             for _ in 0..100 {
///                 *c.lock() += 1;
///             }
///         })
///     })
///     .collect();
/// for t in tasks {
///     t.join().unwrap();
/// }
/// assert_eq!(*counter.lock(), 800); // the main OS thread locks it too
/// ```
pub type Mutex<T> = lock_api::Mutex<RawMutex, T>;

/// RAII guard of a [`Mutex`]: the data is reachable through it, and the lock
/// is released when it drops.
pub type MutexGuard<'a, T> = lock_api::MutexGuard<'a, RawMutex, T>;

/// A [`MutexGuard`] narrowed to a part of the data by `MutexGuard::map`.
pub type MappedMutexGuard<'a, T> = lock_api::MappedMutexGuard<'a, RawMutex, T>;

// SAFETY: mutual exclusion: `LOCKED` is only set by a compare-exchange that
// saw it clear (acquire), or kept set while ownership is handed to exactly
// one dequeued waiter (its state store is release, its load acquire). It is
// cleared only by `release`, i.e. by the owner's unlock (release ordering).
// Guards are stateless, so forgetting one merely leaves the mutex locked.
// A lock operation that unwinds (task cancelled while queued) withdraws its
// waiter and releases anything it was handed before unwinding further.
unsafe impl lock_api::RawMutex for RawMutex {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: RawMutex = RawMutex {
        state: AtomicU8::new(0),
        queue: Internal::new(VecDeque::new()),
    };

    type Guard = GuardSend;

    #[inline]
    fn lock(&self) -> GuardSend {
        if self
            .state
            .compare_exchange_weak(0, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            let locked = self.lock_slow(None);
            debug_assert!(locked);
        }
        GuardSend::new()
    }

    #[inline]
    fn try_lock(&self) -> Option<GuardSend> {
        self.try_acquire().then(GuardSend::new)
    }

    #[inline]
    unsafe fn unlock(&self, _guard: GuardSend) {
        self.release(false);
    }

    #[inline]
    fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) & LOCKED != 0
    }
}

// SAFETY: `unlock_fair` releases exactly like `unlock`, only choosing
// hand-off over wake-and-compete; `bump` is lock_api's default.
unsafe impl lock_api::RawMutexFair for RawMutex {
    #[inline]
    unsafe fn unlock_fair(&self, _guard: GuardSend) {
        self.release(true);
    }
}

// SAFETY: timed acquisition uses the same protocol as `lock`; on timeout the
// waiter is withdrawn under the internal lock, or keeps a lock it was handed.
unsafe impl lock_api::RawMutexTimed for RawMutex {
    type Duration = Duration;
    type Instant = Instant;

    fn try_lock_for(&self, timeout: Duration) -> Option<GuardSend> {
        match waiters::deadline_after(timeout) {
            Some(d) => self.try_lock_until(d),
            None => Some(lock_api::RawMutex::lock(self)),
        }
    }

    fn try_lock_until(&self, deadline: Instant) -> Option<GuardSend> {
        (self.try_acquire() || self.lock_slow(Some(deadline))).then(GuardSend::new)
    }
}

impl RawMutex {
    #[inline]
    fn try_acquire(&self) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        while s & LOCKED == 0 {
            match self.state.compare_exchange_weak(
                s,
                s | LOCKED,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => s = actual,
            }
        }
        false
    }

    /// Queue up and park until owning the lock (true) or `deadline` (false).
    #[cold]
    fn lock_slow(&self, deadline: Option<Instant>) -> bool {
        for _ in 0..SPINS {
            let s = self.state.load(Ordering::Relaxed);
            if s & PARKED != 0 {
                break; // others already wait: spinning would only barge past them
            }
            if s & LOCKED == 0 && self.try_acquire() {
                return true;
            }
            std::hint::spin_loop();
        }
        let w = Waiter::new_timed();
        let mut front = false;
        loop {
            if self.enqueue(&w, front) {
                return true;
            }
            let cleanup = OnUnwind::new(|| self.abandon(&w));
            let s = w.park(
                deadline,
                WaitingOn::Mutex(self as *const Self as *const () as usize),
            );
            cleanup.disarm();
            match s {
                HANDED => return true,
                WOKEN => {
                    // Not queued any more: nobody else touches `w` now.
                    w.reset();
                    front = true;
                }
                _ => return self.timed_out(&w),
            }
        }
    }

    /// Under the internal lock: take the lock if it is free, else queue `w`
    /// and set `PARKED`. Returns true if the lock was taken.
    fn enqueue(&self, w: &Arc<Waiter>, front: bool) -> bool {
        let mut q = self.queue.lock();
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            let free = s & LOCKED == 0;
            let (next, order) = if free {
                (s | LOCKED, Ordering::Acquire)
            } else {
                (s | PARKED, Ordering::Relaxed)
            };
            match self
                .state
                .compare_exchange_weak(s, next, order, Ordering::Relaxed)
            {
                Ok(_) if free => return true,
                Ok(_) => break,
                Err(actual) => s = actual,
            }
        }
        if front {
            q.push_front(w.clone());
        } else {
            q.push_back(w.clone());
        }
        false
    }

    /// The deadline passed: settle the race with a concurrent unlock.
    fn timed_out(&self, w: &Arc<Waiter>) -> bool {
        let mut q = self.queue.lock();
        match w.state() {
            WAITING => {
                waiters::remove(&mut q, w);
                if q.is_empty() {
                    self.state.fetch_and(!PARKED, Ordering::Relaxed);
                }
                false
            }
            HANDED => true,
            _ => {
                // Woken: the lock was released for us. Take it if still free;
                // if someone else holds it, their unlock wakes the next waiter.
                drop(q);
                self.try_acquire()
            }
        }
    }

    /// The waiting task is being unwound (cancelled): withdraw, and pass on
    /// anything it was given so no other waiter is stranded.
    fn abandon(&self, w: &Arc<Waiter>) {
        let mut q = self.queue.lock();
        let state = w.state();
        if state == WAITING {
            waiters::remove(&mut q, w);
            if q.is_empty() {
                self.state.fetch_and(!PARKED, Ordering::Relaxed);
            }
            return;
        }
        drop(q);
        if state == HANDED || self.try_acquire() {
            self.release(false);
        }
    }

    /// Release the lock (the caller owns it).
    #[inline]
    fn release(&self, fair: bool) {
        if self
            .state
            .compare_exchange(LOCKED, 0, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            self.release_slow(fair);
        }
    }

    #[cold]
    fn release_slow(&self, fair: bool) {
        let mut q = self.queue.lock();
        // Only the owner clears LOCKED, and PARKED changes only under `q`:
        // plain stores are enough while we hold both.
        let Some(head) = q.pop_front() else {
            self.state.store(0, Ordering::Release);
            return;
        };
        let parked = if q.is_empty() { 0 } else { PARKED };
        if fair || head.since.is_some_and(|t| t.elapsed() >= FAIR_AFTER) {
            self.state.store(LOCKED | parked, Ordering::Relaxed);
            head.resolve(HANDED);
        } else {
            self.state.store(parked, Ordering::Release);
            head.resolve(WOKEN);
        }
        let _no_preempt = q.unlock();
        head.wake();
    }
}

impl std::fmt::Debug for RawMutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.load(Ordering::Relaxed);
        f.debug_struct("RawMutex")
            .field("locked", &(s & LOCKED != 0))
            .field("contended", &(s & PARKED != 0))
            .finish()
    }
}
