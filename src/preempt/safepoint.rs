//! Is the interrupted instruction a safe place to switch the task out?
//!
//! Switching out is always *memory*-safe (the task's registers are in the
//! kernel's signal frame on its own stack). What can go wrong is *logical*:
//! the interrupted code may hold something another task on the same worker
//! will need, e.g. std's stdout `RefCell` mid-`println!`, a glibc malloc arena
//! lock, a crate's per-thread span stack, the runtime's own queues. The next
//! task then panics, deadlocks or silently sees the wrong state.
//!
//! So we look at every frame on the task's stack, not just the PC: the PC can
//! be in a user `Debug::fmt` impl while a frame further up holds the stdout
//! lock. The frames are found with the executable's own unwind tables
//! (`unwind.rs`), never with frame pointers, which most builds do not keep:
//! from the interrupted frame up to the exact frame `run_user` called, every
//! address must be code the map allows *now* (`codemap.rs`: user code of an
//! allowed crate, or std code outside the deny rules of `symbols.rs`).
//! Anything we cannot vouch for (no unwind row, a slot outside the stack, a
//! walk that does not end at the root) means "not here": defer and retry.
//!
//! Everything here runs inside the signal handler: no allocation, no locks,
//! reads only within the validated bounds of the task stack.

use super::codemap::CodeMap;
use super::symbols::Class;
use super::unwind::Regs;

/// Stack the handler still needs below the interrupted SP: the kernel's
/// signal frame is already there, plus the rest of the handler and the
/// switch, with margin (6 KiB).
pub(crate) const ROOM: usize = super::SIGNAL_FRAME + 2 * 1024;

/// Frames walked at most; deeper stacks defer (bounded handler time).
const MAX_FRAMES: usize = 128;

/// How far `run_user`'s marker may lie above the return-address slot of
/// the frame it called: the size of `run_user`'s own frame, with margin.
const ROOT_FRAME: usize = 4096;

/// Registers of the interrupted context that the decision needs.
#[derive(Clone, Copy)]
pub(crate) struct Interrupted {
    pub pc: usize,
    pub sp: usize,
    pub fp: usize,
    /// Syscall number (restart pending) or result, for the sync-wait rule.
    pub rax: usize,
    /// The futex address, for the sync-wait rule (`syscall`'s 1st argument).
    pub rdi: usize,
    /// The futex operation, for the sync-wait rule (`syscall`'s 2nd argument).
    pub rsi: usize,
}

/// Where the task's stack and user frames are.
pub(crate) struct TaskStack {
    /// Lowest usable address.
    pub lo: usize,
    /// Highest address (exclusive).
    pub hi: usize,
    /// Address of a local of `run_user`, the boundary between kvant's task
    /// entry (above) and the user's closure (below); 0 outside the closure.
    pub root_mark: usize,
    /// The interrupted thread's static thread-local storage `[lo, hi)`: a
    /// futex word there belongs to the thread, not to a lock (rule 5).
    pub tls: (usize, usize),
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
/// 2. The task is inside its user closure (`root_mark` set).
/// 3. *Preemption*: the PC is preemptible code ([`CodeMap::class_now`] is
///    [`Class::User`]: user code of an allowed crate, or std code outside
///    the deny rules).
/// 4. *Preemption*: stepping out frame by frame with the executable's unwind
///    tables reaches the frame `run_user` called, at its exact slot (the
///    return address is into `run_user` and lies just below `run_user`'s
///    marker), and every return address on the way is preemptible code.
///    A frame without an unwind row, a slot outside the stack, more than
///    [`MAX_FRAMES`] frames: defer.
/// 5. *Sync-wait switch*: the PC is libc's `syscall` instruction with a
///    `FUTEX_WAIT` pending (the kernel rewound the call to restart it) or
///    just past it with `EINTR` (a timed wait), on a futex word outside the
///    thread's own thread-local storage; `[sp]` returns into std's sync
///    code ([`Class::SyncWait`] or [`Class::SyncApi`]), and the walk of
///    rule 4 from there finds no denied code: above the wait only user code
///    of allowed crates and std::sync's front ends may appear. Resuming
///    re-runs the futex call, which re-checks the futex word
///    (`src/preempt/README.md`, section 3.2).
/// 6. *Syscall switch*: the PC is the `syscall` instruction of one of
///    libc's thin wrappers (`read`, `write`, `clock_nanosleep`, `accept`,
///    ... in `wrappers.rs`) with the call rewound for restart, or just past
///    it with `EINTR`; stepping out of the wrapper frames with libc's CFI
///    reaches a return address into user code or into std's thin blocking
///    front ends ([`Class::BlockingApi`]), and the walk of rule 4 from
///    there finds only those two. Resuming restarts the call or returns
///    `EINTR`, exactly what the signal alone would have caused (section
///    3.3).
///
/// `culprit` gets the address that made the point unsafe (the PC, or the
/// call site of the first frame that is not preemptible), for diagnostics.
///
/// # Safety
/// `stack.lo..stack.hi` must be readable memory for the whole call: the
/// interrupted task's own stack (mapped while the task exists; the handler
/// runs on it), or a test's buffer. The check reads only words it has
/// bounded inside that range.
pub(crate) unsafe fn check(
    map: &CodeMap,
    at: &Interrupted,
    stack: &TaskStack,
    culprit: &mut usize,
) -> Verdict {
    *culprit = at.pc;
    if at.sp < stack.lo.saturating_add(ROOM) || at.sp.saturating_add(8) > stack.hi {
        return Verdict::NotOnTaskStack;
    }
    if stack.root_mark == 0 {
        // Not inside the user's closure (starting up or finishing): runtime code.
        return Verdict::PcUnsafe;
    }
    if in_futex_wait(map, at) {
        // A futex word in the thread's own TLS is a per-thread wait (a
        // thread-local lock or latch): the next task on this thread would
        // find it in whatever state this one left it.
        if (stack.tls.0..stack.tls.1).contains(&at.rdi) {
            return Verdict::PcUnsafe;
        }
        // std's sync code calls libc's `syscall()` itself (the futex wait is
        // inlined into std::sys::sync, or further into std::sync's
        // `Barrier::wait`): never user code, never the thread parker.
        // `syscall()` keeps no frame, so its return address is at [sp].
        // SAFETY: lo + ROOM <= sp and sp + 8 <= hi (checked above), inside
        // the readable range our caller vouches for.
        let ret = unsafe { read(at.sp) };
        let caller = map.class_now(call_site(ret));
        if caller != Class::SyncWait && caller != Class::SyncApi {
            return Verdict::PcUnsafe;
        }
        let above = Regs {
            pc: call_site(ret),
            sp: at.sp + 8,
            fp: at.fp,
        };
        // SAFETY: our caller's promise on `stack`, passed on.
        return match unsafe { walk(map, above, stack, |c| c != Class::Denied, culprit) } {
            Verdict::Safe => Verdict::SyncWait,
            v => v,
        };
    }
    // SAFETY: our caller's promise on `stack`, passed on.
    if let Some(v) = unsafe { in_blocking_call(map, at, stack, culprit) } {
        return v;
    }
    if map.class_now(at.pc) != Class::User {
        return Verdict::PcUnsafe;
    }
    let regs = Regs {
        pc: at.pc,
        sp: at.sp,
        fp: at.fp,
    };
    // SAFETY: our caller's promise on `stack`, passed on.
    unsafe { walk(map, regs, stack, |c| c == Class::User, culprit) }
}

/// Whether `at` is stopped on libc's `syscall` instruction in a futex wait.
pub(super) fn in_futex_wait(map: &CodeMap, at: &Interrupted) -> bool {
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
unsafe fn in_blocking_call(
    map: &CodeMap,
    at: &Interrupted,
    stack: &TaskStack,
    culprit: &mut usize,
) -> Option<Verdict> {
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
    let mut regs = Regs {
        pc: at.pc,
        sp: at.sp,
        fp: at.fp,
    };
    for _ in 0..4 {
        // SAFETY: `regs.sp` is the interrupted SP (inside the stack, checked
        // by `check`) or a CFA `step` bounded by `stack.hi`; our caller
        // vouches for `[lo, hi)`.
        let Some(step) = (unsafe { w.step(regs, stack.hi) }) else {
            return Some(Verdict::PcUnsafe);
        };
        // The wrapper's caller, as the wrapper found it: `rbp` from the
        // register or from where the CFI says the wrapper saved it.
        regs = Regs {
            pc: call_site(step.caller.pc),
            ..step.caller
        };
        if !w.contains(regs.pc) {
            let blocking = |c| matches!(c, Class::User | Class::BlockingApi);
            if !blocking(map.class_now(regs.pc)) {
                *culprit = regs.pc;
                return Some(Verdict::FrameUnsafe);
            }
            // SAFETY: our caller's promise on `stack`, passed on.
            let v = unsafe { walk(map, regs, stack, blocking, culprit) };
            return Some(match v {
                Verdict::Safe => Verdict::SyscallWait,
                v => v,
            });
        }
    }
    Some(Verdict::PcUnsafe)
}

/// Step out of the frames from `at` (whose PC was checked by the caller)
/// with the unwind tables, up to the frame `run_user` called; every return
/// address on the way must have a class `ok` accepts (as the handler must
/// treat it now: `CodeMap::class_now`).
///
/// Only the exact root proves anything: a return address into `run_user`
/// whose slot lies just below `run_user`'s marker. Any doubt defers.
///
/// # Safety
/// As for [`check`]: `stack.lo..stack.hi` is readable.
unsafe fn walk(
    map: &CodeMap,
    at: Regs,
    stack: &TaskStack,
    ok: impl Fn(Class) -> bool,
    culprit: &mut usize,
) -> Verdict {
    let mut at = at;
    for _ in 0..MAX_FRAMES {
        // SAFETY: `at.sp` is inside the stack: the interrupted SP (checked
        // by `check`) or a CFA `step` bounded by `stack.hi`; our caller
        // vouches for `[lo, hi)`.
        let Some(step) = (unsafe { map.unwind().step(at, stack.hi) }) else {
            return Verdict::BrokenChain;
        };
        let ret = step.caller.pc;
        if map.is_root(ret) {
            let exact = step.slot < stack.root_mark && stack.root_mark - step.slot <= ROOT_FRAME;
            return if exact {
                Verdict::Safe
            } else {
                Verdict::BrokenChain
            };
        }
        if !ok(map.class_now(call_site(ret))) {
            *culprit = call_site(ret);
            return Verdict::FrameUnsafe;
        }
        at = Regs {
            pc: call_site(ret),
            ..step.caller
        };
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

    /// A synthetic task stack of frame-pointer frames, as the unwind rows of
    /// frame-pointer code describe them (`CFA = rbp + 16`, the caller's
    /// `rbp` at `CFA - 16`): `depth` records chained upward from the
    /// interrupted frame, every return address `ret`, and a last return
    /// address into `run_user` just below the root marker.
    struct Fake {
        mem: Vec<usize>,
        at: Interrupted,
        stack: TaskStack,
        /// Index of the last record's return-address word.
        last_ret: usize,
    }

    fn fake(map: &CodeMap, depth: usize, pc: usize, ret: usize) -> Fake {
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
        let last = first + 2 * (depth - 1);
        mem[last + 1] = map.root_address().expect("run_user is in the map") + 1;
        let hi = addr(mem.len());
        Fake {
            at: Interrupted {
                pc,
                sp: addr(below),
                fp: addr(first),
                rax: 0,
                rdi: 0,
                rsi: 0,
            },
            stack: TaskStack {
                lo: base,
                hi,
                root_mark: addr(last + 3),
                tls: (0, 0),
            },
            last_ret: last + 1,
            mem,
        }
    }

    /// A frame-pointer point in preemptible code, and denied code.
    fn user_and_denied(map: &CodeMap) -> (usize, usize) {
        // The unit tests run in kvant's own test binary, where every crate
        // but std's family needs allowing: gimli is pure parsing.
        assert!(map.allow_crate("gimli"));
        let user = map
            .unwind()
            .frame_pointer_pc(|pc| {
                map.class_now(pc) == Class::User && map.class_now(pc + 1) == Class::User
            })
            .expect("frame-pointer code of an allowed crate");
        // kvant's own code is denied.
        let denied = map.address_of(Class::Denied).expect("denied code");
        assert_eq!(map.class(denied), Class::Denied);
        (user, denied)
    }

    /// `check` on a fake stack, whose range is the fake's own live buffer.
    fn chk(map: &CodeMap, f: &Fake) -> Verdict {
        // SAFETY: `f.stack` describes `f.mem`, alive for this call.
        unsafe { check(map, &f.at, &f.stack, &mut 0) }
    }

    #[test]
    fn synthetic_stacks() {
        let map = CodeMap::global();
        let (user, denied) = user_and_denied(map);
        let f = fake(map, 8, user, user + 1);
        assert_eq!(chk(map, &f), Verdict::Safe);
        // The PC in denied code.
        let f = fake(map, 8, denied, user + 1);
        assert_eq!(chk(map, &f), Verdict::PcUnsafe);
        // A denied frame anywhere on the chain.
        let mut f = fake(map, 8, user, user + 1);
        let i = f.last_ret - 2 * 3;
        f.mem[i] = denied + 1;
        assert_eq!(chk(map, &f), Verdict::FrameUnsafe);
        // A chain that goes backwards: the next frame's CFA below its SP.
        let mut f = fake(map, 8, user, user + 1);
        let i = f.last_ret - 1 - 2 * 4;
        f.mem[i] = f.at.sp;
        assert_eq!(chk(map, &f), Verdict::BrokenChain);
        // Only the exact root proves anything: a return into `run_user`
        // whose slot is not just below the marker, or garbage in `rbp`
        // pointing past the root (what code without frame pointers leaves).
        let mut f = fake(map, 8, user, user + 1);
        f.stack.root_mark = f.stack.hi + 8 * 1024;
        assert_eq!(chk(map, &f), Verdict::BrokenChain);
        let mut f = fake(map, 8, user, user + 1);
        f.at.fp = f.stack.hi - 8;
        assert_ne!(chk(map, &f), Verdict::Safe);
        let mut f = fake(map, 8, user, user + 1);
        f.at.fp = usize::MAX - 8;
        assert_ne!(chk(map, &f), Verdict::Safe);
        // A crate that is not allowed is denied wherever it appears.
        let mut f = fake(map, 8, user, user + 1);
        let i = f.last_ret - 2;
        f.mem[i] = map.address_of(Class::Denied).unwrap() + 1;
        assert_eq!(chk(map, &f), Verdict::FrameUnsafe);
        // Outside the user's closure, or without room for the handler.
        let mut f = fake(map, 8, user, user + 1);
        f.stack.root_mark = 0;
        assert_eq!(chk(map, &f), Verdict::PcUnsafe);
        let mut f = fake(map, 8, user, user + 1);
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
            let f = fake(map, depth, user, user + 1);
            let n = 20_000;
            let t = std::time::Instant::now();
            for _ in 0..n {
                assert_eq!(
                    // SAFETY: the fake's stack is its own live buffer.
                    unsafe { check(map, std::hint::black_box(&f.at), &f.stack, &mut 0) },
                    Verdict::Safe
                );
            }
            let ns = t.elapsed().as_nanos() as f64 / n as f64;
            eprintln!(
                "safepoint::check, {depth} user frames, {} segments, {} unwind rows: {ns:.0} ns",
                map.segments(),
                map.unwind().rows(),
            );
        }
    }
}
