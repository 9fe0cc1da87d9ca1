//! Why a join produced no value: the task panicked, or it was cancelled.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use super::TaskId;

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
///
/// One pointer wide: every task's result slot holds a `Result<T, JoinError>`,
/// and errors are rare, so the details live behind a box (56 bytes less per
/// task in the heap a burst of spawns allocates and frees).
pub struct JoinError {
    inner: Box<Inner>,
}

struct Inner {
    failure: Failure,
    id: TaskId,
    name: Option<Arc<str>>,
}

impl JoinError {
    pub(crate) fn new(failure: Failure, id: TaskId, name: Option<Arc<str>>) -> Self {
        JoinError {
            inner: Box::new(Inner { failure, id, name }),
        }
    }

    /// The task panicked; [`JoinError::into_panic`] gives the payload.
    pub fn is_panic(&self) -> bool {
        matches!(self.inner.failure, Failure::Panic(_))
    }

    /// The task was cancelled before it finished, by
    /// [`JoinHandle::abort`](crate::JoinHandle::abort) or by runtime
    /// shutdown: it was dropped (never started) or unwound from a switch
    /// point, its destructors run.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.inner.failure, Failure::Cancelled | Failure::Aborted)
    }

    /// The task was cancelled by [`JoinHandle::abort`](crate::JoinHandle::abort)
    /// or an [`AbortHandle`](crate::task::AbortHandle) (a subset of
    /// [`is_cancelled`](Self::is_cancelled)).
    pub fn is_aborted(&self) -> bool {
        matches!(self.inner.failure, Failure::Aborted)
    }

    /// The runtime shut down while the task was suspended by preemption. Its
    /// stack was leaked rather than unwound through a signal frame.
    pub fn is_leaked(&self) -> bool {
        matches!(self.inner.failure, Failure::Leaked)
    }

    /// The task ran past the end of its stack and hit the guard page.
    pub fn is_stack_overflow(&self) -> bool {
        matches!(self.inner.failure, Failure::StackOverflow { .. })
    }

    /// The id of the task that failed.
    pub fn task_id(&self) -> TaskId {
        self.inner.id
    }

    /// The name of the task that failed, if it had one.
    pub fn task_name(&self) -> Option<&str> {
        self.inner.name.as_deref()
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
        match self.inner.failure {
            Failure::Panic(p) => Ok(p.into_inner()),
            failure => {
                let Inner { id, name, .. } = *self.inner;
                Err(JoinError::new(failure, id, name))
            }
        }
    }

    fn panic_message(&self) -> Option<&str> {
        match &self.inner.failure {
            Failure::Panic(p) => p.message.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {}", self.inner.id)?;
        if let Some(name) = &self.inner.name {
            write!(f, " '{name}'")?;
        }
        match &self.inner.failure {
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
            Failure::NoStack(e) => write!(f, " could not get a stack: {e}"),
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinError({self})")
    }
}

impl std::error::Error for JoinError {}
