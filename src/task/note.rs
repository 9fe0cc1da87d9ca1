//! What a task is waiting for, and where it switched out: the notes a task
//! dump reads (`runtime/dump.rs`). Written by the task itself (single
//! writer) just before it waits or switches, copied by a dumping thread:
//! a dump is a snapshot, and a note that changes under it is only a little
//! stale.
//!
//! Each note costs a few plain stores on a path that is about to switch
//! stacks anyway; no clock is read on any switch. How long a task
//! has been switched out comes from a stamp the worker takes after the
//! switch (`stamp_switch`), from the clock the monitor publishes at each
//! of its passes: it runs while any worker does, so the stamp is late by
//! at most one pass (a few ms). Reading the clock at each park instead
//! was a visible share of a channel round trip (measured: BENCHMARKS.md,
//! "Measured decisions").

use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

use super::TaskId;
use super::coroutine::Switch;

/// What a parked task waits for, as the dump names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitingOn {
    /// Not known (a wait kvant did not label).
    Unknown,
    /// `kvant::sleep` / `sleep_until`.
    Sleep,
    /// Joining the task with this id.
    Join(TaskId),
    /// A `JoinSet`'s next result.
    JoinSet,
    /// Locking the `kvant::sync::Mutex` at this address.
    Mutex(usize),
    /// Locking the `kvant::sync::RwLock` at this address.
    RwLock(usize),
    /// Waiting on the `kvant::sync::Condvar` at this address.
    Condvar(usize),
    /// Acquiring from the `kvant::sync::Semaphore` at this address.
    Semaphore(usize),
    /// At the `kvant::sync::Barrier` at this address.
    Barrier(usize),
    /// Waiting for the `kvant::sync::WaitGroup` at this address.
    WaitGroup(usize),
    /// Sending on the channel whose shared state is at this address.
    Send(usize),
    /// Receiving from the channel whose shared state is at this address.
    Recv(usize),
    /// In a `select!` / `Select` over several operations.
    Select,
    /// In `block_on_future`, for a future to wake it.
    Future,
    /// In `kvant::wait` / `wait_owned` for several tasks.
    Tasks,
}

impl WaitingOn {
    fn encode(self) -> (u8, usize) {
        match self {
            WaitingOn::Unknown => (0, 0),
            WaitingOn::Sleep => (1, 0),
            WaitingOn::Join(id) => (2, id.as_u64() as usize),
            WaitingOn::JoinSet => (3, 0),
            WaitingOn::Mutex(a) => (4, a),
            WaitingOn::RwLock(a) => (5, a),
            WaitingOn::Condvar(a) => (6, a),
            WaitingOn::Semaphore(a) => (7, a),
            WaitingOn::Barrier(a) => (8, a),
            WaitingOn::WaitGroup(a) => (9, a),
            WaitingOn::Send(a) => (10, a),
            WaitingOn::Recv(a) => (11, a),
            WaitingOn::Select => (12, 0),
            WaitingOn::Future => (13, 0),
            WaitingOn::Tasks => (14, 0),
        }
    }

    fn decode(kind: u8, obj: usize) -> WaitingOn {
        match kind {
            1 => WaitingOn::Sleep,
            2 => WaitingOn::Join(TaskId(obj as u64)),
            3 => WaitingOn::JoinSet,
            4 => WaitingOn::Mutex(obj),
            5 => WaitingOn::RwLock(obj),
            6 => WaitingOn::Condvar(obj),
            7 => WaitingOn::Semaphore(obj),
            8 => WaitingOn::Barrier(obj),
            9 => WaitingOn::WaitGroup(obj),
            10 => WaitingOn::Send(obj),
            11 => WaitingOn::Recv(obj),
            12 => WaitingOn::Select,
            13 => WaitingOn::Future,
            14 => WaitingOn::Tasks,
            _ => WaitingOn::Unknown,
        }
    }
}

/// A task's notes. They live at the very top of its stack, in
/// [`NOTES_BYTES`] kept above what the coroutine uses (see
/// `stack::Stack::top`), not in the header: every task that starts has
/// that page resident anyway, and the header (allocated, zeroed and freed
/// at every spawn) stays 48 bytes smaller.
///
/// Written only by the task itself while it runs on the stack, by the
/// signal handler on its behalf, or by the worker that holds its run
/// claim (`stamp_switch`). Read by a dump only as a copy taken with
/// `process_vm_readv` ([`Copy::from_words`]), never through a reference:
/// the stack may be handed to another task or unmapped meanwhile.
#[repr(C)]
pub(crate) struct Notes {
    /// `WaitingOn`'s kind (byte 0), the last `Switch` (byte 1): two bytes
    /// of one word, each stored alone (no read-modify-write on a switch).
    kind: AtomicU8,
    why: AtomicU8,
    _pad: [u8; 6],
    obj: AtomicUsize,
    /// Clock ticks (coarse) when it last switched out (0: never).
    since: AtomicU64,
    /// Where the task was when it last switched out (0: not known). From
    /// the switch itself, or from the interrupted registers when the
    /// signal handler switched it out.
    pc: AtomicUsize,
    sp: AtomicUsize,
    fp: AtomicUsize,
}

/// Bytes the notes take at the top of a task's stack.
pub(crate) const NOTES_BYTES: usize = std::mem::size_of::<Notes>();
/// The same, in words.
pub(crate) const NOTES_WORDS: usize = NOTES_BYTES / 8;

impl Notes {
    /// The notes of a task whose stack's usable top is `hi` (0: it has no
    /// stack yet).
    ///
    /// # Safety
    ///
    /// The caller is the task running on that stack, a signal handler
    /// interrupting it, or the holder of its run claim, so the stack is
    /// mapped and belongs to this task for as long as the reference lives.
    #[inline(always)]
    pub(crate) unsafe fn at<'a>(hi: usize) -> Option<&'a Notes> {
        // SAFETY: `hi` is the usable top of a live stack whose top
        // NOTES_BYTES are reserved for these notes (`Stack::top`), 8-byte
        // aligned; atomics make the handler's and the task's stores safe.
        (hi != 0).then(|| unsafe { &*(hi as *const Notes) })
    }

    /// A task starts on a stack another task may have used: forget its notes.
    pub(crate) fn clear(&self) {
        self.kind.store(0, Ordering::Relaxed);
        self.why.store(0, Ordering::Relaxed);
        self.obj.store(0, Ordering::Relaxed);
        self.since.store(0, Ordering::Relaxed);
        self.pc.store(0, Ordering::Relaxed);
        self.sp.store(0, Ordering::Relaxed);
        self.fp.store(0, Ordering::Relaxed);
    }

    /// The task is about to wait for `on`.
    #[inline]
    pub(crate) fn waiting(&self, on: WaitingOn) {
        let (kind, obj) = on.encode();
        self.kind.store(kind, Ordering::Relaxed);
        self.obj.store(obj, Ordering::Relaxed);
    }

    /// The task switched out at `ticks` (the worker, after the switch).
    #[inline]
    pub(crate) fn stamp_switch(&self, ticks: u64) {
        self.since.store(ticks, Ordering::Relaxed);
    }

    /// The task yields: its switch point is not noted (see `switch`).
    #[inline(always)]
    pub(crate) fn yielded(&self) {
        self.why.store(Switch::Yield as u8, Ordering::Relaxed);
    }

    /// Where the task switches out, and why.
    #[inline(always)]
    pub(crate) fn switched_at(&self, pc: usize, sp: usize, fp: usize, why: Switch) {
        self.why.store(why as u8, Ordering::Relaxed);
        self.pc.store(pc, Ordering::Relaxed);
        self.sp.store(sp, Ordering::Relaxed);
        self.fp.store(fp, Ordering::Relaxed);
    }
}

/// A copy of a task's notes, read by a dump.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Copy {
    words: [usize; NOTES_WORDS],
}

impl Copy {
    /// The notes as copied from the top of a task's stack.
    pub(crate) fn from_words(words: [usize; NOTES_WORDS]) -> Copy {
        Copy { words }
    }

    /// What the task last waited for.
    pub(crate) fn waiting_on(&self) -> WaitingOn {
        WaitingOn::decode((self.words[0] & 0xff) as u8, self.words[1])
    }

    /// Why the task last switched out.
    pub(crate) fn last_switch(&self) -> Switch {
        match ((self.words[0] >> 8) & 0xff) as u8 {
            x if x == Switch::Yield as u8 => Switch::Yield,
            x if x == Switch::Preempted as u8 => Switch::Preempted,
            x if x == Switch::SyncWait as u8 => Switch::SyncWait,
            _ => Switch::Park,
        }
    }

    /// Clock ticks (coarse) when it last switched out (0: never).
    pub(crate) fn switched_since(&self) -> u64 {
        self.words[2] as u64
    }

    /// `(pc, sp, fp)` of the last switch out, if known (not after a yield).
    pub(crate) fn switch_point(&self) -> Option<(usize, usize, usize)> {
        if self.last_switch() == Switch::Yield {
            return None;
        }
        let [_, _, _, pc, sp, fp] = self.words;
        (pc != 0 && sp != 0).then_some((pc, sp, fp))
    }
}

/// The registers where this code stands: a `pc` inside the caller (this
/// is always inlined), the stack pointer and the frame pointer there. The
/// executable's unwind tables describe the frame at that `pc` with that
/// `sp`, so a walk can start from it once the task is switched out.
#[inline(always)]
pub(crate) fn here() -> (usize, usize, usize) {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        let (pc, sp, fp): (usize, usize, usize);
        // SAFETY: reads the instruction pointer, rsp and rbp into three
        // registers; touches no memory and leaves the stack as it is.
        unsafe {
            std::arch::asm!(
                "lea {pc}, [rip]",
                "mov {sp}, rsp",
                "mov {fp}, rbp",
                pc = out(reg) pc,
                sp = out(reg) sp,
                fp = out(reg) fp,
                options(nomem, nostack, preserves_flags),
            );
        }
        (pc, sp, fp)
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        (0, 0, 0)
    }
}
