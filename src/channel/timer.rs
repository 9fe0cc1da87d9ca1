//! Timer channels: [`after`], [`tick`] and [`never`], for `select!` arms
//! that fire on time (crossbeam-channel's functions of the same names).
//!
//! One process-wide timer thread sends on these channels at their deadlines.
//! The channels never disconnect (the receiver holds a sender count of its
//! own), so an `after` arm fires once and then never again, as in crossbeam,
//! instead of reporting a disconnection on every later round.

use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::Receiver;
use super::chan::{Chan, Wait};

struct Entry {
    at: Instant,
    chan: std::sync::Weak<Chan<Instant>>,
    /// `tick`: the period to fire again after.
    every: Option<Duration>,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        self.at == o.at
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.at.cmp(&self.at) // earliest first in the max-heap
    }
}

struct Wheel {
    heap: Mutex<Heap>,
    cv: Condvar,
}

/// Pending deadlines. Receivers dropped before their deadline (a
/// `select!` loop with an `after` arm makes one per round) leave dead
/// entries; they are purged whenever the heap doubles, so it stays within
/// twice the live timers (amortised O(1) per timer).
struct Heap {
    entries: BinaryHeap<Entry>,
    purge_at: usize,
}

impl Heap {
    fn push(&mut self, e: Entry) {
        if self.entries.len() >= self.purge_at {
            self.entries.retain(|e| e.chan.strong_count() > 0);
            self.purge_at = (2 * self.entries.len()).max(1024);
        }
        self.entries.push(e);
    }
}

fn wheel() -> &'static Wheel {
    static W: OnceLock<&'static Wheel> = OnceLock::new();
    W.get_or_init(|| {
        let w: &'static Wheel = Box::leak(Box::new(Wheel {
            heap: Mutex::new(Heap {
                entries: BinaryHeap::new(),
                purge_at: 1024,
            }),
            cv: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("kvant-timer-channels".into())
            .spawn(move || run(w))
            .expect("kvant: could not start the timer-channel thread");
        w
    })
}

fn run(w: &'static Wheel) {
    let mut heap = w.heap.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = Instant::now();
        match heap.entries.peek() {
            None => heap = w.cv.wait(heap).unwrap_or_else(|e| e.into_inner()),
            Some(e) if e.at > now => {
                let d = e.at - now;
                heap =
                    w.cv.wait_timeout(heap, d)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
            }
            Some(_) => {
                let mut e = heap.entries.pop().expect("peeked");
                // A receiver that is gone ends its timer.
                let Some(chan) = e.chan.upgrade() else {
                    continue;
                };
                // Capacity 1: a tick nobody took yet is not doubled (the
                // late ones are dropped, as crossbeam does).
                let _ = chan.send(Instant::now(), Wait::No);
                if let Some(p) = e.every {
                    e.at = (e.at + p).max(now);
                    heap.entries.push(e);
                }
            }
        }
    }
}

fn timer_channel(at: Instant, every: Option<Duration>) -> Receiver<Instant> {
    let chan = Arc::new(Chan::new(Some(1)));
    // The channel starts with one sender and one receiver; the sender count
    // is kept for good, so it never disconnects.
    let w = wheel();
    w.heap
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Entry {
            at,
            chan: Arc::downgrade(&chan),
            every,
        });
    w.cv.notify_one();
    Receiver { chan }
}

/// A receiver that gets one message, the current time, after `d`, and
/// nothing ever after (it never disconnects).
///
/// ```
/// use std::time::Duration;
/// let t = kvant::channel::after(Duration::from_millis(5));
/// assert!(t.recv().is_ok());
/// assert!(t.recv_timeout(Duration::from_millis(20)).is_err());
/// ```
pub fn after(d: Duration) -> Receiver<Instant> {
    match Instant::now().checked_add(d) {
        Some(at) => timer_channel(at, None),
        None => never(),
    }
}

/// A receiver that gets the current time every `period`, starting one
/// period from now. It holds at most one tick: ticks nobody took are
/// dropped, so a slow consumer is not flooded.
///
/// # Panics
/// If `period` is zero (it would tick without end).
pub fn tick(period: Duration) -> Receiver<Instant> {
    assert!(
        !period.is_zero(),
        "kvant::channel::tick: the period must not be zero"
    );
    match Instant::now().checked_add(period) {
        Some(at) => timer_channel(at, Some(period)),
        None => never(),
    }
}

/// A receiver that never gets a message and never disconnects (a `select!`
/// arm that is switched off).
pub fn never<T>() -> Receiver<T> {
    Receiver {
        chan: Arc::new(Chan::new(Some(0))),
    }
}
