//! Is the interrupted instruction a safe place to switch the task out?
//!
//! Switching out is always *memory*-safe (the task's registers are in the
//! kernel's signal frame on its own stack). What can go wrong is *logical*:
//! the interrupted code may hold something another task on the same worker
//! will need, e.g. std's stdout `RefCell` mid-`println!`, a glibc malloc arena
//! lock, the runtime's own queues. The next task then panics or deadlocks.
//!
//! So we look at every frame on the task's stack, not just the PC: the PC can
//! be in a user `Debug::fmt` impl while a frame further up holds the stdout
//! lock. The chain of frame records (`[rbp] = caller's rbp`, `[rbp+8] = return
//! address`) is walked from the interrupted frame up to the task's root frame
//! (`run_user`, which calls the user's closure);
//! every address must be in the main executable and outside the deny-listed
//! code (`codemap.rs`, rules in `symbols.rs`). Anything we cannot vouch for (a chain that leaves the
//! stack, goes backwards, or is too deep) means "not here": defer and retry.
//!
//! Everything here runs inside the signal handler: no allocation, no locks,
//! reads only within the validated bounds of the task stack.

use super::codemap::CodeMap;
use super::symbols::Class;

/// Stack the handler still needs below the interrupted SP: the kernel's
/// signal frame is already there, plus the rest of the handler and the
/// switch, with margin (6 KiB).
pub(crate) const ROOM: usize = super::SIGNAL_FRAME + 2 * 1024;

/// Frames walked at most; deeper stacks defer (bounded handler time).
const MAX_FRAMES: usize = 128;

/// Registers of the interrupted context that the decision needs.
#[derive(Clone, Copy)]
pub(crate) struct Interrupted {
    pub pc: usize,
    pub sp: usize,
    pub fp: usize,
    /// Syscall number (restart pending) or result, for the sync-wait rule.
    pub rax: usize,
    /// The futex operation, for the sync-wait rule (`syscall`'s 2nd argument).
    pub rsi: usize,
}

/// Where the task's stack and user frames are.
pub(crate) struct TaskStack {
    /// Lowest usable address.
    pub lo: usize,
    /// Highest address (exclusive).
    pub hi: usize,
    /// Frame record of `run_user`, the boundary between kvant's task entry
    /// (above) and the user's closure (below); 0 outside the closure.
    pub root_fp: usize,
}

/// What the handler may do at the interrupted point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A safe point: the task may be preempted here.
    Safe,
    /// The task is blocked in a contended std::sync futex wait: a switch
    /// point in every mode (rule 5 below).
    SyncWait,
    /// The task is blocked in a system call that std or the user's code
    /// made through one of libc's thin wrappers: a switch point where the
    /// task may be preempted (rule 6 below).
    SyscallWait,
    NotOnTaskStack,
    PcUnsafe,
    FrameUnsafe,
    BrokenChain,
}

/// Decide what the handler may do with a task interrupted at `at` on `stack`.
///
/// The rules, each necessary for the next:
/// 1. The SP is inside the task's stack with [`ROOM`] to spare.
/// 2. The task is inside its user closure (`root_fp` set).
/// 3. *Preemption*: the PC is in user code ([`Class::User`]), and so is the
///    return address at `[sp]` when it is one the map knows (a function that
///    has not pushed its frame record yet returns through it).
/// 4. *Preemption*: every return address on the frame-pointer chain up to
///    `run_user` is in user code. The chain must be 8-aligned, inside the
///    stack, strictly increasing, at most [`MAX_FRAMES`] long.
/// 5. *Sync-wait switch*: the PC is libc's `syscall` instruction with a
///    `FUTEX_WAIT` pending (the kernel rewound the call to restart it) or
///    just past it with `EINTR` (a timed wait), `[sp]` returns into std's
///    sync code ([`Class::SyncWait`] or [`Class::SyncApi`]), and no return
///    address on the chain is denied: above the wait only user code and
///    std::sync's front ends may appear. Resuming re-runs the futex call,
///    which re-checks the futex word (`src/preempt/README.md`, section 3.2).
/// 6. *Syscall switch*: the PC is the `syscall` instruction of one of
///    libc's thin wrappers (`read`, `write`, `clock_nanosleep`, `accept`,
///    ... in `wrappers.rs`) with the call rewound for restart, or just past
///    it with `EINTR`; stepping out of the wrapper frames with libc's CFI
///    reaches a return address into user code or into std's thin blocking
///    front ends ([`Class::BlockingApi`]), and every return address on the
///    chain above is one of those two. Resuming restarts the call or
///    returns `EINTR`, exactly what the signal alone would have caused
///    (section 3.3).
///
/// # Safety
/// `stack.lo..stack.hi` must be readable memory for the whole call: the
/// interrupted task's own stack (mapped while the task exists; the handler
/// runs on it), or a test's buffer. The check reads only words it has
/// bounded inside that range.
pub(crate) unsafe fn check(map: &CodeMap, at: &Interrupted, stack: &TaskStack) -> Verdict {
    if at.sp < stack.lo.saturating_add(ROOM) || at.sp.saturating_add(8) > stack.hi {
        return Verdict::NotOnTaskStack;
    }
    if stack.root_fp == 0 {
        // Not inside the user's closure (starting up or finishing): runtime code.
        return Verdict::PcUnsafe;
    }
    if in_futex_wait(map, at) {
        // std's sync code calls libc's `syscall()` itself (the futex wait is
        // inlined into std::sys::sync, or further into std::sync's
        // `Barrier::wait`): never user code, never the thread parker.
        // SAFETY: lo + ROOM <= sp and sp + 8 <= hi (checked above), inside
        // the readable range our caller vouches for.
        let caller = map.class(call_site(unsafe { read(at.sp) }));
        if caller != Class::SyncWait && caller != Class::SyncApi {
            return Verdict::PcUnsafe;
        }
        // SAFETY: our caller's promise on `stack`, passed on.
        return match unsafe { walk(at, stack, |ra| map.class(ra) != Class::Denied) } {
            Verdict::Safe => Verdict::SyncWait,
            v => v,
        };
    }
    // SAFETY: our caller's promise on `stack`, passed on.
    if let Some(v) = unsafe { in_blocking_call(map, at, stack) } {
        return v;
    }
    if map.class(at.pc) != Class::User {
        return Verdict::PcUnsafe;
    }
    // A function that has not set up its frame record yet (its first
    // instructions, or all of a shrink-wrapped loop that only pushes `rbp`
    // on a slow path) has its return address at [sp], and `rbp` still holds
    // its caller's frame: check that address too if it is code at all (a
    // false "unsafe" only defers). Exception: when `rbp` is the root frame,
    // the caller is `run_user` itself, the boundary whose return address
    // needs no check; user closures inlined into a vtable shim look exactly
    // like that.
    // SAFETY: sp is inside the stack (checked at the top).
    let at_sp = unsafe { read(at.sp) };
    if at.fp != stack.root_fp
        && map
            .known(call_site(at_sp))
            .is_some_and(|c| c != Class::User)
    {
        return Verdict::FrameUnsafe;
    }
    // SAFETY: our caller's promise on `stack`, passed on.
    unsafe { walk(at, stack, |ra| map.class(ra) == Class::User) }
}

/// Whether `at` is stopped on libc's `syscall` instruction in a futex wait.
fn in_futex_wait(map: &CodeMap, at: &Interrupted) -> bool {
    let insn = map.syscall_insn();
    if insn == 0 {
        return false;
    }
    // `syscall` is two bytes long. A restartable call interrupted by a
    // handled signal is rewound onto it with rax = the call number; a timed
    // futex wait (ERESTART_RESTARTBLOCK) returns -EINTR just past it.
    let pending = at.pc == insn && at.rax == libc::SYS_futex as usize;
    let eintr = at.pc == insn + 2 && at.rax as isize == -(libc::EINTR as isize);
    let cmd = at.rsi as i32 & !(libc::FUTEX_PRIVATE_FLAG | libc::FUTEX_CLOCK_REALTIME);
    (pending || eintr) && (cmd == libc::FUTEX_WAIT || cmd == libc::FUTEX_WAIT_BITSET)
}

/// Rule 6: `None` if `at` is not stopped in one of libc's wrappers'
/// `syscall` instructions, else the verdict.
///
/// # Safety
/// As for [`check`]: `stack.lo..stack.hi` is readable.
unsafe fn in_blocking_call(map: &CodeMap, at: &Interrupted, stack: &TaskStack) -> Option<Verdict> {
    let w = map.wrappers();
    // As in rule 5: rewound onto the instruction to restart, or just past
    // it with EINTR. Past it with any other value, the call has returned.
    let pending = w.is_syscall(at.pc);
    let eintr = at.rax as isize == -(libc::EINTR as isize) && w.is_syscall(at.pc.wrapping_sub(2));
    if !pending && !eintr {
        return None;
    }
    // Step out of the wrapper (and a wrapper it was called from, such as
    // `nanosleep` around `clock_nanosleep`) with the rows of libc's CFI.
    let (mut pc, mut sp, mut fp) = (at.pc, at.sp, at.fp);
    for _ in 0..4 {
        let Some(frame) = w.frame(pc) else {
            return Some(Verdict::PcUnsafe);
        };
        let slot = sp.saturating_add(frame.ra_off);
        if slot.saturating_add(8) > stack.hi {
            return Some(Verdict::NotOnTaskStack);
        }
        if let Some(off) = frame.rbp_off {
            // Saved below the return address, so inside the stack too.
            // SAFETY: sp <= sp + off < slot + 8 <= hi, inside the stack.
            fp = unsafe { read(sp + off) };
        }
        // SAFETY: slot + 8 <= hi (checked above) and slot >= sp, which is
        // inside the stack.
        let ra = unsafe { read(slot) };
        sp = slot + 8;
        if !w.contains(call_site(ra)) {
            if !matches!(map.class(call_site(ra)), Class::User | Class::BlockingApi) {
                return Some(Verdict::FrameUnsafe);
            }
            // `fp` is now the caller's frame record: `rbp` as the wrapper
            // found it, from the register or from where the CFI says the
            // wrapper saved it.
            let above = Interrupted { sp, fp, ..*at };
            // SAFETY: our caller's promise on `stack`, passed on.
            let v = unsafe {
                walk(&above, stack, |ra| {
                    matches!(map.class(ra), Class::User | Class::BlockingApi)
                })
            };
            return Some(match v {
                Verdict::Safe => Verdict::SyscallWait,
                v => v,
            });
        }
        pc = call_site(ra);
    }
    Some(Verdict::PcUnsafe)
}

/// Walk the frame-pointer chain from `at` up to the root frame; every return
/// address must satisfy `ok`.
///
/// # Safety
/// As for [`check`]: `stack.lo..stack.hi` is readable.
unsafe fn walk(at: &Interrupted, stack: &TaskStack, ok: impl Fn(usize) -> bool) -> Verdict {
    let mut fp = at.fp;
    let mut prev = at.sp;
    for _ in 0..MAX_FRAMES {
        if fp >= stack.root_fp {
            return Verdict::Safe;
        }
        if fp < prev || !fp.is_multiple_of(8) || fp + 16 > stack.hi {
            return Verdict::BrokenChain;
        }
        // SAFETY: sp <= prev <= fp and fp + 16 <= hi (checked just above).
        let next = unsafe { read(fp) };
        if next == stack.root_fp {
            // This frame's caller is `run_user`, kvant's boundary frame: the
            // return address points into it and needs no check.
            return Verdict::Safe;
        }
        // SAFETY: fp + 16 <= hi, as above.
        if !ok(call_site(unsafe { read(fp + 8) })) {
            return Verdict::FrameUnsafe;
        }
        if next <= fp {
            return Verdict::BrokenChain;
        }
        prev = fp;
        fp = next;
    }
    Verdict::BrokenChain
}

/// The call instruction a return address returns from. A return address is
/// the instruction *after* the call, which can belong to the next inlined
/// scope (a `drop` inlined right after the call) or, after a call to a
/// function that never returns, to the next function altogether; the byte
/// before it is always inside the call (what debuggers look up, too).
#[inline]
fn call_site(ret: usize) -> usize {
    ret.wrapping_sub(1)
}

/// One word of the interrupted stack.
///
/// # Safety
/// `addr..addr + 8` lies inside the readable range `check`'s caller vouched
/// for (callers bound it against the stack's `sp` and `hi` first).
#[inline]
unsafe fn read(addr: usize) -> usize {
    // SAFETY: the function's contract.
    unsafe { (addr as *const usize).read_volatile() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic task stack: `depth` frame records chained upward from the
    /// interrupted frame to the root, every return address `ret`.
    struct Fake {
        mem: Vec<usize>,
        at: Interrupted,
        stack: TaskStack,
    }

    fn fake(depth: usize, pc: usize, ret: usize) -> Fake {
        let below = ROOM / 8 + 8;
        let mut mem = vec![0usize; below + 2 * depth + 8];
        let base = mem.as_ptr() as usize;
        let addr = |i: usize| base + 8 * i;
        let first = below + 2;
        mem[below] = ret; // [sp]
        for k in 0..depth {
            let rec = first + 2 * k;
            mem[rec] = addr(rec + 2);
            mem[rec + 1] = ret;
        }
        let root = first + 2 * depth;
        let hi = addr(mem.len());
        Fake {
            at: Interrupted {
                pc,
                sp: addr(below),
                fp: addr(first),
                rax: 0,
                rsi: 0,
            },
            stack: TaskStack {
                lo: base,
                hi,
                root_fp: addr(root),
            },
            mem,
        }
    }

    fn user_and_denied(map: &CodeMap) -> (usize, usize) {
        let user = map.address_of(Class::User).expect("some user-class code");
        // kvant's own code is denied.
        let denied = check as unsafe fn(&CodeMap, &Interrupted, &TaskStack) -> Verdict as usize;
        assert_eq!(map.class(denied), Class::Denied);
        (user, denied)
    }

    /// `check` on a fake stack, whose range is the fake's own live buffer.
    fn chk(map: &CodeMap, f: &Fake) -> Verdict {
        // SAFETY: `f.stack` describes `f.mem`, alive for this call.
        unsafe { check(map, &f.at, &f.stack) }
    }

    #[test]
    fn synthetic_stacks() {
        let map = CodeMap::global();
        let (user, denied) = user_and_denied(map);
        let f = fake(8, user, user + 1);
        assert_eq!(chk(map, &f), Verdict::Safe);
        // The PC in denied code.
        let f = fake(8, denied, user + 1);
        assert_eq!(chk(map, &f), Verdict::PcUnsafe);
        // A denied frame anywhere on the chain.
        let mut f = fake(8, user, user + 1);
        let i = f.mem.len() - 8 - 2 * 3 + 1;
        f.mem[i] = denied + 1;
        assert_eq!(chk(map, &f), Verdict::FrameUnsafe);
        // A chain that goes backwards.
        let mut f = fake(8, user, user + 1);
        let i = f.mem.len() - 8 - 2 * 4;
        f.mem[i] = f.at.sp;
        assert_eq!(chk(map, &f), Verdict::BrokenChain);
        // Outside the user's closure, or without room for the handler.
        let mut f = fake(8, user, user + 1);
        f.stack.root_fp = 0;
        assert_eq!(chk(map, &f), Verdict::PcUnsafe);
        let mut f = fake(8, user, user + 1);
        f.at.sp = f.stack.lo + 8;
        assert_eq!(chk(map, &f), Verdict::NotOnTaskStack);
    }

    /// What the check costs the handler per signal, by stack depth. Printed
    /// (`cargo test --release --lib safepoint_cost -- --nocapture`).
    #[test]
    fn safepoint_cost() {
        let map = CodeMap::global();
        let (user, _) = user_and_denied(map);
        for depth in [4, 16, 64] {
            let f = fake(depth, user, user + 1);
            let n = 20_000;
            let t = std::time::Instant::now();
            for _ in 0..n {
                assert_eq!(
                    // SAFETY: the fake's stack is its own live buffer.
                    unsafe { check(map, std::hint::black_box(&f.at), &f.stack) },
                    Verdict::Safe
                );
            }
            let ns = t.elapsed().as_nanos() as f64 / n as f64;
            eprintln!(
                "safepoint::check, {depth} user frames, {} segments: {ns:.0} ns",
                map.segments()
            );
        }
    }
}
