//! Quantum preemption: a monitor thread watches how long each worker has been
//! running its current task and, past the quantum, sends the worker a signal
//! whose handler switches the task out right where it was interrupted.
//!
//! Files: `monitor.rs` decides *when* (Go's sysmon idea), `signal.rs` is the
//! handler that does the switch, `safepoint.rs` decides *whether* the
//! interrupted point is safe, `codemap.rs` maps addresses to functions and
//! `symbols.rs` says which functions are unsafe to interrupt, `slot.rs` is
//! what the worker, monitor and handler share, `disable.rs` lets a task
//! forbid preemption for a while, and `overflow.rs` turns a task's stack
//! overflow into a failed task instead of a dead process.
//! The design and its trade-offs are written up in `src/preempt/README.md`.
//!
//! Only Linux on x86_64 has the machinery (ucontext layout, frame-pointer
//! walk, `rdtsc`). Everywhere else kvant builds cooperative-only: the builder
//! defaults to `quantum(None)` and rejects `quantum(Some(_))` with
//! [`Error::PreemptionUnsupported`](crate::Error::PreemptionUnsupported).

#[cfg(not(unix))]
compile_error!(
    "kvant needs a Unix target (mmap'd task stacks); Linux x86_64 is the tested platform"
);

mod disable;
mod slot;

pub use disable::{DisableGuard, disable, is_disabled};
pub(crate) use slot::WorkerSlot;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod codemap;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod monitor;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod overflow;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod safepoint;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod signal;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod symbols;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub(crate) use monitor::Monitor;

/// Whether this target supports quantum preemption (Linux on x86_64).
pub const SUPPORTED: bool = cfg!(all(target_os = "linux", target_arch = "x86_64"));

/// The default preemption signal: `SIGURG`, as in Go. It is ignored by
/// default, carries no meaning for ordinary programs, and is not used by
/// debuggers or sanitizers.
pub(crate) const DEFAULT_SIGNAL: i32 = libc::SIGURG;

/// Check that `sig` can serve as the preemption signal.
pub(crate) fn validate_signal(sig: i32) -> Result<(), crate::Error> {
    let reserved = [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        libc::SIGTRAP,
        libc::SIGABRT,
        libc::SIGCHLD,
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGPIPE,
    ];
    #[cfg(target_os = "linux")]
    let max = libc::SIGRTMAX();
    #[cfg(not(target_os = "linux"))]
    let max = 31;
    if sig <= 0 || sig > max || reserved.contains(&sig) {
        return Err(crate::Error::InvalidSignal(sig));
    }
    Ok(())
}

/// Ask the kernel for exact timer expiry on this thread (the default 50 µs
/// slack would be added to every timer and every quantum check).
pub(crate) fn set_precise_timers() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// Address of the calling function's frame record (its saved frame pointer),
/// recorded by `run_user` so the safe-point walk knows where user frames end.
#[inline(always)]
pub(crate) fn frame_address() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let fp: usize;
        // SAFETY: reads a register; no memory is touched.
        unsafe {
            core::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack, preserves_flags))
        };
        fp
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// Stub monitor for targets without preemption: never started.
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
pub(crate) struct Monitor;

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
impl Monitor {
    pub(crate) fn start(
        _shared: &std::sync::Arc<crate::runtime::Shared>,
    ) -> Result<Option<Monitor>, crate::Error> {
        Ok(None)
    }
    pub(crate) fn stop(&self) {}
    pub(crate) fn kick(&self) {}
}

/// Process-wide signal setup every runtime needs (the stack-overflow handler).
pub(crate) fn init_process() {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    overflow::install();
}

/// Make the calling worker thread preemptible through `slot`.
pub(crate) fn enter_worker(slot: &WorkerSlot) {
    slot.bind_thread();
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    signal::enter_worker(slot);
}

/// The worker thread is exiting: no signal may use its slot any more.
pub(crate) fn exit_worker() {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    signal::exit_worker();
}
