//! Which worker (if any) the current OS thread is.
//!
//! Accessors are `#[inline(never)]` for the reason given in
//! `task/current.rs`: task code may call them before and after a switch that
//! moved it to another thread, and each call must look the thread-local up
//! afresh.

use std::cell::RefCell;
use std::rc::Rc;

use super::worker::WorkerCtx;

thread_local! {
    static WORKER: RefCell<Option<Rc<WorkerCtx>>> = const { RefCell::new(None) };
}

pub(crate) fn enter(ctx: Rc<WorkerCtx>) {
    WORKER.with(|w| *w.borrow_mut() = Some(ctx));
}

pub(crate) fn exit() {
    let old = WORKER.with(|w| w.borrow_mut().take());
    drop(old);
}

/// Run `f` with this thread's worker context, if this thread is a worker.
/// `f` must not switch tasks.
#[inline(never)]
pub(crate) fn with_worker<R>(f: impl FnOnce(&WorkerCtx) -> R) -> Option<R> {
    let ctx = WORKER.with(|w| w.borrow().clone())?;
    Some(f(&ctx))
}
