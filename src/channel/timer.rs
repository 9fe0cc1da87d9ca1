//! Timer channels: [`after`], [`tick`] and [`never`], for `select!` arms
//! that fire on time (crossbeam-channel's functions of the same names).
//!
//! The process-wide timer driver (`time/driver.rs`, the same one a runtime's
//! sleeps use, in its own instance) sends on these channels at their deadlines.
//! The channels never disconnect (the receiver holds a sender count of its
//! own), so an `after` arm fires once and then never again, as in crossbeam,
//! instead of reporting a disconnection on every later round.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::Receiver;
use super::chan::{Chan, Spare, Wait};
use crate::time::driver::{Alarm, TimerDriver};

/// A timer channel's entry in the process-wide timer driver.
struct TimerChan {
    /// Weak: a receiver that is gone ends its timer.
    chan: Weak<Chan<Instant>>,
    /// `tick`: the period to fire again after.
    every: Option<Duration>,
}

impl Alarm for TimerChan {
    fn ring(&self, at: Instant, now: Instant) -> Option<Instant> {
        let chan = self.chan.upgrade()?;
        // Capacity 1: a tick nobody took yet is not doubled (the late ones
        // are dropped, as crossbeam does).
        // (`Wait::No` never waits, so it never uses the spare slot.)
        let _ = chan.send(Instant::now(), Wait::No, &Spare::new());
        self.every.map(|p| (at + p).max(now))
    }

    fn live(&self) -> bool {
        self.chan.strong_count() > 0
    }
}

fn timer_channel(at: Instant, every: Option<Duration>) -> Receiver<Instant> {
    let chan = Arc::new(Chan::new(Some(1)));
    // The channel starts with one sender and one receiver; the sender count
    // is kept for good, so it never disconnects.
    let now = Instant::now();
    let next = if at <= now {
        // Due already: ready at once, not after a trip through the driver.
        let _ = chan.send(now, Wait::No, &Spare::new());
        every.and_then(|p| now.checked_add(p))
    } else {
        Some(at)
    };
    if let Some(next) = next {
        let alarm = TimerChan {
            chan: Arc::downgrade(&chan),
            every,
        };
        TimerDriver::global().insert_alarm(next, Arc::new(alarm));
    }
    Receiver::from_chan(chan)
}

/// A receiver that gets one message, the current time, after `d`, and
/// nothing ever after (it never disconnects). `after(Duration::ZERO)` is
/// ready at once.
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

/// A receiver that gets one message, the current time, at `when` (at once
/// if `when` has passed), and nothing ever after.
pub fn at(when: Instant) -> Receiver<Instant> {
    timer_channel(when, None)
}

/// A receiver that gets the current time every `period`, starting one
/// period from now. It holds at most one tick: ticks nobody took are
/// dropped, so a slow consumer is not flooded. A zero period (as in
/// crossbeam) gives a receiver that always has a tick ready.
pub fn tick(period: Duration) -> Receiver<Instant> {
    if period.is_zero() {
        let chan = Chan::with(Some(1), Some(Instant::now as fn() -> Instant), false);
        let _ = chan.send(Instant::now(), Wait::No, &Spare::new());
        return Receiver::from_chan(Arc::new(chan));
    }
    match Instant::now().checked_add(period) {
        Some(at) => timer_channel(at, Some(period)),
        None => never(),
    }
}

/// A receiver that never gets a message and never disconnects (a `select!`
/// arm that is switched off). All of them are the same channel
/// ([`Receiver::same_channel`]).
pub fn never<T>() -> Receiver<T> {
    Receiver::from_chan(Arc::new(Chan::with(Some(0), None, true)))
}
