//! A reusable barrier: `n` parties meet, one of them is the leader.

use std::sync::Arc;

use super::waiters::{self, Internal, OnUnwind, WAITING, Waiter};
use crate::task::WaitingOn;

const RELEASED: u8 = 1;

struct State {
    /// Parties that arrived in the current round.
    arrived: usize,
    waiting: Vec<Arc<Waiter>>,
}

/// Lets `n` tasks or threads wait until all of them have reached a point.
/// Waiting parks only the green thread. Reusable: after a round releases,
/// the next `n` calls to [`wait`](Self::wait) form the next round.
///
/// ```
/// use std::sync::Arc;
/// use kvant::sync::Barrier;
///
/// let rt = kvant::Runtime::builder().workers(2).build().unwrap();
/// let barrier = Arc::new(Barrier::new(4));
/// let tasks: Vec<_> = (0..4)
///     .map(|_| {
///         let b = barrier.clone();
///         rt.spawn(move || b.wait().is_leader())
///     })
///     .collect();
/// let leaders = tasks.into_iter().map(|t| t.join().unwrap()).filter(|&l| l).count();
/// assert_eq!(leaders, 1);
/// ```
pub struct Barrier {
    n: usize,
    state: Internal<State>,
}

/// What [`Barrier::wait`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarrierWaitResult {
    leader: bool,
}

impl BarrierWaitResult {
    /// True for exactly one party per round (the last to arrive).
    pub fn is_leader(&self) -> bool {
        self.leader
    }
}

impl Barrier {
    /// A barrier for `n` parties. Like std, `n == 0` behaves as `n == 1`:
    /// every `wait` returns at once, as leader.
    pub const fn new(n: usize) -> Barrier {
        Barrier {
            n,
            state: Internal::new(State {
                arrived: 0,
                waiting: Vec::new(),
            }),
        }
    }

    /// Wait until all `n` parties of this round have called `wait`.
    pub fn wait(&self) -> BarrierWaitResult {
        self.wait_deadline(None)
            .expect("an untimed barrier wait ends released")
    }

    /// Like [`wait`](Self::wait), giving up after `timeout`: `None` if the
    /// round did not complete in time, and this party then leaves it as if
    /// it had never arrived (the round still needs `n` parties).
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = kvant::sync::Barrier::new(2);
    /// assert!(b.wait_timeout(Duration::from_millis(5)).is_none());
    /// ```
    pub fn wait_timeout(&self, timeout: std::time::Duration) -> Option<BarrierWaitResult> {
        self.wait_deadline(waiters::deadline_after(timeout))
    }

    fn wait_deadline(&self, deadline: Option<std::time::Instant>) -> Option<BarrierWaitResult> {
        let w = {
            let mut st = self.state.lock();
            st.arrived += 1;
            if st.arrived >= self.n {
                st.arrived = 0;
                let all = std::mem::take(&mut st.waiting);
                for w in &all {
                    w.resolve(RELEASED);
                }
                let _no_preempt = st.unlock();
                waiters::wake_all(all);
                return Some(BarrierWaitResult { leader: true });
            }
            let w = Waiter::new();
            st.waiting.push(w.clone());
            w
        };
        // Cancelled or timed out while waiting: leave the round as if never
        // arrived, unless it was released meanwhile (then that stands).
        let leave = || {
            let mut st = self.state.lock();
            let s = w.state();
            if s == WAITING {
                st.waiting.retain(|x| !Arc::ptr_eq(x, &w));
                st.arrived -= 1;
            }
            s
        };
        let cleanup = OnUnwind::new(|| {
            leave();
        });
        let mut s = w.park(deadline, WaitingOn::Barrier(self as *const Self as usize));
        cleanup.disarm();
        if s == WAITING {
            s = leave();
        }
        (s != WAITING).then_some(BarrierWaitResult { leader: false })
    }
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barrier")
            .field("n", &self.n)
            .finish_non_exhaustive()
    }
}
