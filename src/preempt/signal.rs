//! The preemption signal handler: switch the interrupted task out from inside
//! the handler, on the task's own stack.
//!
//! The handler runs on the task's stack (the signal is installed *without*
//! `SA_ONSTACK`), so the kernel's signal frame, which holds every register of
//! the interrupted code, is saved on that stack. Suspending the coroutine from
//! the handler leaves that frame where it is; resuming the task later returns
//! from the handler, and `sigreturn` restores the registers exactly. The task
//! therefore continues at the very instruction it was stopped at.
//!
//! `SA_NODEFER` keeps the signal unblocked while the handler runs, so the
//! worker does not continue with it masked after we switch away (the
//! alternative, `sigprocmask` before switching, costs a syscall per
//! preemption). A nested signal in the handler sees `preemptible == false` or
//! fails the safe-point check (the PC is in kvant) and returns at once.
//! `SA_RESTART` makes interrupted slow syscalls restart instead of failing
//! with `EINTR`.
//!
//! Async-signal-safety: the handler reads atomics, the immutable code map and
//! the task's stack, calls `pthread_self`, `sigaltstack` and the coroutine
//! switch. No allocation, no locks, no formatting.

use std::cell::Cell;
use std::sync::atomic::{AtomicPtr, Ordering};

use super::WorkerSlot;
use super::codemap::CodeMap;
use super::cputimer;
use super::safepoint::{self, Interrupted, TaskStack, Verdict};
use crate::task::Header;
use crate::task::coroutine::{Switch, TaskYielder};

thread_local! {
    // Const-initialised, no destructor: accessing it is a plain TLS load,
    // which is async-signal-safe in the main executable.
    static SLOT: Cell<*const WorkerSlot> = const { Cell::new(std::ptr::null()) };
    /// This thread waits in its handler for a task it lent its worker
    /// from (`lend.rs`): the slot is the stand-in's meanwhile.
    static LENDING: Cell<bool> = const { Cell::new(false) };
}

static CODEMAP: AtomicPtr<CodeMap> = AtomicPtr::new(std::ptr::null_mut());

/// How many checks ended with each [`Verdict`] (by its discriminant), for
/// diagnostics: why a program's tasks are not preempted.
pub(crate) static VERDICTS: [std::sync::atomic::AtomicU64; 7] =
    [const { std::sync::atomic::AtomicU64::new(0) }; 7];
static INSTALLED: parking_lot::Mutex<Vec<i32>> = parking_lot::Mutex::new(Vec::new());

pub(super) fn enter_worker(slot: &WorkerSlot) {
    SLOT.with(|s| s.set(slot as *const WorkerSlot));
}

/// The slot of the worker running on this thread (signal-safe).
pub(super) fn current_slot() -> Option<&'static WorkerSlot> {
    let p = SLOT.with(|s| s.get());
    // SAFETY: SLOT points into the runtime's worker table, which outlives the
    // worker thread (cleared by exit_worker before the thread ends).
    (!p.is_null()).then(|| unsafe { &*p })
}

pub(super) fn exit_worker() {
    SLOT.with(|s| s.set(std::ptr::null()));
}

/// This thread stands in for the worker of `slot` (`lend.rs`).
pub(super) fn enter_standin(slot: &WorkerSlot) {
    SLOT.with(|s| s.set(slot as *const WorkerSlot));
}

/// Install the handler for `sig` (once per process and signal). Fails if the
/// program already has its own handler there.
pub(crate) fn install(sig: i32) -> Result<(), crate::Error> {
    let mut installed = INSTALLED.lock();
    if installed.contains(&sig) {
        return Ok(());
    }
    let map: &'static CodeMap = CodeMap::global();
    CODEMAP.store(map as *const CodeMap as *mut CodeMap, Ordering::Release);
    // SAFETY: a zeroed sigaction is a valid "query" argument; sigaction with a
    // null new action only reads the current disposition.
    let old = unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        old
    };
    if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
        return Err(crate::Error::SignalInUse(sig));
    }
    // SAFETY: `on_signal` is an `extern "C"` function with the SA_SIGINFO
    // signature; the mask set is initialised by sigemptyset before use.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_NODEFER;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    // Workers inherit the spawning thread's mask; make sure it is open.
    unblock(sig);
    installed.push(sig);
    Ok(())
}

/// Unblock `sig` on the calling thread (workers may inherit a blocked mask).
pub(crate) fn unblock(sig: i32) {
    // SAFETY: the set is initialised by sigemptyset; only this thread's mask changes.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// Send `sig` to the worker bound to `slot`.
pub(crate) fn kick(slot: &WorkerSlot, sig: i32) {
    slot.signals.add(1);
    let thread = slot.thread.load(Ordering::Relaxed) as libc::pthread_t;
    // SAFETY: only the monitor signals, and only slots running a slice.
    // Regular workers outlive the monitor (shutdown stops the monitor before
    // any worker exits); compensating threads are joined by the monitor
    // itself (`compensate.rs`), so a thread it signals is at worst exited
    // but not yet joined, whose `pthread_t` is still valid (ESRCH at most).
    unsafe { libc::pthread_kill(thread, sig) };
}

extern "C" fn on_signal(_sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: __errno_location returns this thread's errno slot.
    let saved_errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    let from_timer = unsafe { (*info).si_code } == libc::SI_TIMER;
    if let Some(slot) = current_slot() {
        // A tick of this worker's CPU-clock timer says whether the slice is
        // due itself; a signal from the monitor is one it counted as sent.
        let go = if from_timer {
            cputimer::tick_due(slot)
        } else {
            slot.consumed.fetch_add(1, Ordering::Relaxed);
            true
        };
        // While this thread waits in a lend, the slot is the stand-in's.
        let lending = LENDING.with(|l| l.get());
        if go && !lending && !(slot.lend_target.load(Ordering::Relaxed) != 0 && lend_here(slot, uc))
        {
            preempt_here(slot, uc);
        }
    }
    // SAFETY: re-read the location: after a migration it is another thread's
    // errno, and that thread is the one returning to the interrupted code.
    unsafe { *libc::__errno_location() = saved_errno };
}

/// This thread's static thread-local storage, from its thread pointer: on
/// x86_64 (TLS variant II) the blocks of the executable and of the
/// libraries loaded at start-up lie just below it, and the thread control
/// block just above. Signal-safe (reads `%fs:0`).
fn static_tls(map: &CodeMap) -> (usize, usize) {
    let tp: usize;
    // SAFETY: on x86_64 Linux `%fs:0` holds the thread pointer itself (the
    // TCB's self-pointer, which glibc and musl both keep); reading it
    // touches no other memory.
    unsafe {
        core::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags))
    };
    let below = map.static_tls_size();
    (
        tp.saturating_sub(below),
        tp.saturating_add(super::codemap::TCB_SIZE),
    )
}

/// What the safe-point rules read of the interrupted registers.
fn interrupted(regs: &[libc::greg_t; 23]) -> Interrupted {
    let reg = |r: libc::c_int| regs[r as usize] as usize;
    Interrupted {
        pc: reg(libc::REG_RIP),
        sp: reg(libc::REG_RSP),
        fp: reg(libc::REG_RBP),
        rax: reg(libc::REG_RAX),
        rdi: reg(libc::REG_RDI),
        rsi: reg(libc::REG_RSI),
    }
}

/// The monitor asked to lend this worker (tasks pinned to this thread
/// wait, or the thread the worker was lent from wants it back): do it if
/// the slice it asked about is stopped in a futex wait on libc's `syscall`
/// instruction. Returns whether it lent (and is back).
#[inline(never)]
fn lend_here(slot: &WorkerSlot, uc: *mut libc::c_void) -> bool {
    let seq = slot.seq.load(Ordering::Acquire);
    // Only the thread that runs the worker's tasks lends it: a stand-in
    // asleep on its bell, or a thread waiting for the group lock, is in an
    // untimed futex wait too, with the slot naming it.
    if !super::lend::holds()
        || slot.task.load(Ordering::Relaxed) == 0
        || slot.lend_target.load(Ordering::Relaxed) != seq
    {
        return false;
    }
    // From here on a refusal is about this slice's wait, and asking again
    // gets the same answer: say so, and the monitor stops asking. (No idle
    // stand-in is not such a refusal: one may be along in a moment.)
    let decline = || {
        slot.lend_declined.store(seq, Ordering::Relaxed);
        false
    };
    if slot.cpu_timed.load(Ordering::Relaxed) {
        return decline();
    }
    if !super::lend::can_lend(slot) {
        return false;
    }
    let map = CODEMAP.load(Ordering::Acquire);
    if map.is_null() {
        return decline();
    }
    // SAFETY: CODEMAP is set once to a &'static before any handler is installed.
    let map = unsafe { &*map };
    // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler.
    let regs = unsafe { &(*(uc as *const libc::ucontext_t)).uc_mcontext.gregs };
    let reg = |r: libc::c_int| regs[r as usize] as usize;
    let at = interrupted(regs);
    // Rule 6's test: on libc's `syscall` instruction in a futex wait, an
    // untimed one rewound there to restart, or a timed one just past it with
    // EINTR (the registers still hold its arguments: the kernel preserves
    // all but rax, rcx and r11). Which of the two it is, the PC says.
    if !safepoint::in_futex_wait(map, &at) {
        return decline();
    }
    let eintr = at.pc != map.syscall_insn();
    if eintr != (reg(libc::REG_R10) != 0) {
        return decline(); // a timed wait still pending, or an untimed one with EINTR
    }
    let cmd = at.rsi as i32 & !(libc::FUTEX_PRIVATE_FLAG | libc::FUTEX_CLOCK_REALTIME);
    let storage: libc::timespec;
    let timeout = if eintr {
        // SAFETY: the pointer the interrupted call was given, which it read
        // without EFAULT (it returned EINTR), in its caller's live frame.
        let given = unsafe { *(reg(libc::REG_R10) as *const libc::timespec) };
        if cmd == libc::FUTEX_WAIT_BITSET {
            // An absolute deadline: the same one.
            storage = given;
        } else {
            // Relative to the call, which began no earlier than the monitor
            // last saw the thread computing: what is left is at most this
            // (an early return is an EINTR the caller retries anyway).
            let Some(left) = super::lend::time_left(slot, given) else {
                return false; // over; the caller's next wait may be lent
            };
            storage = left;
        }
        &storage as *const libc::timespec
    } else {
        std::ptr::null()
    };
    let wait = super::lend::FutexWait {
        addr: at.rdi,
        op: at.rsi,
        val: reg(libc::REG_RDX),
        timeout,
        relative: eintr && cmd == libc::FUTEX_WAIT,
        uaddr2: reg(libc::REG_R8),
        val3: reg(libc::REG_R9),
    };
    LENDING.with(|l| l.set(true));
    super::lend::lend(slot, &wait);
    LENDING.with(|l| l.set(false));
    true
}

/// `slot` is this thread's, read on entry; it must not be used once the task
/// is switched out (it may resume on another worker).
#[inline(never)]
fn preempt_here(slot: &WorkerSlot, uc: *mut libc::c_void) {
    let seq = slot.seq.load(Ordering::Acquire);
    let task = slot.task.load(Ordering::Relaxed);
    if task == 0 || seq != slot.target.load(Ordering::Relaxed) {
        return; // between slices, or a stale request
    }
    // SAFETY: a non-zero `task` means the worker published it for this slice
    // and holds its Arc until after `end` clears it.
    let task: &Header = unsafe { &*(task as *const Header) };
    // The quantum applies to this slice (preemptive runtime, preemptible task).
    let preemptible = slot.preemptible.load(Ordering::Relaxed);
    // A task that is unwinding (a panic, or kvant's own cancellation) runs
    // its destructors with std's per-thread panic count raised: another
    // task on this thread would see `thread::panicking()` and poison the
    // std locks it drops. It keeps the thread until the unwind is over.
    // (`panicking` reads a global atomic, then a const thread-local: no
    // allocation, no lock.)
    // Nor while this thread owns stdout's or stderr's reentrant lock: the
    // next task on the thread would re-enter it (`task/owned.rs`).
    if std::thread::panicking()
        || crate::task::owned::held_by(slot.owner_id.load(Ordering::Relaxed))
    {
        slot.deferrals.add(1);
        return;
    }
    if task.preempt.disabled.load(Ordering::Relaxed) > 0 {
        if preemptible {
            task.preempt.pending.store(true, Ordering::Relaxed);
        }
        slot.deferrals.add(1);
        return;
    }
    let map = CODEMAP.load(Ordering::Acquire);
    if map.is_null() {
        return;
    }
    // SAFETY: CODEMAP is set once to a &'static before any handler is installed.
    let map = unsafe { &*map };
    // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler.
    let ctx = unsafe { &mut *(uc as *mut libc::ucontext_t) };
    let at = interrupted(&ctx.uc_mcontext.gregs);
    let (lo, hi) = task.stack_bounds();
    let stack = TaskStack {
        lo,
        hi,
        root_mark: task.preempt.root_mark.load(Ordering::Relaxed),
        tls: static_tls(map),
    };
    let mut culprit = 0;
    // SAFETY: `stack` is the bounds of the task this worker is running, set
    // at its start (slot.begin); the handler runs on that stack, so it is
    // mapped for the whole check.
    let verdict = unsafe { safepoint::check(map, &at, &stack, &mut culprit) };
    VERDICTS[verdict as usize].fetch_add(1, Ordering::Relaxed);
    if matches!(verdict, Verdict::PcUnsafe | Verdict::FrameUnsafe) {
        slot.deferred_at.store(culprit, Ordering::Relaxed);
    }
    let why = match verdict {
        Verdict::Safe if preemptible => {
            slot.preemptions.add(1);
            Switch::Preempted
        }
        Verdict::SyncWait => {
            slot.sync_switches.add(1);
            Switch::SyncWait
        }
        // Only where the task could have been preempted anyway (a
        // cooperative runtime keeps its promise that nothing but std::sync
        // waits switches a task out behind its back), and only when the
        // monitor asked for it (tasks pinned to this thread wait).
        Verdict::SyscallWait
            if preemptible && slot.syscall_target.load(Ordering::Relaxed) == seq =>
        {
            slot.syscall_switches.add(1);
            Switch::SyncWait
        }
        verdict => {
            slot.deferrals.add(1);
            if verdict == Verdict::BrokenChain {
                slot.broken_chains.add(1);
            }
            return;
        }
    };
    // Commit. From here a nested signal finds no matching request (and a PC
    // inside kvant if the monitor re-sends meanwhile).
    slot.target.store(0, Ordering::Relaxed);
    slot.preemptible.store(false, Ordering::Relaxed);
    task.preempt.in_signal_frame.store(true, Ordering::Relaxed);
    // SAFETY: the handler interrupts the task on its own stack (checked above).
    if let Some(n) = unsafe { crate::task::note::Notes::at(hi) } {
        n.switched_at(at.pc, at.sp, at.fp, why);
    }
    let yielder = task.preempt.yielder.load(Ordering::Relaxed) as *const TaskYielder;
    // SAFETY: pthread_self has no preconditions.
    let before = unsafe { libc::pthread_self() };
    // SAFETY: the yielder lives on this task's stack, which we are running on
    // (checked above); suspending from a handler is a plain stack switch, and
    // the signal frame stays with the task until it is resumed.
    let _ = unsafe { (*yielder).suspend(why) };
    // Resumed; the worker never resumes a preempted task with Cancel (it leaks
    // it instead), so we always return to the interrupted code from here.
    // SAFETY: pthread_self has no preconditions.
    if unsafe { libc::pthread_self() } != before {
        // sigreturn reinstalls uc_stack as the thread's alternate signal
        // stack; after a migration it describes the *old* thread's altstack.
        // SAFETY: querying the current altstack into a zeroed stack_t.
        unsafe {
            let mut cur: libc::stack_t = std::mem::zeroed();
            if libc::sigaltstack(std::ptr::null(), &mut cur) == 0 {
                ctx.uc_stack = cur;
            }
        }
    }
}
