//! One worker: an OS thread that runs tasks from its queues, steals when they
//! run dry, and sleeps when there is nothing anywhere.
//!
//! Queue order, checked at every switch:
//! 1. the global queue, whenever it is non-empty and the previous pick did
//!    not come from it. Tasks woken by timers and by plain threads land there,
//!    so a sleeper beside CPU hogs runs at the next switch rather than after a
//!    full round of the local queue. Alternating keeps a flood of external
//!    spawns from starving local work;
//! 2. the local deque (FIFO: yielded and preempted tasks go to the back, so
//!    tasks sharing a worker take turns: round-robin) and the pinned queue
//!    (preempted tasks that must not migrate), alternately;
//! 3. stealing: the global queue, then other workers' deques, in batches.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_deque::{Steal, Worker};

use super::Shared;
use super::context;
use crate::clock;
use crate::error::Failure;
use crate::task::coroutine::{Ran, Resume, Switch, TaskYielder};
use crate::task::stack::Stack;
use crate::task::{Task, current};

/// Stacks a worker keeps for itself before returning them to the shared pool.
const STACK_CACHE: usize = 64;
/// Rounds of spin-then-steal before a worker with nothing to do sleeps
/// (32, 64, 128, 256 pauses: a few microseconds in all).
const SPIN_ROUNDS: u32 = 4;

pub(crate) struct WorkerCtx {
    pub index: usize,
    pub shared: Arc<Shared>,
    pub local: Worker<Arc<Task>>,
    stacks: RefCell<Vec<Stack>>,
    rng: Cell<u32>,
    /// The pick order's memory (`policy.rs`).
    pub(super) pick: super::policy::PickState,
}

impl WorkerCtx {
    pub(crate) fn new(index: usize, shared: Arc<Shared>, local: Worker<Arc<Task>>) -> Self {
        WorkerCtx {
            index,
            shared,
            local,
            stacks: RefCell::new(Vec::new()),
            rng: Cell::new(0x9E37_79B9 ^ (index as u32 + 1).wrapping_mul(0x85EB_CA6B)),
            pick: Default::default(),
        }
    }

    fn next_rand(&self) -> u32 {
        // xorshift32: victim selection only needs to avoid lockstep.
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng.set(x);
        x
    }

    pub(super) fn pop_pinned(&self) -> Option<Arc<Task>> {
        let me = &self.shared.workers[self.index];
        if me.pinned_len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut pinned = me.pinned.lock();
        let t = pinned.pop_front()?;
        me.pinned_len.store(pinned.len(), Ordering::Relaxed);
        Some(t)
    }

    /// Tasks pinned to this worker's thread.
    pub(super) fn pinned_len(&self) -> usize {
        self.shared.workers[self.index]
            .pinned_len
            .load(Ordering::Relaxed)
    }

    pub(super) fn push_pinned(&self, task: Arc<Task>) {
        let me = &self.shared.workers[self.index];
        let mut pinned = me.pinned.lock();
        pinned.push_back(task);
        me.pinned_len.store(pinned.len(), Ordering::Relaxed);
    }

    pub(super) fn steal_global(&self) -> Option<Arc<Task>> {
        loop {
            let before = self.local.len();
            let injector = &self.shared.injector;
            let share = self.global_share();
            match injector.steal_batch_with_limit_and_pop(&self.local, share) {
                Steal::Success(t) => return Some(self.stole(t, before)),
                Steal::Empty => return None,
                Steal::Retry => {}
            }
        }
    }

    /// Count a successful batch steal that returned `t` and moved the rest
    /// into the local deque (which held `before` tasks).
    fn stole(&self, t: Arc<Task>, before: usize) -> Arc<Task> {
        let extra = self.local.len().saturating_sub(before);
        let c = self.counters();
        c.steal_ops.bump(1);
        c.stolen.bump(1 + extra as u64);
        if extra > 0 {
            // The batch is stealable from here now, but nobody was told:
            // wake a sleeping worker so it does not sit idle while these
            // tasks start (and, once preempted, get pinned) on this one.
            self.shared.idle.notify_one();
        }
        t
    }

    /// Steal from the global queue or another worker.
    pub(super) fn steal(&self) -> Option<Arc<Task>> {
        if let Some(t) = self.steal_global() {
            return Some(t);
        }
        let stealers = &self.shared.stealers;
        let n = stealers.len();
        for _ in 0..4 {
            let mut retry = false;
            let start = self.next_rand() as usize % n;
            for i in 0..n {
                let v = (start + i) % n;
                if v == self.index {
                    continue;
                }
                let before = self.local.len();
                match stealers[v].steal_batch_and_pop(&self.local) {
                    Steal::Success(t) => return Some(self.stole(t, before)),
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            if !retry {
                break;
            }
        }
        None
    }

    /// A few rounds of spinning and stealing before going to sleep.
    fn spin_for_work(&self) -> Option<Arc<Task>> {
        for round in 0..SPIN_ROUNDS {
            for _ in 0..(32 << round) {
                std::hint::spin_loop();
            }
            if self.shared.stopping.load(Ordering::Relaxed) {
                return None;
            }
            if let Some(t) = self.next_local().or_else(|| self.steal()) {
                return Some(t);
            }
        }
        None
    }

    /// Whether any queue this worker could take from has work.
    fn work_anywhere(&self) -> bool {
        let shared = &*self.shared;
        !self.local.is_empty()
            || self.pinned_len() > 0
            || !shared.injector.is_empty()
            || shared.stealers.iter().any(|s| !s.is_empty())
    }

    pub(super) fn counters(&self) -> &crate::metrics::WorkerCounters {
        &self.shared.workers[self.index].counters
    }

    fn take_stack(&self, size: usize) -> std::io::Result<Stack> {
        let pool = &self.shared.stacks;
        if size == pool.stack_size() {
            let mut cache = self.stacks.borrow_mut();
            if cache.is_empty() {
                pool.take_into(&mut cache, STACK_CACHE / 2);
            }
            if let Some(s) = cache.pop() {
                return Ok(s);
            }
        }
        pool.map(size)
    }

    fn give_stack(&self, s: Stack) {
        let pool = &self.shared.stacks;
        if s.size() != pool.stack_size() {
            pool.unmap(s);
            return;
        }
        let mut cache = self.stacks.borrow_mut();
        cache.push(s);
        if cache.len() > STACK_CACHE {
            let half = cache.len() / 2;
            pool.give(cache.drain(..half));
        }
    }

    /// Run one slice of `task`.
    pub(crate) fn run_task(&self, task: Arc<Task>) {
        let shared = &*self.shared;
        // Reaching the header through `Arc<TaskCell<dyn ..>>` computes its
        // offset from the vtable's alignment at every use: do it once.
        let h: &crate::task::Header = &task;
        let claim = task.begin_run();
        let shutdown = shared.cancelling.load(Ordering::Acquire);
        let cancel = shutdown || h.cancelled.load(Ordering::Acquire);
        if shutdown {
            // Its switch points unwind from now on (destructors included).
            h.cancelled.store(true, Ordering::Release);
        }
        if !claim.started() && (cancel || h.abandoned.load(Ordering::Acquire)) {
            // Cancelled (or its work done elsewhere) before its first slice:
            // its closure is dropped here, and it never takes a stack.
            task.discard_fresh(&claim);
            task.packet.fail(self.cancelled_by(shutdown));
            self.retire(&task);
            return;
        }
        // A cancelled task is unwound from the switch point it stopped at.
        // One suspended inside a signal frame (preempted, or switched out of
        // a std::sync wait) cannot be: unwinding through the kernel's frame
        // is undefined. An aborted one runs on to its next switch point,
        // which unwinds it; at shutdown there is no time for that, and it is
        // leaked.
        let in_signal_frame = h.preempt.in_signal_frame.load(Ordering::Relaxed);
        if cancel && in_signal_frame && shutdown {
            claim.leak();
            task.packet.fail(Failure::Leaked);
            shared.report.leaked.fetch_add(1, Ordering::Relaxed);
            self.retire(&task);
            return;
        }
        // A task in a shielded wait (`kvant::join`, `scope`) is resumed
        // normally: the wait goes on, and user code after it stays
        // preemptible; it unwinds at its first switch point after.
        let how = if cancel
            && claim.started()
            && !in_signal_frame
            && h.shield.load(Ordering::Relaxed) == 0
        {
            Resume::Cancel
        } else {
            Resume::Run
        };
        if !claim.started() {
            match self.take_stack(h.stack_size) {
                Ok(stack) => {
                    claim.start(&task, stack, task_entry);
                    h.started.store(true, Ordering::Relaxed);
                }
                Err(e) => {
                    task.discard_fresh(&claim);
                    task.packet.fail(Failure::NoStack(e));
                    self.retire(&task);
                    return;
                }
            }
        }
        h.preempt.in_signal_frame.store(false, Ordering::Relaxed);
        current::set_current(Some(&task));
        let slot = &shared.workers[self.index].slot;
        // Reading the clock is the largest fixed cost of a switch (rdtsc is
        // ~10-30 ns here), so slices are timed only when something uses it
        // (tracing, `task_timing`); the quantum does not need it (the
        // monitor times slices by their number, see sysmon/quantum.rs).
        let start = if shared.timing { clock::ticks() } else { 0 };
        let (lo, hi) = task.stack_bounds();
        // Not preemptible while unwinding at shutdown: a preemption then
        // would leave a half-unwound task that could only be leaked. An
        // aborted task's unwind may be preempted (it is resumed normally
        // and unwinds on).
        let preemptible =
            shared.preemptive && h.preemptible && !(how == Resume::Cancel && shutdown);
        slot.begin(h, lo, hi, preemptible);
        let ran = claim.resume(how);
        slot.end();
        if slot.blocked_since.load(Ordering::Relaxed) != 0 {
            self.close_kernel_block(&task);
        }
        let end = if shared.timing { clock::ticks() } else { 0 };
        current::set_current(None);

        let c = self.counters();
        c.slices.bump(1);
        // Single writer: only the thread holding the run claim updates them.
        h.stats.slices.bump(1);
        if shared.timing {
            h.stats.run_ticks.bump(end.wrapping_sub(start));
        }
        if let Some(trace) = &shared.trace {
            trace.record(self.index, &task, start, end, &ran);
        }
        match ran {
            Ran::Switched(Switch::Yield) => {
                c.yields.bump(1);
                self.local.push(task);
            }
            Ran::Switched(why @ (Switch::Preempted | Switch::SyncWait)) => {
                if why == Switch::Preempted {
                    h.stats.preemptions.bump(1);
                }
                if why == Switch::Preempted && !h.preempt.in_signal_frame.load(Ordering::Relaxed) {
                    // A deferred preemption taken at a `preempt::disable` guard drop.
                    shared.workers[self.index].slot.preemptions.add(1);
                }
                let alone = self.local.is_empty()
                    && shared.workers[self.index]
                        .pinned_len
                        .load(Ordering::Relaxed)
                        == 0;
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
                c.parks_task.bump(1);
                // A parked task is held only by whoever will wake it; the
                // parked-task table lets shutdown find it. Queued and running tasks
                // are found in the queues, so tasks that never block never
                // pay for registration.
                shared.parked.insert_once(&task);
                if task.finish_park()
                    || shared.cancelling.load(Ordering::Acquire) && task.claim_idle()
                {
                    self.local.push(task);
                }
            }
            Ran::Finished(stack) if h.overflowed.load(Ordering::Acquire) => {
                // The overflow handler discarded the task's frames; whatever
                // they pointed to is gone with them. Never reuse this stack.
                self.shared.stacks.leak(stack);
                task.packet.fail(Failure::StackOverflow {
                    stack_size: task.stack_size,
                });
                self.retire(&task);
            }
            Ran::Finished(stack) => {
                self.give_stack(stack);
                if how == Resume::Cancel {
                    // The unwind ended in the body's catch_unwind, which
                    // already failed the packet; this only counts it.
                    task.packet.fail(self.cancelled_by(shutdown));
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
        let slot = &self.shared.workers[self.index].slot;
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
        self.counters().completed.bump(1);
        task.finish();
        self.shared.parked.remove(task);
        self.shared.task_done();
    }

    /// The worker loop.
    pub(crate) fn run(self: &Rc<Self>) {
        let shared = self.shared.clone();
        let idle = &shared.idle;
        let mut searching = true;
        let mut awake_since = clock::ticks();
        self.counters().awake_since.bump_set(awake_since);
        loop {
            if shared.stopping.load(Ordering::Acquire) {
                break;
            }
            let mut task = self.next_local();
            if task.is_none() && (searching || idle.try_start_searching()) {
                searching = true;
                task = self.steal();
            }
            if let Some(t) = task {
                if searching {
                    searching = false;
                    if idle.stop_searching() {
                        idle.notify_one();
                    }
                }
                self.run_task(t);
                continue;
            }
            // Nothing found. Before paying for a futex sleep and, later, the
            // producer's futex wake (~2 µs each side), look a few more times:
            // a producer that keeps spawning finds us still searching and
            // skips the wake-up entirely.
            if searching && let Some(t) = self.spin_for_work() {
                if idle.stop_searching() {
                    idle.notify_one();
                }
                searching = false;
                self.run_task(t);
                continue;
            }
            // Nothing anywhere: announce sleep, look once more, then sleep.
            idle.prepare_sleep(self.index, searching);
            if self.work_anywhere() || shared.stopping.load(Ordering::Acquire) {
                idle.cancel_sleep(self.index);
                searching = true;
                continue;
            }
            let c = self.counters();
            c.parks.bump(1);
            let now = clock::ticks();
            c.busy_ticks.bump(now.wrapping_sub(awake_since));
            c.awake_since.bump_set(0);
            idle.sleep(self.index);
            awake_since = clock::ticks();
            c.awake_since.bump_set(awake_since);
            searching = true;
            if let Some(m) = &*shared.monitor.lock() {
                m.kick();
            }
        }
        if searching {
            idle.stop_searching();
        }
        self.leave_leftovers();
    }

    /// The thread stops: hand its queues to the shutdown and its stacks to
    /// the pool. Tasks pinned here cannot be stolen; nobody else can cancel them.
    pub(super) fn leave_leftovers(&self) {
        let shared = &*self.shared;
        let pinned: Vec<_> = {
            let mut p = shared.workers[self.index].pinned.lock();
            shared.workers[self.index]
                .pinned_len
                .store(0, Ordering::Relaxed);
            p.drain(..).collect()
        };
        shared.leftovers.lock().extend(pinned);
        while let Some(t) = self.local.pop() {
            shared.leftovers.lock().push(t);
        }
        self.release_stacks();
    }

    pub(super) fn release_stacks(&self) {
        let stacks: Vec<_> = self.stacks.borrow_mut().drain(..).collect();
        self.shared.stacks.give(stacks.into_iter());
    }
}

/// First code on every task stack: record the yielder for switches, then
/// run the user's closure (unless the task is cancelled before its first slice).
fn task_entry(yielder: &TaskYielder, task: &Task, input: Resume) {
    task.preempt
        .yielder
        .store(yielder as *const TaskYielder as usize, Ordering::Relaxed);
    if input == Resume::Run {
        task.packet.run_body(&|| task.locals.clear());
    }
}

/// Start the thread of worker `ctx.index`, named `{runtime}-{role}`;
/// `compensating` is its compensation slot, if it is a compensating one.
pub(crate) fn spawn_thread(
    ctx: WorkerCtx,
    role: String,
    compensating: Option<usize>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let name = format!("{}-{role}", ctx.shared.config.name);
    std::thread::Builder::new().name(name).spawn(move || {
        let ctx = Rc::new(ctx);
        let shared = ctx.shared.clone();
        let config = &shared.config;
        if compensating.is_none() && !config.affinity.is_empty() {
            crate::preempt::pin_to_cpu(config.affinity[ctx.index % config.affinity.len()]);
        }
        crate::preempt::enter_worker(&shared.workers[ctx.index].slot);
        context::enter(ctx.clone());
        if let Some(hook) = &config.on_worker_start {
            // A panicking hook must not take the worker down with it.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (hook.0)(ctx.index)));
        }
        match compensating {
            None => ctx.run(),
            Some(_) => ctx.run_compensating(),
        }
        if let Some(hook) = &config.on_worker_stop {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (hook.0)(ctx.index)));
        }
        crate::preempt::exit_worker();
        context::exit();
        // Tasks woken by this thread while it cleaned up land in its deque.
        let local = Rc::try_unwrap(ctx).ok().map(|ctx| {
            while let Some(t) = ctx.local.pop() {
                if shared.stopping.load(Ordering::Acquire) {
                    shared.leftovers.lock().push(t);
                } else {
                    shared.injector.push(t);
                    shared.idle.notify_one();
                }
            }
            ctx.release_stacks();
            ctx.local
        });
        shared.worker_exited();
        if let Some(c) = compensating {
            shared.compensation.exited(c, local);
        }
    })
}
