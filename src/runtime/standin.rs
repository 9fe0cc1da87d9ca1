//! A worker's stand-in: the thread that runs the tasks pinned to a worker
//! while the worker's own thread is lent out, blocked in a futex wait
//! (`preempt/lend.rs` is the mechanism, `sysmon/blocked.rs` decides when).
//!
//! Started by the monitor when a worker (regular or compensating) is to be
//! lent and none of its stand-ins is idle, up to [`MAX_STANDINS`] per
//! worker, and kept until shutdown: tasks preempted here may hold addresses
//! of this thread's thread-locals, so it must outlive them. It runs that
//! worker's tasks, pinned and queued, only while it holds the worker's
//! group lock, and nothing else.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_deque::{Steal, Worker};

use super::Shared;
use super::context;
use super::worker::WorkerCtx;
use crate::preempt::{
    enter_standin, exit_standin, group_try_lock, group_unlock, group_wanted, ring_standins,
    wait_bell,
};
use crate::task::Task;

/// A task that may run on any thread, for a stand-in that has run out of
/// pinned ones: the global queue, its worker's deque, then other workers'.
fn take_movable(ctx: &WorkerCtx) -> Option<Arc<Task>> {
    let shared = &*ctx.shared;
    loop {
        match shared.injector.steal() {
            Steal::Success(t) => return Some(t),
            Steal::Retry => continue,
            Steal::Empty => {}
        }
        match shared.stealers[ctx.index].steal() {
            Steal::Success(t) => return Some(t),
            Steal::Retry => continue,
            Steal::Empty => return ctx.steal(),
        }
    }
}

/// Start the stand-in thread of worker `index`.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    index: usize,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let name = format!("{}-standin-{index}", shared.config.name);
    std::thread::Builder::new().name(name).spawn(move || {
        let ctx = Rc::new(WorkerCtx::new(index, shared.clone(), Worker::new_fifo()));
        let me = ctx.me();
        let slot = &me.slot;
        let identity = enter_standin(slot);
        ctx.identity.set(identity);
        context::enter(ctx.clone());
        // While the worker stays lent and nothing is left to run, look
        // again after a nap that doubles up to this many thresholds: work
        // queued meanwhile may be what the lender waits for, and nothing
        // else would start it with no compensating thread allowed.
        let max_nap = shared.config.blocking_threshold * 8;
        let mut nap: Option<std::time::Duration> = None;
        loop {
            let seen = slot.bell.load(Ordering::Acquire);
            if shared.stopping.load(Ordering::Acquire) {
                break;
            }
            // Only a worker that was lent: otherwise its thread runs it.
            if slot.lent.load(Ordering::SeqCst) > 0 && group_try_lock(slot) {
                identity.install(slot);
                slot.blocked_since.store(0, Ordering::Relaxed);
                let mut ran = false;
                let mut handed_over = false;
                let mut pinned_first = true;
                while !shared.stopping.load(Ordering::Acquire) {
                    // This thread is the worker now: its pinned tasks and
                    // what is queued for it or anywhere, in turns (the
                    // lender may be waiting for a queued one while pinned
                    // hogs take turns).
                    let t = if pinned_first {
                        ctx.pop_pinned().or_else(|| take_movable(&ctx))
                    } else {
                        take_movable(&ctx).or_else(|| ctx.pop_pinned())
                    };
                    pinned_first = !pinned_first;
                    let Some(t) = t else { break };
                    ran = true;
                    // SAFETY: `t` was just taken out of a queue (the pops
                    // and steals are exclusive).
                    unsafe { ctx.run_task(me, t) };
                    // Tasks woken here or that yielded here are free to run
                    // anywhere; no thief sees this thread's deque.
                    ctx.hand_back_local();
                    if group_wanted(slot) {
                        handed_over = true;
                        break;
                    }
                }
                group_unlock(slot);
                if !handed_over && slot.lent.load(Ordering::SeqCst) > 0 {
                    let next = match nap {
                        Some(n) if !ran => (n * 2).min(max_nap),
                        _ => shared.config.blocking_threshold / 2,
                    };
                    nap = Some(next);
                    ctx.release_stacks();
                    wait_bell(slot, seen, Some(next));
                    continue;
                }
            }
            nap = None;
            ctx.release_stacks();
            wait_bell(slot, seen, None);
        }
        exit_standin();
        context::exit();
        while let Some(t) = ctx.local.pop() {
            shared.leftovers.lock().push(t);
        }
        ctx.release_stacks();
    })
}

/// Stand-ins one worker may have: each runs the worker while the thread
/// before it waits; a chain of waits longer than this is reported as a
/// stall (`sysmon/blocked.rs`).
const MAX_STANDINS: usize = 8;

impl Shared {
    /// Whether worker `i` has a stand-in waiting for its bell; starts one
    /// more (up to [`MAX_STANDINS`]) if none waits. Called by the monitor.
    pub(crate) fn standin_ready(self: &Arc<Self>, i: usize) -> bool {
        let w = &self.workers[i];
        if w.slot.standins_idle.load(Ordering::SeqCst) > 0 {
            return true;
        }
        let mut standins = w.standins.lock();
        if standins.len() < MAX_STANDINS && !self.stopping.load(Ordering::Acquire) {
            match spawn(self.clone(), i) {
                Ok(h) => standins.push(h),
                Err(e) => self.config.say(
                    crate::DiagnosticKind::ThreadStart,
                    format!("kvant: could not start a stand-in for worker {i}: {e}"),
                ),
            }
        }
        false
    }

    /// Shutdown: the workers are gone; stop and join their stand-ins by
    /// `deadline`. One still lent (its task waits for something that never
    /// comes) is left detached, as a stuck worker is.
    pub(crate) fn join_standins(&self, deadline: std::time::Instant) {
        let mut all = Vec::new();
        for w in self.workers.iter() {
            let hs: Vec<_> = w.standins.lock().drain(..).collect();
            if !hs.is_empty() {
                ring_standins(&w.slot, i32::MAX);
            }
            all.extend(hs);
        }
        while all.iter().any(|h| !h.is_finished()) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        for h in all {
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}
