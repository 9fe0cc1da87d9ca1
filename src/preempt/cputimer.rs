//! The quantum on each worker thread's own CPU clock
//! ([`Builder::cpu_clock_quantum`](crate::Builder::cpu_clock_quantum)).
//!
//! Each worker arms a POSIX timer on `CLOCK_THREAD_CPUTIME_ID` that sends the
//! preemption signal to its own thread (`SIGEV_THREAD_ID`) every half
//! quantum of the thread's CPU time. The kernel checks CPU-time timers on
//! its scheduler tick (4 ms at HZ=250), so a tick arrives at the first tick
//! after each half quantum has been used, never while the thread sleeps or
//! waits in the kernel (its CPU clock stands still): an idle or blocked
//! worker is never signalled, and the monitor neither wakes up for the
//! quantum nor pays a `pthread_kill` per preemption. For the same reason a
//! task blocked in the kernel gets no tick: the monitor keeps the quantum
//! rule for a slice whose thread it finds there (`sysmon/quantum.rs`), so a
//! std::sync waiter is still switched out for the holder.
//!
//! The handler decides on the tick (rule as `runtime/sysmon/quantum.rs`'s,
//! by slice number, no clock read): a slice still running at the tick after
//! the one that first saw it has had at least one tick interval of CPU, all
//! of it its own, and at most two: it is due. Ticks are half a quantum
//! apart, or one kernel tick when half a quantum is shorter. Anything else
//! (a new slice, a non-preemptible one, nothing running) only records the
//! slice number. A deferred preemption (unsafe point) is retried at the
//! next tick, as the slice number is unchanged.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::slot::WorkerSlot;

/// Arm the calling worker thread's CPU-clock timer: `sig` every
/// `quantum / 2` of the thread's CPU time. Returns false if the kernel
/// refused (the monitor then keeps timing this worker's quantum).
pub(super) fn arm(slot: &WorkerSlot, sig: i32, quantum: Duration) -> bool {
    let half = (quantum / 2).max(Duration::from_micros(1));
    let ts = libc::timespec {
        tv_sec: half.as_secs() as libc::time_t,
        tv_nsec: half.subsec_nanos() as libc::c_long,
    };
    let spec = libc::itimerspec {
        it_interval: ts,
        it_value: ts,
    };
    // SAFETY: plain timer syscalls on a timer this thread owns; the sigevent
    // is zeroed and then filled as SIGEV_THREAD_ID requires (the target is
    // this thread, which disarms the timer before it exits).
    unsafe {
        let mut sev: libc::sigevent = std::mem::zeroed();
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_signo = sig;
        sev.sigev_notify_thread_id = libc::gettid();
        let mut timer: libc::timer_t = std::ptr::null_mut();
        if libc::timer_create(libc::CLOCK_THREAD_CPUTIME_ID, &mut sev, &mut timer) != 0 {
            return false;
        }
        if libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()) != 0 {
            libc::timer_delete(timer);
            return false;
        }
        slot.cpu_timer.store(timer as usize, Ordering::Relaxed);
        slot.cpu_timed.store(true, Ordering::Relaxed);
    }
    true
}

/// Delete the calling worker's timer, if it has one (before the thread
/// exits: a timer aimed at a dead thread must not outlive it).
pub(super) fn disarm(slot: &WorkerSlot) {
    if slot.cpu_timed.swap(false, Ordering::Relaxed) {
        let timer = slot.cpu_timer.load(Ordering::Relaxed);
        // SAFETY: `timer` was created by `arm` on this thread and is deleted
        // once (the flag was swapped off above).
        unsafe { libc::timer_delete(timer as libc::timer_t) };
    }
}

/// In the signal handler, for a tick of this worker's CPU-clock timer:
/// whether the running slice is due. If so, it is marked as the slice to
/// preempt (`target`), as the monitor would.
pub(super) fn tick_due(slot: &WorkerSlot) -> bool {
    let seq = slot.seq.load(Ordering::Acquire);
    // Only this thread's handler writes `tick_seq`; a swap, so that a
    // signal nested in this handler (SA_NODEFER) cannot tear it.
    let seen = slot.tick_seq.swap(seq, Ordering::Relaxed);
    if seen != seq
        || slot.task.load(Ordering::Relaxed) == 0
        || !slot.preemptible.load(Ordering::Relaxed)
    {
        return false;
    }
    slot.target.store(seq, Ordering::Relaxed);
    true
}
