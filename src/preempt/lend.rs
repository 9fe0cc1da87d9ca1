//! Lending a worker: a thread blocked in a futex wait lets a stand-in
//! thread run the tasks pinned to it, and takes the worker back before its
//! task runs on.
//!
//! A task preempted on worker W is pinned to W's thread (it may hold the
//! address of one of that thread's thread-locals). If the next task on W
//! parks the thread on something only a pinned task can give, such as a
//! parking_lot guard a preempted task holds, or a `thread::park` whose
//! unpark a pinned task would send, W deadlocks: the waiter keeps the thread,
//! the holder may run nowhere else. Switching the waiter out is not sound
//! there (its parker's per-thread data is in a queue; a second task parking
//! on the thread would enqueue it twice: `README.md` §3.2).
//!
//! So the waiter keeps the thread, and the *worker* moves instead, as Go
//! hands a P to another M while its M is in a system call. The worker's
//! user code is guarded by one lock, the *group* lock: whoever holds it runs
//! W's tasks, as W (its slot, its counters, its pinned queue). W's own
//! thread holds it while it runs its loop; the handler of a thread blocked
//! in a futex wait gives it up, lets the stand-in thread run the pinned
//! tasks, waits in the handler for what the task waited for, and takes the
//! lock back before it returns to the task. Because of the lock, two threads
//! never run W's user code at once: the tasks W's thread-locals could be
//! reached from only ever run one at a time, exactly as on one thread. The
//! proof obligations, numbered in `README.md` §3.5.
//!
//! Async-signal-safe: atomics and `futex` system calls only.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};

use super::WorkerSlot;

/// Who a thread is, as the monitor and the handler see a worker's runner.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Identity {
    thread: u64,
    tid: i32,
    cpu_clock: i32,
    owner_id: u64,
}

impl Identity {
    /// The calling thread's (not signal-safe: call at its start).
    pub(crate) fn of_this_thread() -> Identity {
        let probe = WorkerSlot::default();
        probe.bind_thread();
        Identity {
            thread: probe.thread.load(Ordering::Relaxed),
            tid: probe.tid.load(Ordering::Relaxed),
            cpu_clock: probe.cpu_clock.load(Ordering::Relaxed),
            owner_id: crate::task::owned::thread_id(),
        }
    }

    /// The identity `slot` names now (after `enter_worker` bound it).
    pub(crate) fn of_slot(slot: &WorkerSlot) -> Identity {
        Identity {
            thread: slot.thread.load(Ordering::Relaxed),
            tid: slot.tid.load(Ordering::Relaxed),
            cpu_clock: slot.cpu_clock.load(Ordering::Relaxed),
            owner_id: slot.owner_id.load(Ordering::Relaxed),
        }
    }

    /// Make `slot` name this thread: signals, probes and the owned-lock
    /// check go to the thread that now runs the worker.
    pub(crate) fn install(&self, slot: &WorkerSlot) {
        slot.thread.store(self.thread, Ordering::Relaxed);
        slot.tid.store(self.tid, Ordering::Relaxed);
        slot.cpu_clock.store(self.cpu_clock, Ordering::Relaxed);
        slot.owner_id.store(self.owner_id, Ordering::Relaxed);
    }
}

/// Wait while `word` holds `expected`, for at most `timeout` (relative).
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<std::time::Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: FUTEX_WAIT on a live, aligned u32 with a null or valid
    // relative timeout only reads the word (and the timeout); any result
    // (woken, EAGAIN, EINTR, ETIMEDOUT) sends the caller back to its loop.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            ts,
        );
    }
}

fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: FUTEX_WAKE on a live, aligned u32 touches no memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            n,
        );
    }
}

thread_local! {
    /// This thread holds a worker's group lock (a thread holds at most one:
    /// its own worker's, or the one it stands in for). Const-initialised:
    /// read from the signal handler.
    static HOLDS: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling thread holds a group lock (signal-safe).
pub(super) fn holds() -> bool {
    HOLDS.with(|h| h.get())
}

fn acquired(slot: &WorkerSlot) {
    HOLDS.with(|h| h.set(true));
    slot.group_acquires.fetch_add(1, Ordering::Release);
}

/// Take the worker's group lock (blocking the thread until it is free).
pub(crate) fn lock(slot: &WorkerSlot) {
    let g = &slot.group;
    if g.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        acquired(slot);
        return;
    }
    // SeqCst pairs with `unlock`'s store and load: either it sees us
    // waiting, or we see the lock free.
    slot.group_waiters.fetch_add(1, Ordering::SeqCst);
    while g
        .compare_exchange(0, 1, Ordering::SeqCst, Ordering::Relaxed)
        .is_err()
    {
        futex_wait(g, 1, None);
    }
    slot.group_waiters.fetch_sub(1, Ordering::Relaxed);
    acquired(slot);
}

/// Take the group lock if it is free.
pub(crate) fn try_lock(slot: &WorkerSlot) -> bool {
    let ok = slot
        .group
        .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_ok();
    if ok {
        acquired(slot);
    }
    ok
}

pub(crate) fn unlock(slot: &WorkerSlot) {
    HOLDS.with(|h| h.set(false));
    slot.group.store(0, Ordering::SeqCst);
    if slot.group_waiters.load(Ordering::SeqCst) > 0 {
        futex_wake(&slot.group, 1);
    }
}

/// Let a thread that waits for the group lock have it, then take it back:
/// without waiting for the waiter to get it first, the releasing thread
/// would win it straight back (it runs, the woken waiter has yet to), and a
/// lender could wait in its handler for as long as the holder finds work.
/// Not from the handler (it yields the CPU).
pub(crate) fn pass(slot: &WorkerSlot) {
    let before = slot.group_acquires.load(Ordering::Acquire);
    unlock(slot);
    while wanted(slot) && slot.group_acquires.load(Ordering::Acquire) == before {
        std::thread::yield_now();
    }
    lock(slot);
}

/// Whether another thread waits for the group lock: the holder gives it up
/// at its next slice boundary.
#[inline]
pub(crate) fn wanted(slot: &WorkerSlot) -> bool {
    slot.group_waiters.load(Ordering::Relaxed) > 0
}

/// Wake `n` stand-in threads: one when the worker was lent, all of them
/// (`i32::MAX`) for shutdown, when each sees `stopping`.
pub(crate) fn ring(slot: &WorkerSlot, n: i32) {
    slot.bell.fetch_add(1, Ordering::Release);
    futex_wake(&slot.bell, n);
}

/// A stand-in's wait for its bell (`seen`: the bell's value it last saw),
/// for at most `timeout`; it counts as idle meanwhile.
pub(crate) fn wait_bell(slot: &WorkerSlot, seen: u32, timeout: Option<std::time::Duration>) {
    slot.standins_idle.fetch_add(1, Ordering::SeqCst);
    futex_wait(&slot.bell, seen, timeout);
    slot.standins_idle.fetch_sub(1, Ordering::SeqCst);
}

/// The futex wait a lending thread is blocked in: its arguments, as the
/// kernel rewound it onto libc's `syscall` instruction (`rdi`, `rsi`,
/// `rdx`, `r10`, `r8`, `r9`).
pub(super) struct FutexWait {
    pub addr: usize,
    pub op: usize,
    pub val: usize,
    /// Null (untimed), or the timeout to wait with: the call's own absolute
    /// deadline, or what is left of its relative one ([`time_left`]).
    pub timeout: *const libc::timespec,
    /// `timeout` is relative: an interrupted wait must not start it over.
    pub relative: bool,
    pub uaddr2: usize,
    pub val3: usize,
}

/// Whether the worker can be lent now: a thread waits for its group lock
/// (the one it was lent from, whose wait is over), or a stand-in is idle.
pub(super) fn can_lend(slot: &WorkerSlot) -> bool {
    wanted(slot) || slot.standins_idle.load(Ordering::SeqCst) > 0
}

/// What is left of the relative futex timeout `given`, counted from when
/// the monitor last saw this slice's thread computing (`lend_since`, on
/// `CLOCK_MONOTONIC`); `None` if nothing is. Async-signal-safe.
pub(super) fn time_left(slot: &WorkerSlot, given: libc::timespec) -> Option<libc::timespec> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime is async-signal-safe; `now` is a valid out pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return None;
    }
    let ns = |t: &libc::timespec| t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128;
    let since = slot.lend_since.load(Ordering::Relaxed) as i128;
    if since == 0 {
        return None;
    }
    let left = ns(&given) - (ns(&now) - since);
    (left > 0).then_some(libc::timespec {
        tv_sec: (left / 1_000_000_000) as libc::time_t,
        tv_nsec: (left % 1_000_000_000) as libc::c_long,
    })
}

/// Called by the handler on the thread that holds `slot`'s group lock (the
/// worker's own thread, or a stand-in running its tasks), in a slice the
/// monitor asked to lend (`lend_target`), stopped in the untimed futex wait
/// `wait`, when [`can_lend`]. Returns once the wait is over and this thread
/// holds the lock again, with the slice's state as it was.
pub(super) fn lend(slot: &WorkerSlot, wait: &FutexWait) {
    let me = Identity::of_slot(slot);
    let task = slot.task.load(Ordering::Relaxed);
    let preemptible = slot.preemptible.load(Ordering::Relaxed);
    let blocked_since = slot.blocked_since.swap(0, Ordering::Relaxed);
    slot.lend_target.store(0, Ordering::Relaxed);
    slot.lends.add(1);
    slot.lent.fetch_add(1, Ordering::SeqCst);
    // As at a slice's end: whoever runs the worker next starts from a slot
    // with no slice (`begin` sets only what its slice needs).
    slot.preemptible.store(false, Ordering::Relaxed);
    slot.task.store(0, Ordering::Release);
    let ring_one = !wanted(slot);
    unlock(slot);
    if ring_one {
        ring(slot, 1);
    }
    loop {
        // SAFETY: the same call the task was blocked in, with the same
        // arguments (a timeout no later than its own): it only reads the
        // futex word, which the task's own frames keep alive until the wait
        // returns to them, and the timeout, which lives in the handler's or
        // the caller's frame.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                wait.addr,
                wait.op,
                wait.val,
                wait.timeout,
                wait.uaddr2,
                wait.val3,
            )
        };
        // SAFETY: this thread's errno slot (the handler restores it).
        if r == -1 && unsafe { *libc::__errno_location() } == libc::EINTR {
            if wait.relative {
                // A relative timeout would start over: return early instead
                // (the task's caller sees the EINTR it already had).
                break;
            }
            continue;
        }
        break;
    }
    lock(slot);
    slot.lent.fetch_sub(1, Ordering::SeqCst);
    me.install(slot);
    slot.task.store(task, Ordering::Relaxed);
    slot.preemptible.store(preemptible, Ordering::Relaxed);
    slot.blocked_since.store(blocked_since, Ordering::Relaxed);
    // A fresh slice number: the monitor times the rest of this slice anew,
    // and no request for a slice the stand-in ran can match it.
    slot.seq
        .store(slot.seq.load(Ordering::Relaxed) + 1, Ordering::Release);
}
