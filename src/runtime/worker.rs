//! One worker: an OS thread that runs tasks from its queues, steals when they
//! run dry, and sleeps when there is nothing anywhere. The order it looks in
//! is `policy.rs`'s, running one slice is `slice.rs`'s, and the sleep
//! protocol is `idle.rs`'s; this file holds the queues' mechanics, the stack
//! cache, the loop that ties them together, and the thread itself.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_deque::{Steal, Worker};

use super::Shared;
use super::context;
use crate::clock;
use crate::preempt::{Identity, group_lock, group_pass, group_unlock, group_wanted};
use crate::task::Task;
use crate::task::stack::Stack;

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
    /// The thread running this context, as its slot names it while it
    /// holds the worker's group lock (`preempt/lend.rs`).
    pub(super) identity: Cell<Identity>,
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
            identity: Cell::new(Identity::default()),
        }
    }

    /// Another thread waits for this worker's group lock: the worker was
    /// lent (`preempt/lend.rs`) and its thread wants it back, or the
    /// stand-in's task is back from its wait. Let it run, then take the
    /// worker again.
    #[cold]
    pub(super) fn pass_group(&self) {
        let slot = &self.me().slot;
        group_pass(slot);
        self.identity.get().install(slot);
    }

    /// Run `wait` (a sleep or nap of this thread) without the worker's
    /// group lock: a thread that runs nothing must not keep whoever the
    /// worker was lent to from going on.
    pub(super) fn without_group<R>(&self, wait: impl FnOnce() -> R) -> R {
        let slot = &self.me().slot;
        group_unlock(slot);
        let r = wait();
        group_lock(slot);
        self.identity.get().install(slot);
        r
    }

    /// Move the tasks in this thread's deque to the global queue.
    pub(super) fn hand_back_local(&self) {
        let mut moved = false;
        while let Some(t) = self.local.pop() {
            self.shared.injector.push(t);
            moved = true;
        }
        if moved {
            self.shared.idle.notify_one();
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
        let me = self.me();
        if me.pinned_len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut pinned = me.pinned.lock();
        let t = pinned.pop_front()?;
        me.pinned_len.store(pinned.len(), Ordering::Relaxed);
        Some(t)
    }

    /// This worker's shared state. The loop looks it up once: indexing
    /// `workers` costs a bounds check and a multiply at every use.
    pub(super) fn me(&self) -> &super::WorkerShared {
        &self.shared.workers[self.index]
    }

    /// Tasks pinned to this worker's thread.
    pub(super) fn pinned_len(&self) -> usize {
        self.me().pinned_len.load(Ordering::Relaxed)
    }

    pub(super) fn push_pinned(&self, task: Arc<Task>) {
        let me = self.me();
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
        let stealers = self.shared.live_stealers();
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
            if let Some(t) = self.next_local(self.me()).or_else(|| self.steal()) {
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
            || shared.live_stealers().iter().any(|s| !s.is_empty())
    }

    pub(super) fn counters(&self) -> &crate::metrics::WorkerCounters {
        &self.me().counters
    }

    pub(super) fn take_stack(&self, size: usize) -> std::io::Result<Stack> {
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

    pub(super) fn give_stack(&self, s: Stack) {
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

    /// The worker loop.
    pub(crate) fn run(self: &Rc<Self>) {
        let shared = self.shared.clone();
        let idle = &shared.idle;
        let mut searching = true;
        let mut awake_since = clock::ticks();
        self.counters().awake_since.bump_set(awake_since);
        let me = self.me();
        loop {
            if shared.stopping.load(Ordering::Acquire) {
                break;
            }
            let mut task = self.next_local(me);
            if task.is_none() && (searching || idle.try_start_searching()) {
                searching = true;
                task = self.steal();
            }
            // Nothing found. Before paying for a futex sleep and, later, the
            // producer's futex wake (a system call each side), look a few
            // more times: a producer that keeps spawning finds us still
            // searching and skips the wake-up entirely.
            if task.is_none() && searching {
                task = self.spin_for_work();
            }
            if let Some(t) = task {
                if searching {
                    searching = false;
                    if idle.stop_searching() {
                        idle.notify_one();
                    }
                }
                if group_wanted(&me.slot) {
                    self.pass_group();
                }
                // SAFETY: `t` was just taken out of a queue (next_local,
                // steal or spin_for_work pop exclusively).
                unsafe { self.run_task(me, t) };
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
            c.sleeps.bump(1);
            let now = clock::ticks();
            c.busy_ticks.bump(now.wrapping_sub(awake_since));
            c.awake_since.bump_set(0);
            // Asleep, the worker runs nothing: whoever it was lent to may
            // go on meanwhile.
            self.without_group(|| idle.sleep(self.index));
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
        let slot = &shared.workers[ctx.index].slot;
        let cpu_quantum = match config.quantum {
            Some(q) if shared.preemptive && config.cpu_clock_quantum => Some((config.signal, q)),
            _ => None,
        };
        // The thread runs the worker's tasks: it holds the worker's group
        // lock, except while it is lent (`preempt/lend.rs`) or asleep; and
        // the slot names it only once it does (a stand-in may still run a
        // compensating slot's tasks from its last thread).
        group_lock(slot);
        if !crate::preempt::enter_worker(slot, cpu_quantum) {
            config.say(
                crate::DiagnosticKind::ThreadStart,
                format!(
                    "kvant: worker {} could not arm its CPU-clock quantum timer; the monitor times its quantum",
                    ctx.index
                ),
            );
        }
        ctx.identity.set(Identity::of_slot(slot));
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
        group_unlock(slot);
        crate::preempt::exit_worker(slot);
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
