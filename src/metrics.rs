//! Scheduler counters: what each worker did, cheap enough to stay always on.
//!
//! Most counters have a single writer (their worker), so they are bumped with
//! a plain load and store instead of a locked read-modify-write: on x86 that
//! is two `mov`s instead of a `lock xadd` on the switch path. Counters that a
//! signal handler or another thread also writes use `fetch_add`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A counter written by one thread and read by any.
#[derive(Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    /// Add `n` (only from the counter's single writer).
    #[inline]
    pub(crate) fn bump(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Overwrite the value (only from the counter's single writer).
    #[inline]
    pub(crate) fn bump_set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Add `n` from any thread (or a signal handler).
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// [`add`](Self::add) in the single total order of `SeqCst`: for a count
    /// another thread sums and then sleeps on (`Shared::live`), paired with
    /// a `SeqCst` load of whether anyone sleeps on it.
    #[inline]
    pub(crate) fn add_seqcst(&self, n: u64) {
        self.0.fetch_add(n, Ordering::SeqCst);
    }

    /// [`get`](Self::get) in the single total order of `SeqCst`.
    #[inline]
    pub(crate) fn get_seqcst(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Live counters of one worker.
#[derive(Default)]
pub(crate) struct WorkerCounters {
    pub slices: Counter,
    pub spawned: Counter,
    pub completed: Counter,
    pub yields: Counter,
    pub task_parks: Counter,
    pub steal_ops: Counter,
    pub stolen: Counter,
    pub sleeps: Counter,
    pub busy_ticks: Counter,
    /// Clock ticks when the worker last woke up; 0 while it sleeps.
    pub awake_since: Counter,
    /// Blocked-in-kernel episodes, and their time (written by the monitor
    /// and by the worker: `add`).
    pub kernel_blocks: Counter,
    pub kernel_ticks: Counter,
    /// Compensating threads started because this worker was blocked.
    pub compensations: Counter,
}

/// What one worker did since the runtime started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct WorkerMetrics {
    /// Slices run (a task resumed until it switched out or finished).
    pub tasks_run: u64,
    /// Tasks spawned from this worker.
    pub spawned: u64,
    /// Tasks that ended on this worker, however they ended (value, panic,
    /// stack overflow, cancellation); `spawned == completed` once all ended.
    pub completed: u64,
    /// Slices ended by `yield_now`.
    pub voluntary_yields: u64,
    /// Slices ended because the task blocked (join, sleep, lock, channel).
    pub blocked: u64,
    /// Slices ended because the quantum expired.
    pub preemptions: u64,
    /// Preemption signals that arrived at an unsafe point and were deferred.
    pub deferrals: u64,
    /// Preemption signals sent to this worker.
    pub signals: u64,
    /// Slices that ran far past their quantum (8 quanta, and at least 20 ms)
    /// because every signal found them in code kvant will not preempt: a
    /// crate that is not allowed ([`Builder::preempt_crate`](crate::Builder::preempt_crate)),
    /// std's I/O, locks or allocator, C code. Each distinct place is also
    /// reported once on stderr.
    pub overruns: u64,
    /// Slices ended because the task was blocked in a contended std::sync
    /// wait (`Mutex::lock`, `Condvar::wait`, `LazyLock`...) while other
    /// tasks waited for the worker: a sync-wait switch (see `kvant::safety`).
    pub sync_switches: u64,
    /// Slices ended because the task was blocked in a system call (a
    /// `read`, `std::thread::sleep`, `accept`...) when its quantum expired
    /// and tasks preempted on this worker were waiting: a syscall switch
    /// (see `kvant::safety`). Preemptive runtimes only.
    pub syscall_switches: u64,
    /// Times the worker was lent: its thread was blocked in a futex wait
    /// (a parking_lot lock, `thread::park`, `std::sync::mpsc`...) while
    /// tasks preempted on it waited, so a stand-in thread ran those tasks
    /// until the wait was over (see `kvant::safety`).
    pub lends: u64,
    /// Successful steal operations (from another worker or the global queue).
    pub steal_ops: u64,
    /// Tasks obtained by those steals.
    pub stolen_tasks: u64,
    /// Times the worker went to sleep for lack of work (a *worker* sleeps;
    /// a *task* parks, counted in `blocked`).
    pub sleeps: u64,
    /// Time spent awake (running tasks or looking for them).
    pub busy_time: Duration,
    /// Times the monitor found this worker's thread blocked in the kernel
    /// inside a task (not computing, for at least `blocking_threshold`):
    /// `std::thread::sleep`, `std::sync::mpsc`, a blocking read, C code...
    pub kernel_blocks: u64,
    /// Time spent in those episodes (as sampled by the monitor: from when
    /// the thread was last seen computing to when it was seen again).
    pub kernel_blocked_time: Duration,
    /// Compensating threads started to run the tasks this worker left
    /// queued while it was blocked.
    pub compensations: u64,
}

impl WorkerCounters {
    /// The counters, with the switch counts the signal handler keeps in the
    /// worker's slot (their only home: the handler cannot reach these).
    pub(crate) fn snapshot(&self, switches: SwitchCounts) -> WorkerMetrics {
        WorkerMetrics {
            tasks_run: self.slices.get(),
            spawned: self.spawned.get(),
            completed: self.completed.get(),
            voluntary_yields: self.yields.get(),
            blocked: self.task_parks.get(),
            preemptions: switches.preemptions,
            deferrals: switches.deferrals,
            signals: switches.signals,
            overruns: switches.overruns,
            sync_switches: switches.sync_switches,
            syscall_switches: switches.syscall_switches,
            lends: switches.lends,
            steal_ops: self.steal_ops.get(),
            stolen_tasks: self.stolen.get(),
            sleeps: self.sleeps.get(),
            busy_time: Duration::from_nanos(crate::clock::ticks_to_ns(self.busy_ticks())),
            kernel_blocks: self.kernel_blocks.get(),
            kernel_blocked_time: Duration::from_nanos(crate::clock::ticks_to_ns(
                self.kernel_ticks.get(),
            )),
            compensations: self.compensations.get(),
        }
    }
}

/// The switch counts a worker's preemption slot keeps, read at one moment.
pub(crate) struct SwitchCounts {
    pub preemptions: u64,
    pub deferrals: u64,
    pub signals: u64,
    pub overruns: u64,
    pub sync_switches: u64,
    pub syscall_switches: u64,
    pub lends: u64,
}

impl WorkerCounters {
    /// Busy time so far, including the current awake stretch.
    fn busy_ticks(&self) -> u64 {
        let since = self.awake_since.get();
        let current = if since == 0 {
            0
        } else {
            crate::clock::ticks().saturating_sub(since)
        };
        self.busy_ticks.get() + current
    }
}

impl WorkerMetrics {
    fn add(&mut self, o: &WorkerMetrics) {
        self.tasks_run += o.tasks_run;
        self.spawned += o.spawned;
        self.completed += o.completed;
        self.voluntary_yields += o.voluntary_yields;
        self.blocked += o.blocked;
        self.preemptions += o.preemptions;
        self.deferrals += o.deferrals;
        self.overruns += o.overruns;
        self.signals += o.signals;
        self.sync_switches += o.sync_switches;
        self.syscall_switches += o.syscall_switches;
        self.lends += o.lends;
        self.steal_ops += o.steal_ops;
        self.stolen_tasks += o.stolen_tasks;
        self.sleeps += o.sleeps;
        self.busy_time += o.busy_time;
        self.kernel_blocks += o.kernel_blocks;
        self.kernel_blocked_time += o.kernel_blocked_time;
        self.compensations += o.compensations;
    }
}

/// A snapshot of the runtime's counters, from [`Runtime::metrics`](crate::Runtime::metrics).
///
/// Counters are relaxed and updated by each worker right after the event:
/// a `join` can return a hair before the finished task shows up in
/// `completed` and leaves `live_tasks`. Poll (with a bound) if you need them
/// to settle.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Metrics {
    /// One entry per worker, by worker index.
    pub workers: Vec<WorkerMetrics>,
    /// One entry per compensation slot used so far (at most
    /// `Builder::max_compensation`; slots are taken lowest first, and trace
    /// lanes follow the workers' in the same order): what the compensating
    /// threads that used it did.
    pub compensating: Vec<WorkerMetrics>,
    /// Compensating threads alive right now (0 once every blocked worker is
    /// back and they retired).
    pub compensating_threads: usize,
    /// Tasks spawned from outside any worker (`Runtime::spawn` on a plain thread).
    pub spawned_external: u64,
    /// Tasks alive right now (spawned, not yet finished).
    pub live_tasks: u64,
    /// Stacks currently mapped (in use by tasks or pooled for reuse).
    pub stacks_mapped: u64,
}

impl Metrics {
    /// The sum over all workers, compensating threads included.
    pub fn total(&self) -> WorkerMetrics {
        let mut t = WorkerMetrics::default();
        for w in self.workers.iter().chain(&self.compensating) {
            t.add(w);
        }
        t.spawned += self.spawned_external;
        t
    }
}
