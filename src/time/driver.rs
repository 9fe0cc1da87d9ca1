//! The timer thread: one per runtime, sleeping until the earliest deadline.
//!
//! Timed waits (`sleep`, `park_until`, `join_timeout`, `recv_timeout`, ...)
//! register `(deadline, who)` here and park. The thread wakes exactly at the
//! earliest deadline (no periodic tick, no polling) and unparks whoever is due;
//! a woken task goes to the global queue, which workers check before their
//! local queue whenever it is non-empty, so a sleeper beside CPU hogs runs at
//! the hogs' next switch. A `BTreeMap` keyed by `(deadline, seq)` gives
//! O(log n) insert and cancel, and the earliest entry for free.
//!
//! A deadline can also ring an [`Alarm`] instead (the timer channels'
//! sends, `channel::after` / `tick`). Those work outside any runtime, so
//! they use one process-wide driver, [`TimerDriver::global`].

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use crate::task::park::Unparker;
use crate::task::schedule::TimerKey;

/// What a deadline does besides waking a parked waiter.
pub(crate) trait Alarm: Send + Sync {
    /// The deadline `at` passed (it is `now`): act, and return when to ring
    /// again, if this is a periodic alarm.
    fn ring(&self, at: Instant, now: Instant) -> Option<Instant>;
    /// Whether anyone can still observe it. Dead alarms (a timer channel's
    /// receiver dropped before its deadline) are purged as the table grows.
    fn live(&self) -> bool;
}

enum Due {
    Unpark(Unparker),
    Alarm(Arc<dyn Alarm>),
}

impl Due {
    fn live(&self) -> bool {
        match self {
            Due::Unpark(_) => true,
            Due::Alarm(a) => a.live(),
        }
    }
}

/// Alarms whose owner is gone stay until their deadline unless purged
/// (a `select!` loop with an `after` arm makes one per round): the table is
/// purged whenever it holds this many alarms, then twice the live ones, so
/// it stays within twice the live alarms (amortised O(1) per alarm). Only
/// alarms count: a purge walks the whole table under its lock, and counting
/// sleepers too made a million sleeping tasks purge at 512k entries, which
/// held the lock for milliseconds while workers waited on it.
const PURGE_AT_LEAST: usize = 1024;

struct State {
    timers: BTreeMap<TimerKey, Due>,
    seq: u64,
    /// Alarms in `timers`.
    alarms: usize,
    purge_at: usize,
    stop: bool,
}

impl State {
    /// Take `key`'s entry out, keeping the count of alarms.
    fn remove(&mut self, key: &TimerKey) -> Option<Due> {
        let d = self.timers.remove(key);
        if let Some(Due::Alarm(_)) = d {
            self.alarms -= 1;
        }
        d
    }
}

pub(crate) struct TimerDriver {
    state: Mutex<State>,
    cond: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl TimerDriver {
    pub(crate) fn start(name: &str) -> std::io::Result<Arc<TimerDriver>> {
        let driver = Arc::new(TimerDriver {
            state: Mutex::new(State {
                timers: BTreeMap::new(),
                seq: 0,
                alarms: 0,
                purge_at: PURGE_AT_LEAST,
                stop: false,
            }),
            cond: Condvar::new(),
            thread: Mutex::new(None),
        });
        let d = driver.clone();
        let handle = std::thread::Builder::new()
            .name(format!("{name}-timer"))
            .spawn(move || d.run())?;
        *driver.thread.lock() = Some(handle);
        Ok(driver)
    }

    /// The process-wide driver (thread `kvant-channels-timer`), for alarms
    /// that must not end with a runtime. Started on first use, never stopped.
    pub(crate) fn global() -> &'static TimerDriver {
        static GLOBAL: OnceLock<Arc<TimerDriver>> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            TimerDriver::start("kvant-channels").expect("kvant: could not start the timer thread")
        })
    }

    /// Wake `who` at `deadline` (unless cancelled first).
    pub(crate) fn insert(&self, deadline: Instant, who: Unparker) -> TimerKey {
        self.insert_due(deadline, Due::Unpark(who))
    }

    /// Ring `alarm` at `deadline`, and again whenever it asks.
    pub(crate) fn insert_alarm(&self, deadline: Instant, alarm: Arc<dyn Alarm>) {
        self.insert_due(deadline, Due::Alarm(alarm));
    }

    fn insert_due(&self, deadline: Instant, due: Due) -> TimerKey {
        let mut st = self.state.lock();
        if st.alarms >= st.purge_at {
            let mut alarms = 0;
            st.timers.retain(|_, d| {
                let keep = d.live();
                alarms += usize::from(keep && matches!(d, Due::Alarm(_)));
                keep
            });
            st.alarms = alarms;
            st.purge_at = (2 * st.alarms).max(PURGE_AT_LEAST);
        }
        if let Due::Alarm(_) = due {
            st.alarms += 1;
        }
        st.seq += 1;
        let key = TimerKey(deadline, st.seq);
        let earliest = st.timers.keys().next().is_none_or(|k| key < *k);
        st.timers.insert(key, due);
        if earliest {
            self.cond.notify_one();
        }
        key
    }

    /// Forget a deadline (a no-op if it already fired).
    pub(crate) fn cancel(&self, key: TimerKey) {
        let removed = self.state.lock().remove(&key);
        drop(removed);
    }

    fn run(&self) {
        crate::clock::set_precise_timers();
        let mut due = Vec::new();
        let mut st = self.state.lock();
        loop {
            if st.stop {
                return;
            }
            let now = Instant::now();
            while let Some(entry) = st.timers.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let at = entry.key().0;
                let d = entry.remove();
                if let Due::Alarm(_) = d {
                    st.alarms -= 1;
                }
                due.push((at, d));
            }
            if !due.is_empty() {
                drop(st);
                // Deadlines that passed together ring in random order: two
                // `after` arms of one select that fire together are then
                // equally likely to win it (as in crossbeam, where both
                // would be found ready).
                shuffle(&mut due);
                let mut again = Vec::new();
                for (at, d) in due.drain(..) {
                    match d {
                        Due::Unpark(who) => who.unpark(),
                        Due::Alarm(a) => {
                            if let Some(next) = a.ring(at, now) {
                                again.push((next, a));
                            }
                        }
                    }
                }
                for (next, a) in again {
                    self.insert_alarm(next, a);
                }
                st = self.state.lock();
                continue;
            }
            match st.timers.keys().next() {
                Some(k) => {
                    let at = k.0;
                    self.cond.wait_until(&mut st, at);
                }
                None => self.cond.wait(&mut st),
            }
        }
    }

    /// Stop the thread. Pending sleepers are woken so nothing waits forever.
    pub(crate) fn stop(&self) {
        let pending = {
            let mut st = self.state.lock();
            st.stop = true;
            self.cond.notify_one();
            st.alarms = 0;
            std::mem::take(&mut st.timers)
        };
        for d in pending.into_values() {
            if let Due::Unpark(who) = d {
                who.unpark();
            }
        }
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
    }
}

/// Fisher–Yates with a clock-seeded xorshift (the order only needs to be
/// unbiased, not unpredictable).
fn shuffle<X>(v: &mut [X]) {
    let mut x = crate::clock::ticks() | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    struct Dead;
    impl Alarm for Dead {
        fn ring(&self, _: Instant, _: Instant) -> Option<Instant> {
            None
        }
        fn live(&self) -> bool {
            false
        }
    }

    /// Rings `left` more times, every millisecond.
    struct Repeat(AtomicU32);
    impl Alarm for Repeat {
        fn ring(&self, at: Instant, now: Instant) -> Option<Instant> {
            let left = self.0.fetch_sub(1, Ordering::Relaxed) - 1;
            (left > 0).then(|| (at + Duration::from_millis(1)).max(now))
        }
        fn live(&self) -> bool {
            true
        }
    }

    #[test]
    fn dead_alarms_are_purged_as_the_table_grows() {
        let d = TimerDriver::start("kvant-purge-test").unwrap();
        let far = Instant::now() + Duration::from_secs(3600);
        let sleeper = std::thread::current();
        let key = d.insert(far, Unparker::Thread(sleeper));
        for _ in 0..10 * PURGE_AT_LEAST {
            d.insert_alarm(far, Arc::new(Dead));
        }
        let st = d.state.lock();
        assert!(st.timers.len() <= PURGE_AT_LEAST + 1, "{}", st.timers.len());
        assert!(st.timers.contains_key(&key), "a waiter was purged");
        drop(st);
        d.stop();
    }

    /// Sleepers never trigger a purge (a purge walks the whole table under
    /// its lock): only alarms count towards one.
    #[test]
    fn sleepers_alone_never_purge() {
        let d = TimerDriver::start("kvant-no-purge-test").unwrap();
        let far = Instant::now() + Duration::from_secs(3600);
        for _ in 0..10 * PURGE_AT_LEAST {
            d.insert(far, Unparker::Nobody);
        }
        let key = d.insert(far, Unparker::Nobody);
        d.insert_alarm(far, Arc::new(Dead));
        let st = d.state.lock();
        assert_eq!(st.timers.len(), 10 * PURGE_AT_LEAST + 2);
        assert_eq!((st.alarms, st.purge_at), (1, PURGE_AT_LEAST));
        drop(st);
        d.cancel(key);
        d.stop();
    }

    #[test]
    fn a_periodic_alarm_rings_until_it_stops_asking() {
        let d = TimerDriver::start("kvant-repeat-test").unwrap();
        let a = Arc::new(Repeat(AtomicU32::new(5)));
        d.insert_alarm(Instant::now(), a.clone());
        let deadline = Instant::now() + Duration::from_secs(30);
        while a.0.load(Ordering::Relaxed) > 0 {
            assert!(Instant::now() < deadline, "the alarm stopped ringing");
            std::thread::sleep(Duration::from_millis(1));
        }
        // The last ring returned None after taking its entry out.
        assert!(d.state.lock().timers.is_empty());
        d.stop();
    }
}
