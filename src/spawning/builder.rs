//! Per-task options, in the style of `std::thread::Builder`.

use super::SpawnTarget;
use crate::error::Error;
use crate::runtime::Shared;
use crate::task::{JoinHandle, SpawnOptions};

/// Options for one task: name, stack size, preemptibility.
///
/// ```
/// let rt = kvant::Runtime::builder().workers(1).build().unwrap();
/// let h = kvant::task::Builder::new()
///     .name("answer")
///     .stack_size(64 * 1024)
///     .spawn_on(&rt, || kvant::current().name().map(str::to_owned))
///     .unwrap();
/// assert_eq!(h.join().unwrap().as_deref(), Some("answer"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Builder {
    opts: SpawnOptions,
}

impl Builder {
    /// Default options: unnamed, the runtime's stack size, preemptible.
    pub fn new() -> Self {
        Self::default()
    }

    /// Name the task (shown by `current()`, join errors, metrics and traces).
    #[must_use = "a builder does nothing until it is used"]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.opts.name = Some(name.into());
        self
    }

    /// Stack size in bytes for this task (at least 16 KiB).
    #[must_use = "a builder does nothing until it is used"]
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.opts.stack_size = Some(bytes);
        self
    }

    /// Whether the quantum timer may preempt this task (default true). A
    /// non-preemptible task only gives up its worker at switch points.
    #[must_use = "a builder does nothing until it is used"]
    pub fn preemptible(mut self, yes: bool) -> Self {
        self.opts.preemptible = yes;
        self
    }

    pub(crate) fn options(&self) -> &SpawnOptions {
        &self.opts
    }

    /// Spawn on the runtime of the calling task.
    ///
    /// Returns [`Error::NoRuntime`] outside a runtime, [`Error::Shutdown`]
    /// after shutdown, and a stack-size error for a bad `stack_size`.
    pub fn spawn<F, T>(self, f: F) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let shared = Shared::current().ok_or(Error::NoRuntime)?;
        shared.spawn(&self.opts, f)
    }

    /// Spawn on `rt`: a [`Runtime`](crate::Runtime) or a
    /// [`Handle`](crate::Handle).
    pub fn spawn_on<F, T>(self, rt: &impl SpawnTarget, f: F) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        rt.spawn_task(&self, f)
    }
}
