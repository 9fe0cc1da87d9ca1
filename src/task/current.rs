//! The task running on this thread, and the switch points a task calls.
//!
//! Every accessor that task code calls is `#[inline(never)]`: LLVM treats the
//! address of a thread-local as constant within a function, so code that read
//! a thread-local, switched out, and read it again after resuming on another
//! worker could reuse the first thread's address. Keeping each access in its
//! own non-inlined function forces a fresh lookup after every switch.
//! `set_current`, which the worker calls from its own stack, is inlined, and
//! so are helpers that reach the thread-local only through `current_ptr`.

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{Ordering, compiler_fence};

use super::coroutine::{Resume, Switch, TaskYielder};
use super::{Task, TaskId, TaskStats};

thread_local! {
    static CURRENT: Cell<Option<NonNull<Task>>> = const { Cell::new(None) };
}

/// Payload used to unwind a cancelled task. Resumed with `resume_unwind`,
/// so the panic hook stays quiet. `aborted`: by an abort, not by shutdown.
pub(crate) struct CancelUnwind {
    pub aborted: bool,
}

/// Install `task` as the one running on this thread (null to clear). The
/// worker calls this around every resume and keeps the task's `Arc` alive for
/// at least as long.
///
/// The one accessor that may be inlined: it is called only from the worker's
/// own frames (`runtime/slice.rs`), on the worker thread's native stack, which
/// never moves to another thread, so an address LLVM keeps across the resume
/// in between is still this thread's (two calls fewer per switch).
#[inline(always)]
pub(crate) fn set_current(task: Option<&Task>) {
    CURRENT.with(|c| c.set(task.map(NonNull::from)));
}

#[inline(never)]
fn current_ptr() -> Option<NonNull<Task>> {
    CURRENT.with(|c| c.get())
}

/// Run `f` with the task running on this thread, if any. `f` must not switch.
/// Inlined: the thread-local is read by `current_ptr`, which is not, so
/// every call still looks it up afresh.
#[inline]
pub(crate) fn with_current<R>(f: impl FnOnce(&Task) -> R) -> Option<R> {
    let p = current_ptr()?;
    // SAFETY: a non-null CURRENT was installed by the worker resuming this
    // task, which holds an `Arc<Task>` until after it clears CURRENT again;
    // `f` runs on this thread before any switch, so the task is alive.
    Some(f(unsafe { p.as_ref() }))
}

/// A new strong reference to the running task.
pub(crate) fn current_arc() -> Option<Arc<Task>> {
    let p = current_ptr()?.as_ptr() as *const Task;
    // SAFETY: `p` points into an `Arc<Task>` the worker holds for the whole
    // slice (see `set_current`), so the count is at least one here.
    unsafe {
        Arc::increment_strong_count(p);
        Some(Arc::from_raw(p))
    }
}

/// Run the user's closure of the current task. This frame is the boundary of
/// the safe-point walk: its frame address becomes the task's `root_fp`, and
/// the walk accepts a chain that reaches it without inspecting the frames
/// above (kvant's task entry, `catch_unwind`, corosensei's trampoline), which
/// are always on the stack and always "unsafe" by name. The closure is called
/// through a vtable so that it cannot be inlined into this kvant function.
#[inline(never)]
pub(crate) fn run_user<T>(f: Box<dyn FnOnce() -> T + Send + '_>) -> T {
    let fp = super::stack::frame_address();
    with_current(|t| t.preempt.root_fp.store(fp, Ordering::Relaxed));
    let r = std::hint::black_box(f)();
    // Back in runtime code: no user frame is left to preempt.
    let reported = with_current(|t| {
        t.preempt.root_fp.store(0, Ordering::Relaxed);
        t.blocking_reported.load(Ordering::Relaxed)
    });
    if reported == Some(true)
        && let Some(report) = take_blocking_report()
    {
        drop(r);
        panic!("{report}");
    }
    r
}

/// A panic in a task is printed by the panic hook as a panic of the worker
/// thread (`thread 'kvant-worker-0' panicked at ...`), which names no task.
/// Once per process, kvant wraps the hook installed at that time (std's, or
/// the program's own) with a line naming the task. A hook set later
/// replaces this one, as with any hook.
pub(crate) fn install_panic_note() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            prev(info);
            let task = with_current(|t| (t.id, t.name.clone()));
            if let Some((id, name)) = task {
                use std::io::Write;
                // Never panic inside the hook (a closed stderr would abort).
                let _ = match name {
                    Some(n) => writeln!(
                        std::io::stderr(),
                        "note: the panic is in kvant task {id} '{n}'"
                    ),
                    None => writeln!(std::io::stderr(), "note: the panic is in kvant task {id}"),
                };
            }
        }));
    });
}

/// Whether this thread is running a task right now.
pub(crate) fn in_task() -> bool {
    current_ptr().is_some()
}

/// Switch the running task out. Returns when a worker resumes it. If the
/// runtime cancels the task meanwhile, unwinds it instead (destructors run).
pub(crate) fn suspend(why: Switch) {
    let Some(task) = current_ptr() else {
        panic!("kvant internal error: suspend outside a task");
    };
    suspend_task(task, why);
}

/// [`suspend`] for the task at `task`, the one running on this thread
/// (from `current_ptr`, read just before: no switch in between). Inlined
/// into its two callers: the switch clobbers every callee-saved register,
/// which a frame of its own would save and restore once more per switch.
#[inline(always)]
fn suspend_task(task: NonNull<Task>, why: Switch) {
    // SAFETY: `task` came from CURRENT just now, on this thread, with no
    // switch since; the worker keeps its Arc alive for the whole slice.
    let t = unsafe { task.as_ref() };
    let yielder = t.preempt.yielder.load(Ordering::Relaxed) as *const TaskYielder;
    let cancelled = t.cancelled.load(Ordering::Acquire);
    let shielded = t.shield.load(Ordering::Relaxed) > 0;
    let reported = t.blocking_reported.load(Ordering::Relaxed);
    if reported && !shielded {
        panic_if_reported();
    }
    // Already unwinding (a destructor waits): suspend for real, or the
    // wait around this call would spin; the unwind goes on once it returns.
    if cancelled && !shielded && !std::thread::panicking() {
        cancel_unwind();
        return;
    }
    // SAFETY: the yielder lives on the running coroutine's stack for as long
    // as the coroutine exists, and we are executing on that stack right now.
    let resumed = unsafe { (*yielder).suspend(why) };
    if resumed == Resume::Cancel && !shielded {
        cancel_unwind();
    }
}

/// While alive, the current task's switch points do not unwind for
/// cancellation: they return, and the wait around them goes on. For waits
/// whose caller's frame other tasks borrow (`join`'s stolen half, `scope`'s
/// children): that frame must not die before they finish, cancelled or not.
/// The shutdown's bounded stop phase still ends, leaking (never reusing) a
/// task that waits forever.
pub(crate) struct CancelShield(bool);

pub(crate) fn shield_cancel() -> CancelShield {
    CancelShield(with_current(|t| t.shield.fetch_add(1, Ordering::Relaxed)).is_some())
}

impl Drop for CancelShield {
    fn drop(&mut self) {
        if self.0 {
            with_current(|t| t.shield.fetch_sub(1, Ordering::Relaxed));
        }
    }
}

/// `Builder::panic_on_blocking`: if the monitor reported the running task
/// for blocking its worker, panic with the report (once).
fn panic_if_reported() {
    if !std::thread::panicking()
        && let Some(report) = take_blocking_report()
    {
        panic!("{report}");
    }
}

/// The monitor's report on the running task, if it filed one (taken once).
fn take_blocking_report() -> Option<String> {
    with_current(|t| {
        if t.blocking_reported.load(Ordering::Relaxed)
            && t.blocking_reported.swap(false, Ordering::Relaxed)
        {
            t.shared.blocking_reports.lock().remove(&t.id)
        } else {
            None
        }
    })
    .flatten()
}

fn cancel_unwind() {
    // Unwinding while already unwinding would abort; a destructor that blocks
    // during cancellation just returns from its switch point instead.
    if !std::thread::panicking() {
        let shutdown = with_current(|t| t.shared.cancelling.load(Ordering::Acquire));
        std::panic::resume_unwind(Box::new(CancelUnwind {
            aborted: shutdown == Some(false),
        }));
    }
}

/// Whether the running task was asked to stop: aborted through its
/// [`JoinHandle::abort`](crate::JoinHandle::abort) or an
/// [`AbortHandle`](super::AbortHandle), or cancelled by runtime shutdown.
/// False outside a task.
///
/// A cancelled task is unwound at its next switch point: where it would
/// block or yield (yield, sleep, join, a kvant lock, channel or wait that is
/// not ready). A loop that never reaches one (a CPU hog, preempted or not,
/// or a loop whose channel always has a message) runs on; it can poll this
/// and return early:
///
/// ```
/// let rt = kvant::Runtime::builder().workers(1).build().unwrap();
/// let h = rt.spawn(|| {
///     let mut n = 0u64;
///     while !kvant::task::is_cancelled() {
///         n = std::hint::black_box(n + 1);
///     }
///     n
/// });
/// h.abort();
/// let _ = h.join(); // Ok(n) or, if it never started, Err(cancelled)
/// ```
pub fn is_cancelled() -> bool {
    with_current(|t| t.cancelled.load(Ordering::Acquire)).unwrap_or(false)
}

/// Give the worker to the next ready task; this task runs again after the
/// tasks queued before it. Outside a runtime, yields the OS thread.
#[inline]
pub fn yield_now() {
    match current_ptr() {
        Some(task) => yield_task(task),
        None => std::thread::yield_now(),
    }
}

/// The cooperative yield, inlined into the caller's code so that its stack
/// switch sits in the caller's own loop. Two things follow from that:
///
/// * The resumed task continues in its loop instead of returning out of a
///   `yield_now` frame, and the switch back to the worker is a `ret` that
///   pops the worker's own resume call: neither return mispredicts (both
///   did, measured with `perf`, when the switch had a frame of its own).
/// * The switch is now inside a function that, in a build without line
///   tables (`PreemptionMode::Symbols`), the code map sees as the user's. A
///   signal landing in corosensei's switch sequence would then pass every
///   safe-point rule and suspend the task in the middle of its own switch.
///   So the yield holds the task's preemption count across it, exactly as a
///   `preempt::disable` guard does; a preemption asked for meanwhile is taken
///   once the count drops.
#[inline(always)]
fn yield_task(task: NonNull<Task>) {
    // SAFETY: `task` came from CURRENT just now, on this thread, with no
    // switch since; the worker keeps its Arc alive for the whole slice, and
    // it is this task's own code that runs again after the switch.
    let t = unsafe { task.as_ref() };
    let p = &t.preempt;
    // Single writer, as in `preempt::disable`: a load and a store.
    p.disabled
        .store(p.disabled.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
    if t.cancelled.load(Ordering::Acquire) || t.blocking_reported.load(Ordering::Relaxed) {
        return yield_slow(task);
    }
    let yielder = p.yielder.load(Ordering::Relaxed) as *const TaskYielder;
    // SAFETY: the yielder lives on the running coroutine's stack for as long
    // as the coroutine exists, and we are executing on that stack right now.
    let resumed = unsafe { (*yielder).suspend(Switch::Yield) };
    compiler_fence(Ordering::SeqCst);
    let left = p.disabled.load(Ordering::Relaxed) - 1;
    p.disabled.store(left, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
    if resumed == Resume::Cancel || (left == 0 && p.pending.load(Ordering::Relaxed)) {
        yielded_slow(t, resumed);
    }
}

/// The yield of a cancelled task, or one the monitor reported: the checks
/// `suspend_task` makes, with the count `yield_task` raised put back first.
#[cold]
#[inline(never)]
fn yield_slow(task: NonNull<Task>) {
    // SAFETY: as in `yield_task`, no switch since it read `task`.
    let p = unsafe { &task.as_ref().preempt };
    compiler_fence(Ordering::SeqCst);
    p.disabled
        .store(p.disabled.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
    // A preemption asked for in the window is the switch below.
    p.pending.store(false, Ordering::Relaxed);
    suspend_task(task, Switch::Yield);
}

/// After the switch: a cancellation the worker resumed us with, or a
/// preemption the handler deferred while the count was up.
#[cold]
#[inline(never)]
fn yielded_slow(t: &Task, resumed: Resume) {
    let shielded = t.shield.load(Ordering::Relaxed) > 0;
    if resumed == Resume::Cancel && !shielded {
        t.preempt.pending.store(false, Ordering::Relaxed);
        cancel_unwind();
        return;
    }
    if t.preempt.disabled.load(Ordering::Relaxed) == 0 && t.preempt.pending.load(Ordering::Relaxed)
    {
        t.preempt.pending.store(false, Ordering::Relaxed);
        // Not a cancellation point, as for a guard's drop.
        let _shield = shield_cancel();
        suspend(Switch::Preempted);
    }
}

/// A handle to the running task, from [`current`].
#[derive(Clone)]
pub struct Current {
    task: Arc<Task>,
}

impl Current {
    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.task.id
    }

    /// The task's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.task.name.as_deref()
    }

    /// Its statistics so far (the current slice is counted once it ends).
    pub fn stats(&self) -> TaskStats {
        self.task.stats.snapshot()
    }

    /// Whether the task may be preempted.
    pub fn is_preemptible(&self) -> bool {
        self.task.preemptible
    }

    /// Whether the task was asked to stop (aborted, or the runtime is
    /// cancelling it at shutdown). See [`is_cancelled`].
    pub fn is_cancelled(&self) -> bool {
        self.task.cancelled.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for Current {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Current")
            .field("id", &self.task.id)
            .field("name", &self.task.name)
            .finish()
    }
}

/// The running task.
///
/// # Panics
/// Outside a kvant task (use [`try_current`] to check).
#[track_caller]
pub fn current() -> Current {
    try_current().expect("kvant::current() called outside a kvant task")
}

/// The running task, or `None` on a thread that is not running one.
pub fn try_current() -> Option<Current> {
    current_arc().map(|task| Current { task })
}
