//! Join handles: where a task's result waits for whoever wants it.
//!
//! The result slot (`Packet`) is shared between the task body, which fills
//! it, the runtime, which fails it if the body can no longer run (cancelled,
//! leaked, stack overflow), and the handle. Whichever completes first wins;
//! later completions are ignored, so no path can leave a joiner waiting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::loom::Mutex;
use crate::loom::atomic::{AtomicBool, Ordering};

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::current::{self, CancelUnwind};
use super::join_error::{Failure, JoinError};
use super::park::{self, Unparker};
use super::{TaskCell, TaskId, TaskStats, WaitingOn};

/// The runtime's view of a task's result slot, erased over `T`. The slot
/// does not repeat its task's id and name: whoever completes it says whose
/// it is (`Owner`), for the `JoinError` that names the task.
pub(crate) trait Completion: Send + Sync {
    /// Fail the task unless it already produced a result.
    fn fail(&self, failure: Failure, owner: Owner<'_>);
    /// Register a waiter to wake on completion. Returns false (and does not
    /// register) if the task is already complete.
    fn add_waiter(&self, w: Unparker) -> bool;
    /// Whether the task has a result (value or error).
    fn is_complete(&self) -> bool;
    /// Whether the task ended by panicking.
    fn is_panic(&self) -> bool;
    /// Forget a waiter registered with `add_waiter` (a timed-out wait).
    fn remove_waiter(&self, w: &Unparker);
    /// Run the user's closure (on the task's stack), call `finish` (which
    /// drops the task-locals, like thread-locals at thread exit), then store
    /// the result, so a joiner sees the task completely gone.
    fn run_body(&self, owner: Owner<'_>, finish: &dyn Fn());
    /// Drop the user's closure without running it (cancelled before start).
    fn drop_body(&self);
    /// Abort: if the closure has not started, drop it (on this thread) and
    /// fail the task as aborted. True if it did.
    fn abort_unstarted(&self, owner: Owner<'_>) -> bool;
}

/// The task a result belongs to, as its `JoinError` names it.
#[derive(Clone, Copy)]
pub(crate) struct Owner<'a> {
    pub id: TaskId,
    pub name: Option<&'a Arc<str>>,
}

/// The user's closure, boxed so that it is called through a vtable (see
/// `current::run_user` for why that matters to preemption).
type UserFn<T> = Box<dyn FnOnce() -> T + Send + 'static>;

pub(crate) struct Packet<T> {
    done: AtomicBool,
    inner: Mutex<PacketInner<T>>,
}

struct PacketInner<T> {
    stage: Stage<T>,
    panicked: bool,
    waiters: Vec<Unparker>,
}

/// The closure and the result never exist at once, so they share storage.
enum Stage<T> {
    /// Not started: the closure waits here.
    Body(UserFn<T>),
    /// Running (or dropped before it ran, or run on another thread).
    Empty,
    Done(Result<T, JoinError>),
    /// The handle took the result.
    Taken,
}

impl<T> Stage<T> {
    fn take_body(&mut self) -> Option<UserFn<T>> {
        match std::mem::replace(self, Stage::Empty) {
            Stage::Body(f) => Some(f),
            other => {
                *self = other;
                None
            }
        }
    }
}

impl<T> Packet<T> {
    pub(crate) fn new(body: Option<UserFn<T>>) -> Self {
        Packet {
            done: AtomicBool::new(false),
            inner: Mutex::new(PacketInner {
                stage: body.map_or(Stage::Empty, Stage::Body),
                panicked: false,
                waiters: Vec::new(),
            }),
        }
    }

    pub(crate) fn complete(&self, r: Result<T, Failure>, owner: Owner<'_>) {
        let r = r.map_err(|f| JoinError::new(f, owner.id, owner.name.cloned()));
        let (waiters, body) = {
            let mut inner = self.inner.lock();
            if self.done.load(Ordering::Relaxed) {
                return;
            }
            inner.panicked = matches!(&r, Err(e) if e.is_panic());
            // A closure still here (failed before it ran) is dropped
            // outside the lock: its captures may do anything on drop.
            let body = inner.stage.take_body();
            inner.stage = Stage::Done(r);
            self.done.store(true, Ordering::Release);
            (std::mem::take(&mut inner.waiters), body)
        };
        drop(body);
        for w in waiters {
            w.unpark();
        }
    }

    /// The result, for a `JoinHandle` polled as a future (which may be
    /// polled again after it returned it, a caller's bug).
    pub(crate) fn take_polled(&self) -> Result<T, JoinError> {
        match std::mem::replace(&mut self.inner.lock().stage, Stage::Taken) {
            Stage::Done(r) => r,
            _ => panic!("a kvant JoinHandle was polled after it returned its result"),
        }
    }

    fn take(&self) -> Result<T, JoinError> {
        match std::mem::replace(&mut self.inner.lock().stage, Stage::Taken) {
            Stage::Done(r) => r,
            _ => unreachable!("kvant internal error: a task result was taken twice"),
        }
    }
}

impl<T: Send> Completion for Packet<T> {
    fn fail(&self, failure: Failure, owner: Owner<'_>) {
        self.complete(Err(failure), owner);
    }

    fn add_waiter(&self, w: Unparker) -> bool {
        let mut inner = self.inner.lock();
        if self.done.load(Ordering::Relaxed) {
            return false;
        }
        inner.waiters.push(w);
        true
    }

    fn is_complete(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    fn is_panic(&self) -> bool {
        self.is_complete() && self.inner.lock().panicked
    }

    fn remove_waiter(&self, w: &Unparker) {
        self.inner.lock().waiters.retain(|x| !x.same_as(w));
    }

    fn run_body(&self, owner: Owner<'_>, finish: &dyn Fn()) {
        let Some(f) = self.inner.lock().stage.take_body() else {
            return;
        };
        let failure = |payload: Box<dyn std::any::Any + Send>| {
            if let Some(c) = payload.downcast_ref::<CancelUnwind>() {
                if c.aborted {
                    Failure::Aborted
                } else {
                    Failure::Cancelled
                }
            } else {
                Failure::Panic(super::join_error::Payload::new(payload))
            }
        };
        let mut r = catch_unwind(AssertUnwindSafe(|| current::run_user(f))).map_err(failure);
        // A panicking task-local destructor fails the task (if it had not
        // failed already); it must never unwind into the worker.
        if let Err(payload) = catch_unwind(AssertUnwindSafe(finish))
            && r.is_ok()
        {
            r = Err(failure(payload));
        }
        self.complete(r, owner);
    }

    fn drop_body(&self) {
        let f = self.inner.lock().stage.take_body();
        drop(f);
    }

    fn abort_unstarted(&self, owner: Owner<'_>) -> bool {
        let Some(f) = self.inner.lock().stage.take_body() else {
            return false;
        };
        // Outside the lock: the closure's captures may do anything on drop.
        drop(f);
        self.complete(Err(Failure::Aborted), owner);
        true
    }
}

/// The result slot of `spawn_blocking` work, with the id it reports (such
/// work has no task header; it is never named).
pub(crate) struct BlockingCell<P: ?Sized> {
    pub id: TaskId,
    pub packet: P,
}

impl<P: ?Sized> BlockingCell<P> {
    pub(crate) fn owner(&self) -> Owner<'_> {
        Owner {
            id: self.id,
            name: None,
        }
    }
}

/// An owned permission to wait for a task and take its result.
///
/// Dropping the handle detaches the task: it keeps running and its result is
/// dropped when it finishes.
pub struct JoinHandle<T> {
    pub(crate) inner: Handle<T>,
}

pub(crate) enum Handle<T> {
    /// A green thread (its result slot lives in the task's allocation).
    Task(Arc<TaskCell<Packet<T>>>),
    /// Work run by `spawn_blocking` on an OS thread.
    Blocking(Arc<BlockingCell<Packet<T>>>),
}

impl<T: Send + 'static> JoinHandle<T> {
    /// Wait for the task and return its value, or why it has none.
    ///
    /// Inside a task this parks only the calling green thread; outside it
    /// blocks the calling OS thread.
    pub fn join(self) -> Result<T, JoinError> {
        self.wait_until(None);
        self.packet().take()
    }

    /// Like [`join`](Self::join), but gives up after `timeout` and hands the
    /// handle back so the caller can wait again or detach. The task keeps
    /// running either way.
    pub fn join_timeout(self, timeout: Duration) -> Result<Result<T, JoinError>, JoinHandle<T>> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.join_deadline(deadline),
            None => Ok(self.join()),
        }
    }

    /// Like [`join_timeout`](Self::join_timeout) with an absolute deadline.
    pub fn join_deadline(self, deadline: Instant) -> Result<Result<T, JoinError>, JoinHandle<T>> {
        if self.wait_until(Some(deadline)) {
            Ok(self.packet().take())
        } else {
            Err(self)
        }
    }

    /// Park until complete or the deadline passes; true if complete.
    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        if self.packet().is_complete() {
            return true;
        }
        if let Handle::Task(task) = &self.inner
            && park::current_task_is(task)
        {
            panic!(
                "kvant: task {} tried to join itself, which would never return",
                task.id
            );
        }
        if let Handle::Task(task) = &self.inner
            && task.scheduler.panic_on_blocking()
            && !current::in_task()
        {
            return self.wait_or_stall_panic(&*task.scheduler, deadline);
        }
        wait_complete(self.packet(), deadline, WaitingOn::Join(self.id()))
    }

    /// `Builder::panic_on_blocking` on an OS thread: wait in steps, and
    /// panic with the monitor's report if the runtime stalled for good.
    fn wait_or_stall_panic(
        &self,
        scheduler: &dyn super::schedule::Schedule,
        deadline: Option<Instant>,
    ) -> bool {
        const STEP: Duration = Duration::from_millis(20);
        loop {
            let step = Instant::now() + STEP;
            if wait_complete(
                self.packet(),
                Some(deadline.map_or(step, |d| d.min(step))),
                WaitingOn::Join(self.id()),
            ) {
                return true;
            }
            if let Some(report) = scheduler.stall_report() {
                panic!("{report}");
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
        }
    }
}

impl<T> JoinHandle<T> {
    pub(crate) fn packet(&self) -> &Packet<T> {
        match &self.inner {
            Handle::Task(t) => &t.packet,
            Handle::Blocking(b) => &b.packet,
        }
    }

    /// The work was done elsewhere; if the task has not started, it finishes
    /// without running (and without taking a stack).
    pub(crate) fn abandon(&self) {
        if let Handle::Task(t) = &self.inner {
            t.state.abandon();
        }
    }

    /// Whether the task has finished (with a value or an error). Never blocks.
    pub fn is_finished(&self) -> bool {
        self.packet().done.load(Ordering::Acquire)
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        match &self.inner {
            Handle::Task(t) => t.id,
            Handle::Blocking(b) => b.id,
        }
    }

    /// The task's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        match &self.inner {
            Handle::Task(t) => t.name.as_deref(),
            Handle::Blocking(_) => None,
        }
    }

    /// Run time, slices and preemptions of the task so far (all zero for
    /// `spawn_blocking` work, which runs on an OS thread).
    pub fn stats(&self) -> TaskStats {
        match &self.inner {
            Handle::Task(t) => t.stats.snapshot(),
            Handle::Blocking(_) => TaskStats::default(),
        }
    }

    pub(crate) fn completion(&self) -> &dyn Completion
    where
        T: Send,
    {
        self.packet()
    }
}

/// Park until `c` completes or `deadline` passes; true if complete.
pub(crate) fn wait_complete(c: &dyn Completion, deadline: Option<Instant>, on: WaitingOn) -> bool {
    if c.is_complete() {
        return true;
    }
    let me = park::current_unparker();
    if !c.add_waiter(me.clone()) {
        return true;
    }
    // An aborted waiter withdraws, or the task it waited for would keep
    // it (and its result) alive until it completes.
    let withdraw = super::park::OnUnwind::new(|| c.remove_waiter(&me));
    let done = loop {
        if c.is_complete() {
            break true;
        }
        if !park::park_deadline(deadline, on) {
            c.remove_waiter(&me);
            break c.is_complete();
        }
    };
    withdraw.disarm();
    done
}

impl<T> std::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinHandle")
            .field("id", &self.id())
            .field("name", &self.name())
            .field("finished", &self.is_finished())
            .finish()
    }
}
