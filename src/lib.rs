//! # kvant — preemptive green threads with stack switching
//!
//! kvant runs stackful green threads (each task has its own stack, switched
//! by [corosensei]) M:N on a pool of worker OS threads that balance load by
//! work stealing. A **time quantum** enforced by a timer signal preempts a
//! task that holds its worker too long, exactly where it is, so CPU hogs share
//! a worker round-robin; tasks can also yield cooperatively. Set
//! `quantum(None)` to see the classic cooperative failure: one hog starves
//! everything queued behind it on its worker.
//!
//! ```
//! use std::time::Duration;
//!
//! let rt = kvant::Runtime::builder()
//!     .workers(2)
//!     .quantum(Some(Duration::from_millis(1)))
//!     .build()
//!     .unwrap();
//! let hogs: Vec<_> = (0..4)
//!     .map(|i| rt.spawn(move || (0..2_000_000u64).fold(i, |a, x| a ^ x.wrapping_mul(31))))
//!     .collect();
//! let quick = rt.spawn(|| "still responsive");
//! assert_eq!(quick.join().unwrap(), "still responsive");
//! for h in hogs {
//!     h.join().unwrap();
//! }
//! ```
//!
//! ## Map of the crate
//!
//! | you want to | look at |
//! |:--|:--|
//! | start a pool, spawn, block on a result, shut down | [`Runtime`], [`Builder`], [`spawn`], [`Handle`] |
//! | name a task, size its stack, make it non-preemptible | [`task::Builder`] |
//! | wait with a deadline, on one or many tasks | [`JoinHandle::join_timeout`], [`wait`] + [`WaitFor`], [`task::wait_owned`] |
//! | cancel a task, run a group, take results as they complete | [`JoinHandle::abort`], [`task::AbortHandle`], [`task::is_cancelled`], [`JoinSet`] |
//! | wait on several channels, or a channel and a timer | [`select!`], [`channel::Select`], [`channel::after`], [`channel::tick`] |
//! | fork-join and borrowing tasks | [`join`], [`scope`], [`Runtime::scope`] |
//! | block without blocking the worker | [`sleep`], [`sync`], [`channel`], [`spawn_blocking`] |
//! | live with code that blocks the thread anyway | [`Builder::blocking_threshold`], [`Builder::max_compensation`], [`Builder::panic_on_blocking`], [`safety`] |
//! | per-task state | [`task_local!`], [`task::LocalKey`] |
//! | control preemption | [`Builder::quantum`], [`preempt::disable`], [`Builder::migrate_preempted`] |
//! | see what the scheduler did | [`Runtime::metrics`], [`Builder::trace`], [`Trace`] |
//! | know what is safe inside a preemptible task | [`safety`] |
//!
//! Task control, in the names tokio and crossbeam use:
//!
//! ```
//! use std::time::Duration;
//! use kvant::channel::{after, unbounded};
//!
//! let rt = kvant::Runtime::builder().workers(2).build().unwrap();
//! let h = rt.spawn(|| kvant::sleep(Duration::from_secs(3600)));
//! h.abort(); // unwound at its sleep, destructors run
//! assert!(h.join().unwrap_err().is_cancelled());
//!
//! let mut set = kvant::JoinSet::new();
//! for i in 0..4 {
//!     set.spawn_on(&rt, move || i * i);
//! }
//! let mut sum = 0;
//! while let Some(r) = set.join_next() {
//!     sum += r.unwrap(); // in completion order
//! }
//! assert_eq!(sum, 14);
//!
//! let (tx, rx) = unbounded();
//! tx.send(1).unwrap();
//! let got = kvant::select! {
//!     recv(rx) -> v => v.unwrap(),
//!     recv(after(Duration::from_secs(1))) -> _ => 0,
//! };
//! assert_eq!(got, 1);
//! ```
//!
//! Everything that waits parks only the *green* thread when called from a
//! task (the worker runs other tasks meanwhile) and blocks the OS thread when
//! called from a plain thread, so the same types serve both.
//!
//! How the scheduler picks the next task, steals and sleeps (with the
//! fences of its idle protocol and what the loom models prove) is written
//! up in `src/runtime/README.md`. How preemption works (monitor thread,
//! signal handler switching the task out on its own stack, safe points found
//! with the executable's unwind tables, only in the program's own crates by
//! default) is in `src/preempt/README.md`; the monitor's policy (when to
//! preempt, when a worker counts as blocked, when to start a compensating
//! thread) lives in `src/runtime/sysmon/`, the mechanism in `src/preempt/`.
//! Release builds preempt with line tables (`debug = "line-tables-only"`,
//! see the README); no setup is needed for soundness.
//!
//! [corosensei]: https://docs.rs/corosensei

#![warn(missing_debug_implementations)]
#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod channel;
mod clock;
pub mod diagnostic;
pub mod dump;
mod error;
mod loom;
pub mod metrics;
pub mod preempt;
mod runtime;
/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[doc = include_str!("../docs/safety.md")]
pub mod safety {}
mod spawning;
pub mod sync;
pub mod task;
pub mod time;
pub mod trace;

pub use diagnostic::{Diagnostic, DiagnosticKind};
pub use error::Error;
pub use metrics::{Metrics, WorkerMetrics};
pub use preempt::PreemptionMode;
pub use runtime::{
    Builder, DEFAULT_BLOCKING_THRESHOLD, DEFAULT_MAX_COMPENSATION, DEFAULT_MIN_SLICE,
    DEFAULT_QUANTUM, DEFAULT_STACK_SIZE, EnterGuard, Handle, MAX_QUANTUM, MAX_STACK_SIZE,
    MAX_WORKERS, MIN_QUANTUM, MIN_STACK_SIZE, Runtime, ShutdownReport, spawn, spawn_blocking,
};
pub use task::{
    JoinError, JoinHandle, JoinSet, TaskId, TaskStats, WaitFor, WaitResult, block_on_future,
    current, join, scope, try_current, wait, yield_now,
};
pub use time::{sleep, sleep_until};
pub use trace::Trace;
