//! One slice: how a worker resumes a task (run on, or unwind it), the
//! bookkeeping around the stack switch, and where the task goes when the
//! slice ends (back in a queue, with its waker, or out of the runtime).
//! Which task runs next is `policy.rs`'s; looking for one is `worker.rs`'s.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::WorkerShared;
use super::worker::WorkerCtx;
use crate::clock;
use crate::task::coroutine::{Ran, Resume, Switch, TaskYielder};
use crate::task::join_error::Failure;
use crate::task::state::{self, Plan, Snapshot};
use crate::task::{Header, RunClaim, Task, current};

impl WorkerCtx {
    /// Run one slice of `task`: decide how to resume it, run the slice, and
    /// put the task where its switch says. `me`: this worker's shared state
    /// (its slot and counters, used several times each).
    ///
    /// # Safety
    ///
    /// As for [`Header::begin_run`]: `task` was just taken out of a run
    /// queue, and nobody pushed it back.
    // Inlined into the worker loops (one call in each): the stack switch
    // inside clobbers every callee-saved register, and a frame of its own
    // would save and restore them all once more per slice.
    #[inline(always)]
    pub(crate) unsafe fn run_task(&self, me: &WorkerShared, task: Arc<Task>) {
        // SAFETY: this function's own contract.
        let (claim, snap) = unsafe { task.begin_run() };
        let shutdown = self.shared.cancelling.load(Ordering::Acquire);
        let Some(how) = self.prepare(&task, &claim, snap, shutdown) else {
            return;
        };
        let ran = self.slice(me, &task, claim, how, shutdown);
        self.after_slice(me, task, ran, how, shutdown);
    }

    /// How the next slice resumes `task` (run on, or unwind it), giving it a
    /// stack on its first. `None`: the task ended here without a slice.
    #[inline(always)]
    fn prepare(
        &self,
        task: &Arc<Task>,
        claim: &RunClaim<'_>,
        snap: Snapshot,
        shutdown: bool,
    ) -> Option<Resume> {
        // Reaching the header through `Arc<TaskCell<dyn ..>>` computes its
        // offset from the vtable's alignment at every use: do it once.
        let h: &Header = task;
        let plan = state::plan(
            snap,
            shutdown,
            h.preempt.in_signal_frame.load(Ordering::Relaxed),
            || h.shield.load(Ordering::Relaxed) > 0,
        );
        if shutdown && !snap.cancelled() {
            // Its switch points unwind from now on (destructors included).
            h.state.set_cancelled();
        }
        let how = match plan {
            Plan::Discard => {
                task.discard_fresh(claim);
                task.fail(self.cancelled_by(shutdown));
                self.retire(task);
                return None;
            }
            Plan::Leak => {
                claim.leak();
                task.fail(Failure::Leaked);
                self.shared.report.leaked.fetch_add(1, Ordering::Relaxed);
                self.retire(task);
                return None;
            }
            Plan::Resume(how) => how,
            Plan::Start => match self.take_stack(h.stack_size()) {
                Ok(stack) => {
                    claim.start(task, stack, task_entry);
                    Resume::Run
                }
                Err(e) => {
                    task.discard_fresh(claim);
                    task.fail(Failure::NoStack(e));
                    self.retire(task);
                    return None;
                }
            },
        };
        Some(how)
    }

    /// Resume `task` until it switches out or ends, with the bookkeeping a
    /// slice needs around it: the current task, the preemption slot, and
    /// the slice's time and trace when something asks for them.
    #[inline(always)]
    fn slice(
        &self,
        me: &WorkerShared,
        task: &Arc<Task>,
        claim: RunClaim<'_>,
        how: Resume,
        shutdown: bool,
    ) -> Ran {
        let shared = &*self.shared;
        let h: &Header = task;
        h.preempt.in_signal_frame.store(false, Ordering::Relaxed);
        current::set_current(Some(task));
        let slot = &me.slot;
        // Reading the clock is the largest fixed cost of a switch (measured:
        // BENCHMARKS.md, "Measured decisions"), so slices are timed only
        // when something uses it (tracing, `task_timing`); the quantum does
        // not need it (the monitor times slices by their number, see
        // sysmon/quantum.rs).
        let start = if shared.timing { clock::ticks() } else { 0 };
        // Not preemptible while unwinding at shutdown: a preemption then
        // would leave a half-unwound task that could only be leaked. An
        // aborted task's unwind may be preempted (it is resumed normally
        // and unwinds on).
        let preemptible =
            shared.preemptive && h.preemptible && !(how == Resume::Cancel && shutdown);
        slot.begin(h, preemptible);
        let ran = claim.resume(how);
        slot.end();
        if slot.blocked_since.load(Ordering::Relaxed) != 0 {
            self.close_kernel_block(task);
        }
        let end = if shared.timing { clock::ticks() } else { 0 };
        current::set_current(None);

        me.counters.slices.bump(1);
        // Single writer: only the thread holding the run claim updates them.
        h.stats.slices.bump(1);
        if shared.timing {
            h.stats.run_ticks.bump(end.wrapping_sub(start));
        }
        if let Some(trace) = &shared.trace {
            trace.record(self.index, task, start, end, &ran);
        }
        ran
    }

    /// Put `task` where its slice's end says: back in a queue (yielded,
    /// preempted), with its waker (parked), or out of the runtime (ended).
    #[inline(always)]
    fn after_slice(
        &self,
        me: &WorkerShared,
        task: Arc<Task>,
        ran: Ran,
        how: Resume,
        shutdown: bool,
    ) {
        let shared = &*self.shared;
        let h: &Header = &task;
        let c = &me.counters;
        // For a dump: since when it is switched out, with no clock read
        // (not for a yield: it runs again within a round of its queue).
        if let Ran::Switched(Switch::Park | Switch::Preempted | Switch::SyncWait) = ran {
            h.stamp_switch(shared.coarse_ticks.load(Ordering::Relaxed));
        }
        match ran {
            Ran::Switched(Switch::Yield) => {
                c.yields.bump(1);
                shared.tasks.insert_once(&task);
                self.local.push(task);
            }
            Ran::Switched(why @ (Switch::Preempted | Switch::SyncWait)) => {
                if why == Switch::Preempted {
                    h.stats.preemptions.bump(1);
                }
                if why == Switch::Preempted && !h.preempt.in_signal_frame.load(Ordering::Relaxed) {
                    // A deferred preemption taken at a `preempt::disable` guard drop.
                    me.slot.preemptions.add(1);
                }
                shared.tasks.insert_once(&task);
                let alone = self.local.is_empty() && me.pinned_len.load(Ordering::Relaxed) == 0;
                if shared.config.migrate_preempted {
                    self.local.push(task);
                } else {
                    self.push_pinned(task);
                }
                if alone {
                    self.relieve_others();
                }
            }
            Ran::Switched(Switch::Park) => {
                c.task_parks.bump(1);
                // A parked task is held only by whoever will wake it; the
                // task table lets shutdown find it (and a dump list it).
                // Tasks that never switch never pay for registration.
                shared.tasks.insert_once(&task);
                if task.finish_park()
                    || shared.cancelling.load(Ordering::Acquire) && task.claim_idle()
                {
                    self.local.push(task);
                }
            }
            Ran::Finished(stack) if h.state.snapshot().overflowed() => {
                // The overflow handler discarded the task's frames; whatever
                // they pointed to is gone with them. Never reuse this stack.
                shared.stacks.leak(stack);
                task.fail(Failure::StackOverflow {
                    stack_size: task.stack_size(),
                });
                self.retire(&task);
            }
            Ran::Finished(stack) => {
                self.give_stack(stack);
                if how == Resume::Cancel {
                    // The unwind ended in the body's catch_unwind, which
                    // already failed the packet; this only counts it.
                    task.fail(self.cancelled_by(shutdown));
                }
                self.retire(&task);
            }
        }
    }

    /// The slice ended inside a blocked-in-kernel episode the monitor
    /// opened: account for it, unless the monitor just did (see
    /// `sysmon/blocked.rs`).
    #[cold]
    fn close_kernel_block(&self, task: &Task) {
        let slot = &self.me().slot;
        let since = slot.blocked_since.swap(0, Ordering::Relaxed);
        if since == 0 {
            return;
        }
        let now = clock::ticks();
        let d = now.saturating_sub(since);
        task.stats.kernel_ticks.add(d);
        self.counters().kernel_ticks.add(d);
        if let Some(trace) = &self.shared.trace {
            trace.record_kernel(self.index, task.id, task.name.clone(), since, now);
        }
    }

    /// How a cancelled task failed: by shutdown (counted for its report)
    /// or by an abort.
    fn cancelled_by(&self, shutdown: bool) -> Failure {
        if shutdown {
            self.shared.report.cancelled.fetch_add(1, Ordering::Relaxed);
            Failure::Cancelled
        } else {
            Failure::Aborted
        }
    }

    /// The task is finished for good (with a value, a panic, an overflow, a
    /// cancellation...): account for it.
    fn retire(&self, task: &Arc<Task>) {
        task.finish();
        self.shared.tasks.remove(task);
        self.shared.task_done(&self.counters().completed);
    }
}

/// First code on every task stack: record the yielder for switches, then
/// run the user's closure (unless the task is cancelled before its first slice).
fn task_entry(yielder: &TaskYielder, task: &Task, input: Resume) {
    task.preempt
        .yielder
        .store(yielder as *const TaskYielder as usize, Ordering::Relaxed);
    if input == Resume::Run {
        task.packet.run_body(task.owner(), &|| task.locals.clear());
    }
}
