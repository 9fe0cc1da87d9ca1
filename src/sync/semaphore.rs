//! A counting semaphore with FIFO hand-off.
//!
//! Permits released while callers wait are handed straight to the oldest
//! waiter (they never become "available" for a newcomer to grab first), so a
//! waiter cannot be starved. Invariant, under the internal lock: if anyone
//! waits, no permit is available.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::waiters::{self, Internal, OnUnwind, WAITING, Waiter};
use crate::task::WaitingOn;

const GRANTED: u8 = 1;

struct State {
    permits: usize,
    queue: VecDeque<Arc<Waiter>>,
}

/// A counting semaphore: at most `permits` holders at once. Acquiring parks
/// only the calling green thread (or blocks an OS thread) until a permit is
/// free; permits are returned when the RAII [`SemaphorePermit`] drops.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use kvant::sync::Semaphore;
///
/// let rt = kvant::Runtime::builder().workers(2).build().unwrap();
/// let sem = Arc::new(Semaphore::new(2));
/// let inside = Arc::new(AtomicUsize::new(0));
/// let tasks: Vec<_> = (0..6)
///     .map(|_| {
///         let (sem, inside) = (sem.clone(), inside.clone());
///         rt.spawn(move || {
///             let _permit = sem.acquire();
///             assert!(inside.fetch_add(1, Ordering::SeqCst) < 2);
///             kvant::yield_now();
///             inside.fetch_sub(1, Ordering::SeqCst);
///         })
///     })
///     .collect();
/// for t in tasks {
///     t.join().unwrap();
/// }
/// assert_eq!(sem.available_permits(), 2);
/// ```
pub struct Semaphore {
    state: Internal<State>,
}

/// A permit from [`Semaphore::acquire`]; gives it back when dropped.
#[must_use = "the permit is returned as soon as it is dropped"]
pub struct SemaphorePermit<'a> {
    sem: &'a Semaphore,
}

/// A permit from [`Semaphore::acquire_owned`]: like [`SemaphorePermit`] but
/// keeps the semaphore alive, so it can move into a `'static` task.
#[must_use = "the permit is returned as soon as it is dropped"]
pub struct OwnedSemaphorePermit {
    /// `None` once forgotten.
    sem: Option<Arc<Semaphore>>,
}

impl Semaphore {
    /// A semaphore with `permits` permits available (usable in a `static`).
    pub const fn new(permits: usize) -> Semaphore {
        Semaphore {
            state: Internal::new(State {
                permits,
                queue: VecDeque::new(),
            }),
        }
    }

    /// Take a permit, waiting as long as necessary.
    pub fn acquire(&self) -> SemaphorePermit<'_> {
        let granted = self.acquire_until(None);
        debug_assert!(granted);
        SemaphorePermit { sem: self }
    }

    /// Take a permit if one is free right now.
    pub fn try_acquire(&self) -> Option<SemaphorePermit<'_>> {
        let mut st = self.state.lock();
        if st.permits == 0 {
            return None;
        }
        st.permits -= 1;
        Some(SemaphorePermit { sem: self })
    }

    /// Take a permit, waiting at most `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<SemaphorePermit<'_>> {
        self.acquire_until(waiters::deadline_after(timeout))
            .then(|| SemaphorePermit { sem: self })
    }

    /// Take a permit, waiting at most until `deadline`.
    pub fn acquire_deadline(&self, deadline: Instant) -> Option<SemaphorePermit<'_>> {
        self.acquire_until(Some(deadline))
            .then(|| SemaphorePermit { sem: self })
    }

    /// Like [`acquire`](Self::acquire), for a semaphore in an `Arc`.
    pub fn acquire_owned(self: &Arc<Self>) -> OwnedSemaphorePermit {
        let granted = self.acquire_until(None);
        debug_assert!(granted);
        OwnedSemaphorePermit {
            sem: Some(self.clone()),
        }
    }

    /// Add `n` permits (hands them to waiters first).
    pub fn add_permits(&self, n: usize) {
        let mut st = self.state.lock();
        st.permits = st
            .permits
            .checked_add(n)
            .expect("kvant: Semaphore permit count overflow");
        let mut granted = Vec::new();
        while st.permits > 0 {
            let Some(w) = st.queue.pop_front() else { break };
            st.permits -= 1;
            w.resolve(GRANTED);
            granted.push(w);
        }
        let _no_preempt = st.unlock();
        waiters::wake_all(granted);
    }

    /// Add one permit: the manual counterpart of a permit that was
    /// [`forget`](SemaphorePermit::forget)-ed.
    pub fn release(&self) {
        self.add_permits(1);
    }

    /// Permits free right now (a snapshot).
    pub fn available_permits(&self) -> usize {
        self.state.lock().permits
    }

    /// Returns true if a permit was taken before `deadline` (`None`: never
    /// give up).
    fn acquire_until(&self, deadline: Option<Instant>) -> bool {
        let w = {
            let mut st = self.state.lock();
            if st.permits > 0 {
                st.permits -= 1;
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            let w = Waiter::new();
            st.queue.push_back(w.clone());
            w
        };
        let cleanup = OnUnwind::new(|| {
            if self.settle(&w) {
                self.release(); // granted just before cancellation: give it back
            }
        });
        let granted = w.park(deadline, WaitingOn::Semaphore(self as *const Self as usize))
            == GRANTED
            || self.settle(&w);
        cleanup.disarm();
        granted
    }

    /// The wait ended without seeing a grant: under the lock, either withdraw
    /// (false) or accept a grant that raced with the timeout (true).
    fn settle(&self, w: &Arc<Waiter>) -> bool {
        let mut st = self.state.lock();
        if w.state() == WAITING {
            waiters::remove(&mut st.queue, w);
            false
        } else {
            true
        }
    }
}

impl SemaphorePermit<'_> {
    /// Keep the permit consumed: it is not returned on drop (give it back
    /// later with [`Semaphore::release`], or never).
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl OwnedSemaphorePermit {
    /// Keep the permit consumed (see [`SemaphorePermit::forget`]).
    pub fn forget(mut self) {
        self.sem = None;
    }
}

impl Drop for SemaphorePermit<'_> {
    fn drop(&mut self) {
        self.sem.release();
    }
}

impl Drop for OwnedSemaphorePermit {
    fn drop(&mut self) {
        if let Some(sem) = self.sem.take() {
            sem.release();
        }
    }
}

impl std::fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.state.lock();
        let (permits, waiting) = (st.permits, st.queue.len());
        drop(st);
        f.debug_struct("Semaphore")
            .field("permits", &permits)
            .field("waiting", &waiting)
            .finish()
    }
}

impl std::fmt::Debug for SemaphorePermit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad("SemaphorePermit")
    }
}

impl std::fmt::Debug for OwnedSemaphorePermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad("OwnedSemaphorePermit")
    }
}
