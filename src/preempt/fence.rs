//! An asymmetric fence: lets the monitor look at a worker's running task
//! without the worker paying for a locked instruction at every switch.
//!
//! The worker ends a slice with plain stores (`task = 0`) followed by a
//! plain load of `hold`; the monitor stores `hold`, calls [`heavy`], then
//! loads `task`. `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` makes every
//! running thread of the process execute a full memory barrier before it
//! returns, so the pair behaves as if both sides had fenced (Dekker's
//! store-load pattern; folly's `asymmetric_thread_fence_heavy` and
//! liburcu's membarrier flavour rest on the same guarantee). The worker's side
//! is only a compiler fence: `compiler_fence` keeps the compiler from
//! reordering, the kernel's barrier keeps the CPU from doing so.

use std::sync::atomic::{AtomicU8, Ordering};

const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

/// 0: not tried, 1: registered, 2: unavailable (old kernel, seccomp).
static STATE: AtomicU8 = AtomicU8::new(0);

/// Register the process for expedited barriers (once; cheap after that).
pub(crate) fn register() {
    if STATE.load(Ordering::Relaxed) != 0 {
        return;
    }
    // SAFETY: membarrier takes plain integers and touches no user memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
            0,
            0,
        )
    };
    STATE.store(if r == 0 { 1 } else { 2 }, Ordering::Relaxed);
}

/// A full barrier on every running thread of the process; false if the
/// kernel cannot do it (then nothing may rely on the pairing).
pub(crate) fn heavy() -> bool {
    if STATE.load(Ordering::Relaxed) != 1 {
        return false;
    }
    // SAFETY: as above.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) };
    r == 0
}
