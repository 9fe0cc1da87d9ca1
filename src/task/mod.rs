//! The task core: green threads with their own stack, their lifecycle word
//! and the handle that joins them. It knows no scheduler: a task reaches the
//! runtime that runs it only through `schedule::Schedule`.
//!
//! # Scheduling states
//!
//! A task is in exactly one of: `QUEUED` (in one run queue), `RUNNING` (one
//! worker resumed it), `IDLE` (parked; no queue holds it, a waker may), or
//! `DONE`. The `NOTIFIED` bit is a wake-up token, exactly like
//! `std::thread::park`'s: `unpark` on a queued or running task sets it, and the
//! task's next `park` consumes it instead of sleeping. That single bit is why a
//! wake-up that races with a task going to sleep is never lost: either the
//! waker sees `IDLE` and queues the task, or the worker parking it sees the
//! token and queues it again itself.
//!
//! The same word holds every flag that takes part in a decision about the
//! task's life (cancelled, abandoned, started, overflowed, reported):
//! `state.rs` has the transition table and who may touch each field of the
//! header, and `loom_models.rs` checks the lifecycle against a mock
//! scheduler.

mod abort;
mod bridge;
pub(crate) mod coroutine;
pub(crate) mod current;
pub(crate) mod join;
pub(crate) mod join_error;
pub(crate) mod local;
#[cfg(all(test, loom))]
mod loom_models;
pub(crate) mod note;
pub(crate) mod owned;
pub(crate) mod park;
pub(crate) mod ready;
pub(crate) mod schedule;
pub(crate) mod stack;
pub(crate) mod state;
mod wait;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, compiler_fence};

use crate::metrics::Counter;
use coroutine::BodyCell;
use join::Completion;

pub use abort::AbortHandle;
pub use bridge::block_on_future;
pub use current::{Current, current, is_cancelled, try_current, yield_now};
pub use join::JoinHandle;
pub use join_error::JoinError;
pub use local::{AccessError, LocalKey};
pub use note::WaitingOn;
// The spawning façades live above the runtime (`spawning/`); this is their
// public path.
pub use crate::spawning::{
    Builder, Elapsed, JoinSet, Scope, ScopedJoinHandle, SpawnTarget, join, scope,
};
pub use wait::{WaitFor, WaitResult, Waited, wait, wait_owned};

/// What a task is made with (`task::Builder`'s options): its name, its
/// stack size (`None`: the runtime's), and whether the quantum may preempt it.
#[derive(Clone, Debug)]
pub(crate) struct SpawnOptions {
    pub name: Option<String>,
    pub stack_size: Option<usize>,
    pub preemptible: bool,
}

impl Default for SpawnOptions {
    fn default() -> Self {
        SpawnOptions {
            name: None,
            stack_size: None,
            preemptible: true,
        }
    }
}

/// Unique identifier of a task within the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(u64);

impl TaskId {
    /// Ids are unique process-wide, but handed out to each thread in blocks:
    /// a shared counter bumped at every spawn is a cache line bouncing
    /// between the cores that spawn (measured: BENCHMARKS.md, "Measured
    /// decisions").
    fn next() -> TaskId {
        const BLOCK: u64 = 1024;
        static NEXT: AtomicU64 = AtomicU64::new(1);
        thread_local! {
            static RANGE: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
        }
        RANGE.with(|r| {
            let (mut next, mut end) = r.get();
            if next == end {
                next = NEXT.fetch_add(BLOCK, Ordering::Relaxed);
                end = next + BLOCK;
            }
            r.set((next + 1, end));
            TaskId(next)
        })
    }

    /// The id as a number (ids start at 1 and are never reused; they are
    /// unique, but not in spawn order across threads).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Per-task statistics, readable from the task's [`JoinHandle`] or
/// [`Current`] while it runs and after it ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct TaskStats {
    /// Time the task spent running on a worker, if the runtime times slices
    /// (`Builder::task_timing` or `trace`); zero otherwise.
    pub run_time: std::time::Duration,
    /// Number of slices (times a worker resumed it).
    pub slices: u64,
    /// Slices that ended because the quantum expired.
    pub preemptions: u64,
    /// Time the task held its worker's thread blocked in the kernel (a
    /// `std::thread::sleep`, `std::sync::mpsc`, blocking I/O...), as seen by
    /// the monitor once it lasted `blocking_threshold`; part of `run_time`.
    pub blocked_in_kernel: std::time::Duration,
}

#[derive(Default)]
pub(crate) struct TaskCounters {
    pub run_ticks: Counter,
    pub slices: Counter,
    pub preemptions: Counter,
    /// Written by the monitor or by the worker, whichever closes the
    /// episode (`add`).
    pub kernel_ticks: Counter,
}

impl TaskCounters {
    pub(crate) fn snapshot(&self) -> TaskStats {
        TaskStats {
            run_time: std::time::Duration::from_nanos(crate::clock::ticks_to_ns(
                self.run_ticks.get(),
            )),
            slices: self.slices.get(),
            preemptions: self.preemptions.get(),
            blocked_in_kernel: std::time::Duration::from_nanos(crate::clock::ticks_to_ns(
                self.kernel_ticks.get(),
            )),
        }
    }
}

/// State the preemption signal handler reads and the task's own
/// `preempt::disable` guards write. Lives in the task, not the worker, because
/// it must follow the task when it migrates.
#[derive(Default)]
pub(crate) struct PreemptState {
    /// Nesting depth of `preempt::disable()` guards alive in this task.
    pub disabled: AtomicU32,
    /// A preemption was requested while disabled; taken when the last guard drops.
    pub pending: AtomicBool,
    /// The task is suspended inside the kernel's signal frame (switched out
    /// by the signal handler: a preemption, or a std::sync / syscall wait).
    /// It must not be unwound from there, and is pinned to its thread
    /// unless migration is allowed.
    pub in_signal_frame: AtomicBool,
    /// Address of a local of `run_user` while the user's closure runs (0
    /// before and after): the safe-point walk must end just below it.
    pub root_mark: AtomicUsize,
    /// The corosensei yielder on the task's stack (valid once started).
    pub yielder: AtomicUsize,
    /// Usable bounds of the task's stack `[lo, hi)` (0 until started).
    pub stack_lo: AtomicUsize,
    pub stack_hi: AtomicUsize,
}

impl PreemptState {
    /// Raise the count (a `preempt::disable` guard, kvant's critical
    /// sections, a switch). Only the task itself changes its count (one task
    /// runs on one thread at a time); the signal handler, on the same
    /// thread, only reads it. So a plain load and store do: a signal lands
    /// before or after the store, never inside it, and a locked add (three
    /// critical sections per blocked channel operation) would buy nothing.
    #[inline(always)]
    pub(crate) fn raise(&self) {
        self.disabled
            .store(self.disabled.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        // A signal fence: what follows cannot be moved before the store, as
        // seen by a handler on this thread.
        compiler_fence(Ordering::SeqCst);
    }

    /// Lower the count. Returns whether a preemption the handler deferred
    /// while it was raised is now due (and clears it): the caller takes it
    /// (`current::take_deferred`).
    #[inline(always)]
    pub(crate) fn lower(&self) -> bool {
        // Saturating: a guard dropped on another task than the one that
        // made it (moved through a worker's thread-local) must not wrap
        // that task's count and leave it unpreemptible for good.
        let left = self.disabled.load(Ordering::Relaxed).saturating_sub(1);
        // What came before stays before the store (see `raise`).
        compiler_fence(Ordering::SeqCst);
        self.disabled.store(left, Ordering::Relaxed);
        // And the look at `pending` after it: a handler that ran before the
        // store saw the count above zero and set `pending`; one that runs
        // after it sees zero and never touches `pending`, so the load and
        // the store below cannot race with it.
        compiler_fence(Ordering::SeqCst);
        let take = left == 0 && self.pending.load(Ordering::Relaxed);
        if take {
            self.pending.store(false, Ordering::Relaxed);
        }
        take
    }
}

/// A green thread. Shared (`Arc`) between run queues, wakers and its handle.
///
/// One allocation holds the scheduling state and the typed result slot: the
/// handle keeps an `Arc<TaskCell<Packet<T>>>`, the runtime the same pointer
/// unsized to `Arc<Task>` (`TaskCell<dyn Completion>`).
pub(crate) type Task = TaskCell<dyn Completion>;

pub(crate) struct TaskCell<P: ?Sized> {
    pub header: Header,
    /// The result slot (and the user's closure until it runs). Last, so the
    /// cell can be unsized.
    pub packet: P,
}

/// Everything about a task except its typed result slot. Reached through
/// `Deref` from any `TaskCell`; a thin `*const Header` is what the signal
/// handlers get (they never need the packet).
pub(crate) struct Header {
    pub id: TaskId,
    pub name: Option<Arc<str>>,
    /// Bytes; at most `MAX_STACK_SIZE` (1 GiB), so 32 bits hold it.
    stack_size: u32,
    pub preemptible: bool,
    /// The lifecycle word: phase, wake-up token, cancelled, abandoned,
    /// started, overflowed, reported (`state.rs`, with who may touch what).
    pub state: state::TaskState,
    /// Nesting depth of waits that must not unwind (`current::shield_cancel`).
    pub shield: std::sync::atomic::AtomicU32,
    /// Debug builds: whether a run claim is held (two at once would
    /// resume one coroutine on two threads).
    #[cfg(debug_assertions)]
    claimed: crate::loom::atomic::AtomicBool,
    /// How to force the coroutine to return from a fault handler (set at start).
    pub trap: coroutine::TrapCell,
    /// The runtime that runs it, seen only through what the core needs.
    pub scheduler: Arc<dyn schedule::Schedule>,
    pub body: BodyCell,
    pub preempt: PreemptState,
    pub stats: TaskCounters,
    pub locals: local::LocalMap,
    /// Where the task table (`runtime/registry.rs`) keeps this task.
    pub registry_slot: AtomicUsize,
}

impl Task {
    /// Give up on a task that never ran: its coroutine is never created and
    /// the user's closure is dropped (on this thread, with its captures).
    pub(crate) fn discard_fresh(&self, claim: &RunClaim<'_>) {
        claim.drop_fresh();
        self.packet.drop_body();
    }

    /// Fail the task (unless it already has a result).
    pub(crate) fn fail(&self, failure: join_error::Failure) {
        self.packet.fail(failure, self.owner());
    }
}

impl Header {
    /// Whose result this task's packet holds.
    pub(crate) fn owner(&self) -> join::Owner<'_> {
        join::Owner {
            id: self.id,
            name: self.name.as_ref(),
        }
    }
}

impl<P: ?Sized> std::ops::Deref for TaskCell<P> {
    type Target = Header;

    fn deref(&self) -> &Header {
        &self.header
    }
}

impl<P: Completion> TaskCell<P> {
    pub(crate) fn new(
        scheduler: Arc<dyn schedule::Schedule>,
        name: Option<Arc<str>>,
        stack_size: usize,
        preemptible: bool,
        packet: P,
        id: TaskId,
    ) -> Arc<TaskCell<P>> {
        Arc::new(TaskCell {
            header: Header {
                id,
                name,
                stack_size: u32::try_from(stack_size)
                    .expect("kvant internal error: stack size checked at spawn"),
                preemptible,
                state: state::TaskState::new_queued(),
                shield: std::sync::atomic::AtomicU32::new(0),
                #[cfg(debug_assertions)]
                claimed: crate::loom::atomic::AtomicBool::new(false),
                trap: coroutine::TrapCell::new(),
                scheduler,
                body: BodyCell::new(),
                preempt: PreemptState::default(),
                stats: TaskCounters::default(),
                locals: local::LocalMap::default(),
                registry_slot: AtomicUsize::new(usize::MAX),
            },
            packet,
        })
    }
}

impl Header {
    pub(crate) fn new_id() -> TaskId {
        TaskId::next()
    }

    /// A worker popped this task from a run queue and is about to resume it.
    ///
    /// A task that yielded or was preempted goes back to a queue *without*
    /// leaving `RUNNING`: to a waker, "queued after a yield" and "running"
    /// mean the same thing (set the token, do not queue it again). That saves
    /// two locked instructions per yield; only tasks coming from `QUEUED`
    /// need the transition.
    ///
    /// # Safety
    ///
    /// The caller took this task out of a run queue (a worker's deque or
    /// pinned queue, the global queue, the shutdown's leftovers) and has not
    /// pushed it back: queue membership is what makes the claim unique (a
    /// task is pushed only by the thread that moved it to `QUEUED`, or by the
    /// holder of its run claim after a yield). The state word cannot check
    /// this (a yielded task is `RUNNING` both while queued and while it
    /// runs), and two claims at once would resume one coroutine on two
    /// threads.
    pub(crate) unsafe fn begin_run(&self) -> (RunClaim<'_>, state::Snapshot) {
        let snap = self.state.begin_run(self.id);
        #[cfg(debug_assertions)]
        assert!(
            !self.claimed.swap(true, Ordering::Acquire),
            "kvant internal error: task {} claimed to run twice at once",
            self.id
        );
        let claim = RunClaim {
            header: self,
            _thread_bound: std::marker::PhantomData,
        };
        (claim, snap)
    }

    /// After a `Park` switch. Returns true if the task must be queued again
    /// because a wake-up arrived while it was switching out (token consumed).
    #[inline]
    pub(crate) fn finish_park(&self) -> bool {
        self.state.finish_park()
    }

    #[inline]
    pub(crate) fn finish(&self) {
        self.state.finish();
    }

    /// The size of stack the task runs on.
    pub(crate) fn stack_size(&self) -> usize {
        self.stack_size as usize
    }

    /// Usable bounds of the task's stack (valid once started).
    pub(crate) fn stack_bounds(&self) -> (usize, usize) {
        (
            self.preempt.stack_lo.load(Ordering::Relaxed),
            self.preempt.stack_hi.load(Ordering::Relaxed),
        )
    }

    /// Note what this task, running on this thread, is about to wait for
    /// (`park`, with the task it looked up).
    #[inline(always)]
    pub(crate) fn note_wait(&self, on: note::WaitingOn) {
        // SAFETY: only the task itself parks itself: it runs on its stack.
        if let Some(n) = unsafe { note::Notes::at(self.preempt.stack_hi.load(Ordering::Relaxed)) } {
            n.waiting(on);
        }
    }

    /// Stamp the switch out that just happened with `ticks`, for a dump.
    /// Only the worker that ran the slice calls this, right after the
    /// switch and before it gives up its run claim (queues the task, or
    /// `finish_park`).
    #[inline]
    pub(crate) fn stamp_switch(&self, ticks: u64) {
        // SAFETY: our caller holds the run claim (see above): the task is
        // suspended on its stack, which stays mapped and its own.
        if let Some(n) = unsafe { note::Notes::at(self.stack_bounds().1) } {
            n.stamp_switch(ticks);
        }
    }

    /// Consume a wake-up token if one is pending (called by the task itself
    /// before it suspends to park).
    #[inline]
    pub(crate) fn take_token(&self) -> bool {
        self.state.take_token()
    }

    /// Wake the task. Returns true if the caller must put it in a run queue.
    #[inline]
    pub(crate) fn notify(&self) -> bool {
        self.state.notify()
    }

    /// Where the task is in its life (a relaxed look, for a dump).
    pub(crate) fn phase(&self) -> state::Phase {
        self.state.phase()
    }

    /// Shutdown: take a parked task out of `IDLE` so it can be cancelled.
    pub(crate) fn claim_idle(&self) -> bool {
        self.state.claim_idle()
    }
}

/// Proof that the holder is the one thread allowed to touch the task's body
/// (it moved the task from `QUEUED` to `RUNNING`). Not `Send`: the claim ends
/// with the slice, on the thread that took it.
pub(crate) struct RunClaim<'a> {
    header: &'a Header,
    _thread_bound: std::marker::PhantomData<*const ()>,
}

#[cfg(debug_assertions)]
impl Drop for RunClaim<'_> {
    fn drop(&mut self) {
        self.header.claimed.store(false, Ordering::Release);
    }
}

impl RunClaim<'_> {
    /// Whether the task has its coroutine: the `STARTED` bit, which only a
    /// claim holder sets, so a claim holder reads it exactly.
    pub(crate) fn started(&self) -> bool {
        let started = self.header.state.snapshot().started();
        // SAFETY: this claim is the unique run claim on the task.
        debug_assert_eq!(started, unsafe { self.header.body.started() });
        started
    }

    /// Give the task its stack. `entry` runs first on it, with `task`.
    pub(crate) fn start(&self, task: &Task, stack: stack::Stack, entry: coroutine::Entry) {
        let p = &task.preempt;
        p.stack_lo.store(stack.bottom(), Ordering::Relaxed);
        p.stack_hi.store(stack.top(), Ordering::Relaxed);
        // SAFETY: this claim is the unique run claim on the task, which now
        // owns `stack` (a reused one still holds its last task's notes).
        if let Some(n) = unsafe { note::Notes::at(stack.top()) } {
            n.clear();
        }
        // SAFETY: this claim is the unique run claim on the task, and the
        // task owns the coroutine, so `task` outlives it.
        let trap = unsafe { self.header.body.start(stack, entry, task as *const Task) };
        self.header.state.set_started();
        if let Some(trap) = trap {
            // SAFETY: we hold the run claim and the coroutine has not run yet.
            unsafe { task.trap.set(trap) };
        }
    }

    #[inline(always)]
    pub(crate) fn resume(&self, how: coroutine::Resume) -> coroutine::Ran {
        // SAFETY: this claim is the unique run claim on the task.
        unsafe { self.header.body.resume(how) }
    }

    /// A model's stand-in for a resume: a write access to the body cell,
    /// which loom checks against every other claim's.
    #[cfg(all(test, loom))]
    pub(crate) fn model_touch(&self) {
        self.header.body.model_touch();
    }

    pub(crate) fn drop_fresh(&self) {
        // SAFETY: this claim is the unique run claim on the task.
        unsafe { self.header.body.drop_fresh() }
    }

    pub(crate) fn leak(&self) {
        // SAFETY: this claim is the unique run claim on the task.
        unsafe { self.header.body.leak() }
    }
}

impl<P: ?Sized> fmt::Debug for TaskCell<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("state", &self.state.raw())
            .finish()
    }
}
