//! `kvant::join(a, b)`: fork-join in the style of `rayon::join`, adapted to
//! green threads.
//!
//! rayon pushes `b` on a LIFO deque and pops it back if nobody stole it. Our
//! run queues are FIFO (that is what makes preempted tasks take turns), so
//! instead `join` splits *lazily*: `b` becomes a stealable task only when some
//! worker is idle or searching, i.e. when someone could actually run it in
//! parallel. Otherwise both closures run inline, at the cost of one atomic
//! load. Once split, whoever gets to `b` first runs it: a thief (as a task on
//! its own stack) or the joiner itself (inline, after `a`), decided by one
//! atomic flag, so `b` never waits in a queue behind unrelated work.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::runtime::Shared;
use crate::task::{SpawnOptions, current};

/// Run `a` and `b`, potentially in parallel, and return both results.
///
/// `b` is offered to idle workers while the caller runs `a`; if nobody took
/// it by then, the caller runs it too. Both closures may borrow from the
/// caller. A panic in either is resumed after both finished. Outside a task
/// (or on a one-worker runtime) both simply run one after the other.
///
/// ```
/// fn fib(n: u64) -> u64 {
///     if n < 15 {
///         return (1..=n).fold((0, 1), |(a, b), _| (b, a + b)).0;
///     }
///     let (x, y) = kvant::join(|| fib(n - 1), || fib(n - 2));
///     x + y
/// }
/// let rt = kvant::Runtime::builder().workers(2).build().unwrap();
/// assert_eq!(rt.block_on(|| fib(25)), 75025);
/// ```
pub fn join<A, B, RA, RB>(a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA + Send,
    B: FnOnce() -> RB + Send,
    RA: Send,
    RB: Send,
{
    let split =
        current::in_task() && Shared::with_current(|s| s.should_split_join()).unwrap_or(false);
    if !split {
        return (a(), b());
    }
    crate::runtime::allow_spawner::<B>();
    join_split(a, b)
}

/// The shared state of a split `b`.
struct Split<B> {
    taken: AtomicBool,
    f: parking_lot::Mutex<Option<B>>,
}

#[cold]
fn join_split<A, B, RA, RB>(a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA + Send,
    B: FnOnce() -> RB + Send,
    RA: Send,
    RB: Send,
{
    let shared = Shared::current().expect("join_split runs in a task");
    let split = Arc::new(Split {
        taken: AtomicBool::new(false),
        f: parking_lot::Mutex::new(Some(b)),
    });
    let mut rb: Option<std::thread::Result<RB>> = None;
    let out = &mut rb as *mut Option<std::thread::Result<RB>> as usize;
    let theirs = split.clone();
    let stolen: Box<dyn FnOnce() + Send + '_> = Box::new(move || {
        if theirs.taken.swap(true, Ordering::AcqRel) {
            return; // the joiner got there first
        }
        let f = theirs.f.lock().take().expect("b is taken once");
        let r = catch_unwind(AssertUnwindSafe(f));
        // SAFETY: `out` points to `rb` on the joiner's stack; the joiner does
        // not read it or return until this task completed (it joins below).
        unsafe { *(out as *mut Option<std::thread::Result<RB>>) = Some(r) };
    });
    // SAFETY: the closure borrows only data that outlives this function
    // ('b and `rb`), and this function does not return (or unwind) before the
    // task has completed: it always joins the handle below. A task that the
    // runtime leaks at shutdown never runs again, so its borrows stay unused.
    let stolen: Box<dyn FnOnce() + Send + 'static> = unsafe { std::mem::transmute(stolen) };
    let handle = shared
        .spawn(&SpawnOptions::default(), stolen)
        .unwrap_or_else(|e| panic!("kvant::join could not split: {e}"));
    let ra = catch_unwind(AssertUnwindSafe(a));
    if !split.taken.swap(true, Ordering::AcqRel) {
        // Nobody started `b`: run it here. The task will find `taken` set
        // and touch neither `b` nor `rb`, so there is nothing to wait for;
        // `abandon` lets it end without even getting a stack.
        handle.abandon();
        let f = split.f.lock().take().expect("b is taken once");
        rb = Some(catch_unwind(AssertUnwindSafe(f)));
    } else {
        // Joining is what makes the borrow of `rb` sound: never skip it, not
        // even when shutdown cancels this task (it unwinds after the join).
        let _shield = current::shield_cancel();
        match handle.join() {
            Ok(()) => {}
            // The half was cancelled too: its result slot holds that unwind.
            Err(e) if e.is_cancelled() && rb.is_some() => {}
            Err(e) => panic!("kvant::join: the task running the second closure failed: {e}"),
        }
    }
    let ra = ra.unwrap_or_else(|p| resume_unwind(p));
    match rb.expect("b ran") {
        Ok(v) => (ra, v),
        Err(p) => resume_unwind(p),
    }
}
