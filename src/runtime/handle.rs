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

    pub(crate) fn spawn_with<F, T>(&self, b: &task::Builder, f: F) -> Result<JoinHandle<T>, Error>
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
        self.shared.spawn(&task::Builder::new(), f)
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
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("workers", &self.shared.config.workers)
            .finish()
    }
}
