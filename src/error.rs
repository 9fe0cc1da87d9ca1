//! Typed errors. Every misuse of the builder or the API ends here (or in a panic
//! with a clear message for calls that only make sense inside a task), never in
//! a hang or a silently wrong answer.

use std::fmt;
use std::time::Duration;

/// Errors from building a runtime or spawning onto it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// `workers(0)` or `KVANT_WORKERS=0`: a pool needs at least one thread.
    ZeroWorkers,
    /// `blocking_threads(0)`: `spawn_blocking` needs at least one thread.
    ZeroBlockingThreads,
    /// More workers than the scheduler supports.
    TooManyWorkers {
        /// What was asked for.
        requested: usize,
        /// The maximum.
        max: usize,
    },
    /// A stack size below the minimum a task can safely run on.
    StackTooSmall {
        /// What was asked for.
        requested: usize,
        /// The minimum accepted.
        min: usize,
    },
    /// A stack size so large it cannot be a real request (over 1 GiB).
    StackTooLarge {
        /// What was asked for.
        requested: usize,
        /// The maximum accepted.
        max: usize,
    },
    /// The quantum is outside the accepted range.
    QuantumOutOfRange {
        /// What was asked for.
        requested: Duration,
        /// Smallest accepted quantum.
        min: Duration,
        /// Largest accepted quantum.
        max: Duration,
    },
    /// `Builder::blocking_threshold` is outside the accepted range.
    BlockingThresholdOutOfRange {
        /// What was asked for.
        requested: Duration,
        /// Smallest accepted threshold.
        min: Duration,
        /// Largest accepted threshold.
        max: Duration,
    },
    /// `Builder::min_slice` is outside the accepted range.
    MinSliceOutOfRange {
        /// What was asked for.
        requested: Duration,
        /// Smallest accepted minimum slice.
        min: Duration,
        /// Largest accepted minimum slice.
        max: Duration,
    },
    /// `Builder::max_compensation` above the most threads a runtime runs.
    TooManyCompensating {
        /// What was asked for.
        requested: usize,
        /// The maximum.
        max: usize,
    },
    /// Preemption was asked for on a target where kvant only runs cooperatively.
    PreemptionUnsupported,
    /// The preemption signal is not usable (out of range, or one the runtime
    /// cannot take over such as SIGKILL, SIGSEGV or a synchronous fault signal).
    InvalidSignal(i32),
    /// The preemption signal already has a handler installed by the program.
    SignalInUse(i32),
    /// An environment variable kvant reads had a value it cannot parse.
    InvalidEnv {
        /// The variable's name.
        var: &'static str,
        /// The value found.
        value: String,
    },
    /// `Builder::preempt_crate` named a crate whose code kvant will not
    /// preempt: one it never preempts, or one this executable has no code of.
    CrateNotPreemptible {
        /// The crate name given.
        name: String,
        /// Why.
        why: &'static str,
    },
    /// The runtime is shut down (or shutting down) and takes no new tasks.
    Shutdown,
    /// A call that needs a runtime was made outside of one.
    NoRuntime,
    /// An OS resource (thread, stack memory, signal) could not be had.
    Io(std::io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ZeroWorkers => {
                write!(f, "a kvant runtime needs at least 1 worker thread (got 0)")
            }
            Error::ZeroBlockingThreads => {
                write!(
                    f,
                    "spawn_blocking needs at least 1 OS thread (got blocking_threads(0))"
                )
            }
            Error::TooManyWorkers { requested, max } => {
                write!(
                    f,
                    "{requested} workers requested, kvant supports at most {max}"
                )
            }
            Error::StackTooSmall { requested, min } => write!(
                f,
                "task stack size {requested} bytes is below the minimum of {min} bytes"
            ),
            Error::StackTooLarge { requested, max } => write!(
                f,
                "task stack size {requested} bytes is above the maximum of {max} bytes"
            ),
            Error::QuantumOutOfRange {
                requested,
                min,
                max,
            } => write!(
                f,
                "quantum {requested:?} is outside the accepted range {min:?}..={max:?} \
                 (use quantum(None) for cooperative scheduling)"
            ),
            Error::BlockingThresholdOutOfRange {
                requested,
                min,
                max,
            } => write!(
                f,
                "blocking_threshold {requested:?} is outside the accepted range {min:?}..={max:?}"
            ),
            Error::MinSliceOutOfRange {
                requested,
                min,
                max,
            } => write!(
                f,
                "min_slice {requested:?} is outside the accepted range {min:?}..={max:?} \
                 (use min_slice(None) to turn wake-up preemption off)"
            ),
            Error::TooManyCompensating { requested, max } => write!(
                f,
                "max_compensation({requested}) requested, kvant supports at most {max} \
                 compensating threads"
            ),
            Error::PreemptionUnsupported => write!(
                f,
                "preemption needs Linux on x86_64; on this target kvant is cooperative only \
                 (use quantum(None))"
            ),
            Error::InvalidSignal(sig) => {
                let (name, why) = signal_refusal(*sig);
                write!(
                    f,
                    "signal {sig}{name} cannot be used as the preemption signal: {why}; \
                     the default is SIGURG (as in Go), or pick a real-time signal \
                     (SIGRTMIN+n)"
                )
            }
            Error::SignalInUse(sig) => write!(
                f,
                "signal {sig} already has a handler in this program; pick another with \
                 Builder::preempt_signal"
            ),
            Error::InvalidEnv { var, value } => {
                write!(f, "environment variable {var}={value:?} is not valid")
            }
            Error::CrateNotPreemptible { name, why } => {
                write!(f, "preempt_crate({name:?}): {why}")
            }
            Error::Shutdown => write!(f, "the kvant runtime is shut down and accepts no new tasks"),
            Error::NoRuntime => write!(f, "this call must be made from inside a kvant runtime"),
            // The cause is `source()`: printing it here too would show it
            // twice in any report that walks the chain (anyhow, eyre).
            Error::Io(_) => write!(
                f,
                "an OS resource kvant needs is unavailable (a thread, a stack mapping or a timer)"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

/// The name of a refused preemption signal and why it is refused.
fn signal_refusal(sig: i32) -> (String, &'static str) {
    let named = |n: &str| format!(" ({n})");
    match sig {
        libc::SIGSEGV => (
            named("SIGSEGV"),
            "it reports invalid memory accesses and stack overflows",
        ),
        libc::SIGBUS => (named("SIGBUS"), "it reports bus errors and overflows"),
        libc::SIGILL => (named("SIGILL"), "it reports illegal instructions"),
        libc::SIGFPE => (named("SIGFPE"), "it reports arithmetic faults"),
        libc::SIGTRAP => (named("SIGTRAP"), "debuggers use it"),
        libc::SIGABRT => (named("SIGABRT"), "abort() raises it"),
        libc::SIGCHLD => (named("SIGCHLD"), "it reports child processes"),
        libc::SIGINT => (named("SIGINT"), "it is Ctrl-C"),
        libc::SIGTERM => (named("SIGTERM"), "it asks the process to terminate"),
        libc::SIGPIPE => (named("SIGPIPE"), "it reports broken pipes"),
        libc::SIGKILL => (named("SIGKILL"), "it cannot be handled"),
        libc::SIGSTOP => (named("SIGSTOP"), "it cannot be handled"),
        s if s <= 0 => (String::new(), "signal numbers start at 1"),
        _ => (
            String::new(),
            "it is not a valid signal number on this system",
        ),
    }
}
