//! std's locks that belong to an OS thread: stdout's and stderr's.
//!
//! `std::io::stdout().lock()` takes a *reentrant* lock owned by the calling
//! thread's id. A task that holds the guard while it computes, and is
//! switched out (preempted, or at a yield or wait), leaves the lock owned by
//! its worker's thread: the next task on that thread re-enters it at once,
//! and its lines land in the middle of the holder's. So while the running
//! thread owns one of these locks, the signal handler does not preempt its
//! task (`preempt/signal.rs`), and kvant's waits block the thread instead
//! of switching (`current::switchable_ptr`), exactly as during an unwind:
//! no other task runs on the thread until the guard is dropped. (It lives
//! with the task core, below `preempt/`, because the switch asks it.)
//!
//! std does not publish where a `ReentrantLock` keeps its owner, so it is
//! found once at start-up: the word of the lock that holds this thread's id
//! while this thread holds the lock, and not before or after. Nothing is
//! assumed about its layout; if the word cannot be found unambiguously, the
//! check is off for that lock (lines may then interleave as before;
//! `tests/thread_owned.rs` asserts it is found).

use std::sync::Once;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Addresses of the owner words of stdout's and stderr's locks (0: not
/// found).
static OWNERS: [AtomicUsize; 2] = [const { AtomicUsize::new(0) }; 2];

thread_local! {
    // Const-initialised, no destructor: a plain TLS load, signal-safe.
    static ME: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How far into a lock object its owner word is looked for.
const SPAN: usize = 64;

/// Find the owner words (once per process). Call it on a thread that does
/// not hold stdout's or stderr's lock (a runtime's builder).
pub(crate) fn discover() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let me = thread_id();
        let out = owner_word(handle_address(std::io::stdout()), me, || {
            std::io::stdout().lock()
        });
        let err = owner_word(handle_address(std::io::stderr()), me, || {
            std::io::stderr().lock()
        });
        OWNERS[0].store(out.unwrap_or(0), Ordering::Release);
        OWNERS[1].store(err.unwrap_or(0), Ordering::Release);
    });
}

/// Note the calling thread's id: a worker or compensating thread starting.
pub(crate) fn enter_thread() {
    let me = thread_id();
    ME.with(|m| m.set(me));
}

/// Whether the calling thread, with id `me` (0: unknown), owns stdout's or
/// stderr's lock. Signal-safe: at most two atomic loads.
#[inline]
pub(crate) fn held_by(me: u64) -> bool {
    me != 0
        && OWNERS.iter().any(|w| {
            let at = w.load(Ordering::Relaxed);
            // SAFETY: `at` is the address of the owner word inside the
            // `'static` lock of stdout or stderr (found by `discover`), an
            // 8-aligned u64 that std updates atomically.
            at != 0 && unsafe { (*(at as *const AtomicU64)).load(Ordering::Relaxed) } == me
        })
}

/// [`held_by`] for the calling thread. Inlined for its common case (no
/// thread holds either lock: two loads); the thread-local is read only
/// when one is held, by a function that is not inlined, since the caller
/// may switch stacks around it.
#[inline(always)]
pub(crate) fn held_here() -> bool {
    OWNERS.iter().any(|w| {
        let at = w.load(Ordering::Relaxed);
        // SAFETY: as in `held_by`.
        at != 0 && unsafe { (*(at as *const AtomicU64)).load(Ordering::Relaxed) } != 0
    }) && held_by(my_id())
}

#[inline(never)]
fn my_id() -> u64 {
    ME.with(|m| m.get())
}

/// This thread's id as std's locks record it (`ThreadId`'s number).
pub(crate) fn thread_id() -> u64 {
    let s = format!("{:?}", std::thread::current().id());
    s.trim_start_matches("ThreadId(")
        .trim_end_matches(')')
        .parse()
        .unwrap_or(0)
}

/// The address of the `'static` lock a `Stdout`/`Stderr` handle refers to:
/// the handle is that one reference.
fn handle_address<H>(handle: H) -> usize {
    if std::mem::size_of::<H>() != std::mem::size_of::<usize>() {
        return 0;
    }
    // SAFETY: `H` is `Stdout` or `Stderr`, whose only field is a
    // `&'static ReentrantLock<..>` (checked by size above): reading it as a
    // usize reads that reference's address. `handle` is not dropped twice:
    // it is forgotten (neither type has drop glue anyway).
    let addr = unsafe { std::mem::transmute_copy::<H, usize>(&handle) };
    std::mem::forget(handle);
    addr
}

/// The address of the 8-aligned word in `[base, base + SPAN)` that holds
/// `me` while `lock` holds the lock and not before or after; `None` if there
/// is not exactly one.
fn owner_word<G>(base: usize, me: u64, lock: impl Fn() -> G) -> Option<usize> {
    if base == 0 || me == 0 || !base.is_multiple_of(8) {
        return None;
    }
    let before = snapshot(base)?;
    let guard = lock();
    let during = snapshot(base)?;
    drop(guard);
    let after = snapshot(base)?;
    let mut found = (0..SPAN / 8).filter(|&k| during[k] == me && before[k] != me && after[k] != me);
    let k = found.next()?;
    found.next().is_none().then_some(base + 8 * k)
}

/// `SPAN` bytes at `base` as words, copied by the kernel (bytes past the
/// lock object, a neighbouring static, are read without touching them
/// through a Rust reference).
#[cfg(target_os = "linux")]
fn snapshot(base: usize) -> Option<[u64; SPAN / 8]> {
    let mut words = [0u64; SPAN / 8];
    let local = libc::iovec {
        iov_base: words.as_mut_ptr().cast(),
        iov_len: SPAN,
    };
    let remote = libc::iovec {
        iov_base: base as *mut libc::c_void,
        iov_len: SPAN,
    };
    // SAFETY: the kernel writes at most SPAN bytes into `words`, which we
    // own; the remote range is only read, by the kernel, which reports
    // unmapped memory as an error instead of faulting.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    (n == SPAN as isize).then_some(words)
}

/// Elsewhere the words are not looked for (the check stays off).
#[cfg(not(target_os = "linux"))]
fn snapshot(_base: usize) -> Option<[u64; SPAN / 8]> {
    None
}
