//! The per-worker record shared by the worker, the monitor and the handler.
//!
//! The worker writes it at every slice boundary (plain relaxed stores: the
//! handler runs on the same thread, and the monitor only needs an eventually
//! consistent view because the handler re-validates everything it acts on).

use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};

use crate::metrics::Counter;
use crate::task::Header;

#[derive(Default)]
pub(crate) struct WorkerSlot {
    /// Number of the current (or last) slice, counted from 1: the slice's
    /// identity for the monitor and the handler, in every mode.
    pub seq: AtomicU64,
    /// Clock ticks at the start of the running slice if that slice may be
    /// preempted, else 0.
    pub slice_start: AtomicU64,
    /// The `seq` the monitor asked to interrupt.
    pub target: AtomicU64,
    /// The running task (`*const Header`), valid while a slice runs; 0
    /// between slices.
    pub task: AtomicUsize,
    /// Usable bounds of the running task's stack, `[lo, hi)`.
    pub stack_lo: AtomicUsize,
    pub stack_hi: AtomicUsize,
    /// `pthread_t` of the worker thread, for `pthread_kill`.
    pub thread: AtomicU64,
    /// The worker thread's CPU-time clock (`pthread_getcpuclockid`), for the
    /// monitor's "blocked in the kernel" test; 0 if unknown.
    pub cpu_clock: AtomicI32,
    /// Kernel thread id of the worker (for `/proc/self/task/TID/syscall`).
    pub tid: AtomicI32,
    /// `signals` when the last undeliverable preemption signal was dropped.
    pub lost_at: AtomicU64,
    pub preemptions: Counter,
    pub deferrals: Counter,
    /// Deferrals because the frame-pointer chain could not be followed.
    pub broken_chains: Counter,
    pub signals: Counter,
    /// Tasks switched out while blocked in a std::sync futex wait.
    pub sync_switches: Counter,
}

impl WorkerSlot {
    pub(crate) fn bind_thread(&self) {
        #[cfg(unix)]
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        self.thread.store(me as u64, Ordering::Relaxed);
        #[cfg(target_os = "linux")]
        {
            let mut clock: libc::clockid_t = 0;
            // SAFETY: `me` is this live thread; `clock` is a valid out pointer.
            if unsafe { libc::pthread_getcpuclockid(me, &mut clock) } == 0 {
                self.cpu_clock.store(clock, Ordering::Relaxed);
            }
            // SAFETY: gettid has no preconditions.
            self.tid.store(unsafe { libc::gettid() }, Ordering::Relaxed);
        }
    }

    /// A slice of `task` on the stack `[lo, hi)` starts now; `preemptible`
    /// says whether the monitor may cut it short. The task and stack are
    /// recorded either way: the stack-overflow handler and the sync-wait
    /// switch need them too.
    #[inline]
    pub(crate) fn begin(&self, task: &Header, lo: usize, hi: usize, now: u64, preemptible: bool) {
        self.task
            .store(task as *const Header as usize, Ordering::Relaxed);
        self.stack_lo.store(lo, Ordering::Relaxed);
        self.stack_hi.store(hi, Ordering::Relaxed);
        if preemptible {
            self.slice_start.store(now.max(1), Ordering::Relaxed);
        }
        // Published last: the handler trusts the fields above once it sees
        // its slice number (single writer: no read-modify-write needed).
        self.seq
            .store(self.seq.load(Ordering::Relaxed) + 1, Ordering::Release);
    }

    /// The slice ended.
    #[inline]
    pub(crate) fn end(&self) {
        self.slice_start.store(0, Ordering::Relaxed);
        self.task.store(0, Ordering::Release);
    }
}
