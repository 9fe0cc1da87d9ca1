//! The idle protocol: how workers go to sleep without losing a wake-up, and
//! how a producer wakes only as many workers as there is work for.
//!
//! Two counts, packed in one atomic word: workers *unparked* (awake) and, of
//! those, workers *searching* (awake with empty queues, stealing). A producer
//! that made work stealable calls [`Idle::notify_one`]:
//!
//! * if anyone is searching, it will find the work: wake nobody. This is what
//!   keeps a burst of spawns from waking every worker one syscall at a time;
//! * otherwise, if someone is asleep, wake exactly one, *as a searcher*.
//!
//! A searcher that finds work stops searching; if it was the last searcher it
//! wakes one more worker, so a burst fans out one worker at a time, each
//! woken by a worker that found work (tokio's idle.rs and rayon's sleep module
//! follow the same idea).
//!
//! No lost wake-up: a producer pushes, then `SeqCst`-fences and reads the
//! counts; a worker going to sleep first lowers the counts, `SeqCst`-fences,
//! then looks at every queue once more. The two fences are ordered one way
//! or the other, so in any interleaving one side sees the other: the
//! producer sees a sleeper to wake, or the worker sees the work. The loom
//! models at the end of this file check it (and fail without the worker's
//! fence, which the C++ memory model needs even though x86 does not).

use crate::loom::atomic::{AtomicUsize, Ordering, fence};
use crate::loom::{Condvar, Mutex};

const SEARCH_ONE: usize = 1;
const UNPARK_ONE: usize = 1 << 16;
const SEARCH_MASK: usize = UNPARK_ONE - 1;

fn searching(s: usize) -> usize {
    s & SEARCH_MASK
}

fn unparked(s: usize) -> usize {
    s >> 16
}

/// A worker's own sleep slot: a token and a condition variable.
#[derive(Default)]
pub(crate) struct SleepSlot {
    token: Mutex<bool>,
    cond: Condvar,
}

impl SleepSlot {
    fn unpark(&self) {
        *self.token.lock() = true;
        self.cond.notify_one();
    }

    fn park(&self) {
        let mut t = self.token.lock();
        while !*t {
            self.cond.wait(&mut t);
        }
        *t = false;
    }
}

pub(crate) struct Idle {
    state: AtomicUsize,
    sleepers: Mutex<Vec<usize>>,
    sleep_slots: Box<[SleepSlot]>,
    workers: usize,
}

impl Idle {
    pub(crate) fn new(workers: usize) -> Self {
        Idle {
            // All workers start awake and searching for their first task.
            state: AtomicUsize::new(workers * UNPARK_ONE + workers * SEARCH_ONE),
            sleepers: Mutex::new(Vec::with_capacity(workers)),
            sleep_slots: (0..workers).map(|_| SleepSlot::default()).collect(),
            workers,
        }
    }

    /// Work became stealable: make sure some worker will look for it.
    /// Inlined: it is one fence and one load on every wake-up and spawn.
    #[inline]
    pub(crate) fn notify_one(&self) {
        fence(Ordering::SeqCst);
        let s = self.state.load(Ordering::SeqCst);
        if searching(s) > 0 || unparked(s) == self.workers {
            return;
        }
        self.wake_one();
    }

    #[cold]
    fn wake_one(&self) {
        let mut sleepers = self.sleepers.lock();
        // Re-check under the lock: another producer may have woken someone.
        let s = self.state.load(Ordering::SeqCst);
        if searching(s) > 0 || unparked(s) == self.workers {
            return;
        }
        let Some(w) = sleepers.pop() else { return };
        self.state
            .fetch_add(UNPARK_ONE + SEARCH_ONE, Ordering::SeqCst);
        drop(sleepers);
        self.sleep_slots[w].unpark();
    }

    /// Wake every sleeping worker (shutdown).
    pub(crate) fn wake_all(&self) {
        let woken: Vec<usize> = {
            let mut sleepers = self.sleepers.lock();
            let n = sleepers.len();
            self.state
                .fetch_add(n * (UNPARK_ONE + SEARCH_ONE), Ordering::SeqCst);
            sleepers.drain(..).collect()
        };
        for w in woken {
            self.sleep_slots[w].unpark();
        }
    }

    /// A worker with nothing to do starts searching, if the policy allows
    /// another searcher (`policy::may_start_searching`).
    pub(crate) fn try_start_searching(&self) -> bool {
        let s = self.state.load(Ordering::SeqCst);
        if !super::policy::may_start_searching(searching(s), self.workers) {
            return false;
        }
        self.state.fetch_add(SEARCH_ONE, Ordering::SeqCst);
        true
    }

    /// A searching worker found work. Returns true if it was the last
    /// searcher, in which case the caller should `notify_one` so the rest of
    /// the work it found is also picked up.
    pub(crate) fn stop_searching(&self) -> bool {
        let prev = self.state.fetch_sub(SEARCH_ONE, Ordering::SeqCst);
        searching(prev) == 1
    }

    /// Announce that worker `w` is going to sleep. The caller must look at
    /// every queue again after this and call [`Idle::cancel_sleep`] if it
    /// found work; otherwise [`Idle::sleep`].
    pub(crate) fn prepare_sleep(&self, w: usize, was_searching: bool) {
        let mut sleepers = self.sleepers.lock();
        let dec = UNPARK_ONE + if was_searching { SEARCH_ONE } else { 0 };
        self.state.fetch_sub(dec, Ordering::SeqCst);
        // Pairs with the fence in `notify_one`: the caller's second look at
        // the queues comes after this in the fences' total order, so either
        // it sees the producer's push, or the producer's load (after its
        // fence) sees this decrement. (A SeqCst RMW alone does not order the
        // caller's later non-SeqCst loads in the C++ model; on x86 the
        // locked instruction already is a full fence.)
        fence(Ordering::SeqCst);
        sleepers.push(w);
    }

    /// Worker `w` found work after `prepare_sleep`. It is awake again, as a
    /// searcher (either it removes itself, or a producer already woke it).
    pub(crate) fn cancel_sleep(&self, w: usize) {
        let mut sleepers = self.sleepers.lock();
        if let Some(i) = sleepers.iter().position(|&x| x == w) {
            sleepers.swap_remove(i);
            self.state
                .fetch_add(UNPARK_ONE + SEARCH_ONE, Ordering::SeqCst);
        }
        // Otherwise a producer already popped us and counted us awake; its
        // token may arrive later and is absorbed by the check in `sleep`.
    }

    /// Sleep until a producer wakes worker `w`. It wakes as a searcher.
    pub(crate) fn sleep(&self, w: usize) {
        loop {
            self.sleep_slots[w].park();
            // A stale token (from a wake that `cancel_sleep` raced with) must
            // not count as a wake-up: only leaving the sleeper list does.
            if !self.sleepers.lock().contains(&w) {
                return;
            }
        }
    }

    /// Whether some worker is asleep or searching, i.e. new stealable work
    /// would be picked up by a worker that has nothing else to do.
    pub(crate) fn wants_work(&self) -> bool {
        let s = self.state.load(Ordering::Relaxed);
        searching(s) > 0 || unparked(s) < self.workers
    }

    /// Number of workers currently asleep.
    pub(crate) fn sleeping(&self) -> usize {
        self.workers - unparked(self.state.load(Ordering::SeqCst))
    }
}

/// Model checks (`RUSTFLAGS="--cfg loom" cargo test --lib loom_`): every
/// interleaving of the protocol's atomics and locks, as loom explores them.
/// A run queue is modelled as a `SeqCst` counter of items (a real push is
/// crossbeam's release store, made visible to `notify_one` by its `SeqCst`
/// fence); the worker loop is the real one in miniature: look, announce
/// sleep, look again, then cancel the sleep or sleep.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// Take one item if there is one.
    fn take(items: &AtomicUsize) -> bool {
        items
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// A worker's idle loop in miniature, until it took one item: look,
    /// announce sleep, look again, then cancel the sleep or sleep. A worker
    /// that stops searching as the last searcher wakes another, as the real
    /// loop does (the rest of the work it found must be picked up too).
    fn worker(idle: &Idle, w: usize, items: &AtomicUsize) {
        let mut searching = true;
        loop {
            if take(items) {
                if searching && idle.stop_searching() {
                    idle.notify_one();
                }
                return;
            }
            idle.prepare_sleep(w, searching);
            if take(items) {
                idle.cancel_sleep(w);
                if idle.stop_searching() {
                    idle.notify_one();
                }
                return;
            }
            idle.sleep(w);
            searching = true;
        }
    }

    /// No lost wake-up: a producer pushes while the only worker goes to
    /// sleep; in every interleaving the worker ends up with the item (loom
    /// reports a deadlock if it could sleep on with the item queued).
    #[test]
    fn loom_one_worker_never_sleeps_through_a_push() {
        loom::model(|| {
            let idle = Arc::new(Idle::new(1));
            let items = Arc::new(AtomicUsize::new(0));
            let (i2, q2) = (idle.clone(), items.clone());
            let producer = loom::thread::spawn(move || {
                q2.fetch_add(1, Ordering::SeqCst);
                i2.notify_one();
            });
            worker(&idle, 0, &items);
            producer.join().unwrap();
            assert_eq!(items.load(Ordering::SeqCst), 0);
        });
    }

    /// Two workers, two pushes: each worker ends up with one item, however
    /// the pushes, notifications and sleeps interleave (a worker left
    /// asleep with an item queued is a deadlock loom reports).
    #[test]
    fn loom_two_workers_take_both_items() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(|| {
            let idle = Arc::new(Idle::new(2));
            let items = Arc::new(AtomicUsize::new(0));
            let w1 = {
                let (idle, items) = (idle.clone(), items.clone());
                loom::thread::spawn(move || worker(&idle, 1, &items))
            };
            let producer = {
                let (idle, items) = (idle.clone(), items.clone());
                loom::thread::spawn(move || {
                    for _ in 0..2 {
                        items.fetch_add(1, Ordering::SeqCst);
                        idle.notify_one();
                    }
                })
            };
            worker(&idle, 0, &items);
            producer.join().unwrap();
            w1.join().unwrap();
            assert_eq!(items.load(Ordering::SeqCst), 0);
        });
    }
}
