//! Parking that works the same for green threads and OS threads.
//!
//! Every blocking primitive in kvant (join, sleep, locks, channels) is written
//! once against this: register an [`Unparker`] for "me", re-check the
//! condition, `park()`. Inside a task `park` switches the green thread out and
//! the worker runs something else; on a plain thread it is `thread::park`.
//! Both may wake spuriously, so callers loop on their condition.

use std::sync::Arc;
use std::time::Instant;

use super::Task;
use super::coroutine::Switch;
use super::current;
use super::note::WaitingOn;

/// Wakes one parked green thread or OS thread.
#[derive(Clone, Debug)]
pub(crate) enum Unparker {
    /// A kvant task.
    Task(Arc<Task>),
    /// A plain OS thread.
    Thread(std::thread::Thread),
    /// A `JoinSet`: note which of its tasks completed, and wake its owner.
    Set(Arc<super::ready::Ready>, super::TaskId),
    /// Nobody: a waiter kept for reuse holds no task or thread alive (a
    /// finished task's result would otherwise wait for the waiter to go).
    Nobody,
    /// An async task awaiting a `JoinHandle` (`bridge.rs`).
    Waker(std::task::Waker),
}

impl Unparker {
    /// Wake the target (or make its next park return at once).
    pub(crate) fn unpark(&self) {
        match self {
            Unparker::Task(t) => {
                if t.notify() {
                    t.scheduler.wake(t.clone());
                }
            }
            Unparker::Thread(t) => t.unpark(),
            Unparker::Set(ready, id) => ready.completed(*id),
            Unparker::Nobody => {}
            Unparker::Waker(w) => w.wake_by_ref(),
        }
    }

    /// Whether both wake the same green thread or OS thread.
    pub(crate) fn same_as(&self, other: &Unparker) -> bool {
        match (self, other) {
            (Unparker::Task(a), Unparker::Task(b)) => Arc::ptr_eq(a, b),
            (Unparker::Thread(a), Unparker::Thread(b)) => a.id() == b.id(),
            (Unparker::Set(a, x), Unparker::Set(b, y)) => Arc::ptr_eq(a, b) && x == y,
            (Unparker::Waker(a), Unparker::Waker(b)) => a.will_wake(b),
            _ => false,
        }
    }
}

/// An unparker for the caller: the running task, or this OS thread.
/// An unwinding task waits as its thread (see `current::switchable_ptr`).
pub(crate) fn current_unparker() -> Unparker {
    match current::switchable_arc() {
        Some(t) => Unparker::Task(t),
        None => Unparker::Thread(std::thread::current()),
    }
}

pub(crate) fn current_task_is<P: ?Sized>(task: &super::TaskCell<P>) -> bool {
    current::with_current(|t| {
        std::ptr::addr_eq(t as *const Task, task as *const super::TaskCell<P>)
    })
    .unwrap_or(false)
}

/// Block the caller until unparked (possibly spuriously).
///
/// The running task is looked up once, and the switch is inlined here
/// (into `Waiter::park`'s loop), not behind `suspend`'s own frame: the
/// resumed task has one return fewer to take whose target the CPU cannot
/// predict.
/// `on` is what a task dump says it waits for (noted in the task's notes
/// as it switches out, with the task it looked up anyway).
#[inline]
pub(crate) fn park(on: WaitingOn) {
    if !current::park_current(on) {
        std::thread::park();
    }
}

/// [`park`], or [`park_until`] a deadline if there is one. Returns false,
/// without parking, once the deadline has passed (every timed wait's loop).
#[inline(always)]
pub(crate) fn park_deadline(deadline: Option<Instant>, on: WaitingOn) -> bool {
    match deadline {
        None => park(on),
        Some(d) if Instant::now() < d => park_until(d, on),
        Some(_) => return false,
    }
    true
}

/// Block the caller until unparked or `deadline` passes (possibly spuriously).
pub(crate) fn park_until(deadline: Instant, on: WaitingOn) {
    let Some(task) = current::switchable_arc() else {
        let now = Instant::now();
        if deadline > now {
            std::thread::park_timeout(deadline - now);
        }
        return;
    };
    if task.take_token() {
        return;
    }
    task.note_wait(on);
    let scheduler = task.scheduler.clone();
    let key = scheduler.arm_timer(deadline, Unparker::Task(task.clone()));
    drop(task);
    // Withdrawn on return and on unwind (an aborted sleep must not leave the
    // task alive in the timer heap until its deadline): never disarmed.
    let _withdraw = OnUnwind::new(move || scheduler.cancel_timer(key));
    current::suspend(Switch::Park);
}

/// Runs a cleanup closure if dropped while armed: used to withdraw a waiter
/// when its task is unwound out of `park` (cancelled at runtime shutdown), so
/// nothing is handed to a waiter that will never look at it.
pub(crate) struct OnUnwind<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> OnUnwind<F> {
    pub(crate) fn new(f: F) -> Self {
        OnUnwind(Some(f))
    }

    /// The wait ended normally: do not run the cleanup.
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl<F: FnOnce()> Drop for OnUnwind<F> {
    /// Disarmed (a channel receive or a lock wait that ends normally) this
    /// is one test, inlined into the wait; the cleanup itself stays out of
    /// line. Left to the inliner, a cleanup grown large took the test out of
    /// line with it, and every channel receive paid a call that saves six
    /// registers. (Some guards always run: a timed park's withdrawal.)
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            run_cleanup(f);
        }
    }
}

#[inline(never)]
fn run_cleanup<F: FnOnce()>(f: F) {
    f();
}
