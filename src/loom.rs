//! The synchronisation types the model-checked protocols use, from `std`
//! and `parking_lot` normally and from [loom] under `--cfg loom` (tokio's
//! `src/loom` shim, in small). The idle protocol (`runtime/idle.rs`), the
//! task's lifecycle word (`task/state.rs`) and the cells only a run-claim
//! holder may touch (`task/coroutine.rs`'s body and trap cells) go through
//! it, and `.ci/run` model-checks them with
//! `RUSTFLAGS="--cfg loom" cargo test --lib loom_` (the first such check
//! found a missing fence in `Idle::prepare_sleep`). Under loom, two run
//! claims touching one task's body at once fail the model as a data race.
//!
//! The lock types keep `parking_lot`'s shape (`lock()` returns the guard,
//! `Condvar::wait(&mut guard)`), so the protocol code reads the same in
//! both builds.
//!
//! [loom]: https://docs.rs/loom

#[cfg(not(loom))]
pub(crate) use std::sync::atomic;

#[cfg(not(loom))]
pub(crate) use parking_lot::{Condvar, Mutex};

#[cfg(loom)]
pub(crate) use loom::sync::atomic;

#[cfg(not(loom))]
pub(crate) mod cell {
    /// `std::cell::UnsafeCell` with loom's closure API, so that code reads
    /// the same in both builds and loom sees every access.
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(v: T) -> Self {
            UnsafeCell(std::cell::UnsafeCell::new(v))
        }

        #[inline(always)]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

#[cfg(loom)]
pub(crate) use loom::cell;

#[cfg(loom)]
pub(crate) use shim::{Condvar, Mutex};

#[cfg(loom)]
mod shim {
    /// `parking_lot::Mutex`'s API over loom's.
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T: Default> Default for Mutex<T> {
        fn default() -> Self {
            Mutex::new(T::default())
        }
    }

    pub(crate) struct MutexGuard<'a, T>(Option<loom::sync::MutexGuard<'a, T>>);

    impl<T> Mutex<T> {
        pub(crate) fn new(v: T) -> Self {
            Mutex(loom::sync::Mutex::new(v))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard(Some(self.0.lock().unwrap()))
        }
    }

    impl<T> std::ops::Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.0.as_ref().unwrap()
        }
    }

    impl<T> std::ops::DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.0.as_mut().unwrap()
        }
    }

    /// `parking_lot::Condvar`'s API over loom's.
    #[derive(Debug)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Default for Condvar {
        fn default() -> Self {
            Condvar(loom::sync::Condvar::new())
        }
    }

    impl Condvar {
        pub(crate) fn wait<T>(&self, g: &mut MutexGuard<'_, T>) {
            let inner = g.0.take().unwrap();
            g.0 = Some(self.0.wait(inner).unwrap());
        }

        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }
    }
}
