//! Green-aware time: sleeping parks the task, never the worker.

pub(crate) mod driver;

use std::time::{Duration, Instant};

use crate::task::WaitingOn;
use crate::task::park;

/// Sleep for `d`. Inside a task, the worker runs other tasks meanwhile;
/// outside one, the OS thread sleeps.
pub fn sleep(d: Duration) {
    match Instant::now().checked_add(d) {
        Some(t) => sleep_until(t),
        None => loop {
            park::park(WaitingOn::Sleep); // "forever": wake-ups are spurious, keep sleeping
        },
    }
}

/// Sleep until `deadline` (returns at once if it has passed).
pub fn sleep_until(deadline: Instant) {
    while Instant::now() < deadline {
        park::park_until(deadline, WaitingOn::Sleep);
    }
}
