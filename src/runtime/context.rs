//! Which worker (if any) the current OS thread is.
//!
//! Accessors are `#[inline(never)]` for the reason given in
//! `task/current.rs`: task code may call them before and after a switch that
//! moved it to another thread, and each call must look the thread-local up
//! afresh.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use super::Shared;
use super::worker::WorkerCtx;

thread_local! {
    static WORKER: RefCell<Option<Rc<WorkerCtx>>> = const { RefCell::new(None) };
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

pub(crate) fn enter(ctx: Rc<WorkerCtx>) {
    WORKER.with(|w| *w.borrow_mut() = Some(ctx));
}

pub(crate) fn exit() {
    let old = WORKER.with(|w| w.borrow_mut().take());
    drop(old);
}

/// Run `f` with this thread's worker context, if this thread is a worker.
/// `f` must not switch tasks, nor enter or leave a worker context (it runs
/// inside the context's shared borrow, which spares an `Rc` clone per spawn).
#[inline(never)]
pub(crate) fn with_worker<R>(f: impl FnOnce(&WorkerCtx) -> R) -> Option<R> {
    WORKER.with(|w| w.borrow().as_deref().map(f))
}
