//! Green-aware synchronization primitives (work in progress).

mod mutex;
pub(crate) mod waiters;

pub use mutex::{FAIR_AFTER, MappedMutexGuard, Mutex, MutexGuard, RawMutex};
