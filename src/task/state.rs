//! A task's lifecycle word: one byte that holds every flag taking part in a
//! decision about the task's life, changed only by the transitions below.
//! Kept apart from the task so loom can check the transitions alone
//! (`loom_` tests at the end; `RUSTFLAGS="--cfg loom" cargo test --lib loom_`).
//!
//! # The word
//!
//! | bits | name | set by | cleared by |
//! |---|---|---|---|
//! | 0-1 | phase: `IDLE`, `QUEUED`, `RUNNING`, `DONE` | the transitions below | the transitions below |
//! | 2 | `NOTIFIED`: a wake-up token | `notify`, `cancel` on a queued or running task | `take_token`, `finish_park` |
//! | 3 | `CANCELLED`: aborted, or cancelled by shutdown | `cancel`, `claim_idle`, a worker at shutdown | never |
//! | 4 | `ABANDONED`: its work was done elsewhere (`join`) | `abandon` | never |
//! | 5 | `STARTED`: it has a coroutine and a stack | the run-claim holder, at its first slice | never |
//! | 6 | `OVERFLOWED`: ended by the stack-overflow handler | the fault handler, on the task's thread | never |
//! | 7 | `REPORTED`: the monitor filed a blocking report | the monitor | the task, taking the report |
//!
//! # Transitions of the phase
//!
//! | from | to | by | when |
//! |---|---|---|---|
//! | (new) | `QUEUED` | the spawner | `new_queued` |
//! | `QUEUED` | `RUNNING` | the worker that popped it | `begin_run` (the run claim) |
//! | `RUNNING` | `RUNNING` | the claim holder | a yield or preemption: queued again without leaving `RUNNING` |
//! | `RUNNING` | `IDLE` | the claim holder | `finish_park`, no token |
//! | `RUNNING` | `QUEUED` | the claim holder | `finish_park` with a token (consumed) |
//! | `IDLE` | `QUEUED` | one waker, or `cancel` | `notify` / `cancel` returned true: the caller queues it |
//! | `IDLE` | `QUEUED` + `CANCELLED` | shutdown | `claim_idle` |
//! | `RUNNING` | `DONE` | the claim holder | `finish` |
//!
//! Only the party that moved the task to `QUEUED` pushes it to a queue, so
//! a task is in at most one queue, and a worker that pops it holds the only
//! run claim (checked in debug builds: `Header::begin_run` sets a `claimed` flag
//! that the claim clears when it ends).
//!
//! # Who touches the rest of the header
//!
//! - `id`, `name`, `stack_size`, `preemptible`, `scheduler`: written once at
//!   spawn, read by anyone.
//! - `body`, `trap`: only the run-claim holder (`RunClaim`).
//! - `preempt.*` (preemption count, pending flag, in-signal-frame flag,
//!   root mark, yielder, stack bounds): the task itself and the signal
//!   handler on its thread while it runs, the claim holder between slices.
//!   The in-signal-frame flag is cleared at every slice's start, so it
//!   stays out of this word: an atomic read-modify-write per slice would
//!   cost a yield a locked instruction.
//! - `shield`: a nesting count only the task itself changes; the claim
//!   holder reads it between slices (`prepare`).
//! - `stats`: counters, added to by the claim holder and the monitor.
//! - `locals`: the task itself.
//! - `registry_slot`: the task table, under its lock.

use crate::loom::atomic::{AtomicU8, Ordering};

use super::TaskId;

const IDLE: u8 = 0;
const QUEUED: u8 = 1;
const RUNNING: u8 = 2;
const DONE: u8 = 3;
const PHASE: u8 = 3;
const NOTIFIED: u8 = 1 << 2;
const CANCELLED: u8 = 1 << 3;
const ABANDONED: u8 = 1 << 4;
const STARTED: u8 = 1 << 5;
const OVERFLOWED: u8 = 1 << 6;
const REPORTED: u8 = 1 << 7;

pub(crate) struct TaskState(AtomicU8);

/// The phase part of the word, named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Idle,
    Queued,
    /// Running, or queued again after a yield or a preemption.
    Running,
    Done,
}

/// One look at the word, for a decision that takes several of its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot(u8);

impl Snapshot {
    #[inline(always)]
    pub(crate) fn cancelled(self) -> bool {
        self.0 & CANCELLED != 0
    }
    #[inline(always)]
    pub(crate) fn abandoned(self) -> bool {
        self.0 & ABANDONED != 0
    }
    #[inline(always)]
    pub(crate) fn started(self) -> bool {
        self.0 & STARTED != 0
    }
    #[inline(always)]
    pub(crate) fn overflowed(self) -> bool {
        self.0 & OVERFLOWED != 0
    }
    #[inline(always)]
    pub(crate) fn reported(self) -> bool {
        self.0 & REPORTED != 0
    }
    /// Cancelled or reported: a switch point has something to check.
    #[inline(always)]
    pub(crate) fn needs_check(self) -> bool {
        self.0 & (CANCELLED | REPORTED) != 0
    }
}

impl TaskState {
    /// A new task is queued by its spawner.
    pub(crate) fn new_queued() -> Self {
        TaskState(AtomicU8::new(QUEUED))
    }

    /// Look at the word (Acquire: a cancellation is seen with what the
    /// canceller did before it).
    #[inline(always)]
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot(self.0.load(Ordering::Acquire))
    }

    /// A worker popped the task from a run queue. A task that yielded or was
    /// preempted goes back to a queue *without* leaving `RUNNING` (to a
    /// waker, "queued after a yield" and "running" mean the same: set the
    /// token, do not queue it again), which saves two locked instructions
    /// per yield; only tasks coming from `QUEUED` need the transition.
    #[inline(always)]
    pub(crate) fn begin_run(&self, id: TaskId) -> Snapshot {
        let s = self.0.load(Ordering::Acquire);
        if s & PHASE != QUEUED {
            return Snapshot(s);
        }
        // QUEUED + 1 is RUNNING: the flags above the phase are untouched.
        let prev = self.0.fetch_add(RUNNING - QUEUED, Ordering::Acquire);
        debug_assert_eq!(prev & PHASE, QUEUED, "task {id} was not queued");
        Snapshot(prev + (RUNNING - QUEUED))
    }

    /// After a `Park` switch. Returns true if the task must be queued again
    /// because a wake-up arrived while it was switching out (token consumed).
    #[inline]
    pub(crate) fn finish_park(&self) -> bool {
        // The usual word is guessed, not loaded: a load before the locked
        // instruction can fetch the cache line twice (shared, then owned)
        // when a waker on another core wrote it last. A wrong guess costs
        // one more try with the real word.
        self.transition(RUNNING | STARTED, |s| {
            debug_assert_eq!(s & PHASE, RUNNING);
            Ok(if s & NOTIFIED != 0 {
                ((s & !(PHASE | NOTIFIED)) | QUEUED, true)
            } else {
                ((s & !PHASE) | IDLE, false)
            })
        })
    }

    /// Move the word from `s` (a guess, or a fresh load) to what `step`
    /// makes of it, retrying `step` on the word found if another thread
    /// changed it meanwhile. `step` gives the next word and the result, or
    /// `Err(result)` to leave the word as it is.
    #[inline(always)]
    fn transition<R>(&self, mut s: u8, step: impl Fn(u8) -> Result<(u8, R), R>) -> R {
        loop {
            let (next, result) = match step(s) {
                Ok(x) => x,
                Err(result) => return result,
            };
            match self
                .0
                .compare_exchange_weak(s, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return result,
                Err(actual) => s = actual,
            }
        }
    }

    /// The task ended (its claim holder says so). The flags stay readable.
    /// A locked `or`, not a load and a store: with the load and store, the
    /// loom model `loom_abort_against_finishing` found an execution where a
    /// `cancel` racing the end left the word `RUNNING`.
    #[inline]
    pub(crate) fn finish(&self) {
        self.0.fetch_or(DONE, Ordering::Release);
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
    #[inline]
    pub(crate) fn notify(&self) -> bool {
        self.wake_with(0)
    }

    /// Abort: mark the task cancelled and wake it so a worker unwinds it.
    /// Returns true if the caller must put it in a run queue (it was
    /// parked); a queued or running task gets a token and the flag, which
    /// its next switch point acts on. False for a finished task.
    #[inline]
    pub(crate) fn cancel(&self) -> bool {
        self.wake_with(CANCELLED)
    }

    /// Set `flags` and wake: `IDLE` becomes `QUEUED` (true: queue it), a
    /// queued or running task gets the token.
    #[inline]
    fn wake_with(&self, flags: u8) -> bool {
        self.transition(self.0.load(Ordering::Acquire), |s| {
            if s & PHASE == DONE || (s & NOTIFIED != 0 && s & flags == flags) {
                return Err(false);
            }
            Ok(if s & PHASE == IDLE {
                ((s & !PHASE) | QUEUED | flags, true)
            } else {
                (s | NOTIFIED | flags, false)
            })
        })
    }

    /// Shutdown: take a parked task out of `IDLE`, cancelled, so a worker
    /// unwinds it. False if it was not parked (a waker got it first, or it
    /// is queued or running: the workers cancel those as they resume them).
    pub(crate) fn claim_idle(&self) -> bool {
        self.transition(self.0.load(Ordering::Acquire), |s| {
            if s & PHASE != IDLE {
                return Err(false);
            }
            Ok(((s & !PHASE) | QUEUED | CANCELLED, true))
        })
    }

    /// Shutdown reached a queued or running task: it is cancelled too.
    #[inline]
    pub(crate) fn set_cancelled(&self) {
        self.0.fetch_or(CANCELLED, Ordering::Release);
    }

    /// Its work was done elsewhere: if it has not started, it never will.
    #[inline]
    pub(crate) fn abandon(&self) {
        self.0.fetch_or(ABANDONED, Ordering::Release);
    }

    /// The run-claim holder gave the task its coroutine and stack.
    #[inline]
    pub(crate) fn set_started(&self) {
        self.0.fetch_or(STARTED, Ordering::Relaxed);
    }

    /// The stack-overflow handler ended the task (on the task's thread; a
    /// locked `or` is async-signal-safe).
    pub(crate) fn set_overflowed(&self) {
        self.0.fetch_or(OVERFLOWED, Ordering::Release);
    }

    /// The monitor filed a blocking report for the task.
    pub(crate) fn set_reported(&self) {
        self.0.fetch_or(REPORTED, Ordering::Relaxed);
    }

    /// The task takes its report's flag (true once per report).
    pub(crate) fn take_reported(&self) -> bool {
        self.0.load(Ordering::Relaxed) & REPORTED != 0
            && self.0.fetch_and(!REPORTED, Ordering::Relaxed) & REPORTED != 0
    }

    /// Where the task is in its life (for a dump: a relaxed look).
    pub(crate) fn phase(&self) -> Phase {
        match self.0.load(Ordering::Relaxed) & PHASE {
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

/// What a worker does with a task it claimed, before any slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Cancelled or abandoned before its first slice: drop its closure and
    /// fail it; it never takes a stack.
    Discard,
    /// Cancelled at shutdown while suspended inside a signal frame, which
    /// cannot be unwound through: leak it.
    Leak,
    /// Give it a stack and run it from the start.
    Start,
    /// Resume it as `Resume` says: unwind it (`Cancel`), or run on.
    Resume(super::coroutine::Resume),
}

/// The decision of a worker that holds a task's run claim, from one look
/// at the word (`snap`) and what else it knows: whether the runtime is
/// shutting down, whether the task is suspended inside a signal frame, and
/// whether it waits in a shielded wait (`kvant::join`, `scope`).
///
/// - An aborted task is unwound from the switch point it stopped at. One
///   suspended inside a signal frame (preempted, or switched out of a
///   std::sync wait) cannot be: it runs on to its next switch point, which
///   unwinds it; at shutdown there is no time for that, and it is leaked.
/// - A shielded wait is resumed normally: the wait goes on, and user code
///   after it stays preemptible; it unwinds at its first switch point
///   after the shield.
///
/// `shielded` is asked only when it decides (a cancelled task to resume):
/// the shield count is a field of its own, not worth a load per slice.
#[inline(always)]
pub(crate) fn plan(
    snap: Snapshot,
    shutdown: bool,
    in_signal_frame: bool,
    shielded: impl FnOnce() -> bool,
) -> Plan {
    use super::coroutine::Resume;
    let cancel = shutdown || snap.cancelled();
    if !snap.started() {
        return if cancel || snap.abandoned() {
            Plan::Discard
        } else {
            Plan::Start
        };
    }
    if cancel && in_signal_frame && shutdown {
        return Plan::Leak;
    }
    if cancel && !in_signal_frame && !shielded() {
        Plan::Resume(Resume::Cancel)
    } else {
        Plan::Resume(Resume::Run)
    }
}

#[cfg(test)]
mod tests {
    use super::super::coroutine::Resume;
    use super::*;

    fn word(flags: u8) -> Snapshot {
        Snapshot(RUNNING | flags)
    }

    #[test]
    fn the_plan_table() {
        let run = Plan::Resume(Resume::Run);
        let unwind = Plan::Resume(Resume::Cancel);
        // (flags, shutdown, in signal frame, shielded) -> plan
        let table = [
            (0, false, false, false, Plan::Start),
            (CANCELLED, false, false, false, Plan::Discard),
            (ABANDONED, false, false, false, Plan::Discard),
            (0, true, false, false, Plan::Discard),
            (STARTED, false, false, false, run),
            (STARTED | ABANDONED, false, false, false, run),
            (STARTED | CANCELLED, false, false, false, unwind),
            (STARTED, true, false, false, unwind),
            (STARTED | CANCELLED, false, true, false, run),
            (STARTED | CANCELLED, true, true, false, Plan::Leak),
            (STARTED | CANCELLED, false, false, true, run),
            (STARTED | CANCELLED, true, false, true, run),
            (STARTED | CANCELLED, true, true, true, Plan::Leak),
        ];
        for (flags, shutdown, sig, shield, want) in table {
            assert_eq!(
                plan(word(flags), shutdown, sig, || shield),
                want,
                "flags {flags:#b}, shutdown {shutdown}, signal frame {sig}, shielded {shield}"
            );
        }
    }

    #[test]
    fn flags_survive_every_transition() {
        let st = TaskState::new_queued();
        st.abandon();
        let snap = st.begin_run(TaskId(1));
        assert!(snap.abandoned() && st.phase() == Phase::Running);
        st.set_started();
        st.set_reported();
        assert!(!st.finish_park(), "no token: parked");
        assert_eq!(st.phase(), Phase::Idle);
        assert!(st.cancel(), "a parked task is queued by its canceller");
        let s = st.snapshot();
        assert!(s.cancelled() && s.started() && s.abandoned() && s.reported());
        assert_eq!(st.phase(), Phase::Queued);
        assert!(!st.cancel() && !st.notify(), "already queued");
        st.begin_run(TaskId(1));
        assert!(st.take_token(), "cancel left a token on the queued task");
        assert!(st.take_reported() && !st.take_reported());
        st.set_overflowed();
        st.finish();
        let s = st.snapshot();
        assert_eq!(st.phase(), Phase::Done);
        assert!(s.cancelled() && s.started() && s.overflowed() && !s.reported());
        assert!(
            !st.notify() && !st.cancel() && !st.claim_idle(),
            "done is final"
        );
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
