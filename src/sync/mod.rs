//! Green-aware synchronization primitives.
//!
//! Everything here that waits parks only the calling **green thread**: the
//! worker OS thread goes on running other tasks. Called from a plain OS
//! thread, the same types block that thread. Tasks and OS threads can share
//! them freely (a task can wait for a lock held by an OS thread and vice
//! versa).
//!
//! | type | waits for | fairness |
//! |---|---|---|
//! | [`Mutex`] | exclusive access | barging, bounded by a direct hand-off after [`FAIR_AFTER`] |
//! | [`RwLock`] | shared or exclusive access | FIFO (task-fair) |
//! | [`Condvar`] | a notification, with a [`MutexGuard`] | FIFO, no spurious wake-ups |
//! | [`Semaphore`] | one of `n` permits | FIFO hand-off |
//! | [`Barrier`] | `n` parties | - |
//! | [`WaitGroup`] | all clones dropped | - |
//!
//! # Why `lock_api`
//!
//! [`Mutex`] and [`RwLock`] are `lock_api` types over kvant's own raw locks
//! ([`RawMutex`], [`RawRwLock`]); [`Condvar`] wraps `lock_api::Condvar` over
//! [`RawCondvar`]. `lock_api` supplies the audited guard machinery (data
//! access, `map`, `unlocked`, `downgrade`, timed variants, `const` `new`), so
//! the only unsafe code here is the promise that each raw lock really is
//! one. All waiting lives in the raw locks: a FIFO queue of waiters behind a
//! short internal `parking_lot` lock that is never held across a park (and
//! that disables preemption while held, so the quantum timer cannot switch
//! a task out in the middle of it). See `waiters.rs`.
//!
//! The price is that `lock_api` is part of kvant's public API: its guard
//! types are kvant's guard types, so a `lock_api` major version is a kvant
//! major version. kvant pins `lock_api = "0.5"` and re-exports it as
//! [`sync::lock_api`](crate::sync::lock_api), so code that names its traits
//! (`RawMutex`, `GetThreadId`, ...) uses the same version kvant does. Writing
//! our own guards would remove that coupling and add a few hundred lines of
//! unsafe guard code; kvant judges the audited code worth the coupling.
//!
//! # No poisoning
//!
//! As in `parking_lot`, a panic while a lock is held just releases it; there
//! is no `PoisonError` and `lock()` returns the guard directly.
//!
//! # Cancellation
//!
//! A task cancelled (aborted, or at runtime shutdown) while it waits is unwound out of its
//! wait; the primitive withdraws it first, and passes on anything (a lock, a
//! permit, a notification) that was handed to it at the last moment.

mod barrier;
mod condvar;
mod mutex;
mod rwlock;
mod semaphore;
pub(crate) mod waiters;
mod waitgroup;

pub use barrier::{Barrier, BarrierWaitResult};
pub use condvar::{Condvar, RawCondvar, WaitTimeoutResult};
/// The `lock_api` version kvant's `Mutex`, `RwLock` and guards are built on.
pub use lock_api;
pub use mutex::{FAIR_AFTER, MappedMutexGuard, Mutex, MutexGuard, RawMutex};
pub use rwlock::{
    MappedRwLockReadGuard, MappedRwLockWriteGuard, RawRwLock, RwLock, RwLockReadGuard,
    RwLockWriteGuard,
};
pub use semaphore::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};
pub use waitgroup::WaitGroup;
