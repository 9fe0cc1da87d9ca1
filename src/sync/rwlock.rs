//! A reader-writer lock that parks the green thread, not the worker.
//!
//! # Fairness: FIFO, task-fair
//!
//! The lock is granted in arrival order. A new reader joins the current
//! readers only if nobody is queued; once a writer waits, later readers queue
//! behind it. On release the head of the queue is granted directly: a writer
//! alone, or the whole run of consecutive readers at the head at once. So
//! neither writers nor readers can starve. The price, as with every fair
//! rwlock: a task that takes a read lock *recursively* can deadlock if a
//! writer queued between its two acquisitions (don't do that).
//!
//! Unlike the [`Mutex`](super::Mutex) there is no barging, hence no lock-free
//! fast path: every operation takes the internal lock briefly. Read-mostly
//! data with very short critical sections may be better served by a `Mutex`
//! or by copy-on-write.
//!
//! No poisoning, like `parking_lot`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lock_api::GuardSend;

use super::waiters::{self, Internal, OnUnwind, WAITING, Waiter};
use crate::task::WaitingOn;

const GRANTED: u8 = 1;

struct Entry {
    w: Arc<Waiter>,
    exclusive: bool,
}

struct State {
    readers: usize,
    writer: bool,
    queue: VecDeque<Entry>,
}

impl State {
    fn free_for(&self, exclusive: bool) -> bool {
        !self.writer && self.queue.is_empty() && (!exclusive || self.readers == 0)
    }

    fn take(&mut self, exclusive: bool) {
        if exclusive {
            self.writer = true;
        } else {
            self.readers += 1;
        }
    }

    /// Grant the head of the queue whatever it can have now. Returns the
    /// waiters to wake once the internal lock is released.
    fn grant(&mut self) -> Vec<Arc<Waiter>> {
        let mut woken = Vec::new();
        while let Some(e) = self.queue.front() {
            let ok = if e.exclusive {
                !self.writer && self.readers == 0
            } else {
                !self.writer
            };
            if !ok {
                break;
            }
            let e = self.queue.pop_front().expect("front exists");
            self.take(e.exclusive);
            e.w.resolve(GRANTED);
            woken.push(e.w);
        }
        woken
    }
}

/// The raw green-aware reader-writer lock behind [`RwLock`].
pub struct RawRwLock {
    state: Internal<State>,
}

/// A reader-writer lock: many readers or one writer. Waiting parks only the
/// calling green thread (or blocks an OS thread). FIFO-fair, no poisoning;
/// built on [`lock_api`] (`read`, `write`, `try_read`, `try_write_for`,
/// `RwLockWriteGuard::downgrade`, ...). Guards are `Send`.
///
/// ```
/// use std::sync::Arc;
/// use kvant::sync::RwLock;
///
/// let rt = kvant::Runtime::builder().workers(2).build().unwrap();
/// let config = Arc::new(RwLock::new(vec![1, 2, 3]));
/// let c = config.clone();
/// let writer = rt.spawn(move || c.write().push(4));
/// writer.join().unwrap();
/// let readers: Vec<_> = (0..4)
///     .map(|_| {
///         let c = config.clone();
///         rt.spawn(move || c.read().len())
///     })
///     .collect();
/// for r in readers {
///     assert_eq!(r.join().unwrap(), 4);
/// }
/// ```
pub type RwLock<T> = lock_api::RwLock<RawRwLock, T>;

/// Shared guard of an [`RwLock`].
pub type RwLockReadGuard<'a, T> = lock_api::RwLockReadGuard<'a, RawRwLock, T>;

/// Exclusive guard of an [`RwLock`].
pub type RwLockWriteGuard<'a, T> = lock_api::RwLockWriteGuard<'a, RawRwLock, T>;

/// A [`RwLockReadGuard`] narrowed by `map`.
pub type MappedRwLockReadGuard<'a, T> = lock_api::MappedRwLockReadGuard<'a, RawRwLock, T>;

/// A [`RwLockWriteGuard`] narrowed by `map`.
pub type MappedRwLockWriteGuard<'a, T> = lock_api::MappedRwLockWriteGuard<'a, RawRwLock, T>;

impl RawRwLock {
    /// Acquire (shared or exclusive) before `deadline`; false if it passed.
    fn acquire(&self, exclusive: bool, deadline: Option<Instant>) -> bool {
        let w = {
            let mut st = self.state.lock();
            if st.free_for(exclusive) {
                st.take(exclusive);
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            let w = Waiter::new();
            st.queue.push_back(Entry {
                w: w.clone(),
                exclusive,
            });
            w
        };
        let cleanup = OnUnwind::new(|| {
            if self.settle(&w) {
                self.release(exclusive);
            }
        });
        let granted = w.park(
            deadline,
            WaitingOn::RwLock(self as *const Self as *const () as usize),
        ) == GRANTED
            || self.settle(&w);
        cleanup.disarm();
        granted
    }

    fn try_acquire(&self, exclusive: bool) -> bool {
        let mut st = self.state.lock();
        let free = st.free_for(exclusive);
        if free {
            st.take(exclusive);
        }
        free
    }

    /// The wait ended without seeing a grant: withdraw (false), or accept a
    /// grant that raced with the timeout (true). Withdrawing a queued writer
    /// may let the readers behind it in.
    fn settle(&self, w: &Arc<Waiter>) -> bool {
        let mut st = self.state.lock();
        if w.state() != WAITING {
            return true;
        }
        if let Some(i) = st.queue.iter().position(|e| Arc::ptr_eq(&e.w, w)) {
            st.queue.remove(i);
        }
        let woken = st.grant();
        let _no_preempt = st.unlock();
        waiters::wake_all(woken);
        false
    }

    fn release(&self, exclusive: bool) {
        let mut st = self.state.lock();
        if exclusive {
            debug_assert!(st.writer);
            st.writer = false;
        } else {
            debug_assert!(st.readers > 0);
            st.readers -= 1;
        }
        let woken = st.grant();
        let _no_preempt = st.unlock();
        waiters::wake_all(woken);
    }
}

// SAFETY: `writer` and `readers` change only under the internal lock, whose
// acquire/release orders the protected data; a waiter is granted (counted in
// `writer`/`readers`) under that lock before its release-store of GRANTED,
// which it reads with acquire. A writer is granted only when there are no
// readers and no writer. Guards are stateless. A cancelled waiter withdraws,
// or releases what it was granted, before unwinding further.
unsafe impl lock_api::RawRwLock for RawRwLock {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: RawRwLock = RawRwLock {
        state: Internal::new(State {
            readers: 0,
            writer: false,
            queue: VecDeque::new(),
        }),
    };

    type SharedGuard = GuardSend;
    type ExclusiveGuard = GuardSend;

    fn lock_shared(&self) -> GuardSend {
        let ok = self.acquire(false, None);
        debug_assert!(ok);
        GuardSend::new()
    }

    fn try_lock_shared(&self) -> Option<GuardSend> {
        self.try_acquire(false).then(GuardSend::new)
    }

    unsafe fn unlock_shared(&self, _guard: GuardSend) {
        self.release(false);
    }

    fn lock_exclusive(&self) -> GuardSend {
        let ok = self.acquire(true, None);
        debug_assert!(ok);
        GuardSend::new()
    }

    fn try_lock_exclusive(&self) -> Option<GuardSend> {
        self.try_acquire(true).then(GuardSend::new)
    }

    unsafe fn unlock_exclusive(&self, _guard: GuardSend) {
        self.release(true);
    }

    fn is_locked(&self) -> bool {
        let st = self.state.lock();
        st.writer || st.readers > 0
    }

    fn is_locked_exclusive(&self) -> bool {
        self.state.lock().writer
    }
}

// SAFETY: releases are already fair (direct FIFO grant), so the fair
// variants are the plain ones; bumps use lock_api's defaults.
unsafe impl lock_api::RawRwLockFair for RawRwLock {
    unsafe fn unlock_shared_fair(&self, _guard: GuardSend) {
        self.release(false);
    }

    unsafe fn unlock_exclusive_fair(&self, _guard: GuardSend) {
        self.release(true);
    }
}

// SAFETY: under the internal lock the writer becomes a reader in one step,
// so no other writer can get in between; queued readers at the head join.
unsafe impl lock_api::RawRwLockDowngrade for RawRwLock {
    unsafe fn downgrade(&self, _guard: GuardSend) -> GuardSend {
        let mut st = self.state.lock();
        st.writer = false;
        st.readers += 1;
        let woken = st.grant();
        let _no_preempt = st.unlock();
        waiters::wake_all(woken);
        GuardSend::new()
    }
}

// SAFETY: same protocol as the untimed locks; a timed-out waiter withdraws
// under the internal lock, or keeps a grant that raced with the timeout.
unsafe impl lock_api::RawRwLockTimed for RawRwLock {
    type Duration = Duration;
    type Instant = Instant;

    fn try_lock_shared_for(&self, timeout: Duration) -> Option<GuardSend> {
        self.acquire(false, waiters::deadline_after(timeout))
            .then(GuardSend::new)
    }

    fn try_lock_shared_until(&self, deadline: Instant) -> Option<GuardSend> {
        self.acquire(false, Some(deadline)).then(GuardSend::new)
    }

    fn try_lock_exclusive_for(&self, timeout: Duration) -> Option<GuardSend> {
        self.acquire(true, waiters::deadline_after(timeout))
            .then(GuardSend::new)
    }

    fn try_lock_exclusive_until(&self, deadline: Instant) -> Option<GuardSend> {
        self.acquire(true, Some(deadline)).then(GuardSend::new)
    }
}

impl std::fmt::Debug for RawRwLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.state.lock();
        let (readers, writer, queued) = (st.readers, st.writer, st.queue.len());
        drop(st);
        f.debug_struct("RawRwLock")
            .field("readers", &readers)
            .field("writer", &writer)
            .field("queued", &queued)
            .finish()
    }
}
