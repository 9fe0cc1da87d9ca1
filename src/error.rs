//! Typed errors. Every misuse of the builder or the API ends here (or in a panic
//! with a clear message for calls that only make sense inside a task), never in
//! a hang or a silently wrong answer.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::task::TaskId;

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
            Error::Shutdown => write!(f, "the kvant runtime is shut down and accepts no new tasks"),
            Error::NoRuntime => write!(f, "this call must be made from inside a kvant runtime"),
            Error::Io(e) => write!(f, "kvant: OS resource unavailable: {e}"),
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

/// Why a task produced no value.
pub(crate) enum Failure {
    Panic(Payload),
    /// Cancelled by runtime shutdown.
    Cancelled,
    /// Cancelled by `JoinHandle::abort` / `AbortHandle::abort`.
    Aborted,
    Leaked,
    StackOverflow {
        stack_size: usize,
    },
    NoStack(std::io::Error),
}

/// A panic payload kept so that `JoinError` is `Sync` (for `anyhow` and
/// `Box<dyn Error + Send + Sync>`): `dyn Any + Send` is not `Sync`, a
/// `Mutex` of it is, and the message is read once, when the task fails.
pub(crate) struct Payload {
    any: std::sync::Mutex<Box<dyn Any + Send + 'static>>,
    message: Option<String>,
}

impl Payload {
    pub(crate) fn new(any: Box<dyn Any + Send + 'static>) -> Self {
        let message = any
            .downcast_ref::<&'static str>()
            .map(|s| (*s).to_owned())
            .or_else(|| any.downcast_ref::<String>().cloned());
        Payload {
            any: std::sync::Mutex::new(any),
            message,
        }
    }

    fn into_inner(self) -> Box<dyn Any + Send + 'static> {
        self.any.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

/// A task ended without a value: it panicked, overflowed its stack, or the
/// runtime shut down before it finished.
pub struct JoinError {
    pub(crate) failure: Failure,
    pub(crate) id: TaskId,
    pub(crate) name: Option<Arc<str>>,
}

impl JoinError {
    pub(crate) fn new(failure: Failure, id: TaskId, name: Option<Arc<str>>) -> Self {
        JoinError { failure, id, name }
    }

    /// The task panicked; [`JoinError::into_panic`] gives the payload.
    pub fn is_panic(&self) -> bool {
        matches!(self.failure, Failure::Panic(_))
    }

    /// The task was cancelled before it finished, by
    /// [`JoinHandle::abort`](crate::JoinHandle::abort) or by runtime
    /// shutdown: it was dropped (never started) or unwound from a switch
    /// point, its destructors run.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.failure, Failure::Cancelled | Failure::Aborted)
    }

    /// The task was cancelled by [`JoinHandle::abort`](crate::JoinHandle::abort)
    /// or an [`AbortHandle`](crate::task::AbortHandle) (a subset of
    /// [`is_cancelled`](Self::is_cancelled)).
    pub fn is_aborted(&self) -> bool {
        matches!(self.failure, Failure::Aborted)
    }

    /// The runtime shut down while the task was suspended by preemption. Its
    /// stack was leaked rather than unwound through a signal frame.
    pub fn is_leaked(&self) -> bool {
        matches!(self.failure, Failure::Leaked)
    }

    /// The task ran past the end of its stack and hit the guard page.
    pub fn is_stack_overflow(&self) -> bool {
        matches!(self.failure, Failure::StackOverflow { .. })
    }

    /// The id of the task that failed.
    pub fn task_id(&self) -> TaskId {
        self.id
    }

    /// The name of the task that failed, if it had one.
    pub fn task_name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The panic payload, to re-raise with [`std::panic::resume_unwind`].
    ///
    /// # Panics
    /// If the task did not panic.
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        self.try_into_panic()
            .unwrap_or_else(|e| panic!("JoinError::into_panic on a task that did not panic: {e}"))
    }

    /// The panic payload, or the error itself if the task did not panic.
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send + 'static>, JoinError> {
        match self.failure {
            Failure::Panic(p) => Ok(p.into_inner()),
            failure => Err(JoinError { failure, ..self }),
        }
    }

    fn panic_message(&self) -> Option<&str> {
        match &self.failure {
            Failure::Panic(p) => p.message.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {}", self.id)?;
        if let Some(name) = &self.name {
            write!(f, " '{name}'")?;
        }
        match &self.failure {
            Failure::Panic(_) => match self.panic_message() {
                Some(msg) => write!(f, " panicked: {msg}"),
                None => write!(f, " panicked"),
            },
            Failure::Cancelled => write!(f, " was cancelled by runtime shutdown"),
            Failure::Aborted => write!(f, " was aborted"),
            Failure::Leaked => write!(
                f,
                " was suspended by preemption at shutdown; its stack was leaked, not unwound"
            ),
            Failure::StackOverflow { stack_size } => {
                write!(f, " overflowed its stack of {stack_size} bytes")
            }
            Failure::NoStack(e) => write!(
                f,
                " could not get a stack: {e} (each task stack is one mmap plus a guard page, \
                 2 of the vm.max_map_count mappings a process may have)"
            ),
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinError({self})")
    }
}

impl std::error::Error for JoinError {}
