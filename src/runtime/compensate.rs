//! Compensating workers: extra OS threads that run the queued tasks of a
//! worker whose thread is blocked in the kernel.
//!
//! This file is the mechanism; *when* to start or retire one is the
//! monitor's policy (`sysmon/handoff.rs`). A runtime of `n` workers has
//! `max_compensation` more worker slots (queues, slot, counters) reserved
//! from the start; a compensating thread takes a free slot, runs as an
//! ordinary worker (it steals, is preempted, keeps its own pinned queue) and
//! never sleeps in the idle protocol: with nothing left to do it exits.
//!
//! Slot states, and who moves them:
//!
//! ```text
//!   FREE --monitor starts a thread--> ACTIVE <--monitor--> RETIRING
//!   ACTIVE/RETIRING --thread, with nothing left it may run--> LEAVING
//!   LEAVING --thread, last act--> EXITED --monitor joins the thread--> FREE
//! ```
//!
//! Only the monitor joins these threads, and it is also the only one that
//! signals workers, so it never signals a thread it has already joined.
//! A retiring thread takes no new work and hands its movable tasks to the
//! global queue; it keeps running the tasks preempted on it (they may not
//! change threads) until each reaches a switch point or finishes.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use crossbeam_deque::Worker;
use parking_lot::Mutex;

use super::Shared;
use super::worker::WorkerCtx;
use crate::task::Task;

const FREE: u8 = 0;
const ACTIVE: u8 = 1;
const RETIRING: u8 = 2;
/// The thread decided to exit and is cleaning up; it still owns the slot.
const LEAVING: u8 = 3;
const EXITED: u8 = 4;

/// With nothing to do, a compensating thread spins a little (32 to 256
/// pauses between looks), then naps half a blocking threshold between
/// looks a few times, then exits; the monitor starts another if needed.
const IDLE_SPINS: u32 = 4;
const IDLE_NAPS: u32 = 4;

pub(crate) struct CompSlot {
    state: AtomicU8,
    /// The slot's deque while no thread owns it.
    local: Mutex<Option<Worker<Arc<Task>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The reserved slots; slot `c` is worker index `first + c`.
pub(crate) struct Compensation {
    slots: Box<[CompSlot]>,
    first: usize,
    /// Slots ever started (a high-water mark: `start` takes the lowest
    /// free one). Stealers and the monitor look at no slot past it, so a
    /// generous `max_compensation` costs nothing until threads block.
    high: AtomicUsize,
}

impl Compensation {
    pub(crate) fn new(first: usize, locals: Vec<Worker<Arc<Task>>>) -> Self {
        Compensation {
            slots: locals
                .into_iter()
                .map(|w| CompSlot {
                    state: AtomicU8::new(FREE),
                    local: Mutex::new(Some(w)),
                    thread: Mutex::new(None),
                })
                .collect(),
            first,
            high: AtomicUsize::new(0),
        }
    }

    /// Slots that may have been used: the rest are free and empty.
    #[inline]
    pub(crate) fn high(&self) -> usize {
        self.high.load(Ordering::Acquire)
    }

    fn used(&self) -> &[CompSlot] {
        &self.slots[..self.high()]
    }

    /// Threads running and not retiring.
    pub(crate) fn active(&self) -> usize {
        self.count(ACTIVE)
    }

    /// Compensating threads alive (working, retiring or exiting).
    pub(crate) fn alive(&self) -> usize {
        self.count(ACTIVE) + self.count(RETIRING) + self.count(LEAVING)
    }

    fn count(&self, state: u8) -> usize {
        self.used()
            .iter()
            .filter(|s| s.state.load(Ordering::Acquire) == state)
            .count()
    }

    /// Whether worker index `w` is a compensating one.
    pub(crate) fn is_compensating(&self, w: usize) -> bool {
        w >= self.first
    }

    /// Join threads that exited and free their slots (monitor only). A
    /// slot whose deque was lost (a thread that failed to start) stays out
    /// of use.
    pub(crate) fn reap(&self) {
        for s in self.used() {
            if s.state.load(Ordering::Acquire) == EXITED {
                if let Some(t) = s.thread.lock().take() {
                    let _ = t.join();
                }
                if s.local.lock().is_some() {
                    s.state.store(FREE, Ordering::Release);
                }
            }
        }
    }

    /// Bring one retiring thread back to work; false if none is retiring.
    pub(crate) fn reactivate_one(&self) -> bool {
        self.used().iter().any(|s| {
            s.state
                .compare_exchange(RETIRING, ACTIVE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })
    }

    /// Ask one active thread to retire; false if none is active.
    pub(crate) fn retire_one(&self) -> bool {
        self.used().iter().rev().any(|s| {
            s.state
                .compare_exchange(ACTIVE, RETIRING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })
    }

    /// Start a compensating thread in a free slot (monitor only); false if
    /// every slot is taken or the thread could not be created.
    pub(crate) fn start(&self, shared: &Arc<Shared>) -> bool {
        let Some(c) = self
            .slots
            .iter()
            .position(|s| s.state.load(Ordering::Acquire) == FREE)
        else {
            return false;
        };
        let slot = &self.slots[c];
        let Some(local) = slot.local.lock().take() else {
            return false;
        };
        slot.state.store(ACTIVE, Ordering::Release);
        // Before the thread exists: whatever it queues is in a slot that
        // stealers and the monitor look at.
        self.high.fetch_max(c + 1, Ordering::AcqRel);
        let index = self.first + c;
        shared.worker_started();
        let ctx = WorkerCtx::new(index, shared.clone(), local);
        match super::worker::spawn_thread(ctx, format!("compensating-{c}"), Some(c)) {
            Ok(h) => {
                *slot.thread.lock() = Some(h);
                true
            }
            Err(_) => {
                // The closure (and the deque in it) is gone with the failed
                // spawn; the slot stays out of use (see `reap`).
                slot.state.store(EXITED, Ordering::Release);
                shared.worker_exited();
                false
            }
        }
    }

    /// Join every thread still around (shutdown, after the monitor stopped
    /// and the workers were told to stop).
    pub(crate) fn join_all(&self) {
        for s in self.slots.iter() {
            if let Some(t) = s.thread.lock().take() {
                let _ = t.join();
            }
        }
    }

    /// Detach every thread still around (a shutdown that gave up on stuck ones).
    pub(crate) fn detach_all(&self) {
        for s in self.slots.iter() {
            drop(s.thread.lock().take());
        }
    }

    fn slot_of(&self, index: usize) -> &CompSlot {
        &self.slots[index - self.first]
    }
}

impl WorkerCtx {
    /// The loop of a compensating thread.
    pub(crate) fn run_compensating(self: &Rc<Self>) {
        let shared = self.shared.clone();
        let comp = &shared.compensation;
        let slot = comp.slot_of(self.index);
        let awake_since = crate::clock::ticks();
        self.counters().awake_since.bump_set(awake_since);
        let _busy = BusyUntilExit(self, awake_since);
        let mut idle = 0;
        loop {
            if shared.stopping.load(Ordering::Acquire) {
                break;
            }
            let retiring = slot.state.load(Ordering::Acquire) == RETIRING;
            if retiring {
                self.hand_back_local();
            }
            let task = if retiring {
                self.pop_pinned()
            } else {
                self.next_local(self.me()).or_else(|| self.steal())
            };
            if let Some(t) = task {
                idle = 0;
                if crate::preempt::group_wanted(&self.me().slot) {
                    self.pass_group();
                }
                // SAFETY: `t` was just taken out of a queue (the pops are
                // exclusive).
                unsafe { self.run_task(self.me(), t) };
                continue;
            }
            if self.pinned_len() > 0 {
                continue;
            }
            idle += 1;
            if !retiring && idle <= IDLE_SPINS {
                for _ in 0..(32 << idle) {
                    std::hint::spin_loop();
                }
                continue;
            }
            if !retiring && idle <= IDLE_SPINS + IDLE_NAPS {
                // Still needed as far as the monitor knows: work may come
                // (a timer, a task the blocked one wakes). Nap, look again.
                self.without_group(|| {
                    std::thread::park_timeout(shared.config.blocking_threshold / 2)
                });
                continue;
            }
            self.hand_back_local();
            let from = if retiring { RETIRING } else { ACTIVE };
            if slot
                .state
                .compare_exchange(from, LEAVING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return;
            }
        }
        // Shutdown: like any worker, leave what is queued to the shutdown.
        slot.state.store(LEAVING, Ordering::Release);
        self.leave_leftovers();
    }
}

/// Counts the thread's whole life as busy time, however the loop ends.
struct BusyUntilExit<'a>(&'a WorkerCtx, u64);

impl Drop for BusyUntilExit<'_> {
    fn drop(&mut self) {
        let c = self.0.counters();
        c.busy_ticks
            .bump(crate::clock::ticks().wrapping_sub(self.1));
        c.awake_since.bump_set(0);
    }
}

impl Compensation {
    /// The thread of slot `c` is done with `local` and about to end.
    pub(crate) fn exited(&self, c: usize, local: Option<Worker<Arc<Task>>>) {
        let slot = &self.slots[c];
        *slot.local.lock() = local;
        slot.state.store(EXITED, Ordering::Release);
    }
}
