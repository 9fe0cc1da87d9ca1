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

/// Stack the handler still needs below the interrupted SP: the kernel's
/// signal frame (~3.5 KiB with AVX-512 state) is already there, plus the rest
/// of the handler and the switch, with margin.
pub(crate) const ROOM: usize = 6 * 1024;

/// Frames walked at most; deeper stacks defer (bounded handler time).
const MAX_FRAMES: usize = 128;

/// Registers of the interrupted context that the decision needs.
pub(crate) struct Interrupted {
    pub pc: usize,
    pub sp: usize,
    pub fp: usize,
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

/// Why a preemption was deferred (for diagnostics and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Safe,
    NotOnTaskStack,
    PcUnsafe,
    FrameUnsafe,
    BrokenChain,
}

/// Decide whether `at` is a safe point of a task running on `stack`.
pub(crate) fn check(map: &CodeMap, at: &Interrupted, stack: &TaskStack) -> Verdict {
    if at.sp < stack.lo.saturating_add(ROOM) || at.sp >= stack.hi {
        return Verdict::NotOnTaskStack;
    }
    if map.must_defer(at.pc) {
        return Verdict::PcUnsafe;
    }
    if !map.has_symbols() {
        // Without symbols only the PC check is possible (announced at start).
        return Verdict::Safe;
    }
    if stack.root_fp == 0 {
        // Not inside the user's closure (starting up or finishing): runtime code.
        return Verdict::PcUnsafe;
    }
    // A function that has not set up its frame record yet (its first
    // instructions, or all of a shrink-wrapped loop that only pushes `rbp`
    // on a slow path) has its return address at [sp], and `rbp` still holds
    // its caller's frame: check that address too (a false "unsafe" only
    // defers). Exception: when `rbp` is the root frame, the caller is
    // `run_user` itself, the boundary whose return address needs no check;
    // user closures inlined into a vtable shim look exactly like that.
    if at.fp != stack.root_fp && map.is_denied(read(at.sp)) {
        return Verdict::FrameUnsafe;
    }
    let mut fp = at.fp;
    let mut prev = at.sp;
    for _ in 0..MAX_FRAMES {
        if fp >= stack.root_fp {
            return Verdict::Safe;
        }
        if fp < prev || !fp.is_multiple_of(8) || fp + 16 > stack.hi {
            return Verdict::BrokenChain;
        }
        let next = read(fp);
        if next == stack.root_fp {
            // This frame's caller is `run_user`, kvant's boundary frame: the
            // return address points into it and needs no check.
            return Verdict::Safe;
        }
        if map.must_defer(read(fp + 8)) {
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

#[inline]
fn read(addr: usize) -> usize {
    // SAFETY: every caller checked `sp <= addr` and `addr + 8 <= hi` for the
    // running task's stack, which is mapped read-write while the task exists.
    unsafe { (addr as *const usize).read_volatile() }
}
