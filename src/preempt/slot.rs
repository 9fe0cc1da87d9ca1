//! The per-worker record shared by the worker, the monitor and the handler.
//!
//! The worker writes it at every slice boundary (plain relaxed stores: the
//! handler runs on the same thread, and the monitor only needs an eventually
//! consistent view because the handler re-validates everything it acts on).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::metrics::Counter;
use crate::task::Header;

#[derive(Default)]
pub(crate) struct WorkerSlot {
    /// Clock ticks at the start of the running slice if that slice may be
    /// preempted, else 0. Doubles as the slice's identity for the monitor.
    pub slice_start: AtomicU64,
    /// The `slice_start` the monitor asked to preempt.
    pub target: AtomicU64,
    /// The running task (`*const Header`), valid while a slice runs.
    pub task: AtomicUsize,
    /// Usable bounds of the running task's stack, `[lo, hi)`.
    pub stack_lo: AtomicUsize,
    pub stack_hi: AtomicUsize,
    /// `pthread_t` of the worker thread, for `pthread_kill`.
    pub thread: AtomicU64,
    /// `signals` when the last undeliverable preemption signal was dropped.
    pub lost_at: AtomicU64,
    pub preemptions: Counter,
    pub deferrals: Counter,
    /// Deferrals because the frame-pointer chain could not be followed.
    pub broken_chains: Counter,
    pub signals: Counter,
}

impl WorkerSlot {
    pub(crate) fn bind_thread(&self) {
        #[cfg(unix)]
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() } as u64;
        self.thread.store(me, Ordering::Relaxed);
    }

    /// A slice of `task` on the stack `[lo, hi)` starts now; `preemptible`
    /// says whether the monitor may cut it short. The task and stack are
    /// recorded either way: the stack-overflow handler needs them too.
    #[inline]
    pub(crate) fn begin(&self, task: &Header, lo: usize, hi: usize, now: u64, preemptible: bool) {
        self.task
            .store(task as *const Header as usize, Ordering::Relaxed);
        self.stack_lo.store(lo, Ordering::Relaxed);
        self.stack_hi.store(hi, Ordering::Relaxed);
        if preemptible {
            // Published last: the handler trusts the fields above once it sees it.
            self.slice_start.store(now.max(1), Ordering::Release);
        }
    }

    /// The slice ended.
    #[inline]
    pub(crate) fn end(&self) {
        self.slice_start.store(0, Ordering::Relaxed);
        self.task.store(0, Ordering::Relaxed);
    }
}
