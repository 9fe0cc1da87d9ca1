//! Waiting on several tasks with a deadline (Python's `asyncio.wait`).
//!
//! A program stays responsive by never waiting unboundedly on work it does not
//! control: wait for the first result, or for all of them, or for the first
//! failure, but give up at a deadline and decide what to do with the tasks
//! still pending (they keep running; their handles stay valid).

use std::time::{Duration, Instant};

use super::JoinError;
use super::join::Completion;
use super::park::{self, Unparker};
use super::{JoinHandle, WaitingOn};

/// When [`wait`] returns (besides the timeout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitFor {
    /// As soon as any task finished (with a value or an error).
    FirstCompleted,
    /// When every task finished.
    AllCompleted,
    /// As soon as any task panicked, or when every task finished.
    FirstPanic,
}

/// Which handles finished and which are still running, by index into the
/// slice passed to [`wait`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WaitResult {
    /// Indices of finished tasks, ascending.
    pub done: Vec<usize>,
    /// Indices of tasks still running, ascending.
    pub pending: Vec<usize>,
}

impl WaitResult {
    /// True if nothing is pending.
    pub fn all_done(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Wait until the `how` condition holds for `handles` or `timeout` passes
/// (`None`: no timeout). Pending tasks keep running. Inside a task only the
/// green thread parks; outside, the OS thread blocks.
///
/// ```
/// use std::time::Duration;
/// use kvant::task::{WaitFor, wait};
///
/// let rt = kvant::Runtime::builder().workers(2).build().unwrap();
/// let fast = rt.spawn(|| 1);
/// let slow = rt.spawn(|| {
///     kvant::sleep(Duration::from_secs(5));
///     2
/// });
/// let handles = [fast, slow];
/// let r = wait(&handles, Some(Duration::from_millis(500)), WaitFor::AllCompleted);
/// assert_eq!(r.done, vec![0]);
/// assert_eq!(r.pending, vec![1]);
/// ```
pub fn wait<T: Send + 'static>(
    handles: &[JoinHandle<T>],
    timeout: Option<Duration>,
    how: WaitFor,
) -> WaitResult {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let parts: Vec<&dyn Completion> = handles.iter().map(|h| h.completion()).collect();
    wait_on(&parts, deadline, how)
}

/// What [`wait_owned`] returns: the finished tasks' results and the
/// handles of those still running, each with its index in the input.
#[derive(Debug)]
pub struct Waited<T> {
    /// Results of the tasks that finished, by ascending index.
    pub done: Vec<(usize, Result<T, JoinError>)>,
    /// Handles of the tasks still running, by ascending index (wait on them
    /// again, abort them, or drop them to detach).
    pub pending: Vec<(usize, JoinHandle<T>)>,
}

/// [`wait`] that takes the handles and hands back results and pending
/// handles instead of indices.
///
/// ```
/// use std::time::Duration;
/// use kvant::task::{WaitFor, wait_owned};
///
/// let rt = kvant::Runtime::builder().workers(2).build().unwrap();
/// let fast = rt.spawn(|| "fast");
/// let slow = rt.spawn(|| {
///     kvant::sleep(Duration::from_secs(3600));
///     "slow"
/// });
/// let w = wait_owned(vec![slow, fast], Some(Duration::from_secs(5)), WaitFor::FirstCompleted);
/// assert_eq!(w.done.len(), 1);
/// assert_eq!(*w.done[0].1.as_ref().unwrap(), "fast");
/// for (_, h) in w.pending {
///     h.abort(); // the late one is cancelled
/// }
/// ```
pub fn wait_owned<T: Send + 'static>(
    handles: impl IntoIterator<Item = JoinHandle<T>>,
    timeout: Option<Duration>,
    how: WaitFor,
) -> Waited<T> {
    let handles: Vec<JoinHandle<T>> = handles.into_iter().collect();
    let r = wait(&handles, timeout, how);
    let mut out = Waited {
        done: Vec::with_capacity(r.done.len()),
        pending: Vec::with_capacity(r.pending.len()),
    };
    for (i, h) in handles.into_iter().enumerate() {
        // A task may have finished after `wait` returned: count it done.
        if h.is_finished() {
            out.done.push((i, h.join()));
        } else {
            out.pending.push((i, h));
        }
    }
    out
}

fn satisfied(parts: &[&dyn Completion], how: WaitFor) -> bool {
    match how {
        WaitFor::FirstCompleted => parts.is_empty() || parts.iter().any(|c| c.is_complete()),
        WaitFor::AllCompleted => parts.iter().all(|c| c.is_complete()),
        WaitFor::FirstPanic => {
            parts.iter().all(|c| c.is_complete()) || parts.iter().any(|c| c.is_panic())
        }
    }
}

fn wait_on(parts: &[&dyn Completion], deadline: Option<Instant>, how: WaitFor) -> WaitResult {
    if !satisfied(parts, how) {
        let me: Unparker = park::current_unparker();
        let registered: Vec<&dyn Completion> = parts
            .iter()
            .copied()
            .filter(|c| c.add_waiter(me.clone()))
            .collect();
        // Withdrawn on every exit, an abort's unwind included.
        let _withdraw = super::park::OnUnwind::new(|| {
            for c in &registered {
                c.remove_waiter(&me);
            }
        });
        while !satisfied(parts, how) {
            if !park::park_deadline(deadline, WaitingOn::Tasks) {
                break;
            }
        }
    }
    let (done, pending): (Vec<usize>, Vec<usize>) =
        (0..parts.len()).partition(|&i| parts[i].is_complete());
    WaitResult { done, pending }
}
