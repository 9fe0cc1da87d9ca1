//! The runtime: a pool of worker threads, their queues, and the services the
//! tasks share (stack pool, timer thread, preemption monitor).

mod blocking;
mod builder;
mod compensate;
mod context;
mod dump;
mod handle;
mod idle;
mod policy;
mod registry;
mod shared;
mod shutdown;
mod slice;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod standin;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod sysmon;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle as ThreadHandle;
use std::time::Duration;

use crossbeam_deque::{Injector, Worker};
use parking_lot::{Condvar, Mutex};

pub use blocking::spawn_blocking;
pub(crate) use builder::Config;
pub use builder::{
    Builder, DEFAULT_BLOCKING_THRESHOLD, DEFAULT_MAX_COMPENSATION, DEFAULT_MIN_SLICE,
    DEFAULT_QUANTUM, DEFAULT_STACK_SIZE, MAX_QUANTUM, MAX_STACK_SIZE, MAX_WORKERS, MIN_QUANTUM,
    MIN_STACK_SIZE,
};
pub use context::EnterGuard;
pub use handle::Handle;
pub(crate) use shared::{Shared, ShutdownCounts, WorkerShared};
pub use shutdown::ShutdownReport;

use crate::error::Error;
use crate::metrics::{Counter, Metrics};
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
mod sysmon_off;
use crate::preempt::PreemptionMode;
use crate::task::stack::StackPool;
use crate::task::{self, JoinHandle, Task};
use crate::time::driver::TimerDriver;
use crate::trace::{Trace, TraceBuffers};
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
use sysmon::Monitor;
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
use sysmon_off::Monitor;

/// A pool of worker threads running green threads.
///
/// ```
/// let rt = kvant::Runtime::builder().workers(2).build().unwrap();
/// let handles: Vec<_> = (0..10u64).map(|i| rt.spawn(move || i * i)).collect();
/// let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
/// assert_eq!(sum, 285);
/// ```
///
/// Dropping the runtime shuts it down with no grace period (see
/// [`Runtime::shutdown_timeout`]).
pub struct Runtime {
    pub(crate) shared: Arc<Shared>,
    threads: Vec<ThreadHandle<()>>,
    finished: bool,
}

impl Runtime {
    /// A builder with default settings.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// A runtime with default settings (`Runtime::builder().build()`).
    pub fn new() -> Result<Runtime, Error> {
        Builder::new().build()
    }

    pub(crate) fn start(config: Config) -> Result<Runtime, Error> {
        crate::clock::init();
        crate::preempt::init_process();
        let n = config.workers;
        let slots = n + config.max_compensation;
        let mut locals: Vec<Worker<Arc<Task>>> = (0..slots).map(|_| Worker::new_fifo()).collect();
        let stealers = locals.iter().map(Worker::stealer).collect();
        let spare = locals.split_off(n);
        let timers = TimerDriver::start(&config.name)?;
        let stack_size = crate::task::stack::round_to_pages(config.stack_size);
        let (mode, switch_waits) = crate::preempt::decide_mode(config.quantum);
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        if let PreemptionMode::Unavailable(why) = mode
            && let Some(msg) = crate::preempt::unavailable_message(why)
        {
            config.say(crate::DiagnosticKind::PreemptionOff, msg);
        }
        let shared = Arc::new(Shared {
            preemptive: mode.is_preemptive(),
            mode,
            timing: config.trace || config.task_timing,
            injector: Injector::new(),
            stealers,
            idle: idle::Idle::new(n),
            workers: (0..slots).map(|_| WorkerShared::default()).collect(),
            compensation: compensate::Compensation::new(n, spare),
            stacks: StackPool::new(stack_size, 1024.max(n * 64)),
            tasks: registry::TaskRegistry::new(),
            timers,
            blocking: blocking::BlockingPool::new(config.blocking_threads, &config.name),
            monitor: Mutex::new(None),
            trace: config
                .trace
                .then(|| TraceBuffers::new(n, config.max_compensation)),
            closed: AtomicBool::new(false),
            cancelling: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            done_outside: Counter::default(),
            idle_waiters: AtomicUsize::new(0),
            live_lock: Mutex::new(()),
            live_cv: Condvar::new(),
            running_workers: Mutex::new(n),
            workers_cv: Condvar::new(),
            leftovers: Mutex::new(Vec::new()),
            report: ShutdownCounts::default(),
            blocking_reports: Mutex::new(std::collections::HashMap::new()),
            stall: Mutex::new(None),
            spawned_external: Counter::default(),
            epoch_ticks: AtomicU64::new(crate::clock::ticks()),
            coarse_ticks: crossbeam_utils::CachePadded::new(AtomicU64::new(crate::clock::ticks())),
            wakes: AtomicU64::new(0),
            config,
        });
        let mut rt = Runtime {
            shared: shared.clone(),
            threads: Vec::with_capacity(n),
            finished: false,
        };
        if let Some(sig) = shared.config.dump_signal
            && let Err(e) = dump::watch(&shared, sig)
        {
            rt.abort_start(n); // no worker was started yet
            return Err(e);
        }
        // Install the signal handler before any worker can be signalled.
        match Monitor::start(&shared, mode.is_preemptive(), switch_waits) {
            Ok(m) => *shared.monitor.lock() = m,
            Err(e) => {
                rt.abort_start(n); // no worker was started yet
                return Err(e);
            }
        }
        for (i, local) in locals.into_iter().enumerate() {
            let ctx = worker::WorkerCtx::new(i, shared.clone(), local);
            match worker::spawn_thread(ctx, format!("worker-{i}"), None) {
                Ok(h) => rt.threads.push(h),
                Err(e) => {
                    rt.abort_start(n - i);
                    return Err(e.into());
                }
            }
        }
        Ok(rt)
    }

    /// Undo a partial start: `missing` workers never started.
    fn abort_start(&mut self, missing: usize) {
        *self.shared.running_workers.lock() -= missing;
        self.shutdown_inner(Duration::ZERO);
    }

    /// Spawn a task.
    ///
    /// # Panics
    /// If the runtime is shut down (use [`Runtime::try_spawn`] to get an error instead).
    #[track_caller]
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match self.try_spawn(f) {
            Ok(h) => h,
            Err(e) => panic!("kvant: Runtime::spawn failed: {e}"),
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

    /// Spawn a task, or [`Error::Shutdown`] if the runtime no longer accepts tasks.
    pub fn try_spawn<F, T>(&self, f: F) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.spawn_with(&task::SpawnOptions::default(), f)
    }

    /// Run `f` as a green thread and block the calling OS thread until it
    /// returns. A panic in `f` is resumed here.
    ///
    /// # Panics
    /// If called from inside a kvant task (that would block a worker; join a
    /// spawned task instead), if the runtime is shut down, or if the task is
    /// cancelled by a concurrent shutdown.
    #[track_caller]
    pub fn block_on<F, T>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        block_on_shared(&self.shared, f)
    }

    /// Run blocking work on the runtime's pool of OS threads (see
    /// [`spawn_blocking`]).
    ///
    /// # Panics
    /// After shutdown.
    pub fn spawn_blocking<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.shared
            .spawn_blocking(f)
            .unwrap_or_else(|e| panic!("kvant: Runtime::spawn_blocking failed: {e}"))
    }

    /// Run blocking work on the runtime's pool of OS threads, or the reason
    /// it cannot: [`Error::Shutdown`] after shutdown, [`Error::Io`] if no
    /// thread could be started.
    pub fn try_spawn_blocking<F, T>(&self, f: F) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.shared.spawn_blocking(f)
    }

    /// A snapshot of the scheduler's counters.
    pub fn metrics(&self) -> Metrics {
        self.shared.metrics()
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.shared.config.workers
    }

    /// The quantum, or `None` for a cooperative runtime.
    pub fn quantum(&self) -> Option<Duration> {
        self.shared.config.quantum
    }

    /// Whether tasks are preempted here and how safe points are found; a
    /// quantum the executable cannot honour soundly shows up as
    /// [`PreemptionMode::Unavailable`].
    pub fn preemption_mode(&self) -> PreemptionMode {
        self.shared.mode
    }

    /// Every live task: what it is doing, for how long, and its stack
    /// (see [`dump`](crate::dump)). Taken while the tasks go on running;
    /// the first dump of a process reads the executable's debug info
    /// (~0.1-1 s).
    ///
    /// ```
    /// let rt = kvant::Runtime::builder().workers(1).build().unwrap();
    /// let (tx, rx) = kvant::channel::bounded::<u32>(1);
    /// let h = rt.spawn(move || rx.recv());
    /// while rt.dump().tasks().is_empty() {
    ///     std::thread::yield_now();
    /// }
    /// println!("{}", rt.dump());
    /// tx.send(1).unwrap();
    /// h.join().unwrap().unwrap();
    /// ```
    pub fn dump(&self) -> crate::dump::TaskDump {
        dump::collect(&self.shared)
    }

    /// The recorded slices, if the runtime was built with `trace(true)`.
    pub fn trace(&self) -> Option<Trace> {
        let epoch = self.shared.epoch_ticks.load(Ordering::Relaxed);
        self.shared.trace.as_ref().map(|t| t.snapshot(epoch))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if !self.finished {
            self.shutdown_inner(Duration::ZERO);
        }
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("workers", &self.shared.config.workers)
            .field("quantum", &self.shared.config.quantum)
            .field("live_tasks", &self.shared.live())
            .finish()
    }
}

#[track_caller]
pub(crate) fn block_on_shared<F, T>(shared: &Arc<Shared>, f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if task::current::in_task() {
        panic!(
            "kvant: block_on called from inside a kvant task; this would block a \
             worker thread. Spawn the work and join its handle instead."
        );
    }
    let h = match shared.spawn(&task::SpawnOptions::default(), f) {
        Ok(h) => h,
        Err(e) => panic!("kvant: block_on failed: {e}"),
    };
    match h.join() {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("kvant: block_on: {e}"),
    }
}

/// Let the crate that wrote `F` be preempted (for task-layer façades that
/// box their closures before they reach `Shared::spawn`).
#[inline]
pub(crate) fn allow_spawner<F>() {
    crate::preempt::allow_spawner::<F>();
}

/// Spawn a task on the current runtime.
///
/// # Panics
/// Outside a kvant runtime, or if the runtime is shutting down (use
/// [`task::Builder::spawn`] for an error instead).
#[track_caller]
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let Some(spawned) =
        Shared::with_current(|shared| shared.spawn(&task::SpawnOptions::default(), f))
    else {
        panic!(
            "kvant::spawn called outside a kvant runtime; use Runtime::spawn or \
             Runtime::block_on to enter one"
        )
    };
    match spawned {
        Ok(h) => h,
        Err(e) => panic!("kvant::spawn failed: {e}"),
    }
}
