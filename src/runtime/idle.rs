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
//! counts; a worker going to sleep first lowers the counts (`SeqCst`), then
//! looks at every queue once more. In any interleaving one of the two sees
//! the other: the producer sees a sleeper to wake, or the worker sees the work.

use std::sync::atomic::{AtomicUsize, Ordering, fence};

use parking_lot::{Condvar, Mutex};

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
pub(crate) struct Parker {
    token: Mutex<bool>,
    cond: Condvar,
}

impl Parker {
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
    parkers: Box<[Parker]>,
    workers: usize,
}

impl Idle {
    pub(crate) fn new(workers: usize) -> Self {
        Idle {
            // All workers start awake and searching for their first task.
            state: AtomicUsize::new(workers * UNPARK_ONE + workers * SEARCH_ONE),
            sleepers: Mutex::new(Vec::with_capacity(workers)),
            parkers: (0..workers).map(|_| Parker::default()).collect(),
            workers,
        }
    }

    /// Work became stealable: make sure some worker will look for it.
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
        self.parkers[w].unpark();
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
            self.parkers[w].unpark();
        }
    }

    /// A worker with nothing to do starts searching, unless half the workers
    /// already are (more searchers only contend on the same queues).
    pub(crate) fn try_start_searching(&self) -> bool {
        let s = self.state.load(Ordering::SeqCst);
        if 2 * searching(s) >= self.workers.max(2) {
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
            self.parkers[w].park();
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
