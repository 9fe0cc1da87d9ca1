//! The timer thread: one per runtime, sleeping until the earliest deadline.
//!
//! Timed waits (`sleep`, `park_until`, `join_timeout`, `recv_timeout`, ...)
//! register `(deadline, who)` here and park. The thread wakes exactly at the
//! earliest deadline (no periodic tick, no polling) and unparks whoever is due;
//! a woken task goes to the global queue, which workers check before their
//! local queue whenever it is non-empty, so a sleeper beside CPU hogs runs at
//! the hogs' next switch. A `BTreeMap` keyed by `(deadline, seq)` gives
//! O(log n) insert and cancel, and the earliest entry for free.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use crate::task::park::Unparker;

/// Identifies one registered deadline, to cancel it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TimerKey(Instant, u64);

struct State {
    timers: BTreeMap<TimerKey, Unparker>,
    seq: u64,
    stop: bool,
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

    /// Wake `who` at `deadline` (unless cancelled first).
    pub(crate) fn insert(&self, deadline: Instant, who: Unparker) -> TimerKey {
        let mut st = self.state.lock();
        st.seq += 1;
        let key = TimerKey(deadline, st.seq);
        let earliest = st.timers.keys().next().is_none_or(|k| key < *k);
        st.timers.insert(key, who);
        if earliest {
            self.cond.notify_one();
        }
        key
    }

    /// Forget a deadline (a no-op if it already fired).
    pub(crate) fn cancel(&self, key: TimerKey) {
        let removed = self.state.lock().timers.remove(&key);
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
                due.push(entry.remove());
            }
            if !due.is_empty() {
                drop(st);
                for who in due.drain(..) {
                    who.unpark();
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
            std::mem::take(&mut st.timers)
        };
        for who in pending.into_values() {
            who.unpark();
        }
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
    }
}
