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
use std::sync::atomic::Ordering;

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
pub(crate) fn current_ptr() -> Option<NonNull<Task>> {
    CURRENT.with(|c| c.get())
}

/// The running task, if it may switch out at a wait: not while it unwinds.
///
/// std counts panics per OS thread. A task whose destructors run during an
/// unwind (a panic, or kvant's own cancellation) has that count raised; if
/// it switched out there, the next task on the thread would see
/// `thread::panicking()`, poison every std lock it drops, and the unwinding
/// task could resume on another thread whose count is zero. So a wait in a
/// destructor during an unwind blocks the OS thread instead, exactly as a
/// wait outside any task does (the monitor's hand-off moves the worker's
/// other tasks meanwhile), and the signal handler never preempts such a
/// task. The task never leaves its thread before its unwind is over, so the
/// thread's count is always its own: `thread::panicking()` on a worker
/// speaks for the task running there. (It reads one global atomic first;
/// the thread-local only while some thread is panicking.)
///
/// Nor while the thread owns stdout's or stderr's lock (`owned.rs`): the
/// task that took it keeps the thread until it drops the guard, so no other
/// task re-enters the lock.
#[inline(always)]
pub(crate) fn switchable_ptr() -> Option<NonNull<Task>> {
    current_ptr().filter(|_| !std::thread::panicking() && !super::owned::held_here())
}

/// [`current_arc`] of a task that may switch out at a wait (see
/// [`switchable_ptr`]): `None` outside a task and while it unwinds.
pub(crate) fn switchable_arc() -> Option<Arc<Task>> {
    switchable_ptr()?;
    current_arc()
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
/// the safe-point walk: the address of a local here becomes the task's
/// `root_mark`, and the walk ends, successfully, only at the frame this
/// function called, found with the unwind tables with its return-address
/// slot just below that local. The frames above (kvant's task entry,
/// `catch_unwind`, corosensei's trampoline) are always on the stack and
/// always "unsafe" by name. The closure is called through a vtable so that
/// it cannot be inlined into this kvant function (whose symbol is the root).
#[inline(never)]
pub(crate) fn run_user<T>(f: Box<dyn FnOnce() -> T + Send + '_>) -> T {
    let mark = 0u8;
    let mark = std::hint::black_box(&mark) as *const u8 as usize;
    with_current(|t| t.preempt.root_mark.store(mark, Ordering::Relaxed));
    let r = std::hint::black_box(f)();
    // Back in runtime code: no user frame is left to preempt.
    let reported = with_current(|t| {
        t.preempt.root_mark.store(0, Ordering::Relaxed);
        t.state.snapshot().reported()
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

/// `park::park` in a task: unless a wake-up token is waiting, switch out
/// until unparked. False outside a task (the caller parks the thread).
/// Inlined into `park`, so the switch sits in `Waiter::park`'s loop, not
/// behind `suspend`'s frame: the running task is looked up once, and the
/// resumed task has one return fewer to take whose target the CPU cannot
/// predict (its return stack holds the worker's calls).
#[inline(always)]
pub(crate) fn park_current(on: super::note::WaitingOn) -> bool {
    let Some(task) = switchable_ptr() else {
        return false;
    };
    // SAFETY: `task` came from CURRENT just now, on this thread, with no
    // switch since; the worker keeps its Arc alive for the whole slice.
    let t = unsafe { task.as_ref() };
    if !t.take_token() {
        t.note_wait(on);
        suspend_task(task, Switch::Park);
    }
    true
}

/// [`suspend`] for the task at `task`, the one running on this thread
/// (from `current_ptr`, read just before: no switch in between). Inlined
/// into every caller, and through `yield_now` and `park` into kvant's wait
/// loops and the user's own code: the switch clobbers every callee-saved
/// register, which a frame of its own would save and restore once more per
/// switch, and a switch that sits in its caller's frame resumes there
/// instead of through a return the CPU cannot predict (see `yield_now`).
#[inline(always)]
fn suspend_task(task: NonNull<Task>, why: Switch) {
    // SAFETY: `task` came from CURRENT just now, on this thread, with no
    // switch since; the worker keeps its Arc alive for the whole slice, and
    // it is this task's own code that runs again after the switch.
    let t = unsafe { task.as_ref() };
    if t.state.snapshot().needs_check() {
        return suspend_checked(t, why);
    }
    switch(t, why);
}

/// The switch itself. Inlined into user code it is, without line tables
/// (`PreemptionMode::Symbols`), code the code map takes for the user's: a
/// signal landing in corosensei's switch sequence would pass every
/// safe-point rule and suspend the task in the middle of its own switch. So
/// the task's preemption count is raised across it, exactly as a
/// `preempt::disable` guard does; a preemption the handler defers meanwhile
/// is taken right after.
#[inline(always)]
fn switch(t: &Task, why: Switch) {
    let yielder = t.preempt.yielder.load(Ordering::Relaxed) as *const TaskYielder;
    t.preempt.raise();
    // For a dump: where it switches out. Not on a yield (the yielding
    // task runs again within a round of its queue, and the capture was a
    // measurable share of a yield: BENCHMARKS.md, "Measured decisions"); a
    // yield only says it yielded.
    // SAFETY: the task itself, running on its stack.
    if let Some(n) = unsafe { super::note::Notes::at(t.preempt.stack_hi.load(Ordering::Relaxed)) } {
        if why == Switch::Yield {
            n.yielded();
        } else {
            let (pc, sp, fp) = super::note::here();
            n.switched_at(pc, sp, fp, why);
        }
    }
    // SAFETY: the yielder lives on the running coroutine's stack for as long
    // as the coroutine exists, and we are executing on that stack right now.
    let resumed = unsafe { (*yielder).suspend(why) };
    let deferred = t.preempt.lower();
    if resumed == Resume::Cancel || deferred {
        switched_slow(t, resumed, deferred);
    }
}

/// A switch point of a task that was cancelled or that the monitor reported
/// for blocking its worker.
#[cold]
#[inline(never)]
fn suspend_checked(t: &Task, why: Switch) {
    let shielded = t.shield.load(Ordering::Relaxed) > 0;
    let snap = t.state.snapshot();
    if snap.reported() && !shielded {
        panic_if_reported();
    }
    // Already unwinding (a destructor waits): suspend for real, or the
    // wait around this call would spin; the unwind goes on once it returns.
    if snap.cancelled() && !shielded && !std::thread::panicking() {
        cancel_unwind();
        return;
    }
    switch(t, why);
}

/// After the switch: a cancellation the worker resumed us with, or a
/// preemption the handler deferred while the count was up.
#[cold]
#[inline(never)]
fn switched_slow(t: &Task, resumed: Resume, deferred: bool) {
    if resumed == Resume::Cancel && t.shield.load(Ordering::Relaxed) == 0 {
        cancel_unwind();
    } else if deferred {
        take_deferred();
    }
}

/// Take a preemption the handler deferred while the task's count was raised
/// (a critical section or a switch that just ended): yield now.
#[cold]
#[inline(never)]
pub(crate) fn take_deferred() {
    if std::thread::panicking() {
        return; // unwinding: the task keeps its thread (see `switchable_ptr`)
    }
    // Not a cancellation point: a critical section ends where a primitive
    // just changed state (a message taken, a waiter queued) and has not
    // returned yet; unwinding here would lose that change.
    let _shield = shield_cancel();
    suspend(Switch::Preempted);
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
        if t.state.take_reported() {
            t.scheduler.take_blocking_report(t.id)
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
        let shutdown = with_current(|t| t.scheduler.shutting_down());
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
    with_current(|t| t.state.snapshot().cancelled()).unwrap_or(false)
}

/// Give the worker to the next ready task; this task runs again after the
/// tasks queued before it. Outside a runtime, yields the OS thread.
///
/// Inlined into the caller, so that the stack switch sits in the caller's
/// own loop: the resumed task continues there instead of returning out of
/// a `yield_now` frame, and the switch back to the worker is a `ret` that
/// pops the worker's own resume call. Neither return mispredicts; both did,
/// measured with `perf`, when the switch had a frame of its own. What that
/// asks of preemption is in `switch`.
#[inline(always)]
pub fn yield_now() {
    match switchable_ptr() {
        Some(task) => suspend_task(task, Switch::Yield),
        None => std::thread::yield_now(),
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
        self.task.state.snapshot().cancelled()
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
