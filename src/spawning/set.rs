//! `JoinSet`: a group of tasks whose results arrive in completion order.
//!
//! Each task's result slot gets one extra waiter, an `Unparker::Set` that
//! does not wake a thread but appends the task's id to the set's ready queue
//! (and wakes the set's owner if it waits). So `join_next` takes results in
//! the order the tasks completed, in O(1) each, without scanning the set,
//! and a result that nobody asks for costs one queue entry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::runtime::{Handle, Runtime};
use crate::task::park::{self, OnUnwind, Unparker};
use crate::task::ready::Ready;
use crate::task::{AbortHandle, JoinError, JoinHandle, TaskId, WaitingOn};

/// A wait with a timeout ended without the event it waited for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the timeout elapsed before any task completed")
    }
}

impl std::error::Error for Elapsed {}

/// Something tasks can be spawned onto: a [`Runtime`] or its [`Handle`].
pub trait SpawnTarget: sealed::Sealed {}

pub(crate) mod sealed {
    use super::super::Builder;
    use crate::error::Error;
    use crate::task::JoinHandle;

    /// Implemented only here, so the runtime's internals stay private.
    pub trait Sealed {
        fn spawn_task<F, T>(&self, b: &Builder, f: F) -> Result<JoinHandle<T>, Error>
        where
            F: FnOnce() -> T + Send + 'static,
            T: Send + 'static;
    }

    impl Sealed for crate::Runtime {
        fn spawn_task<F, T>(&self, b: &Builder, f: F) -> Result<JoinHandle<T>, Error>
        where
            F: FnOnce() -> T + Send + 'static,
            T: Send + 'static,
        {
            self.spawn_with(b.options(), f)
        }
    }

    impl<S: Sealed + ?Sized> Sealed for std::sync::Arc<S> {
        fn spawn_task<F, T>(&self, b: &Builder, f: F) -> Result<JoinHandle<T>, Error>
        where
            F: FnOnce() -> T + Send + 'static,
            T: Send + 'static,
        {
            (**self).spawn_task(b, f)
        }
    }

    impl<S: Sealed + ?Sized> Sealed for &S {
        fn spawn_task<F, T>(&self, b: &Builder, f: F) -> Result<JoinHandle<T>, Error>
        where
            F: FnOnce() -> T + Send + 'static,
            T: Send + 'static,
        {
            (**self).spawn_task(b, f)
        }
    }

    impl Sealed for crate::Handle {
        fn spawn_task<F, T>(&self, b: &Builder, f: F) -> Result<JoinHandle<T>, Error>
        where
            F: FnOnce() -> T + Send + 'static,
            T: Send + 'static,
        {
            self.spawn_with(b.options(), f)
        }
    }
}

impl SpawnTarget for Runtime {}
impl SpawnTarget for Handle {}
impl<S: SpawnTarget + ?Sized> SpawnTarget for Arc<S> {}
impl<S: SpawnTarget + ?Sized> SpawnTarget for &S {}

/// A set of tasks with results of type `T`, joined in the order they
/// complete (tokio's `JoinSet`).
///
/// Dropping the set aborts the tasks still in it (see
/// [`JoinHandle::abort`] for what that does to a running task); call
/// [`detach_all`](Self::detach_all) first to let them run on. Works inside a
/// task (`join_next` parks the green thread) and on an OS thread (it blocks).
///
/// ```
/// use std::time::Duration;
///
/// let rt = kvant::Runtime::builder().workers(2).build().unwrap();
/// let mut set = kvant::JoinSet::new();
/// for ms in [30u64, 10, 20] {
///     set.spawn_on(&rt, move || {
///         kvant::sleep(Duration::from_millis(ms));
///         ms
///     });
/// }
/// let mut order = Vec::new();
/// while let Some(r) = set.join_next() {
///     order.push(r.unwrap());
/// }
/// assert_eq!(order, [10, 20, 30]);
/// ```
pub struct JoinSet<T> {
    /// The handle owns the result; the abort handle is its type-erased twin,
    /// so that dropping the set can abort without `T: Send`.
    tasks: HashMap<TaskId, (JoinHandle<T>, AbortHandle)>,
    ready: Arc<Ready>,
}

impl<T> Default for JoinSet<T> {
    fn default() -> Self {
        JoinSet {
            tasks: HashMap::new(),
            ready: Arc::default(),
        }
    }
}

impl<T: Send + 'static> JoinSet<T> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawn `f` on the current runtime (from inside a task or
    /// `block_on`) and add it to the set.
    ///
    /// # Panics
    /// Outside a kvant runtime (use [`spawn_on`](Self::spawn_on)), or if it
    /// shut down.
    #[track_caller]
    pub fn spawn<F>(&mut self, f: F) -> AbortHandle
    where
        F: FnOnce() -> T + Send + 'static,
    {
        self.insert(crate::spawn(f))
    }

    /// Spawn `f` on `rt` (a [`Runtime`] or a [`Handle`]) and add it to the set.
    ///
    /// # Panics
    /// If the runtime shut down (see [`try_spawn_on`](Self::try_spawn_on)).
    #[track_caller]
    pub fn spawn_on<F>(&mut self, rt: &impl SpawnTarget, f: F) -> AbortHandle
    where
        F: FnOnce() -> T + Send + 'static,
    {
        match self.try_spawn_on(rt, f) {
            Ok(a) => a,
            Err(e) => panic!("kvant: JoinSet::spawn_on failed: {e}"),
        }
    }

    /// Like [`spawn_on`](Self::spawn_on), or [`Error::Shutdown`].
    pub fn try_spawn_on<F>(&mut self, rt: &impl SpawnTarget, f: F) -> Result<AbortHandle, Error>
    where
        F: FnOnce() -> T + Send + 'static,
    {
        Ok(self.insert(rt.spawn_task(&super::Builder::new(), f)?))
    }

    /// Add a task spawned elsewhere; its result then comes out of
    /// [`join_next`](Self::join_next) like the others.
    pub fn insert(&mut self, h: JoinHandle<T>) -> AbortHandle {
        let id = h.id();
        let abort = h.abort_handle();
        if !h
            .completion()
            .add_waiter(Unparker::Set(self.ready.clone(), id))
        {
            self.ready.completed(id); // already done
        }
        self.tasks.insert(id, (h, abort.clone()));
        abort
    }

    /// Wait for the next task to complete and return its result, or `None`
    /// if the set is empty.
    pub fn join_next(&mut self) -> Option<Result<T, JoinError>> {
        self.join_next_deadline(None).ok().flatten()
    }

    /// Like [`join_next`](Self::join_next), giving up after `timeout`:
    /// `Err(Elapsed)` if no task completed in time (they keep running),
    /// `Ok(None)` if the set is empty.
    pub fn join_next_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Result<T, JoinError>>, Elapsed> {
        self.join_next_deadline(Instant::now().checked_add(timeout))
    }

    /// The result of a task that already completed, without waiting; `None`
    /// if none has (or the set is empty).
    pub fn try_join_next(&mut self) -> Option<Result<T, JoinError>> {
        self.take_ready()
    }

    fn join_next_deadline(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<Result<T, JoinError>>, Elapsed> {
        loop {
            if let Some(r) = self.take_ready() {
                return Ok(Some(r));
            }
            if self.tasks.is_empty() {
                return Ok(None);
            }
            let me = park::current_unparker();
            if !self.ready.wait_here(&me) {
                continue;
            }
            // Forget the waiter on every exit, an abort's unwind included.
            let ready = self.ready.clone();
            let _forget = OnUnwind::new(move || ready.stop_waiting());
            if !park::park_deadline(deadline, WaitingOn::JoinSet) {
                drop(_forget);
                return self.take_ready().map(Some).ok_or(Elapsed);
            }
        }
    }

    /// The next result, awaited from async code: [`join_next`](Self::join_next)
    /// without blocking the thread (the next completion wakes the async
    /// task). `None` once the set is empty.
    ///
    /// ```
    /// let rt = kvant::Runtime::builder().workers(2).build().unwrap();
    /// let mut set = kvant::JoinSet::new();
    /// for i in 0..4u64 {
    ///     set.spawn_on(&rt, move || i * i);
    /// }
    /// let total = kvant::block_on_future(async move {
    ///     let mut total = 0;
    ///     while let Some(r) = set.join_next_async().await {
    ///         total += r.unwrap();
    ///     }
    ///     total
    /// });
    /// assert_eq!(total, 14);
    /// ```
    pub async fn join_next_async(&mut self) -> Option<Result<T, JoinError>> {
        std::future::poll_fn(|cx| self.poll_join_next(cx)).await
    }

    /// Poll for the next result: `Ready(Some(_))` as a task completes,
    /// `Ready(None)` when the set is empty, else `Pending` with `cx`'s waker
    /// registered for the next completion.
    pub fn poll_join_next(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<T, JoinError>>> {
        loop {
            if let Some(r) = self.take_ready() {
                return std::task::Poll::Ready(Some(r));
            }
            if self.tasks.is_empty() {
                return std::task::Poll::Ready(None);
            }
            if self.ready.wait_here(&Unparker::Waker(cx.waker().clone())) {
                return std::task::Poll::Pending;
            }
        }
    }

    fn take_ready(&mut self) -> Option<Result<T, JoinError>> {
        while let Some(id) = self.ready.pop() {
            // Ids of tasks removed meanwhile (none today) are skipped.
            if let Some((h, _)) = self.tasks.remove(&id) {
                return Some(h.join()); // complete: returns at once
            }
        }
        None
    }

    /// Abort every task in the set. They stay in it: `join_next` returns
    /// each one's result (cancelled, or its value if it finished first).
    pub fn abort_all(&self) {
        for (_, a) in self.tasks.values() {
            a.abort();
        }
    }

    /// Remove every task from the set without aborting it: they run on, and
    /// their results are dropped.
    pub fn detach_all(&mut self) {
        self.tasks.clear();
        // Completions of the detached tasks still reach the old queue; a new
        // one keeps them out of this set.
        self.ready = Arc::default();
    }

    /// Abort every task and wait until each has ended (so nothing the set
    /// spawned is still running when this returns).
    pub fn shutdown(&mut self) {
        self.abort_all();
        while self.join_next().is_some() {}
    }
}

impl<T> JoinSet<T> {
    /// How many tasks are in the set (running, or completed and not yet
    /// joined).
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether the set holds no task.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl<T> Drop for JoinSet<T> {
    fn drop(&mut self) {
        for (_, a) in self.tasks.values() {
            a.abort();
        }
    }
}

impl<T> std::fmt::Debug for JoinSet<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinSet").field("len", &self.len()).finish()
    }
}

impl<T: Send + 'static, F> Extend<F> for JoinSet<T>
where
    F: FnOnce() -> T + Send + 'static,
{
    /// Spawn each closure on the current runtime (see [`JoinSet::spawn`]).
    fn extend<I: IntoIterator<Item = F>>(&mut self, iter: I) {
        for f in iter {
            self.spawn(f);
        }
    }
}
