//! Runtime configuration. Validation happens in `build()` so that a bad value is
//! reported once, as a typed [`Error`], with the value that was wrong.

use std::time::Duration;

use crate::error::Error;
use crate::runtime::Runtime;

/// Smallest task stack accepted (16 KiB). Below this a signal frame (about
/// 3.5 KiB with AVX-512 state) plus the handler and a few ordinary frames no
/// longer fit.
pub const MIN_STACK_SIZE: usize = 4 * crate::preempt::SIGNAL_FRAME;
/// Largest task stack accepted (1 GiB): anything larger is a unit mistake.
pub const MAX_STACK_SIZE: usize = 1 << 30;
/// Default task stack: roomy enough for ordinary Rust code and formatting.
pub const DEFAULT_STACK_SIZE: usize = 256 * 1024;
/// Most worker threads one runtime runs (the idle protocol packs counts in 16 bits).
pub const MAX_WORKERS: usize = 4096;

/// [`Builder::max_compensation`]'s default (with fewer workers than this).
pub const DEFAULT_MAX_COMPENSATION: usize = 256;
/// Smallest quantum accepted.
pub const MIN_QUANTUM: Duration = Duration::from_micros(50);
/// Largest quantum accepted.
pub const MAX_QUANTUM: Duration = Duration::from_secs(1);
/// Default [`Builder::blocking_threshold`].
pub const DEFAULT_BLOCKING_THRESHOLD: Duration = Duration::from_millis(2);
/// Default [`Builder::min_slice`].
pub const DEFAULT_MIN_SLICE: Duration = Duration::from_micros(100);
/// Default quantum where preemption is supported: Go's choice of 10 ms.
pub const DEFAULT_QUANTUM: Duration = Duration::from_millis(10);

/// Validated runtime settings, shared by every part of the runtime.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub workers: usize,
    pub stack_size: usize,
    pub name: String,
    pub quantum: Option<Duration>,
    pub signal: i32,
    pub migrate_preempted: bool,
    pub trace: bool,
    pub task_timing: bool,
    pub blocking_threads: usize,
    pub blocking_threshold: Duration,
    pub max_compensation: usize,
    pub panic_on_blocking: bool,
    pub min_slice: Option<Duration>,
    pub cpu_clock_quantum: bool,
    pub on_worker_start: Option<WorkerHook>,
    pub on_worker_stop: Option<WorkerHook>,
    pub on_diagnostic: Option<crate::diagnostic::DiagnosticHook>,
    /// `dump_on_signal`'s signal.
    pub dump_signal: Option<i32>,
    /// CPUs to pin worker `i` to (`cpus[i % len]`); empty: no pinning.
    pub affinity: Vec<usize>,
}

impl Config {
    /// Say a diagnostic through this runtime's hook (or stderr / `log`).
    pub(crate) fn say(&self, kind: crate::DiagnosticKind, message: String) {
        crate::diagnostic::say(self.on_diagnostic.as_ref(), kind, message);
    }
}

/// A callback run on a worker thread with the worker's index.
#[derive(Clone)]
pub(crate) struct WorkerHook(pub std::sync::Arc<dyn Fn(usize) + Send + Sync>);

impl std::fmt::Debug for WorkerHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerHook")
    }
}

/// Builds a [`Runtime`]. Obtain one with [`Runtime::builder`].
///
/// ```
/// let rt = kvant::Runtime::builder().workers(2).quantum(None).build().unwrap();
/// assert_eq!(rt.block_on(|| 6 * 7), 42);
/// ```
#[derive(Clone, Debug)]
pub struct Builder {
    workers: Option<usize>,
    stack_size: usize,
    name: String,
    quantum: Option<Duration>,
    signal: i32,
    migrate_preempted: bool,
    trace: bool,
    task_timing: bool,
    blocking_threads: usize,
    blocking_threshold: Duration,
    max_compensation: Option<usize>,
    panic_on_blocking: bool,
    min_slice: Option<Duration>,
    cpu_clock_quantum: bool,
    on_worker_start: Option<WorkerHook>,
    on_worker_stop: Option<WorkerHook>,
    on_diagnostic: Option<crate::diagnostic::DiagnosticHook>,
    dump_signal: Option<i32>,
    worker_affinity: bool,
    preempt_crates: Vec<String>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            workers: None,
            stack_size: DEFAULT_STACK_SIZE,
            name: "kvant".into(),
            quantum: if crate::preempt::SUPPORTED {
                Some(DEFAULT_QUANTUM)
            } else {
                None
            },
            signal: crate::preempt::DEFAULT_SIGNAL,
            migrate_preempted: false,
            trace: false,
            task_timing: false,
            blocking_threads: 64,
            blocking_threshold: DEFAULT_BLOCKING_THRESHOLD,
            max_compensation: None,
            panic_on_blocking: false,
            min_slice: Some(DEFAULT_MIN_SLICE),
            cpu_clock_quantum: false,
            on_worker_start: None,
            on_worker_stop: None,
            on_diagnostic: None,
            dump_signal: None,
            worker_affinity: false,
            preempt_crates: Vec::new(),
        }
    }
}

impl Builder {
    /// A builder with the defaults: one worker per CPU (or `KVANT_WORKERS`),
    /// 256 KiB stacks, a 10 ms quantum where preemption is supported.
    pub fn new() -> Self {
        Self::default()
    }

    /// Run `f(index)` on each worker thread when it starts, before it runs
    /// any task (rayon's `start_handler`, tokio's `on_thread_start`): name
    /// it in a profiler, pin it to a CPU, set its priority. Index `0..workers`
    /// for workers; compensating threads (see [`max_compensation`](Self::max_compensation))
    /// get `workers..`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// let started = Arc::new(AtomicUsize::new(0));
    /// let s = started.clone();
    /// let rt = kvant::Runtime::builder()
    ///     .workers(2)
    ///     .on_worker_start(move |_i| {
    ///         s.fetch_add(1, Ordering::SeqCst);
    ///     })
    ///     .build()
    ///     .unwrap();
    /// rt.block_on(|| ());
    /// drop(rt);
    /// assert_eq!(started.load(Ordering::SeqCst), 2);
    /// ```
    #[must_use = "a builder does nothing until it is used"]
    pub fn on_worker_start(mut self, f: impl Fn(usize) + Send + Sync + 'static) -> Self {
        self.on_worker_start = Some(WorkerHook(std::sync::Arc::new(f)));
        self
    }

    /// Run `f(index)` on each worker thread as it exits (after its last task).
    #[must_use = "a builder does nothing until it is used"]
    pub fn on_worker_stop(mut self, f: impl Fn(usize) + Send + Sync + 'static) -> Self {
        self.on_worker_stop = Some(WorkerHook(std::sync::Arc::new(f)));
        self
    }

    /// Give every diagnostic this runtime has to say (a blocking call, a
    /// stall, an overrun, preemption off in this build: see
    /// [`DiagnosticKind`](crate::DiagnosticKind)) to `f` instead of stderr
    /// (or the `log` crate, with the `log` feature). `f` runs on kvant's
    /// diagnostics thread, one diagnostic at a time, in order; shutdown
    /// waits (briefly) for it. A panic in it is contained.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// let said = Arc::new(Mutex::new(Vec::new()));
    /// let keep = said.clone();
    /// let rt = kvant::Runtime::builder()
    ///     .on_diagnostic(move |d| keep.lock().unwrap().push((d.kind(), d.to_string())))
    ///     .build()
    ///     .unwrap();
    /// # drop(rt);
    /// ```
    #[must_use = "a builder does nothing until it is used"]
    pub fn on_diagnostic(mut self, f: impl Fn(&crate::Diagnostic) + Send + Sync + 'static) -> Self {
        self.on_diagnostic = Some(crate::diagnostic::DiagnosticHook(std::sync::Arc::new(f)));
        self
    }

    /// Pin worker `i` to the `i`-th CPU this process may run on (wrapping
    /// around), so a stress test occupies every core it was given and the
    /// kernel does not move workers around. Compensating threads are not
    /// pinned (they stand in for a worker blocked in the kernel). Linux
    /// only; elsewhere it is ignored. Default off.
    #[must_use = "a builder does nothing until it is used"]
    pub fn worker_affinity(mut self, yes: bool) -> Self {
        self.worker_affinity = yes;
        self
    }

    /// Number of worker OS threads. Default: `KVANT_WORKERS` if set, else
    /// [`std::thread::available_parallelism`]. An explicit value here wins over
    /// the environment.
    #[must_use = "a builder does nothing until it is used"]
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Default stack size of a task, in bytes (rounded up to whole pages, plus
    /// one guard page). Minimum [`MIN_STACK_SIZE`].
    #[must_use = "a builder does nothing until it is used"]
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = bytes;
        self
    }

    /// Prefix of the worker threads' names (`{prefix}-worker-{i}`).
    #[must_use = "a builder does nothing until it is used"]
    pub fn name(mut self, prefix: impl Into<String>) -> Self {
        self.name = prefix.into();
        self
    }

    /// The time quantum: a task holding a worker longer than this is preempted.
    /// `None` makes the runtime purely cooperative. Accepted range: 50 µs to 1 s.
    #[must_use = "a builder does nothing until it is used"]
    pub fn quantum(mut self, quantum: Option<Duration>) -> Self {
        self.quantum = quantum;
        self
    }

    /// Signal used to preempt workers (default `SIGURG`, as Go does: it is
    /// ignored by default and rarely used by programs).
    #[must_use = "a builder does nothing until it is used"]
    pub fn preempt_signal(mut self, signal: i32) -> Self {
        self.signal = signal;
        self
    }

    /// Print a task dump ([`Runtime::dump`](crate::Runtime::dump)) each
    /// time `signal` arrives (`kill -USR1 <pid>`), as Go does on `SIGQUIT`,
    /// without stopping the program: the handler only notes the signal, and
    /// a `kvant-dump` thread takes the dump and hands it to the diagnostic
    /// sink ([`DiagnosticKind::TaskDump`](crate::DiagnosticKind::TaskDump):
    /// stderr by default, or the [`on_diagnostic`](Self::on_diagnostic)
    /// hook). Several runtimes may share a signal; each prints its own
    /// dump. `build` fails with [`Error::InvalidSignal`](crate::Error::InvalidSignal)
    /// for signals kvant or the program's own fault handling needs (and
    /// for the preemption signal).
    ///
    /// ```
    /// let rt = kvant::Runtime::builder()
    ///     .dump_on_signal(libc::SIGUSR1)
    ///     .build()
    ///     .unwrap();
    /// # drop(rt);
    /// ```
    #[must_use = "a builder does nothing until it is used"]
    pub fn dump_on_signal(mut self, signal: i32) -> Self {
        self.dump_signal = Some(signal);
        self
    }

    /// Whether a task suspended by preemption may be stolen by another worker.
    ///
    /// Default `false`: code interrupted at an arbitrary instruction may hold a
    /// thread-local address the compiler computed before the interruption; if
    /// the task resumed on another thread it would use the old thread's data.
    /// A preempted task therefore resumes on the worker that preempted it, and
    /// becomes stealable again at its next cooperative switch (yield, block).
    /// Set `true` only if preemptible tasks do not touch `thread_local!` data.
    #[must_use = "a builder does nothing until it is used"]
    pub fn migrate_preempted(mut self, yes: bool) -> Self {
        self.migrate_preempted = yes;
        self
    }

    /// Record every slice each worker runs (see [`Runtime::trace`]).
    #[must_use = "a builder does nothing until it is used"]
    pub fn trace(mut self, yes: bool) -> Self {
        self.trace = yes;
        self
    }

    /// Time every slice, so tasks' `stats().run_time` is measured (it stays
    /// zero otherwise). Always on with `trace(true)`, which needs the clock
    /// anyway; off by default, preemptive or not, because the clock read
    /// would be the largest cost of a task switch (the quantum does not need
    /// it: the monitor times slices by their number).
    #[must_use = "a builder does nothing until it is used"]
    pub fn task_timing(mut self, yes: bool) -> Self {
        self.task_timing = yes;
        self
    }

    /// How long a task may sit blocked in the kernel (its worker thread
    /// asleep there, its CPU clock standing still) before the monitor acts:
    /// a task blocked in a contended std::sync wait is switched out so the
    /// worker can run the others; for any other blocking call (`mpsc`,
    /// `thread::sleep`, a blocking `read`, parking_lot, C code) the worker's
    /// movable tasks are handed to other workers or to a compensating thread
    /// (see [`Builder::max_compensation`]), and a warning names the task.
    /// The monitor notices between one and two thresholds after the call
    /// started. Default 2 ms (measured: BENCHMARKS.md, "Measured
    /// decisions"); accepted range: 50 µs to 1 s.
    #[must_use = "a builder does nothing until it is used"]
    pub fn blocking_threshold(mut self, threshold: Duration) -> Self {
        self.blocking_threshold = threshold;
        self
    }

    /// Most *compensating* worker threads alive at once (default:
    /// [`DEFAULT_MAX_COMPENSATION`], or the number of workers if that is
    /// more; 0 turns compensation off). While a worker's thread is blocked
    /// in the kernel and no other worker is free, the monitor starts one to
    /// run the tasks queued behind it (Loom's ForkJoinPool does the same,
    /// up to 256; Go starts a thread for every blocked one). It retires
    /// once the blocked worker is back and the tasks preempted on it have
    /// reached a switch point or finished (a preempted task never changes
    /// threads). Each blocked task holds one, so the limit is how many
    /// tasks may sit in another crate's blocking wait at once (a bounded
    /// crossbeam-channel or std `sync_channel` send, a `thread::park`)
    /// before the rest wait for a thread; a slot never used costs a few
    /// hundred bytes and no scanning.
    #[must_use = "a builder does nothing until it is used"]
    pub fn max_compensation(mut self, n: usize) -> Self {
        self.max_compensation = Some(n);
        self
    }

    /// Wake-up preemption: when a task is woken from outside the workers (a
    /// timer, an OS thread, `spawn_blocking` work) while every worker is
    /// busy, a running task that has had at least `min_slice` of its
    /// quantum is preempted at once and the woken task runs next, instead
    /// of waiting for the quantum to end (Linux does the same for the tasks
    /// it favours). `None` turns it off. Default 100 µs; accepted range
    /// 50 µs to 1 s. No effect without a quantum. A task that keeps waking
    /// cannot starve the others: each running task keeps at least
    /// `min_slice` before a wake-up takes its worker.
    #[must_use = "a builder does nothing until it is used"]
    pub fn min_slice(mut self, min: Option<Duration>) -> Self {
        self.min_slice = min;
        self
    }

    /// Time the quantum on each worker thread's own CPU clock instead of
    /// with the monitor: a per-worker POSIX timer on
    /// `CLOCK_THREAD_CPUTIME_ID` signals the worker itself every half
    /// quantum of its CPU time, and the handler preempts a slice that is
    /// still running at the second such tick. The monitor then neither wakes
    /// up for the quantum nor signals for it while tasks compute (it still
    /// does wake-up preemption, watches for blocked workers, and switches
    /// out a task blocked in a std::sync wait, where the CPU clock stands
    /// still), and an idle worker is never signalled. The kernel checks
    /// these timers on its scheduler tick (4 ms at HZ=250): a slice runs
    /// from half a quantum to about a quantum plus a tick while half a
    /// quantum is at least a tick, and one to two ticks (4 to 8 ms) for any
    /// shorter quantum. At the default quantum both cost about the same; at
    /// a quantum of a tick or so the CPU clock saves a little CPU but runs
    /// slices longer than asked (measured: BENCHMARKS.md, "Measured
    /// decisions"). Default off: the monitor keeps any quantum down to
    /// 50 µs. No effect without a quantum.
    #[must_use = "a builder does nothing until it is used"]
    pub fn cpu_clock_quantum(mut self, yes: bool) -> Self {
        self.cpu_clock_quantum = yes;
        self
    }

    /// Turn the monitor's blocking reports into panics, for tests: a task
    /// found blocking its worker in the kernel panics at its next switch
    /// point (or when it returns, if it reaches none), and a stall that
    /// hand-off cannot resolve makes `join`/`block_on` on an OS thread panic
    /// with the report. Default off (reports go to stderr).
    #[must_use = "a builder does nothing until it is used"]
    pub fn panic_on_blocking(mut self, yes: bool) -> Self {
        self.panic_on_blocking = yes;
        self
    }

    /// Most OS threads `spawn_blocking` runs at once (default 64).
    #[must_use = "a builder does nothing until it is used"]
    pub fn blocking_threads(mut self, n: usize) -> Self {
        self.blocking_threads = n;
        self
    }

    pub(crate) fn config(&self) -> Result<Config, Error> {
        let workers = match self.workers {
            Some(n) => n,
            None => workers_from_env()?,
        };
        if workers == 0 {
            return Err(Error::ZeroWorkers);
        }
        if workers > MAX_WORKERS {
            return Err(Error::TooManyWorkers {
                requested: workers,
                max: MAX_WORKERS,
            });
        }
        check_stack_size(self.stack_size)?;
        if let Some(q) = self.quantum {
            if !crate::preempt::SUPPORTED {
                return Err(Error::PreemptionUnsupported);
            }
            if !(MIN_QUANTUM..=MAX_QUANTUM).contains(&q) {
                return Err(Error::QuantumOutOfRange {
                    requested: q,
                    min: MIN_QUANTUM,
                    max: MAX_QUANTUM,
                });
            }
        }
        if crate::preempt::SUPPORTED {
            // Used in every mode: sync-wait switches need it too.
            crate::preempt::validate_signal(self.signal)?;
        }
        if !(MIN_QUANTUM..=MAX_QUANTUM).contains(&self.blocking_threshold) {
            return Err(Error::BlockingThresholdOutOfRange {
                requested: self.blocking_threshold,
                min: MIN_QUANTUM,
                max: MAX_QUANTUM,
            });
        }
        if self.blocking_threads == 0 {
            return Err(Error::ZeroBlockingThreads);
        }
        if let Some(m) = self.min_slice
            && !(MIN_QUANTUM..=MAX_QUANTUM).contains(&m)
        {
            return Err(Error::MinSliceOutOfRange {
                requested: m,
                min: MIN_QUANTUM,
                max: MAX_QUANTUM,
            });
        }
        if let Some(sig) = self.dump_signal {
            crate::preempt::validate_signal(sig)?;
            if sig == self.signal {
                return Err(Error::InvalidSignal(sig));
            }
        }
        let max_compensation = self
            .max_compensation
            .unwrap_or(DEFAULT_MAX_COMPENSATION.max(workers));
        if max_compensation > MAX_WORKERS {
            return Err(Error::TooManyCompensating {
                requested: max_compensation,
                max: MAX_WORKERS,
            });
        }
        Ok(Config {
            workers,
            // Rounded once here, so a spawn with the default size need not.
            stack_size: crate::task::stack::round_to_pages(self.stack_size),
            name: self.name.clone(),
            quantum: self.quantum,
            signal: self.signal,
            migrate_preempted: self.migrate_preempted,
            trace: self.trace,
            task_timing: self.task_timing,
            blocking_threads: self.blocking_threads,
            blocking_threshold: self.blocking_threshold,
            max_compensation,
            panic_on_blocking: self.panic_on_blocking,
            min_slice: self.min_slice,
            cpu_clock_quantum: self.cpu_clock_quantum,
            on_worker_start: self.on_worker_start.clone(),
            on_worker_stop: self.on_worker_stop.clone(),
            on_diagnostic: self.on_diagnostic.clone(),
            dump_signal: self.dump_signal,
            affinity: if self.worker_affinity {
                crate::preempt::allowed_cpus()
            } else {
                Vec::new()
            },
        })
    }

    /// Let the quantum preempt the code of crate `name` too (as paths spell
    /// it: `my_lib`, not `my-lib`).
    ///
    /// By default a task is preempted only in the program's own code: the
    /// crates its spawned closures were written in (`type_name` of the
    /// closure names it), and std's pure code (iterators, collections,
    /// arithmetic) outside what touches per-thread state. Another crate may
    /// keep per-thread state that kvant cannot see (a subscriber's span
    /// stack, a thread's RNG, a pool's latch), so its code is preempted only
    /// once you vouch for it here: it must keep no state per OS thread that
    /// another task on the same thread could find half-updated. A hog that
    /// runs in code that is not allowed runs on past its quantum, and kvant
    /// says so once, naming the crate and this call.
    ///
    /// `build` fails with [`Error::CrateNotPreemptible`] for a crate this
    /// executable has no code of (a crate whose code is all inlined into
    /// others', or one that only re-exports another: name the one the
    /// overrun line names), and for kvant itself and the crates it is
    /// built on (parking_lot, lock_api, crossbeam, corosensei). The
    /// permission is the process's, like the code it is about: it holds for
    /// every runtime from then on.
    ///
    /// ```
    /// let rt = kvant::Runtime::builder()
    ///     .quantum(Some(std::time::Duration::from_millis(1)))
    ///     .preempt_crate("gimli")      // kvant's own dependency, pure parsing
    ///     .build();
    /// assert!(rt.is_ok());
    /// ```
    #[must_use = "a builder does nothing until it is used"]
    pub fn preempt_crate(mut self, name: &str) -> Self {
        self.preempt_crates.push(name.to_owned());
        self
    }

    /// Validate the settings, start the worker threads and return the runtime.
    pub fn build(&self) -> Result<Runtime, Error> {
        let config = self.config()?;
        for name in &self.preempt_crates {
            crate::preempt::allow_crate(name)?;
        }
        crate::task::current::install_panic_note();
        Runtime::start(config)
    }
}

fn workers_from_env() -> Result<usize, Error> {
    match std::env::var("KVANT_WORKERS") {
        Ok(v) => v.trim().parse::<usize>().map_err(|_| Error::InvalidEnv {
            var: "KVANT_WORKERS",
            value: v,
        }),
        Err(std::env::VarError::NotPresent) => {
            Ok(std::thread::available_parallelism().map_or(1, |n| n.get()))
        }
        Err(std::env::VarError::NotUnicode(v)) => Err(Error::InvalidEnv {
            var: "KVANT_WORKERS",
            value: v.to_string_lossy().into_owned(),
        }),
    }
}

/// A stack size, the runtime's or one task's, within the limits.
pub(crate) fn check_stack_size(requested: usize) -> Result<usize, Error> {
    if requested < MIN_STACK_SIZE {
        return Err(Error::StackTooSmall {
            requested,
            min: MIN_STACK_SIZE,
        });
    }
    if requested > MAX_STACK_SIZE {
        return Err(Error::StackTooLarge {
            requested,
            max: MAX_STACK_SIZE,
        });
    }
    Ok(requested)
}
