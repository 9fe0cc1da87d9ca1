//! The runtime: a pool of worker threads, their queues, and the services the
//! tasks share (stack pool, timer thread, preemption monitor).

mod blocking;
mod builder;
mod compensate;
mod context;
mod handle;
mod idle;
mod parked;
mod policy;
mod shutdown;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod sysmon;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle as ThreadHandle;
use std::time::Duration;

use crossbeam_deque::{Injector, Stealer, Worker};
use parking_lot::{Condvar, Mutex};

pub use blocking::spawn_blocking;
pub(crate) use builder::Config;
pub use builder::{
    Builder, DEFAULT_BLOCKING_THRESHOLD, DEFAULT_MIN_SLICE, DEFAULT_QUANTUM, DEFAULT_STACK_SIZE,
    MAX_QUANTUM, MAX_STACK_SIZE, MAX_WORKERS, MIN_QUANTUM, MIN_STACK_SIZE,
};
pub use context::EnterGuard;
pub use handle::Handle;
pub use shutdown::ShutdownReport;

use crate::error::Error;
use crate::metrics::{Counter, Metrics, WorkerCounters};
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
mod sysmon_off;
use crate::preempt::{PreemptionMode, WorkerSlot};
use crate::task::join::{Handle as JoinInner, Packet};
use crate::task::stack::StackPool;
use crate::task::{self, JoinHandle, Task, TaskCell};
use crate::time::driver::TimerDriver;
use crate::trace::{Trace, TraceBuffers};
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
use sysmon::Monitor;
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
use sysmon_off::Monitor;

/// What each worker shares with the rest of the runtime.
#[derive(Default)]
pub(crate) struct WorkerShared {
    pub slot: WorkerSlot,
    pub counters: WorkerCounters,
    /// Tasks preempted on this worker's thread, which must resume there.
    /// Only that thread changes it; the monitor reads it for reports.
    pub pinned: Mutex<std::collections::VecDeque<Arc<Task>>>,
    /// Length of the worker's pinned queue (read without the lock).
    pub pinned_len: AtomicUsize,
}

/// Outcome counters of a shutdown.
#[derive(Default)]
pub(crate) struct ShutdownCounts {
    pub cancelled: AtomicUsize,
    pub leaked: AtomicUsize,
}

/// State shared by the workers, the handles and every task of one runtime.
pub(crate) struct Shared {
    pub config: Config,
    /// Whether slices are preempted at the quantum (`mode.is_preemptive()`).
    pub preemptive: bool,
    pub mode: PreemptionMode,
    /// Whether slices are timed (tracing or `task_timing`).
    pub timing: bool,
    pub injector: Injector<Arc<Task>>,
    /// One per worker slot: the regular workers, then the compensating ones.
    pub stealers: Box<[Stealer<Arc<Task>>]>,
    pub idle: idle::Idle,
    /// The regular workers (`config.workers`), then the compensation slots.
    pub workers: Box<[WorkerShared]>,
    pub compensation: compensate::Compensation,
    pub stacks: StackPool,
    pub parked: parked::ParkedTasks,
    pub timers: Arc<TimerDriver>,
    pub blocking: Arc<blocking::BlockingPool>,
    pub monitor: Mutex<Option<Monitor>>,
    pub trace: Option<TraceBuffers>,
    /// No new tasks from outside the runtime.
    pub closed: AtomicBool,
    /// Every task is cancelled at its next slice.
    pub cancelling: AtomicBool,
    /// Workers leave their loops.
    pub stopping: AtomicBool,
    live: AtomicUsize,
    live_lock: Mutex<()>,
    live_cv: Condvar,
    running_workers: Mutex<usize>,
    workers_cv: Condvar,
    pub leftovers: Mutex<Vec<Arc<Task>>>,
    pub report: ShutdownCounts,
    /// `panic_on_blocking`: reports the monitor filed against tasks, taken
    /// by the task when it panics with it.
    pub blocking_reports: Mutex<std::collections::HashMap<crate::task::TaskId, String>>,
    /// `panic_on_blocking`: a stall hand-off cannot resolve; OS threads
    /// waiting on this runtime's tasks panic with it.
    pub stall: Mutex<Option<String>>,
    spawned_external: Counter,
    pub epoch_ticks: AtomicU64,
    /// Tasks woken into the global queue while every worker was busy (the
    /// monitor's cue for wake-up preemption).
    pub wakes: AtomicU64,
}

impl Shared {
    /// The runtime of the calling task or worker thread.
    pub(crate) fn current() -> Option<Arc<Shared>> {
        task::current::with_current(|t| t.shared.clone())
            .or_else(|| context::with_worker(|w| w.shared.clone()))
            .or_else(context::entered)
    }

    /// Put a runnable task in a queue and make sure a worker will look.
    /// Returns whether it went to the global queue (the caller is not one
    /// of this runtime's workers).
    pub(crate) fn schedule(self: &Arc<Self>, task: Arc<Task>) -> bool {
        self.enqueue(task, false)
    }

    /// [`Shared::schedule`], counting a spawn on the worker it comes from
    /// if `spawned` (one look at the thread's worker context for both).
    fn enqueue(self: &Arc<Self>, task: Arc<Task>, spawned: bool) -> bool {
        let mut task = Some(task);
        context::with_worker(|w| {
            if Arc::ptr_eq(&w.shared, self) {
                if spawned {
                    self.workers[w.index].counters.spawned.bump(1);
                }
                w.local.push(task.take().expect("task is still here"));
            }
        });
        let global = task.is_some();
        if let Some(t) = task {
            self.injector.push(t);
        }
        self.idle.notify_one();
        global
    }

    /// A parked task was woken (a timer, a channel, a lock, a join): queue
    /// it, and if it had to go to the global queue while every worker is
    /// busy, tell the monitor, which preempts a task that has had at least
    /// `min_slice` so the woken one runs next (wake-up preemption,
    /// `sysmon/quantum.rs`). A task woken by another task stays on that
    /// task's worker, like Go's `runnext`, without preempting anyone.
    pub(crate) fn wake(self: &Arc<Self>, task: Arc<Task>) {
        if self.schedule(task)
            && self.preemptive
            && self.config.min_slice.is_some()
            && !self.idle.wants_work()
        {
            self.wakes.fetch_add(1, Ordering::Release);
            if let Some(m) = &*self.monitor.lock() {
                m.wake_up();
            }
        }
    }

    pub(crate) fn spawn<F, T>(
        self: &Arc<Self>,
        opts: &task::Builder,
        f: F,
    ) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let inside = task::current::with_current(|t| Arc::ptr_eq(&t.shared, self)).unwrap_or(false);
        if self.stopping.load(Ordering::Acquire) || (!inside && self.closed.load(Ordering::Acquire))
        {
            return Err(Error::Shutdown);
        }
        let stack_size = match opts.stack_size {
            None => self.config.stack_size,
            Some(s) if s < builder::MIN_STACK_SIZE => {
                return Err(Error::StackTooSmall {
                    requested: s,
                    min: builder::MIN_STACK_SIZE,
                });
            }
            Some(s) if s > builder::MAX_STACK_SIZE => {
                return Err(Error::StackTooLarge {
                    requested: s,
                    max: builder::MAX_STACK_SIZE,
                });
            }
            Some(s) => s,
        };
        // Round like the pool does, so a request equal to the default reuses pooled stacks.
        let stack_size = crate::task::stack::round_to_pages(stack_size);
        let id = crate::task::Header::new_id();
        let name: Option<Arc<str>> = opts.name.as_deref().map(Arc::from);
        // The user's closure is boxed on its own so that it runs behind a
        // dynamic call: its code then lives in its own (non-kvant) symbol,
        // which the preemption safe-point check needs (see `run_user`).
        let user: Box<dyn FnOnce() -> T + Send> = Box::new(f);
        let typed = TaskCell::new(
            self.clone(),
            name.clone(),
            stack_size,
            opts.preemptible,
            Packet::new(id, name, Some(user)),
            id,
        );
        let task: Arc<Task> = typed.clone();
        self.live.fetch_add(1, Ordering::AcqRel);
        if self.enqueue(task, true) {
            self.spawned_external.add(1);
        }
        Ok(JoinHandle {
            inner: JoinInner::Task(typed),
        })
    }

    /// Whether any queue a thread could steal from holds work.
    pub(crate) fn stealable_work(&self) -> bool {
        !self.injector.is_empty() || self.stealers.iter().any(|s| !s.is_empty())
    }

    /// A task is finished for good.
    pub(crate) fn task_done(&self) {
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _g = self.live_lock.lock();
            self.live_cv.notify_all();
        }
    }

    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Wait until no task is alive or `deadline` passes; true if none is.
    pub(crate) fn wait_idle(&self, deadline: std::time::Instant) -> bool {
        let mut g = self.live_lock.lock();
        while self.live() > 0 {
            if self.live_cv.wait_until(&mut g, deadline).timed_out() {
                return self.live() == 0;
            }
        }
        true
    }

    pub(crate) fn worker_started(&self) {
        *self.running_workers.lock() += 1;
    }

    pub(crate) fn worker_exited(&self) {
        let mut n = self.running_workers.lock();
        *n -= 1;
        self.workers_cv.notify_all();
    }

    /// Wait until every worker left its loop or `deadline` passes; returns
    /// how many are still running.
    pub(crate) fn wait_workers(&self, deadline: std::time::Instant) -> usize {
        let mut n = self.running_workers.lock();
        while *n > 0 {
            if self.workers_cv.wait_until(&mut n, deadline).timed_out() {
                break;
            }
        }
        *n
    }

    pub(crate) fn metrics(&self) -> Metrics {
        let snapshot = |w: &WorkerShared| w.counters.snapshot(&w.slot);
        let (regular, spare) = self.workers.split_at(self.config.workers);
        Metrics {
            workers: regular.iter().map(snapshot).collect(),
            compensating: spare.iter().map(snapshot).collect(),
            compensating_threads: self.compensation.alive(),
            spawned_external: self.spawned_external.get(),
            live_tasks: self.live() as u64,
            stacks_mapped: self.stacks.mapped() as u64,
        }
    }
}

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
            parked: parked::ParkedTasks::new(),
            timers,
            blocking: blocking::BlockingPool::new(config.blocking_threads, &config.name),
            monitor: Mutex::new(None),
            trace: config
                .trace
                .then(|| TraceBuffers::new(n, config.max_compensation)),
            closed: AtomicBool::new(false),
            cancelling: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            live: AtomicUsize::new(0),
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
            wakes: AtomicU64::new(0),
            config,
        });
        let mut rt = Runtime {
            shared: shared.clone(),
            threads: Vec::with_capacity(n),
            finished: false,
        };
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

    pub(crate) fn spawn_with<F, T>(&self, b: &task::Builder, f: F) -> Result<JoinHandle<T>, Error>
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
        self.spawn_with(&task::Builder::new(), f)
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

    /// The recorded slices, if the runtime was built with `trace(true)`.
    pub fn trace(&self) -> Option<Trace> {
        self.shared.trace.as_ref().map(|t| t.snapshot(&self.shared))
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
    let h = match shared.spawn(&task::Builder::new(), f) {
        Ok(h) => h,
        Err(e) => panic!("kvant: block_on failed: {e}"),
    };
    match h.join() {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("kvant: block_on: {e}"),
    }
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
    let Some(shared) = Shared::current() else {
        panic!(
            "kvant::spawn called outside a kvant runtime; use Runtime::spawn or \
             Runtime::block_on to enter one"
        )
    };
    match shared.spawn(&task::Builder::new(), f) {
        Ok(h) => h,
        Err(e) => panic!("kvant::spawn failed: {e}"),
    }
}
