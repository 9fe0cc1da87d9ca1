//! The per-worker record shared by the worker, the monitor and the handler.
//!
//! The worker writes it at every slice boundary (plain relaxed stores: the
//! handler runs on the same thread, and the monitor only needs an eventually
//! consistent view because the handler re-validates everything it acts on).

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::metrics::{Counter, SwitchCounts};
use crate::task::Header;

#[derive(Default)]
pub(crate) struct WorkerSlot {
    /// Number of the current (or last) slice, counted from 1: the slice's
    /// identity for the monitor and the handler, in every mode.
    pub seq: AtomicU64,
    /// Whether the running slice may be preempted at its quantum (a
    /// preemptive runtime and a preemptible task). No clock is read on the
    /// switch path: the monitor times slices by when it first sees their
    /// `seq` (Go's sysmon does the same with `schedtick`).
    pub preemptible: AtomicBool,
    /// The `seq` the monitor asked to interrupt.
    pub target: AtomicU64,
    /// The `seq` the monitor allows to be switched out of a blocked system
    /// call (rule 6): tasks pinned to this thread wait for it.
    pub syscall_target: AtomicU64,
    /// The running task (`*const Header`), valid while a slice runs; 0
    /// between slices.
    pub task: AtomicUsize,
    /// `pthread_t` of the worker thread, for `pthread_kill`.
    pub thread: AtomicU64,
    /// The worker thread's CPU-time clock (`pthread_getcpuclockid`), for the
    /// monitor's "blocked in the kernel" test; 0 if unknown.
    pub cpu_clock: AtomicI32,
    /// Kernel thread id of the worker (for `/proc/self/task/TID/syscall`).
    pub tid: AtomicI32,
    /// std's id of the worker thread (`ThreadId`'s number), as std's
    /// reentrant locks record their owner (`task/owned.rs`).
    pub owner_id: AtomicU64,
    /// Signals consumed on this thread: handled, or dropped because the
    /// kernel could not deliver them (`overflow.rs`); never more than
    /// `signals` unless something else raised the fault.
    pub consumed: AtomicU64,
    pub preemptions: Counter,
    pub deferrals: Counter,
    /// Deferrals because the stack could not be walked to the task's root.
    pub broken_chains: Counter,
    /// The address that made the last deferred point unsafe (the PC, or a
    /// frame's call site), for the monitor's overrun diagnostic.
    pub deferred_at: AtomicUsize,
    /// Slices that ran far past their quantum because every signal found
    /// them in code kvant will not preempt.
    pub overruns: Counter,
    pub signals: Counter,
    /// Tasks switched out while blocked in a std::sync futex wait.
    pub sync_switches: Counter,
    /// Tasks switched out while blocked in a system call (rule 6).
    pub syscall_switches: Counter,
    /// The slice the monitor is looking at through [`WorkerSlot::inspect`]
    /// (0: none); the worker does not let go of a task while it is set.
    pub hold: AtomicU64,
    /// Clock ticks when the monitor found the running slice blocked in the
    /// kernel (0: it is not). Whoever swaps it back to 0 (the monitor when
    /// the thread computes again, the worker at the slice's end) accounts
    /// for the episode.
    pub blocked_since: AtomicU64,
    /// Whether this worker's CPU-clock quantum timer is armed.
    pub cpu_timed: AtomicBool,
    /// That timer (`timer_t`; the kernel's id, so 0 is a valid one).
    pub cpu_timer: AtomicUsize,
    /// The slice the last CPU-clock tick saw (`cputimer.rs`).
    pub tick_seq: AtomicU64,
    /// The thread's CPU time at the last dropped CPU-clock tick that the
    /// kernel failed to deliver (`overflow.rs`).
    pub tick_drop_cpu: AtomicU64,
    /// The worker's group lock (`lend.rs`): held by the thread that runs
    /// the worker's tasks. 0 free, 1 held.
    pub group: AtomicU32,
    /// Threads waiting for `group`.
    pub group_waiters: AtomicU32,
    /// Times `group` was taken (`lend::pass` waits for it to move).
    pub group_acquires: AtomicU32,
    /// Rung (incremented, futex-woken) when the worker is lent.
    pub bell: AtomicU32,
    /// The `seq` the monitor asks to lend the worker from (`lend.rs`).
    pub lend_target: AtomicU64,
    /// The `seq` whose lend request the handler turned down because of the
    /// wait itself (not a futex wait it can repeat, or a CPU-clock timer
    /// on the thread): asking again would only cost the thread a signal.
    pub lend_declined: AtomicU64,
    /// When the monitor last saw that slice's thread computing
    /// (`CLOCK_MONOTONIC` ns): a timed wait it lends began no earlier.
    pub lend_since: AtomicU64,
    /// Threads that lent the worker and wait in their handler.
    pub lent: AtomicU32,
    /// Stand-in threads waiting for this worker's bell.
    pub standins_idle: AtomicU32,
    /// Times the worker was lent (from either thread).
    pub lends: Counter,
    /// When the monitor first saw slice `began_seq` running (clock
    /// ticks), for a task dump; the worker's switch path writes neither.
    pub began: AtomicU64,
    pub began_seq: AtomicU64,
}

impl WorkerSlot {
    /// The switch counts, for a metrics snapshot.
    pub(crate) fn switch_counts(&self) -> SwitchCounts {
        SwitchCounts {
            preemptions: self.preemptions.get(),
            deferrals: self.deferrals.get(),
            signals: self.signals.get(),
            overruns: self.overruns.get(),
            sync_switches: self.sync_switches.get(),
            syscall_switches: self.syscall_switches.get(),
            lends: self.lends.get(),
        }
    }

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

    /// A slice of `task` starts now; `preemptible` says whether the monitor
    /// may cut it short. The task is recorded either way: the stack-overflow
    /// handler and the sync-wait switch need it (and its stack bounds) too.
    #[inline]
    pub(crate) fn begin(&self, task: &Header, preemptible: bool) {
        self.task
            .store(task as *const Header as usize, Ordering::Relaxed);
        self.preemptible.store(preemptible, Ordering::Relaxed);
        // Published last: the handler trusts the fields above once it sees
        // its slice number (single writer: no read-modify-write needed).
        self.seq
            .store(self.seq.load(Ordering::Relaxed) + 1, Ordering::Release);
    }

    /// The slice ended. Returns only once the monitor does not look at the
    /// task any more (see `fence.rs` for why a compiler fence suffices here).
    #[inline]
    pub(crate) fn end(&self) {
        self.preemptible.store(false, Ordering::Relaxed);
        self.task.store(0, Ordering::Release);
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        if self.hold.load(Ordering::Relaxed) != 0 {
            self.wait_hold();
        }
    }

    #[cold]
    fn wait_hold(&self) {
        while self.hold.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
        }
    }

    /// Run `f` on the task of the running slice, if slice `seq` (or a later
    /// one) is running: from the monitor thread, which otherwise could not
    /// know that the task is still alive. `f` runs while the worker is kept
    /// from finishing a slice, so it must be short and must not block.
    ///
    /// A slice that starts during the call may be the one `f` sees (its
    /// task is stored before its number): fine for the diagnostics this
    /// serves, and the task is alive either way.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    pub(crate) fn inspect<R>(&self, seq: u64, f: impl FnOnce(&Header) -> R) -> Option<R> {
        struct Release<'a>(&'a AtomicU64);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.store(0, Ordering::Release);
            }
        }
        self.hold.store(seq.max(1), Ordering::Relaxed);
        // Cleared however `f` ends: a worker must never wait for nothing.
        let _release = Release(&self.hold);
        let mut r = None;
        if super::fence::heavy() {
            let task = self.task.load(Ordering::Acquire);
            if task != 0 && self.seq.load(Ordering::Acquire) == seq {
                // SAFETY: after the heavy fence, a non-zero `task` belongs
                // to a slice whose `end` has not yet loaded `hold`, so that
                // `end` sees our `hold` and waits before the worker lets go
                // of its `Arc<Task>` (fence.rs); the task outlives `f`.
                r = Some(f(unsafe { &*(task as *const Header) }));
            }
        }
        r
    }
}
