//! A cloneable handle to a runtime, for spawning from anywhere.

use std::sync::Arc;

use super::{Runtime, Shared};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::task::{self, JoinHandle};

/// A cheap, cloneable reference to a [`Runtime`] that can spawn from any
/// thread. It does not keep the runtime running: once the runtime is shut
/// down, [`Handle::try_spawn`] returns [`Error::Shutdown`].
///
/// ```
/// let rt = kvant::Runtime::builder().workers(1).build().unwrap();
/// let h = rt.handle();
/// let t = std::thread::spawn(move || h.spawn(|| 7).join().unwrap());
/// assert_eq!(t.join().unwrap(), 7);
/// let h = rt.handle();
/// drop(rt);
/// assert!(matches!(h.try_spawn(|| ()), Err(kvant::Error::Shutdown)));
/// ```
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Runtime {
    /// A handle that spawns onto this runtime.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }
}

impl Handle {
    /// Spawn a task.
    ///
    /// # Panics
    /// If the runtime is shut down (see [`Handle::try_spawn`]).
    #[track_caller]
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match self.try_spawn(f) {
            Ok(h) => h,
            Err(e) => panic!("kvant: Handle::spawn failed: {e}"),
        }
    }

    pub(crate) fn spawn_with<F, T>(
        &self,
        b: &task::SpawnOptions,
        f: F,
    ) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.shared.spawn(b, f)
    }

    /// Spawn a task, or [`Error::Shutdown`] if the runtime is shut down.
    pub fn try_spawn<F, T>(&self, f: F) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.spawn_with(&task::SpawnOptions::default(), f)
    }

    /// Run blocking work on the runtime's OS-thread pool, or
    /// [`Error::Shutdown`] after shutdown.
    pub fn try_spawn_blocking<F, T>(&self, f: F) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        if self
            .shared
            .closed
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(Error::Shutdown);
        }
        self.shared.spawn_blocking(f)
    }

    /// A snapshot of the runtime's counters.
    pub fn metrics(&self) -> Metrics {
        self.shared.metrics()
    }

    /// Every live task of the runtime, as [`Runtime::dump`](super::Runtime::dump).
    /// From inside a task (`Handle::current().dump()`) the dump holds that
    /// task's worker while it is taken (milliseconds; the first one of a
    /// process also reads the debug info).
    pub fn dump(&self) -> crate::dump::TaskDump {
        super::dump::collect(&self.shared)
    }

    /// The runtime the caller runs in: inside a task, on a worker, in
    /// `spawn_blocking` work, or under [`Runtime::enter`].
    ///
    /// # Panics
    /// Anywhere else (see [`Handle::try_current`]).
    ///
    /// ```
    /// let rt = kvant::Runtime::builder().workers(1).build().unwrap();
    /// let h = rt.block_on(kvant::Handle::current);
    /// assert_eq!(h.spawn(|| 3).join().unwrap(), 3);
    /// ```
    #[track_caller]
    pub fn current() -> Handle {
        match Self::try_current() {
            Some(h) => h,
            None => panic!(
                "kvant::Handle::current() called outside a kvant runtime; use \
                 Runtime::handle, or Runtime::enter on this thread first"
            ),
        }
    }

    /// Like [`Handle::current`], `None` outside a runtime.
    pub fn try_current() -> Option<Handle> {
        Shared::current().map(|shared| Handle { shared })
    }

    /// Make this runtime the current one on this OS thread while the guard
    /// lives (see [`Runtime::enter`]).
    pub fn enter(&self) -> super::context::EnterGuard {
        super::context::enter_runtime(self.shared.clone())
    }

    /// Run blocking work on the runtime's pool of OS threads.
    ///
    /// # Panics
    /// After shutdown (see [`Handle::try_spawn_blocking`]).
    #[track_caller]
    pub fn spawn_blocking<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match self.try_spawn_blocking(f) {
            Ok(h) => h,
            Err(e) => panic!("kvant: Handle::spawn_blocking failed: {e}"),
        }
    }

    /// Run `f` as a task and block this OS thread until it returns (see
    /// [`Runtime::block_on`]).
    ///
    /// # Panics
    /// Inside a kvant task, after shutdown, or with `f`'s panic.
    #[track_caller]
    pub fn block_on<F, T>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        super::block_on_shared(&self.shared, f)
    }
}

impl Runtime {
    /// Make this runtime the current one on this OS thread while the guard
    /// lives: `kvant::spawn`, `kvant::scope`, `JoinSet::spawn` and
    /// [`Handle::current`] then use it from a plain thread.
    ///
    /// ```
    /// let rt = kvant::Runtime::builder().workers(1).build().unwrap();
    /// let _guard = rt.enter();
    /// assert_eq!(kvant::spawn(|| 5).join().unwrap(), 5);
    /// ```
    pub fn enter(&self) -> super::context::EnterGuard {
        super::context::enter_runtime(self.shared.clone())
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("workers", &self.shared.config.workers)
            .finish()
    }
}
