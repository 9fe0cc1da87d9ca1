//! What the task core needs from the scheduler that runs it.
//!
//! The task core (`task/`) knows no scheduler: a task's header holds an
//! `Arc<dyn Schedule>`, which `runtime/` implements, as tokio's tasks hold
//! their `Schedule` and rayon's jobs know no registry. Everything a task
//! asks of its runtime while it runs, parks or is woken goes through these
//! methods, so the core can be read, tested and model-checked alone.

use std::sync::Arc;
use std::time::Instant;

use super::park::Unparker;
use super::{Task, TaskId};

/// Identifies one deadline registered with [`Schedule::arm_timer`], to
/// cancel it: the deadline and a sequence number that makes it unique.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TimerKey(pub(crate) Instant, pub(crate) u64);

/// A task's scheduler, implemented by the runtime.
pub(crate) trait Schedule: Send + Sync + 'static {
    /// A wake-up moved `task` from parked to queued (`TaskState::notify`
    /// returned true): put it in a run queue. Called exactly once per such
    /// transition, by whoever made it.
    fn wake(&self, task: Arc<Task>);

    /// Wake `who` at `deadline`, unless cancelled first.
    fn arm_timer(&self, deadline: Instant, who: Unparker) -> TimerKey;

    /// Forget a deadline (a no-op if it already fired).
    fn cancel_timer(&self, key: TimerKey);

    /// Whether the runtime is shutting down (so a cancelled task was
    /// cancelled by shutdown, not aborted).
    fn shutting_down(&self) -> bool;

    /// `Builder::panic_on_blocking` is set.
    fn panic_on_blocking(&self) -> bool;

    /// The monitor's report on task `id` blocking its worker, if it filed
    /// one (taken once).
    fn take_blocking_report(&self, id: TaskId) -> Option<String>;

    /// The report of a stall no hand-off can resolve, if the monitor found
    /// one (`panic_on_blocking` on an OS thread waiting for a task).
    fn stall_report(&self) -> Option<String>;
}
