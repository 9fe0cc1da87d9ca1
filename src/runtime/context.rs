//! Which worker (if any) the current OS thread is.
//!
//! Accessors are `#[inline(never)]` for the reason given in
//! `task/current.rs`: task code may call them before and after a switch that
//! moved it to another thread, and each call must look the thread-local up
//! afresh.

use std::cell::{Cell, RefCell};
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::Arc;

use super::Shared;
use super::worker::WorkerCtx;

thread_local! {
    /// The worker context this thread runs, owned for as long as it does.
    static WORKER_OWNED: RefCell<Option<Owner>> = const { RefCell::new(None) };
    /// The same, as a plain pointer for `with_worker` (every spawn and
    /// wake-up): a `Cell` of a `Copy` type has no destructor, so reading it
    /// needs no registration check and no `RefCell` borrow.
    static WORKER: Cell<Option<NonNull<WorkerCtx>>> = const { Cell::new(None) };
    /// Runtimes entered on this OS thread (`Runtime::enter`, the blocking
    /// pool), innermost last.
    static ENTERED: RefCell<Vec<Arc<Shared>>> = const { RefCell::new(Vec::new()) };
}

/// While alive, `kvant::spawn` and friends on this OS thread use the
/// runtime it was made from (see [`Runtime::enter`](super::Runtime::enter)).
/// Guards must drop in reverse order of creation (they are `!Send`).
#[must_use = "the runtime is entered only while the guard lives"]
pub struct EnterGuard {
    _not_send: std::marker::PhantomData<*const ()>,
}

pub(crate) fn enter_runtime(shared: Arc<Shared>) -> EnterGuard {
    ENTERED.with(|e| e.borrow_mut().push(shared));
    EnterGuard {
        _not_send: std::marker::PhantomData,
    }
}

impl Drop for EnterGuard {
    fn drop(&mut self) {
        let old = ENTERED.with(|e| e.borrow_mut().pop());
        drop(old);
    }
}

impl std::fmt::Debug for EnterGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnterGuard")
    }
}

/// The innermost runtime entered on this thread, if any.
#[inline(never)]
pub(crate) fn entered() -> Option<Arc<Shared>> {
    ENTERED.with(|e| e.borrow().last().cloned())
}

/// Owns the context `WORKER` points to, and clears the pointer before the
/// context can go: on `exit`, and also if the thread's thread-locals are
/// destroyed first (a worker thread unwinding past `exit`), whatever order
/// they are destroyed in. `WORKER` itself has no destructor, so it is never
/// unreadable.
struct Owner {
    _ctx: Rc<WorkerCtx>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        WORKER.set(None);
        // The `Rc` field drops after this.
    }
}

pub(crate) fn enter(ctx: Rc<WorkerCtx>) {
    let p = NonNull::from(&*ctx);
    let old = WORKER_OWNED.with(|w| w.borrow_mut().replace(Owner { _ctx: ctx }));
    drop(old); // clears WORKER, so it is set after
    WORKER.set(Some(p));
}

pub(crate) fn exit() {
    let old = WORKER_OWNED.with(|w| w.borrow_mut().take());
    drop(old); // clears WORKER, then drops the context
}

/// This thread's worker context, read afresh (see the module docs).
#[inline(never)]
fn worker_ptr() -> Option<NonNull<WorkerCtx>> {
    WORKER.get()
}

/// Run `f` with this thread's worker context, if this thread is a worker.
/// `f` must not switch tasks, nor enter or leave a worker context.
/// Inlined, with `f`, into every wake-up and spawn: only the thread-local
/// read stays behind a call.
#[inline(always)]
pub(crate) fn with_worker<R>(f: impl FnOnce(&WorkerCtx) -> R) -> Option<R> {
    let p = worker_ptr()?;
    // SAFETY: a non-null WORKER points into the `Rc` of the `Owner` in
    // WORKER_OWNED; the owner clears the pointer before that `Rc` drops
    // (`Owner::drop`), and `f`, which runs on this thread without
    // switching, cannot end the owner (`exit` or `enter`, excluded by this
    // function's contract), so the context outlives the call.
    Some(f(unsafe { p.as_ref() }))
}
