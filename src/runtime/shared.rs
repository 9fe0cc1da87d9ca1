//! What a runtime's workers, handles and tasks share: the queues, the
//! per-worker slots and counters, the services (stacks, timers, blocking
//! pool, monitor, trace), the shutdown flags, and the operations on them
//! that every part uses (schedule, wake, spawn, count the live tasks).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crossbeam_deque::{Injector, Stealer};
use parking_lot::{Condvar, Mutex};

use super::{Config, Monitor, blocking, builder, compensate, context, idle, registry};
use crate::error::Error;
use crate::metrics::{Counter, Metrics, WorkerCounters};
use crate::preempt::{PreemptionMode, WorkerSlot};
use crate::task::join::{Handle as JoinInner, Packet};
use crate::task::park::Unparker;
use crate::task::schedule::{Schedule, TimerKey};
use crate::task::stack::StackPool;
use crate::task::{self, JoinHandle, Task, TaskCell, TaskId};
use crate::time::driver::TimerDriver;
use crate::trace::TraceBuffers;

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
    /// The worker's stand-in threads, started by the monitor when it is
    /// first lent (`standin.rs`).
    pub standins: Mutex<Vec<std::thread::JoinHandle<()>>>,
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
    pub tasks: registry::TaskRegistry,
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
    /// Tasks finished off the workers (shutdown's leftovers); the workers
    /// count theirs in `WorkerCounters::completed` (see `live`).
    pub(super) done_outside: Counter,
    /// Threads in `wait_idle`: completions notify `live_cv` only then.
    pub(super) idle_waiters: AtomicUsize,
    pub(super) live_lock: Mutex<()>,
    pub(super) live_cv: Condvar,
    pub(super) running_workers: Mutex<usize>,
    pub(super) workers_cv: Condvar,
    pub leftovers: Mutex<Vec<Arc<Task>>>,
    pub report: ShutdownCounts,
    /// `panic_on_blocking`: reports the monitor filed against tasks, taken
    /// by the task when it panics with it.
    pub blocking_reports: Mutex<std::collections::HashMap<crate::task::TaskId, String>>,
    /// `panic_on_blocking`: a stall hand-off cannot resolve; OS threads
    /// waiting on this runtime's tasks panic with it.
    pub stall: Mutex<Option<String>>,
    pub(super) spawned_external: Counter,
    pub epoch_ticks: AtomicU64,
    /// The clock as the monitor last read it (each pass): a park's time
    /// stamp for a task dump, without a clock read on the park path. On a
    /// line of its own: workers read it at every park, and it must not
    /// share a line with fields other threads write.
    pub coarse_ticks: crossbeam_utils::CachePadded<AtomicU64>,
    /// Tasks woken into the global queue while every worker was busy (the
    /// monitor's cue for wake-up preemption).
    pub wakes: AtomicU64,
}

impl Shared {
    /// The runtime of the calling task or worker thread.
    pub(crate) fn current() -> Option<Arc<Shared>> {
        Shared::with_current(Arc::clone)
    }

    /// Run `g` on the runtime of the calling task or worker thread, if any,
    /// without taking a reference to it (two atomic operations fewer per
    /// `kvant::spawn` inside a task). `g` must not switch tasks.
    pub(crate) fn with_current<R>(g: impl FnOnce(&Arc<Shared>) -> R) -> Option<R> {
        // A task runs only on its own runtime's threads (a worker, a
        // compensating thread or a stand-in, each with a worker context),
        // so the thread's context names the task's runtime too.
        let mut g = Some(g);
        let mut call = |shared: &Arc<Shared>| (g.take().expect("called once"))(shared);
        if let Some(r) = context::with_worker(|w| call(&w.shared)) {
            return Some(r);
        }
        context::entered().map(|shared| call(&shared))
    }

    /// Put a runnable task in a queue and make sure a worker will look,
    /// counting a spawn on the worker it comes from
    /// if `spawned` (one look at the thread's worker context for both). The
    /// spawn is counted before the task is queued, so before it can end:
    /// `live` relies on that.
    #[inline]
    pub(super) fn enqueue(&self, task: Arc<Task>, spawned: bool) {
        if let Some(t) = self.push_local(task, spawned) {
            if spawned {
                self.spawned_external.add(1);
            }
            self.injector.push(t);
        }
        self.idle.notify_one();
    }

    /// Push `task` to the calling worker's own queue if it is one of this
    /// runtime's (counting a spawn there if `spawned`); hand it back if not.
    #[inline(always)]
    fn push_local(&self, task: Arc<Task>, spawned: bool) -> Option<Arc<Task>> {
        let mut task = Some(task);
        context::with_worker(|w| {
            if std::ptr::eq(Arc::as_ptr(&w.shared), self) {
                if spawned {
                    self.workers[w.index].counters.spawned.bump(1);
                }
                w.local.push(task.take().expect("task is still here"));
            }
        });
        task
    }

    /// A parked task was woken (a timer, a channel, a lock, a join): queue
    /// it, and if it had to go to the global queue while every worker is
    /// busy, tell the monitor, which preempts a task that has had at least
    /// `min_slice` so the woken one runs next (wake-up preemption,
    /// `sysmon/quantum.rs`). A task woken by another task stays on that
    /// task's worker, like Go's `runnext`, without preempting anyone.
    ///
    /// The common case, a task woken by a task on one of this runtime's
    /// workers, is a push to that worker's queue and the idle check; the
    /// rest is out of line, so the wake-up (a call through the task's
    /// `Schedule` vtable) keeps few registers live.
    #[inline]
    pub(crate) fn wake(&self, task: Arc<Task>) {
        match self.push_local(task, false) {
            None => self.idle.notify_one(),
            Some(t) => self.wake_global(t),
        }
    }

    /// [`Shared::wake`] from outside the workers (a timer, an OS thread):
    /// the global queue, and wake-up preemption if every worker is busy.
    #[inline(never)]
    fn wake_global(&self, task: Arc<Task>) {
        self.injector.push(task);
        self.idle.notify_one();
        if self.preemptive && self.config.min_slice.is_some() && !self.idle.wants_work() {
            self.wakes.fetch_add(1, Ordering::Release);
            if let Some(m) = &*self.monitor.lock() {
                m.wake_up();
            }
        }
    }

    pub(crate) fn spawn<F, T>(
        self: &Arc<Self>,
        opts: &task::SpawnOptions,
        f: F,
    ) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        // Once closed, only this runtime's own tasks may still spawn (their
        // children are part of the work being drained).
        let inside = || {
            task::current::in_task()
                && context::with_worker(|w| Arc::ptr_eq(&w.shared, self)) == Some(true)
        };
        if self.stopping.load(Ordering::Acquire)
            || (self.closed.load(Ordering::Acquire) && !inside())
        {
            return Err(Error::Shutdown);
        }
        // Rounded like the pool does, so a request equal to the default
        // reuses pooled stacks (the default is rounded already).
        let stack_size = match opts.stack_size {
            None => self.config.stack_size,
            Some(s) => crate::task::stack::round_to_pages(builder::check_stack_size(s)?),
        };
        crate::preempt::allow_spawner::<F>();
        let id = crate::task::Header::new_id();
        let name: Option<Arc<str>> = opts.name.as_deref().map(Arc::from);
        // The user's closure is boxed on its own so that it runs behind a
        // dynamic call: its code then lives in its own (non-kvant) symbol,
        // which the preemption safe-point check needs (see `run_user`).
        let user: Box<dyn FnOnce() -> T + Send> = Box::new(f);
        let typed = TaskCell::new(
            self.clone() as Arc<dyn Schedule>,
            name,
            stack_size,
            opts.preemptible,
            Packet::new(Some(user)),
            id,
        );
        let task: Arc<Task> = typed.clone();
        self.enqueue(task, true);
        Ok(JoinHandle {
            inner: JoinInner::Task(typed),
        })
    }

    /// Whether any queue a thread could steal from holds work.
    pub(crate) fn stealable_work(&self) -> bool {
        !self.injector.is_empty() || self.live_stealers().iter().any(|s| !s.is_empty())
    }

    /// Worker slots that may run or hold tasks: the regular workers and
    /// the compensation slots used so far (`compensate.rs`).
    #[inline]
    pub(crate) fn slots_in_use(&self) -> usize {
        self.config.workers + self.compensation.high()
    }

    /// The stealers of [`slots_in_use`](Self::slots_in_use).
    #[inline]
    pub(crate) fn live_stealers(&self) -> &[Stealer<Arc<Task>>] {
        &self.stealers[..self.slots_in_use()]
    }

    /// A task is finished for good: count it in `completed`, the counter of
    /// the thread that finished it (a worker's, or `done_outside`).
    pub(crate) fn task_done(&self, completed: &Counter) {
        // SeqCst with `wait_idle`'s increment of `idle_waiters`: either
        // this load sees the waiter, or the waiter's count sees this task.
        completed.add_seqcst(1);
        if self.idle_waiters.load(Ordering::SeqCst) > 0 {
            let _g = self.live_lock.lock();
            self.live_cv.notify_all();
        }
    }

    /// Tasks spawned and not yet finished. There is no live-task counter:
    /// one counter bumped by every spawn and every completion was a cache
    /// line bouncing between the cores that spawn and those that finish
    /// (measured: BENCHMARKS.md, "Measured decisions"). The count is
    /// derived from each thread's own counters instead, read completions
    /// first: a task counted as finished was counted as spawned before (the
    /// spawn is counted before the task is queued, and the queue hands it
    /// over with release/acquire), so the spawns read afterwards include
    /// it, and the result never counts a finished task as negative. It can
    /// count a task that finished while the sums were read as live:
    /// harmless for its users (`wait_idle` looks again at the next
    /// completion, metrics).
    pub(crate) fn live(&self) -> usize {
        let sum = |count: fn(&WorkerShared) -> u64| self.workers.iter().map(count).sum::<u64>();
        let done = sum(|w| w.counters.completed.get_seqcst()) + self.done_outside.get_seqcst();
        let spawned = sum(|w| w.counters.spawned.get()) + self.spawned_external.get();
        usize::try_from(spawned.saturating_sub(done)).unwrap_or(usize::MAX)
    }

    /// Wait until no task is alive or `deadline` passes; true if none is.
    pub(crate) fn wait_idle(&self, deadline: std::time::Instant) -> bool {
        self.idle_waiters.fetch_add(1, Ordering::SeqCst);
        let mut g = self.live_lock.lock();
        let idle = loop {
            if self.live() == 0 {
                break true;
            }
            if self.live_cv.wait_until(&mut g, deadline).timed_out() {
                break self.live() == 0;
            }
        };
        drop(g);
        self.idle_waiters.fetch_sub(1, Ordering::SeqCst);
        idle
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
        let snapshot = |w: &WorkerShared| w.counters.snapshot(w.slot.switch_counts());
        let (regular, spare) = self.workers.split_at(self.config.workers);
        Metrics {
            workers: regular.iter().map(snapshot).collect(),
            compensating: spare[..self.compensation.high()]
                .iter()
                .map(snapshot)
                .collect(),
            compensating_threads: self.compensation.alive(),
            spawned_external: self.spawned_external.get(),
            live_tasks: self.live() as u64,
            stacks_mapped: self.stacks.mapped() as u64,
        }
    }
}

/// The task core reaches its runtime only through this.
impl Schedule for Shared {
    #[inline]
    fn wake(&self, task: Arc<Task>) {
        Shared::wake(self, task);
    }

    fn arm_timer(&self, deadline: std::time::Instant, who: Unparker) -> TimerKey {
        self.timers.insert(deadline, who)
    }

    fn cancel_timer(&self, key: TimerKey) {
        self.timers.cancel(key);
    }

    fn shutting_down(&self) -> bool {
        self.cancelling.load(Ordering::Acquire)
    }

    fn panic_on_blocking(&self) -> bool {
        self.config.panic_on_blocking
    }

    fn take_blocking_report(&self, id: TaskId) -> Option<String> {
        self.blocking_reports.lock().remove(&id)
    }

    fn stall_report(&self) -> Option<String> {
        self.stall.lock().clone()
    }
}
