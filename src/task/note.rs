//! What a task is waiting for, and where it switched out: the notes a task
//! dump reads (`runtime/dump.rs`). Written by the task itself (single
//! writer) just before it waits or switches, read by a dumping thread with
//! relaxed loads: a dump is a snapshot, and a note that changes under it is
//! only a little stale.
//!
//! Each note costs a few plain stores on a path that is about to switch
//! stacks anyway (~20 ns); no clock is read on any switch. The time a
//! parked task has waited comes from a stamp the worker takes when the park
//! completes (`stamp_park`), from the clock the monitor publishes at each
//! of its passes: it runs while any worker does, so the stamp is late by
//! at most one pass (a few ms). Reading the clock at each park instead
//! cost 10-20 ns of a 130 ns channel round trip.

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

/// A task's notes. Lives in its header.
#[derive(Default)]
pub(crate) struct Notes {
    kind: AtomicU8,
    obj: AtomicUsize,
    /// Clock ticks when the last park completed (0: never parked).
    parked_at: AtomicU64,
    /// Where the task was when it last switched out: `pc`, `sp`, `fp` (0:
    /// not known). From the switch itself, or from the interrupted
    /// registers when the signal handler switched it out.
    pc: AtomicUsize,
    sp: AtomicUsize,
    fp: AtomicUsize,
    /// Why it last switched out (`Switch as u8`).
    why: AtomicU8,
}

impl Notes {
    /// The task is about to wait for `on`.
    #[inline]
    pub(crate) fn waiting(&self, on: WaitingOn) {
        let (kind, obj) = on.encode();
        self.kind.store(kind, Ordering::Relaxed);
        self.obj.store(obj, Ordering::Relaxed);
    }

    pub(crate) fn waiting_on(&self) -> WaitingOn {
        WaitingOn::decode(
            self.kind.load(Ordering::Relaxed),
            self.obj.load(Ordering::Relaxed),
        )
    }

    /// A park completed now (the worker, after the switch).
    #[inline]
    pub(crate) fn stamp_park(&self, ticks: u64) {
        self.parked_at.store(ticks, Ordering::Relaxed);
    }

    pub(crate) fn parked_at(&self) -> u64 {
        self.parked_at.load(Ordering::Relaxed)
    }

    /// Where the task switches out.
    #[inline(always)]
    pub(crate) fn switched_at(&self, pc: usize, sp: usize, fp: usize, why: Switch) {
        self.why.store(why as u8, Ordering::Relaxed);
        self.pc.store(pc, Ordering::Relaxed);
        self.sp.store(sp, Ordering::Relaxed);
        self.fp.store(fp, Ordering::Relaxed);
    }

    /// Why the task last switched out.
    pub(crate) fn last_switch(&self) -> Switch {
        match self.why.load(Ordering::Relaxed) {
            x if x == Switch::Yield as u8 => Switch::Yield,
            x if x == Switch::Preempted as u8 => Switch::Preempted,
            x if x == Switch::SyncWait as u8 => Switch::SyncWait,
            _ => Switch::Park,
        }
    }

    /// `(pc, sp, fp)` of the last switch out, if known.
    pub(crate) fn switch_point(&self) -> Option<(usize, usize, usize)> {
        let pc = self.pc.load(Ordering::Relaxed);
        let sp = self.sp.load(Ordering::Relaxed);
        (pc != 0 && sp != 0).then(|| (pc, sp, self.fp.load(Ordering::Relaxed)))
    }
}

/// Note what the running task (if any) is about to wait for.
#[inline]
pub(crate) fn note_wait(on: WaitingOn) {
    if let Some(t) = super::current::current_ptr() {
        // SAFETY: CURRENT points at the task running on this thread, which
        // the worker keeps alive for the whole slice.
        unsafe { t.as_ref() }.notes.waiting(on);
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
