//! The task body: a closure before its first run, a corosensei coroutine after.
//!
//! corosensei makes `Coroutine` `!Send` on purpose: a suspended stack may hold
//! values that must not change threads. kvant moves suspended tasks between
//! workers, so it takes over that responsibility: every value the *runtime*
//! keeps on a task stack across a switch is `Send`, user closures are required
//! to be `Send`, and what user code may keep across a switch (thread-local
//! references) is documented in the crate's "Safety inside tasks" section.
//! Preempted tasks are pinned to their worker by default for the same reason.

use crate::loom::cell::UnsafeCell;

use corosensei::{Coroutine, CoroutineResult, Yielder};

use super::stack::Stack;

/// Why a task gave its worker back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Switch {
    /// `yield_now`: run again after the others queued here.
    Yield,
    /// Blocked: run again when someone unparks it.
    Park,
    /// The quantum expired and the signal handler switched it out.
    Preempted,
    /// Blocked in a contended std::sync futex wait, switched out by the
    /// signal handler like a preempted task; resuming re-runs the wait.
    SyncWait,
}

/// What the worker tells a task it resumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    Run,
    /// The runtime is shutting down: unwind from the current switch point.
    Cancel,
}

pub(crate) type TaskYielder = Yielder<Resume, Switch>;
type Coro = Coroutine<Resume, Switch, (), Stack>;

/// The first function on a new task stack: gets the yielder, the task
/// pointer handed to `start`, and the first resume value.
pub(crate) type Entry = fn(&TaskYielder, &super::Task, Resume);

enum Body {
    /// Not started: the closure waits in the task's packet.
    Fresh,
    Started(Coro),
    Finished,
}

/// Outcome of running a task for one slice.
pub(crate) enum Ran {
    Switched(Switch),
    /// The body returned; the stack comes back for reuse.
    Finished(Stack),
}

/// The body of one task, accessed only by the thread that owns the task's
/// run claim (see `Header::begin_run` and `RunClaim` in task/mod.rs): the scheduler state machine guarantees that
/// at most one thread holds it at a time, which is what makes this cell Sync.
pub(crate) struct BodyCell(UnsafeCell<Body>);

// SAFETY: the contents are only touched through `&mut`-like access by the
// single thread holding the task's run claim (state machine in task/state.rs);
// the boxed closure is `Send`, and the coroutine's stack only holds values
// that the runtime allows to change threads (module docs).
unsafe impl Sync for BodyCell {}
// SAFETY: as above; moving the cell moves ownership of a Send closure or of a
// suspended coroutine whose migration rules are documented above.
unsafe impl Send for BodyCell {}

impl BodyCell {
    pub(crate) fn new() -> Self {
        BodyCell(UnsafeCell::new(Body::Fresh))
    }

    /// A write access that does nothing, for the loom models.
    #[cfg(all(test, loom))]
    pub(crate) fn model_touch(&self) {
        self.0.with_mut(|_| ());
    }

    /// Whether the task has run at least once (so it owns a stack).
    ///
    /// # Safety
    /// The caller holds the run claim.
    pub(crate) unsafe fn started(&self) -> bool {
        // SAFETY: caller holds the run claim, so nobody mutates concurrently.
        self.0.with(|b| matches!(unsafe { &*b }, Body::Started(_)))
    }

    /// Turn a fresh body into a coroutine on `stack` that runs `entry(arg)`.
    ///
    /// # Safety
    /// The caller holds the run claim, and `arg` stays valid while the
    /// coroutine exists.
    pub(crate) unsafe fn start(
        &self,
        stack: Stack,
        entry: Entry,
        task: *const super::Task,
    ) -> Option<corosensei::trap::CoroutineTrapHandler<()>> {
        self.0.with_mut(|body| {
            // SAFETY: caller holds the run claim.
            let body = unsafe { &mut *body };
            let Body::Fresh = body else { return None };
            let coro = Coro::with_stack(stack, move |y: &TaskYielder, input: Resume| {
                // SAFETY: the caller guarantees the task outlives its coroutine.
                entry(y, unsafe { &*task }, input);
            });
            let trap = coro.trap_handler();
            *body = Body::Started(coro);
            Some(trap)
        })
    }

    /// Run the started coroutine until it switches out or finishes.
    ///
    /// # Safety
    /// The caller holds the run claim and `start` was called.
    // Inlined into the worker's slice: the switch clobbers every
    // callee-saved register, which the slice's frame saves already; a frame
    // of its own would save and restore them all again on every switch.
    #[inline(always)]
    pub(crate) unsafe fn resume(&self, how: Resume) -> Ran {
        self.0.with_mut(|body| {
            // SAFETY: caller holds the run claim.
            let body = unsafe { &mut *body };
            let Body::Started(coro) = body else {
                panic!("kvant internal error: resuming a task that is not started")
            };
            match coro.resume(how) {
                CoroutineResult::Yield(why) => Ran::Switched(why),
                CoroutineResult::Return(()) => {
                    let Body::Started(coro) = std::mem::replace(body, Body::Finished) else {
                        unreachable!()
                    };
                    Ran::Finished(coro.into_stack())
                }
            }
        })
    }

    /// Mark a body that never ran as finished (its closure is dropped by
    /// the caller through the packet).
    ///
    /// # Safety
    /// The caller holds the run claim.
    pub(crate) unsafe fn drop_fresh(&self) {
        self.0.with_mut(|body| {
            // SAFETY: caller holds the run claim.
            let body = unsafe { &mut *body };
            if let Body::Fresh = body {
                *body = Body::Finished;
            }
        });
    }

    /// Give up on a started coroutine without unwinding it: its frames (and a
    /// kernel signal frame, for a preempted task) are never run again and its
    /// stack is never unmapped, since values on it may still be referenced.
    ///
    /// # Safety
    /// The caller holds the run claim.
    pub(crate) unsafe fn leak(&self) {
        self.0.with_mut(|body| {
            // SAFETY: caller holds the run claim.
            let body = unsafe { &mut *body };
            if let Body::Started(coro) = std::mem::replace(body, Body::Finished) {
                std::mem::forget(coro);
            }
        });
    }
}

/// The trap handler of a started task's coroutine: how the stack-overflow
/// handler forces the coroutine to return. Written once when the task starts
/// (under the run claim, before the first resume), read only by the fault
/// handler on the thread that is running the task.
pub(crate) struct TrapCell(UnsafeCell<Option<corosensei::trap::CoroutineTrapHandler<()>>>);

// SAFETY: written only under the run claim before the coroutine first runs,
// read only afterwards by the thread running it (see `get`); the value is Copy.
unsafe impl Sync for TrapCell {}

impl TrapCell {
    pub(crate) fn new() -> Self {
        TrapCell(UnsafeCell::new(None))
    }

    /// # Safety
    /// The caller holds the run claim and the coroutine has not been resumed yet.
    pub(crate) unsafe fn set(&self, t: corosensei::trap::CoroutineTrapHandler<()>) {
        // SAFETY: exclusive by the caller's contract.
        self.0.with_mut(|p| unsafe { *p = Some(t) });
    }

    /// # Safety
    /// Only on the thread currently running the task (after `set`).
    pub(crate) unsafe fn get(&self) -> Option<corosensei::trap::CoroutineTrapHandler<()>> {
        // SAFETY: no concurrent writer by the caller's contract.
        self.0.with(|p| unsafe { *p })
    }
}

impl Drop for BodyCell {
    fn drop(&mut self) {
        // Dropping a suspended corosensei coroutine would force-unwind it on
        // whatever thread drops the last reference, possibly through a signal
        // frame. Tasks are finished, cancelled or explicitly leaked before
        // their last reference goes; anything else is leaked here as well.
        // SAFETY: `&mut self`: nobody else can reach the cell.
        let body = self
            .0
            .with_mut(|b| std::mem::replace(unsafe { &mut *b }, Body::Finished));
        if let Body::Started(coro) = body {
            if coro.done() {
                drop(coro);
            } else {
                std::mem::forget(coro);
            }
        }
    }
}
