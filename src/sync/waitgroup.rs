//! A wait group in crossbeam's style: the count is the number of clones.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::waiters::{self, Internal, OnUnwind, WAITING, Waiter};
use crate::task::WaitingOn;

const DONE: u8 = 1;

struct State {
    /// Live `WaitGroup` values.
    count: usize,
    waiting: Vec<Arc<Waiter>>,
}

/// Waits until a group of tasks or threads is done.
///
/// kvant uses crossbeam's design rather than Go's `add`/`done`: every
/// participant holds a clone, **cloning adds one, dropping is "done"**, and
/// [`wait`](Self::wait) consumes the waiter's own clone and returns when all
/// other clones are gone. The count can therefore never go negative or be
/// forgotten by a missed `done` (a panicking task drops its clone too).
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use kvant::sync::WaitGroup;
///
/// let rt = kvant::Runtime::builder().workers(2).build().unwrap();
/// let wg = WaitGroup::new();
/// let hits = Arc::new(AtomicUsize::new(0));
/// for _ in 0..5 {
///     let (wg, hits) = (wg.clone(), hits.clone());
///     rt.spawn(move || {
///         hits.fetch_add(1, Ordering::SeqCst);
///         drop(wg);
///     });
/// }
/// wg.wait(); // blocks this OS thread; inside a task it would park the task
/// assert_eq!(hits.load(Ordering::SeqCst), 5);
/// ```
pub struct WaitGroup {
    inner: Arc<Internal<State>>,
}

impl WaitGroup {
    /// A new group with one member (this value).
    pub fn new() -> WaitGroup {
        WaitGroup {
            inner: Arc::new(Internal::new(State {
                count: 1,
                waiting: Vec::new(),
            })),
        }
    }

    /// Drop this member and wait until every other member is dropped.
    pub fn wait(self) {
        let done = self.wait_until(None);
        debug_assert!(done);
    }

    /// Like [`wait`](Self::wait), giving up after `timeout`. Returns true if
    /// the group finished. Either way this member is dropped.
    pub fn wait_timeout(self, timeout: Duration) -> bool {
        self.wait_until(waiters::deadline_after(timeout))
    }

    /// Members alive right now (a snapshot).
    pub fn count(&self) -> usize {
        self.inner.lock().count
    }

    fn wait_until(self, deadline: Option<Instant>) -> bool {
        let inner = self.inner.clone();
        let w = {
            let mut st = inner.lock();
            if st.count == 1 {
                drop(st);
                drop(self);
                return true;
            }
            let w = Waiter::new();
            st.waiting.push(w.clone());
            w
        };
        drop(self); // the last drop, maybe ours, releases every waiter
        let settle = || {
            let mut st = inner.lock();
            let pending = w.state() == WAITING;
            if pending {
                st.waiting.retain(|x| !Arc::ptr_eq(x, &w));
            }
            !pending
        };
        let cleanup = OnUnwind::new(|| {
            settle();
        });
        let done = w.park(
            deadline,
            WaitingOn::WaitGroup(Arc::as_ptr(&inner) as *const () as usize),
        ) == DONE
            || settle();
        cleanup.disarm();
        done
    }
}

impl Default for WaitGroup {
    fn default() -> Self {
        Self::new()
    }
}

impl Clone for WaitGroup {
    fn clone(&self) -> Self {
        self.inner.lock().count += 1;
        WaitGroup {
            inner: self.inner.clone(),
        }
    }
}

impl Drop for WaitGroup {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        st.count -= 1;
        if st.count > 0 {
            return;
        }
        let all = std::mem::take(&mut st.waiting);
        for w in &all {
            w.resolve(DONE);
        }
        let _no_preempt = st.unlock();
        waiters::wake_all(all);
    }
}

impl std::fmt::Debug for WaitGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitGroup")
            .field("count", &self.count())
            .finish()
    }
}
