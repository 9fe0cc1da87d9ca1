//! Waiting on several channel operations at once: [`Select`](super::Select) and
//! [`select!`](crate::select).
//!
//! A select does not queue itself in the channels it waits on. It tries its
//! operations in a random rotation (so no ready operation starves another),
//! and if none is ready it registers an [`Observer`] with every channel,
//! tries once more (a change between the first try and the registration
//! would otherwise be missed), and parks. Any change that could make one of
//! its operations ready (a message or a blocked sender arrives, room or a
//! blocked receiver appears, an end disconnects) wakes every observer of
//! that channel, and the round starts over.
//!
//! A receive is completed inside the select, atomically under the channel's
//! lock, so a message is never lost or taken twice, whatever other
//! receivers do. A send is selected when it is *ready* (room, or a receiver
//! waiting); the message is then sent with a plain `send`, which completes at
//! once unless another sender took the room in between (then it waits, as a
//! `send` does).
//!
//! On a zero-capacity channel a select waiting to receive counts as a
//! waiting receiver for a select's send, so two selects meet there too: the
//! send blocks in the channel's queue, which wakes the receiving select.
//! (Should that select pick another operation first, the send waits for the
//! next receiver, like a send that lost a race for room.)

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::chan::Wait;
use super::{Receiver, RecvError, SendError, Sender};
use crate::task::park::{self, Unparker};

/// A select waiting for any of its channels to change.
#[doc(hidden)]
pub struct Observer {
    notified: AtomicBool,
    who: Unparker,
}

impl Observer {
    pub(crate) fn notify(&self) {
        self.notified.store(true, Ordering::Release);
        self.who.unpark();
    }
}

/// One operation of a select, erased over its message type.
#[doc(hidden)]
pub trait Op<'w> {
    /// Complete a receive now, or report a send ready. True if selected.
    /// `me`: the calling select's observer while registered (a select's own
    /// receive must not count as the partner of its own send).
    fn attempt(&mut self, me: Option<&Arc<Observer>>) -> bool;
    /// Whether the operation would complete now (nothing is consumed).
    fn is_ready(&self) -> bool;
    /// The channel to watch while waiting, and whether to receive there
    /// (`None`: never changes).
    fn watch(&self) -> Option<(Arc<dyn Watch + 'w>, bool)>;
    /// Mark the operation as the one selected.
    fn set_won(&mut self);
}

/// A receive operation (used by `select!` and [`Select::recv`]).
#[doc(hidden)]
pub struct RecvOp<'a, T> {
    pub(super) r: &'a Receiver<T>,
    pub(super) got: Option<Result<T, RecvError>>,
    won: bool,
}

impl<'a, T> RecvOp<'a, T> {
    pub fn new(r: &'a Receiver<T>) -> Self {
        RecvOp {
            r,
            got: None,
            won: false,
        }
    }

    pub fn won(&self) -> bool {
        self.won
    }

    /// The message received (or the disconnection), once selected.
    pub fn take(&mut self) -> Result<T, RecvError> {
        self.got
            .take()
            .expect("kvant: a select's receive result is taken once")
    }
}

impl<'w, T: 'w> Op<'w> for RecvOp<'_, T> {
    fn attempt(&mut self, _me: Option<&Arc<Observer>>) -> bool {
        match self.r.chan.recv(Wait::No, &self.r.spare) {
            Ok(v) => self.got = Some(Ok(v)),
            Err(super::chan::RecvFail::Disconnected) => self.got = Some(Err(RecvError)),
            Err(super::chan::RecvFail::Empty) => return false,
        }
        true
    }
    fn is_ready(&self) -> bool {
        self.r.chan.recv_ready()
    }
    fn watch(&self) -> Option<(Arc<dyn Watch + 'w>, bool)> {
        Some((self.r.chan.clone(), true))
    }
    fn set_won(&mut self) {
        self.won = true;
    }
}

/// A send operation (used by `select!` and [`Select::send`]).
#[doc(hidden)]
pub struct SendOp<'a, T> {
    pub(super) s: &'a Sender<T>,
    won: bool,
}

impl<'a, T> SendOp<'a, T> {
    pub fn new(s: &'a Sender<T>) -> Self {
        SendOp { s, won: false }
    }

    pub fn won(&self) -> bool {
        self.won
    }

    /// Send the message of the selected arm.
    pub fn send(&self, msg: T) -> Result<(), SendError<T>> {
        self.s.send(msg)
    }
}

impl<'w, T: 'w> Op<'w> for SendOp<'_, T> {
    fn attempt(&mut self, me: Option<&Arc<Observer>>) -> bool {
        self.s.chan.send_ready(me)
    }
    fn is_ready(&self) -> bool {
        self.s.chan.send_ready(None)
    }
    fn watch(&self) -> Option<(Arc<dyn Watch + 'w>, bool)> {
        Some((self.s.chan.clone(), false))
    }
    fn set_won(&mut self) {
        self.won = true;
    }
}

/// How long a select may wait.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub enum Until {
    /// Do not wait (`try_select`, `default =>`).
    Now,
    /// Until the deadline (`None`: forever).
    Deadline(Option<Instant>),
}

impl Until {
    pub fn after(d: Duration) -> Until {
        Until::Deadline(Instant::now().checked_add(d))
    }
}

/// A cheap per-thread random start, so ready operations take turns.
fn random_start(n: usize) -> usize {
    thread_local! {
        static SEED: Cell<u64> = Cell::new(crate::clock::ticks() | 1);
    }
    let x = SEED.with(|s| {
        // xorshift64
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    });
    (x % n as u64) as usize
}

/// A channel, erased over its message type, as a select watches it.
#[doc(hidden)]
pub trait Watch {
    fn observe(&self, o: &Arc<Observer>, recv: bool);
    fn unobserve(&self, o: &Arc<Observer>);
}

impl<T> Watch for super::chan::Chan<T> {
    fn observe(&self, o: &Arc<Observer>, recv: bool) {
        super::chan::Chan::observe(self, o, recv);
    }
    fn unobserve(&self, o: &Arc<Observer>) {
        super::chan::Chan::unobserve(self, o);
    }
}

/// Unregisters an observer on every exit, unwinding (an aborted task) included.
struct Registered<'a> {
    chans: Vec<(Arc<dyn Watch + 'a>, bool)>,
    o: Arc<Observer>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        for (c, _) in &self.chans {
            c.unobserve(&self.o);
        }
    }
}

/// Which of `ops` was selected (marked `won`), or `None` on timeout.
/// `consume`: complete receives (select) or only look (ready).
#[doc(hidden)]
pub fn run<'a>(ops: &mut [&mut (dyn Op<'a> + 'a)], until: Until, consume: bool) -> Option<usize> {
    let n = ops.len();
    let try_all = |ops: &mut [&mut (dyn Op<'a> + 'a)],
                   start: usize,
                   me: Option<&Arc<Observer>>|
     -> Option<usize> {
        let i = (0..n).map(|k| (start + k) % n).find(|&i| {
            if consume {
                ops[i].attempt(me)
            } else {
                ops[i].is_ready()
            }
        })?;
        ops[i].set_won();
        Some(i)
    };
    if n == 0 {
        match until {
            Until::Now => return None,
            Until::Deadline(Some(d)) => {
                crate::sleep_until(d);
                return None;
            }
            Until::Deadline(None) => {
                panic!("kvant: select with no operations and no timeout would wait forever")
            }
        }
    }
    let start = random_start(n);
    if let Some(i) = try_all(ops, start, None) {
        return Some(i);
    }
    let deadline = match until {
        Until::Now => return None,
        Until::Deadline(d) => d,
    };
    let chans: Vec<(Arc<dyn Watch + 'a>, bool)> = ops.iter().filter_map(|op| op.watch()).collect();
    if chans.is_empty() && deadline.is_none() {
        panic!("kvant: select with no operations left and no timeout would wait forever");
    }
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let reg = Registered {
            chans: chans.clone(),
            o: Arc::new(Observer {
                notified: AtomicBool::new(false),
                who: park::current_unparker(),
            }),
        };
        for (c, recv) in &reg.chans {
            c.observe(&reg.o, *recv);
        }
        // A change between the last try and the registration woke nobody:
        // look again before sleeping.
        if let Some(i) = try_all(ops, random_start(n), Some(&reg.o)) {
            return Some(i);
        }
        while !reg.o.notified.load(Ordering::Acquire) {
            if !park::park_deadline(deadline) {
                break;
            }
        }
        drop(reg);
        if let Some(i) = try_all(ops, random_start(n), None) {
            return Some(i);
        }
    }
}
