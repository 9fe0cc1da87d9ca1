//! A task's scheduling state word (see the module docs of `task` for the
//! states): one byte, changed only by the transitions below. Kept apart
//! from the task so loom can check the transitions alone (`loom_` tests at
//! the end; `RUSTFLAGS="--cfg loom" cargo test --lib loom_`).

use crate::loom::atomic::{AtomicU8, Ordering};

use super::TaskId;

const IDLE: u8 = 0;
const QUEUED: u8 = 1;
const RUNNING: u8 = 2;
const DONE: u8 = 3;
const LIFECYCLE: u8 = 3;
const NOTIFIED: u8 = 4;

pub(crate) struct TaskState(AtomicU8);

/// The lifecycle part of the word, named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Idle,
    Queued,
    /// Running, or queued again after a yield or a preemption.
    Running,
    Done,
}

impl TaskState {
    /// A new task is queued by its spawner.
    pub(crate) fn new_queued() -> Self {
        TaskState(AtomicU8::new(QUEUED))
    }

    /// A worker popped the task from a run queue. A task that yielded or was
    /// preempted goes back to a queue *without* leaving `RUNNING` (to a
    /// waker, "queued after a yield" and "running" mean the same: set the
    /// token, do not queue it again), which saves two locked instructions
    /// per yield; only tasks coming from `QUEUED` need the transition.
    pub(crate) fn begin_run(&self, id: TaskId) {
        if self.0.load(Ordering::Acquire) & LIFECYCLE == QUEUED {
            let prev = self.0.fetch_add(RUNNING - QUEUED, Ordering::Acquire);
            debug_assert_eq!(prev & LIFECYCLE, QUEUED, "task {id} was not queued");
        }
    }

    /// After a `Park` switch. Returns true if the task must be queued again
    /// because a wake-up arrived while it was switching out (token consumed).
    pub(crate) fn finish_park(&self) -> bool {
        match self
            .0
            .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => false,
            Err(s) => {
                debug_assert_eq!(s, RUNNING | NOTIFIED);
                self.0.store(QUEUED, Ordering::Release);
                true
            }
        }
    }

    pub(crate) fn finish(&self) {
        self.0.store(DONE, Ordering::Release);
    }

    /// Consume a wake-up token if one is pending (called by the task itself
    /// before it suspends to park).
    ///
    /// Looks before it clears: without a token (the common case) the task
    /// suspends, and a token set after this look is caught by
    /// `finish_park`, exactly as one set just after the clear would be; a
    /// locked instruction per park is saved.
    #[inline]
    pub(crate) fn take_token(&self) -> bool {
        self.0.load(Ordering::Acquire) & NOTIFIED != 0
            && self.0.fetch_and(!NOTIFIED, Ordering::AcqRel) & NOTIFIED != 0
    }

    /// Wake the task. Returns true if the caller must put it in a run queue.
    pub(crate) fn notify(&self) -> bool {
        let mut s = self.0.load(Ordering::Acquire);
        loop {
            if s & NOTIFIED != 0 || s & LIFECYCLE == DONE {
                return false;
            }
            let (next, schedule) = if s & LIFECYCLE == IDLE {
                (QUEUED, true)
            } else {
                (s | NOTIFIED, false)
            };
            match self
                .0
                .compare_exchange_weak(s, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return schedule,
                Err(actual) => s = actual,
            }
        }
    }

    /// Shutdown: take a parked task out of `IDLE` so it can be cancelled.
    pub(crate) fn claim_idle(&self) -> bool {
        self.0
            .compare_exchange(IDLE, QUEUED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Where the task is in its life (for a dump: a relaxed look).
    pub(crate) fn phase(&self) -> Phase {
        match self.0.load(Ordering::Relaxed) & LIFECYCLE {
            IDLE => Phase::Idle,
            QUEUED => Phase::Queued,
            RUNNING => Phase::Running,
            _ => Phase::Done,
        }
    }

    /// The raw word, for `Debug`.
    pub(crate) fn raw(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Model checks: every interleaving of a task parking against its wakers.
/// The invariant is the one the scheduler rests on: a wake-up is never
/// lost, and the task is queued at most once per wake-up (never by two
/// parties at once).
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    fn id() -> TaskId {
        TaskId(1)
    }

    /// The task runs and parks (after checking its token, as `park` does)
    /// while another thread wakes it once. Exactly one of them queues it,
    /// or the task never slept (it took the token).
    #[test]
    fn loom_a_wake_up_racing_a_park_is_never_lost_nor_doubled() {
        loom::model(|| {
            let st = Arc::new(TaskState::new_queued());
            st.begin_run(id());
            let s2 = st.clone();
            let waker = loom::thread::spawn(move || s2.notify());
            // The task: park() checks its token first, then switches out.
            let took_token = st.take_token();
            let worker_requeues = !took_token && st.finish_park();
            let waker_queues = waker.join().unwrap();
            let queued = usize::from(worker_requeues) + usize::from(waker_queues);
            if took_token {
                assert_eq!(queued, 0, "the task did not sleep; nobody queues it");
            } else {
                assert_eq!(queued, 1, "exactly one party queues the parked task");
            }
        });
    }

    /// Two wakers against one park: still queued exactly once.
    #[test]
    fn loom_two_wakers_queue_a_parked_task_once() {
        loom::model(|| {
            let st = Arc::new(TaskState::new_queued());
            st.begin_run(id());
            let wakers: Vec<_> = (0..2)
                .map(|_| {
                    let s = st.clone();
                    loom::thread::spawn(move || s.notify())
                })
                .collect();
            let took_token = st.take_token();
            let requeued = !took_token && st.finish_park();
            let by_wakers: usize = wakers
                .into_iter()
                .map(|w| usize::from(w.join().unwrap()))
                .sum();
            let queued = by_wakers + usize::from(requeued);
            assert!(queued <= 1, "queued twice");
            if !took_token {
                assert_eq!(queued, 1, "a parked task was left asleep");
            }
        });
    }

    /// Shutdown's claim of an idle task against a waker: one of them gets it.
    #[test]
    fn loom_shutdown_claim_and_a_waker_never_both_queue() {
        loom::model(|| {
            let st = Arc::new(TaskState::new_queued());
            st.begin_run(id());
            assert!(!st.finish_park()); // parked, nobody woke it yet
            let s2 = st.clone();
            let waker = loom::thread::spawn(move || s2.notify());
            let claimed = st.claim_idle();
            let woke = waker.join().unwrap();
            assert_eq!(usize::from(claimed) + usize::from(woke), 1);
        });
    }
}
