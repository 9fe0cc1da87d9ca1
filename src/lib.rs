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
//! [corosensei]: https://docs.rs/corosensei

#![warn(missing_docs)]

pub mod channel;
mod clock;
mod error;
pub mod metrics;
pub mod preempt;
mod runtime;
#[doc = include_str!("../docs/safety.md")]
pub mod safety {}
pub mod sync;
pub mod task;
pub mod time;
pub mod trace;

pub use error::{Error, JoinError};
pub use metrics::{Metrics, WorkerMetrics};
pub use runtime::{
    Builder, DEFAULT_QUANTUM, DEFAULT_STACK_SIZE, Handle, MAX_QUANTUM, MAX_STACK_SIZE, MAX_WORKERS,
    MIN_QUANTUM, MIN_STACK_SIZE, Runtime, ShutdownReport, spawn, spawn_blocking,
};
pub use task::{
    JoinHandle, TaskId, TaskStats, WaitFor, WaitResult, current, join, scope, try_current, wait,
    yield_now,
};
pub use time::{sleep, sleep_until};
pub use trace::Trace;
