//! Stack overflow in a task: end that task, keep the process.
//!
//! A task that runs off its stack hits the guard page below it and the CPU
//! raises SIGSEGV. std's handler would report "has overflowed its stack" and
//! abort the whole process, since for an OS thread there is nothing else to do.
//! For a green thread there is: the fault is confined to one task's stack, and
//! corosensei can rewind that coroutine to a function of our choosing, which
//! returns at once, so the worker sees the task finish and reports
//! `JoinError::is_stack_overflow`.
//!
//! The handler runs on the worker's alternate signal stack (`SA_ONSTACK`; the
//! faulting stack has no room left). A fault anywhere else (not in the guard
//! page of the task this worker is running) is passed on to the handler that
//! was installed before ours, so std's messages and crash behaviour stay.
//!
//! What is lost: the task's frames are discarded, not unwound. Destructors on
//! its stack do not run and locks it held stay held; the stack itself is
//! never reused. That is the price of surviving an overflow at all.

use std::sync::atomic::{AtomicBool, Ordering};

use super::signal::current_slot;
use crate::task::Header;

static INSTALLED: AtomicBool = AtomicBool::new(false);
static mut PREVIOUS_SEGV: Option<libc::sigaction> = None;
static mut PREVIOUS_BUS: Option<libc::sigaction> = None;
static INSTALL_LOCK: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// Install the fault handlers once per process.
pub(crate) fn install() {
    if INSTALLED.load(Ordering::Acquire) {
        return;
    }
    let _g = INSTALL_LOCK.lock();
    if INSTALLED.load(Ordering::Acquire) {
        return;
    }
    for sig in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: zeroed sigaction structs are valid arguments; the masks are
        // initialised by sigfillset; `on_fault` has the SA_SIGINFO signature.
        // PREVIOUS_* are written here, under INSTALL_LOCK, before the new
        // handler (their only reader) is installed, and never written again.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_fault as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            // Every other signal waits while this handler runs: one arriving
            // meanwhile would be delivered on the alternate stack too (the
            // kernel keeps a thread that is on its altstack there), and a
            // preemption signal's frame (~3.5 KiB with AVX-512 state) on top
            // of this one overflows std's altstack, which the kernel answers
            // by killing the process ("overflowed sigaltstack"). Returning
            // restores the interrupted code's own mask.
            libc::sigfillset(&mut sa.sa_mask);
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            if sig == libc::SIGSEGV {
                PREVIOUS_SEGV = Some(old);
            } else {
                PREVIOUS_BUS = Some(old);
            }
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    INSTALLED.store(true, Ordering::Release);
}

extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel passes valid siginfo/ucontext pointers to SA_SIGINFO handlers.
    let (addr, code) = unsafe { ((*info).si_addr() as usize, (*info).si_code) };
    if sig == libc::SIGSEGV && code == libc::SI_KERNEL && lost_preemption_signal(uc) {
        return;
    }
    if end_overflowing_task(addr, uc) {
        return;
    }
    // SAFETY: PREVIOUS_* were written before this handler was installed.
    let prev = unsafe {
        if sig == libc::SIGSEGV {
            *std::ptr::addr_of!(PREVIOUS_SEGV)
        } else {
            *std::ptr::addr_of!(PREVIOUS_BUS)
        }
    };
    chain(sig, info, uc, prev);
}

/// The kernel could not push the preemption signal's frame because the task
/// is using almost all of its stack, and raised SIGSEGV instead (`SI_KERNEL`,
/// as for any failed signal delivery). Nothing is wrong with the task: drop
/// the preemption (returning resumes it where it was; the monitor will ask
/// again later). A genuine overflow faults on the guard page with
/// `SEGV_MAPERR`/`SEGV_ACCERR` and is handled below.
fn lost_preemption_signal(uc: *mut libc::c_void) -> bool {
    let Some(slot) = current_slot() else {
        return false;
    };
    // Only while the monitor is asking to preempt this very slice, and only
    // as many times as it sent signals: every signal sent is consumed once,
    // by the handler or by a failed delivery, so a drop beyond that count is
    // no lost signal but a genuine kernel-raised fault (a general protection
    // fault also reports SI_KERNEL), which repeats without a new signal and
    // is then passed on instead of looping forever. Counting, not comparing
    // with the last drop: two signals can fail back to back (one sent while
    // this handler ran, with every signal masked, fails on its return).
    // Signals that merged while pending leave slack, so such a fault may be
    // retried that many times before it is passed on.
    let seq = slot.seq.load(Ordering::Relaxed);
    let task = slot.task.load(Ordering::Relaxed);
    if task == 0 {
        return false;
    }
    // SAFETY: a non-null slot.task is the task this thread is running (the
    // fault interrupted it); the worker holds its Arc until after clearing
    // the slot.
    let (lo, hi) = unsafe { &*(task as *const Header) }.stack_bounds();
    // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler.
    let sp = unsafe { (*(uc as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_RSP as usize] }
        as usize;
    // Delivery fails only when the frame does not fit below sp: sp is then
    // within a frame of the stack's end (four frames of margin), and at
    // most a page below it (the guard page).
    if !(sp < hi && sp < lo.saturating_add(4 * super::SIGNAL_FRAME) && sp + 4096 >= lo) {
        return false;
    }
    if slot.target.load(Ordering::Relaxed) == seq
        && slot.consumed.fetch_add(1, Ordering::Relaxed) < slot.signals.get()
    {
        return true;
    }
    // A tick of the worker's CPU-clock timer (`cputimer.rs`) fails the same
    // way, but nobody counts ticks as they are sent. They are at least a
    // kernel tick of this thread's CPU time apart, while a genuine fault
    // repeats at once: drop at most one per millisecond of CPU time.
    if slot.cpu_timed.load(Ordering::Relaxed) {
        let now = super::probe::clock_ns(libc::CLOCK_THREAD_CPUTIME_ID).unwrap_or(0);
        let last = slot.tick_drop_cpu.swap(now, Ordering::Relaxed);
        return last == 0 || now.saturating_sub(last) >= 1_000_000;
    }
    false
}

fn end_overflowing_task(addr: usize, uc: *mut libc::c_void) -> bool {
    let Some(slot) = current_slot() else {
        return false;
    };
    let task = slot.task.load(Ordering::Relaxed) as *const Header;
    if task.is_null() {
        return false;
    }
    // SAFETY: a non-null slot.task is the task the worker is resuming right
    // now; the worker holds its Arc until after clearing the slot.
    let task = unsafe { &*task };
    let (lo, _) = task.stack_bounds();
    let page = 4096;
    if !(lo.saturating_sub(page) <= addr && addr < lo) {
        return false;
    }
    // SAFETY: this thread is running `task` (it is in this worker's slot).
    let Some(trap) = (unsafe { task.trap.get() }) else {
        return false;
    };
    // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler.
    let ctx = unsafe { &mut *(uc as *mut libc::ucontext_t) };
    let sp = ctx.uc_mcontext.gregs[libc::REG_RSP as usize] as usize;
    if !trap.stack_ptr_in_bounds(sp) {
        return false;
    }
    task.state.set_overflowed();
    // The preemption handler must not act on a task we are ending.
    slot.preemptible.store(false, Ordering::Relaxed);
    // SAFETY: the faulting SP is inside this coroutine's stack (checked); the
    // coroutine is abandoned (its frames are never returned to), and the
    // registers corosensei asks for are written into the context so that
    // sigreturn continues in the trap trampoline, which returns `()` from
    // the coroutine to the worker.
    unsafe {
        let regs = trap.setup_trap_handler(|| ());
        let g = &mut ctx.uc_mcontext.gregs;
        g[libc::REG_RIP as usize] = regs.rip as i64;
        g[libc::REG_RSP as usize] = regs.rsp as i64;
        g[libc::REG_RBP as usize] = regs.rbp as i64;
        g[libc::REG_RDI as usize] = regs.rdi as i64;
        g[libc::REG_RSI as usize] = regs.rsi as i64;
    }
    true
}

fn chain(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    uc: *mut libc::c_void,
    prev: Option<libc::sigaction>,
) {
    let Some(prev) = prev else {
        reset_default(sig);
        return;
    };
    if prev.sa_sigaction == libc::SIG_DFL || prev.sa_sigaction == libc::SIG_IGN {
        // Returning re-executes the faulting instruction, which now kills the
        // process the default way (with a core dump where enabled).
        reset_default(sig);
    } else if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed as an SA_SIGINFO handler
        // with this signature; we pass on the kernel's own arguments.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(prev.sa_sigaction) };
        f(sig, info, uc);
    } else {
        // SAFETY: a non-SA_SIGINFO handler takes just the signal number.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(prev.sa_sigaction) };
        f(sig);
    }
}

fn reset_default(sig: libc::c_int) {
    // SAFETY: restoring the default disposition is async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}
