//! Shutdown: every task ends up finished, cancelled or reported leaked.
//!
//! 1. *Grace.* New tasks from outside are refused; running tasks (and the
//!    tasks they spawn) get until the deadline to finish.
//! 2. *Cancel.* Each remaining task is cancelled at its next slice: a task
//!    that never ran is dropped; a task at a cooperative switch point
//!    (yield, join, sleep, lock, ...) is unwound from there, so its
//!    destructors run; a task suspended by preemption is *leaked*, because
//!    unwinding through the kernel's signal frame on its stack is undefined.
//!    Parked tasks are pulled out of their wait to be cancelled.
//! 3. *Stop.* The monitor stops first (it may only signal live workers),
//!    then workers leave their loops. A worker stuck in a task that never
//!    yields (cooperative mode) cannot be stopped; after a bounded wait it is
//!    detached and reported, rather than hanging the caller forever.
//!
//! Every phase is bounded: `shutdown_timeout(d)` returns within about
//! `d + 2 × STOP_GRACE`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Runtime;
use crate::task::join_error::Failure;

/// Extra time given to cancellation and to the workers' exit.
pub const STOP_GRACE: Duration = Duration::from_millis(500);

/// What a shutdown found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Every task finished within the grace period.
    pub all_finished: bool,
    /// Tasks cancelled (dropped before running, or unwound at a switch point).
    pub cancelled: usize,
    /// Tasks suspended by preemption whose stacks were leaked, not unwound.
    pub leaked: usize,
    /// Workers still inside a task that never yielded; their threads were detached.
    pub stuck_workers: usize,
}

impl Runtime {
    /// Shut down: let tasks run for up to `grace`, then cancel the rest (see
    /// the module docs of `runtime::shutdown` for the exact rules). Returns
    /// within about `grace + 1 s` even if a task never yields.
    pub fn shutdown_timeout(mut self, grace: Duration) -> ShutdownReport {
        self.shutdown_inner(grace)
    }

    pub(crate) fn shutdown_inner(&mut self, grace: Duration) -> ShutdownReport {
        self.finished = true;
        let shared = self.shared.clone();
        let deadline = Instant::now() + grace;
        shared.closed.store(true, Ordering::Release);
        let mut report = ShutdownReport {
            all_finished: shared.wait_idle(deadline),
            ..ShutdownReport::default()
        };

        if !report.all_finished {
            shared.cancelling.store(true, Ordering::Release);
            // Parked tasks are queued to be unwound. The others (queued, or
            // running now) are resumed with `Cancel` by the workers, which
            // see `cancelling`; flagging a running one here would unwind it
            // at its next switch point as if it had been aborted.
            for t in shared.tasks.snapshot() {
                // Claimed idle tasks come out cancelled.
                if t.claim_idle() {
                    shared.injector.push(t);
                }
            }
            shared.idle.wake_all();
            shared.wait_idle(Instant::now() + STOP_GRACE);
        }

        if let Some(m) = shared.monitor.lock().take() {
            m.stop();
        }
        shared.stopping.store(true, Ordering::Release);
        shared.idle.wake_all();
        report.stuck_workers = shared.wait_workers(Instant::now() + STOP_GRACE);
        if report.stuck_workers == 0 {
            for h in self.threads.drain(..) {
                let _ = h.join();
            }
            shared.compensation.join_all();
            #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
            shared.join_standins(Instant::now() + STOP_GRACE);
        } else {
            self.threads.clear(); // detach: they exit when their task yields
            shared.compensation.detach_all();
            #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
            shared.join_standins(Instant::now());
        }

        // Whatever is still queued: cancel here (no worker will run it again).
        let mut rest: Vec<_> = std::mem::take(&mut *shared.leftovers.lock());
        while let crossbeam_deque::Steal::Success(t) = shared.injector.steal() {
            rest.push(t);
        }
        for s in shared.stealers.iter() {
            while let crossbeam_deque::Steal::Success(t) = s.steal() {
                rest.push(t);
            }
        }
        for t in rest {
            // SAFETY: `t` was just taken out of the leftovers or a queue (a
            // take is exclusive), so nobody else holds it or will run it.
            let (claim, _) = unsafe { t.begin_run() };
            let failure = if claim.started() {
                // Not unwound on this thread: it is not a worker and the task
                // may rely on the runtime while unwinding. Leak instead.
                claim.leak();
                shared.report.leaked.fetch_add(1, Ordering::Relaxed);
                Failure::Leaked
            } else {
                t.discard_fresh(&claim);
                shared.report.cancelled.fetch_add(1, Ordering::Relaxed);
                Failure::Cancelled
            };
            t.fail(failure);
            t.finish();
            shared.tasks.remove(&t);
            shared.task_done(&shared.done_outside);
        }
        shared.blocking.stop(Instant::now() + STOP_GRACE);
        shared.timers.stop();
        report.cancelled = shared.report.cancelled.load(Ordering::Relaxed);
        report.leaked = shared.report.leaked.load(Ordering::Relaxed);
        // What the runtime had to say is said before its owner goes on.
        crate::diagnostic::flush(Instant::now() + Duration::from_millis(200));
        report
    }
}
