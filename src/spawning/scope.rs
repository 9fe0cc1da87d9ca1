//! Scoped tasks: spawn green threads that borrow from the caller's stack,
//! like `std::thread::scope`. The scope does not return before every task
//! spawned in it has finished, which is what makes the borrows sound.

use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::runtime::{Runtime, Shared};
use crate::task::current;
use crate::task::join::{Handle, wait_complete};
use crate::task::{JoinError, JoinHandle, SpawnOptions, Task, TaskId, WaitingOn};

/// A scope to spawn borrowing tasks in; see [`scope`].
pub struct Scope<'scope, 'env: 'scope> {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<(Arc<Task>, Arc<AtomicBool>)>>,
    scope: PhantomData<&'scope mut &'scope ()>,
    env: PhantomData<&'env mut &'env ()>,
}

impl std::fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("tasks", &self.tasks.lock().len())
            .finish_non_exhaustive()
    }
}

/// Handle to a task spawned in a [`Scope`].
pub struct ScopedJoinHandle<'scope, T> {
    inner: JoinHandle<T>,
    joined: Arc<AtomicBool>,
    _scope: PhantomData<&'scope ()>,
}

impl<'scope, 'env> Scope<'scope, 'env> {
    /// Spawn a task that may borrow anything that outlives the scope.
    ///
    /// # Panics
    /// If the runtime is shut down.
    pub fn spawn<F, T>(&'scope self, f: F) -> ScopedJoinHandle<'scope, T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'static,
    {
        crate::runtime::allow_spawner::<F>();
        let f: Box<dyn FnOnce() -> T + Send + 'scope> = Box::new(f);
        // SAFETY: the scope waits for every task it spawned to complete
        // before `scope()` returns or unwinds, so borrows of lifetime 'scope
        // are not used after they end (a task leaked by shutdown never runs again).
        let f: Box<dyn FnOnce() -> T + Send + 'static> = unsafe { std::mem::transmute(f) };
        let inner = self
            .shared
            .spawn(&SpawnOptions::default(), f)
            .unwrap_or_else(|e| panic!("kvant: Scope::spawn failed: {e}"));
        let joined = Arc::new(AtomicBool::new(false));
        if let Handle::Task(t) = &inner.inner {
            let t: Arc<Task> = t.clone();
            self.tasks.lock().push((t, joined.clone()));
        }
        ScopedJoinHandle {
            inner,
            joined,
            _scope: PhantomData,
        }
    }
}

impl<T: Send + 'static> ScopedJoinHandle<'_, T> {
    /// Wait for the task (parks only the green thread inside a task).
    pub fn join(self) -> Result<T, JoinError> {
        self.joined.store(true, Ordering::Relaxed);
        self.inner.join()
    }

    /// Whether the task has finished.
    pub fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.inner.id()
    }
}

/// Spawn borrowing tasks on the current runtime; returns when all finished.
///
/// ```
/// let rt = kvant::Runtime::builder().workers(2).build().unwrap();
/// let total = rt.block_on(|| {
///     let data = vec![1u64, 2, 3, 4];
///     let (left, right) = data.split_at(2);
///     kvant::scope(|s| {
///         let a = s.spawn(|| left.iter().sum::<u64>());
///         let b = s.spawn(|| right.iter().sum::<u64>());
///         a.join().unwrap() + b.join().unwrap()
///     })
/// });
/// assert_eq!(total, 10);
/// ```
///
/// # Panics
/// Outside a kvant runtime (use [`Runtime::scope`] from a plain thread), and
/// after all tasks finished if any of them panicked without being joined.
#[track_caller]
pub fn scope<'env, F, R>(f: F) -> R
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
{
    let Some(shared) = Shared::current() else {
        panic!("kvant::scope called outside a kvant runtime; use Runtime::scope")
    };
    scope_on(shared, f)
}

impl Runtime {
    /// Like [`scope`], spawning on this runtime from any thread.
    pub fn scope<'env, F, R>(&self, f: F) -> R
    where
        F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
    {
        scope_on(self.shared.clone(), f)
    }

    /// Run `f` as a task on this runtime and wait for it, as rayon's
    /// `install` does: unlike [`Runtime::block_on`], `f` may borrow from the
    /// caller (it is done before this returns). A panic in `f` is resumed
    /// here.
    ///
    /// ```
    /// let rt = kvant::Runtime::builder().workers(2).build().unwrap();
    /// let data: Vec<u64> = (1..=1000).collect();
    /// let sum = rt.install(|| {
    ///     let (a, b) = data.split_at(500);
    ///     let (x, y) = kvant::join(|| a.iter().sum::<u64>(), || b.iter().sum::<u64>());
    ///     x + y
    /// });
    /// assert_eq!(sum, 500_500);
    /// ```
    #[track_caller]
    pub fn install<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        // The result comes back through a borrowed slot: a scoped task's
        // own result type must be 'static, `R` need not be.
        let mut out = None;
        let slot = &mut out;
        let joined = self.scope(|s| s.spawn(move || *slot = Some(f())).join());
        match joined {
            Ok(()) => out.expect("kvant: Runtime::install: the task returned no value"),
            Err(e) => match e.try_into_panic() {
                Ok(payload) => std::panic::resume_unwind(payload),
                Err(e) => panic!("kvant: Runtime::install: the task failed: {e}"),
            },
        }
    }
}

fn scope_on<'env, F, R>(shared: Arc<Shared>, f: F) -> R
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
{
    let scope = Scope {
        shared,
        tasks: Mutex::new(Vec::new()),
        scope: PhantomData,
        env: PhantomData,
    };
    let result = catch_unwind(AssertUnwindSafe(|| f(&scope)));
    // The children borrow this frame: wait for them even when shutdown
    // cancels this task (the cancellation unwinds from `result` afterwards).
    let shield = current::shield_cancel();
    // Tasks may spawn more tasks into the scope while we wait: drain until stable.
    let mut unjoined_panic = false;
    let mut seen = 0;
    loop {
        let batch: Vec<_> = scope.tasks.lock()[seen..].to_vec();
        if batch.is_empty() {
            break;
        }
        seen += batch.len();
        for (c, joined) in &batch {
            wait_complete(&c.packet, None, WaitingOn::Join(c.id));
            if c.packet.is_panic() && !joined.load(Ordering::Relaxed) {
                unjoined_panic = true;
            }
        }
    }
    drop(shield);
    match result {
        Err(p) => resume_unwind(p),
        Ok(_) if unjoined_panic => panic!("a scoped kvant task panicked"),
        Ok(r) => r,
    }
}

impl<T> std::fmt::Debug for ScopedJoinHandle<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedJoinHandle")
            .field("task", &self.inner)
            .finish_non_exhaustive()
    }
}
