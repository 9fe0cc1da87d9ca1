//! Green-aware multi-producer multi-consumer channels.
//!
//! [`bounded`] and [`unbounded`] create a [`Sender`]/[`Receiver`] pair; both
//! ends can be cloned and sent to other tasks or threads. A blocking send or
//! receive parks only the calling green thread (its worker runs other tasks)
//! and blocks a plain OS thread, so tasks and threads can talk freely.
//!
//! * **Order**: messages from one sender arrive in the order it sent them;
//!   blocked senders and receivers are served first come, first served.
//! * **Exactly once**: every message sent successfully is received exactly
//!   once or dropped with the channel; a send that fails returns the message.
//!   This holds even when a timed receive expires at the very moment a sender
//!   hands it a message (the receiver then returns that message).
//! * **Disconnection**: when every `Sender` is gone, receivers drain what is
//!   buffered and then get `Disconnected`; when every `Receiver` is gone,
//!   sends fail with the message and buffered messages are dropped.
//! * **`bounded(0)`** is a true *rendezvous* channel: `send` waits until a
//!   receiver takes the message, `try_send` succeeds only if a receiver is
//!   already waiting, and `len()` is always 0.
//!
//! # Waiting on several channels
//!
//! [`select!`], [`select_biased!`] and [`Select`] wait until one of several
//! sends or receives can complete and run exactly that one. They keep
//! crossbeam-channel's promises, and its own test suite passes against them
//! (ported, from OS threads and from tasks under a 50 µs quantum):
//!
//! * **A selected send keeps its partner.** When a send is selected, the
//!   buffer place or the waiting receiver it will go to is reserved for it,
//!   so `SelectedOperation::send` completes at once, and on a rendezvous
//!   channel only with the receiver it met. Dropping an uncompleted
//!   `SelectedOperation` gives the reservation back and then panics.
//! * **Linearizable when it does not wait.** A `default` arm, `try_select`,
//!   or a timed select that expires reports "nothing ready" only if at some
//!   moment during the call no operation was ready; one select's send and
//!   receive on the same channel never pair with each other.
//! * **Fair.** Among ready operations each is chosen with equal
//!   probability; [`select_biased!`] and [`Select::new_biased`] take the
//!   first written instead.
//! * **Timers are channels.** [`after`], [`at`], [`tick`] and [`never()`]
//!   select like any receiver; `after(ZERO)` is ready at once, deadlines due
//!   together are rung in random order.
//!
//! Where kvant differs from crossbeam, on purpose:
//!
//! * A receiver reserved by a selected send waits for that message even past
//!   its own timeout (the sender is committed; the message is microseconds
//!   away), and a `try_recv` meeting such a sender may wait for it too.
//! * [`Select`]'s operations need `T: Send + 'static` (it is `Send + Sync`
//!   and clonable, so it owns type-erased handles to its channels).
//! * Forgetting a `SelectedOperation` (`mem::forget`) does not make the
//!   channel's later drops hang, as crossbeam's `forget_select_bounded` test
//!   expects; the reservation is then lost, like a leaked message.
//!
//! ```
//! let rt = kvant::Runtime::builder().workers(2).build().unwrap();
//! let (tx, rx) = kvant::channel::bounded(4);
//! let producers: Vec<_> = (0..3)
//!     .map(|p| {
//!         let tx = tx.clone();
//!         rt.spawn(move || {
//!             for i in 0..10 {
//!                 tx.send(p * 100 + i).unwrap();
//!             }
//!         })
//!     })
//!     .collect();
//! drop(tx); // the channel disconnects when the producers are done
//! let consumer = rt.spawn(move || rx.iter().sum::<i32>());
//! for p in producers {
//!     p.join().unwrap();
//! }
//! assert_eq!(consumer.join().unwrap(), (0..3).map(|p| p * 1000 + 45).sum::<i32>());
//! ```

mod chan;
mod error;
mod iter;
mod macros;
mod ops;
mod reserve;
mod select;
mod selector;
mod slot;
mod timer;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chan::{Chan, RecvFail, SendFail, Spare, Wait};

#[doc(inline)]
pub use crate::{select, select_biased};
pub use error::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
pub use iter::{IntoIter, Iter, TryIter};
pub use selector::{
    ReadyTimeoutError, Select, SelectTimeoutError, SelectedOperation, TryReadyError, TrySelectError,
};
pub use timer::{after, at, never, tick};

/// What `select!` and `select_biased!` expand to; not an API.
#[doc(hidden)]
pub mod internal {
    pub use super::ops::{Op, RecvOp, SendOp};
    pub use super::select::{Observer, SelCtx, Until, run};
}

/// A channel holding at most `cap` messages; `send` waits while it is full.
/// `bounded(0)` is a rendezvous channel (see the [module docs](self)).
pub fn bounded<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    pair(Some(cap))
}

/// A channel without a size limit: `send` never waits.
pub fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    pair(None)
}

fn pair<T>(cap: Option<usize>) -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(Chan::new(cap));
    (
        Sender {
            chan: chan.clone(),
            spare: Spare::new(),
        },
        Receiver::from_chan(chan),
    )
}

fn until(timeout: Duration) -> Wait {
    Wait::Until(crate::sync::waiters::deadline_after(timeout))
}

/// The sending end of a channel. Clone it for more producers; the channel
/// disconnects for receivers when the last clone drops.
pub struct Sender<T> {
    chan: Arc<Chan<T>>,
    spare: Spare<T>,
}

/// The receiving end of a channel. Clone it for more consumers (each message
/// goes to one of them); the channel disconnects for senders when the last
/// clone drops.
///
/// ```
/// use std::time::Duration;
/// use kvant::channel::{RecvTimeoutError, TryRecvError, unbounded};
///
/// let (tx, rx) = unbounded();
/// assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
/// tx.send("hi").unwrap();
/// assert_eq!(rx.recv_timeout(Duration::from_millis(10)), Ok("hi"));
/// assert_eq!(rx.recv_timeout(Duration::from_millis(1)), Err(RecvTimeoutError::Timeout));
/// drop(tx);
/// assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
/// ```
pub struct Receiver<T> {
    chan: Arc<Chan<T>>,
    spare: Spare<T>,
}

impl<T> Sender<T> {
    /// Send, waiting while the channel is full. Fails (returning the message)
    /// only if every receiver is gone.
    ///
    /// Inlined, down to the switch when it blocks, into the caller, as
    /// [`recv`](Receiver::recv) is.
    #[inline(always)]
    pub fn send(&self, msg: T) -> Result<(), SendError<T>> {
        self.chan
            .send(msg, Wait::Until(None), &self.spare)
            .map_err(|e| match e {
                SendFail::Full(m) | SendFail::Disconnected(m) => SendError(m),
            })
    }

    /// Send only if that needs no waiting.
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        self.chan
            .send(msg, Wait::No, &self.spare)
            .map_err(|e| match e {
                SendFail::Full(m) => TrySendError::Full(m),
                SendFail::Disconnected(m) => TrySendError::Disconnected(m),
            })
    }

    /// Send, waiting at most `timeout` for room.
    pub fn send_timeout(&self, msg: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.send_wait(msg, until(timeout))
    }

    /// Send, waiting at most until `deadline` for room.
    pub fn send_deadline(&self, msg: T, deadline: Instant) -> Result<(), SendTimeoutError<T>> {
        self.send_wait(msg, Wait::Until(Some(deadline)))
    }

    fn send_wait(&self, msg: T, wait: Wait) -> Result<(), SendTimeoutError<T>> {
        self.chan.send(msg, wait, &self.spare).map_err(|e| match e {
            SendFail::Full(m) => SendTimeoutError::Timeout(m),
            SendFail::Disconnected(m) => SendTimeoutError::Disconnected(m),
        })
    }

    /// Messages buffered right now.
    pub fn len(&self) -> usize {
        self.chan.len()
    }

    /// Whether no message is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a send would have to wait (always true for capacity 0).
    pub fn is_full(&self) -> bool {
        self.chan.capacity().is_some_and(|c| self.len() >= c)
    }

    /// The capacity; `None` for an unbounded channel.
    pub fn capacity(&self) -> Option<usize> {
        self.chan.capacity()
    }

    /// Whether every receiver is gone (sends will fail).
    pub fn is_disconnected(&self) -> bool {
        self.chan.receivers_gone()
    }

    /// Whether both ends belong to the same channel.
    pub fn same_channel(&self, other: &Sender<T>) -> bool {
        self.chan.same_as(&other.chan)
    }
}

impl<T> Receiver<T> {
    /// The receiver of a channel whose endpoint counts already include it.
    fn from_chan(chan: Arc<Chan<T>>) -> Self {
        Receiver {
            chan,
            spare: Spare::new(),
        }
    }

    /// Receive, waiting until a message arrives. Fails only when the channel
    /// is empty and every sender is gone.
    ///
    /// Inlined, down to the switch when it blocks, into the caller: a task
    /// resumed from its wait goes on in its own code instead of returning
    /// through kvant's frames, whose return addresses the CPU mispredicts
    /// after a switch, and the small helpers it calls inline with it
    /// (measured: BENCHMARKS.md, "Measured decisions"; see
    /// `src/preempt/README.md` on what inlined switches ask of preemption).
    #[inline(always)]
    pub fn recv(&self) -> Result<T, RecvError> {
        self.chan
            .recv(Wait::Until(None), &self.spare)
            .map_err(|_| RecvError)
    }

    /// Receive a message if one is ready.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.chan.try_recv(&self.spare).map_err(|e| match e {
            RecvFail::Empty => TryRecvError::Empty,
            RecvFail::Disconnected => TryRecvError::Disconnected,
        })
    }

    /// Receive, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_wait(until(timeout))
    }

    /// Receive, waiting at most until `deadline`.
    pub fn recv_deadline(&self, deadline: Instant) -> Result<T, RecvTimeoutError> {
        self.recv_wait(Wait::Until(Some(deadline)))
    }

    fn recv_wait(&self, wait: Wait) -> Result<T, RecvTimeoutError> {
        self.chan.recv(wait, &self.spare).map_err(|e| match e {
            RecvFail::Empty => RecvTimeoutError::Timeout,
            RecvFail::Disconnected => RecvTimeoutError::Disconnected,
        })
    }

    /// A blocking iterator: ends when the channel is empty and disconnected.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { rx: self }
    }

    /// A non-blocking iterator over the messages ready now.
    pub fn try_iter(&self) -> TryIter<'_, T> {
        TryIter { rx: self }
    }

    /// Messages buffered right now.
    pub fn len(&self) -> usize {
        self.chan.len()
    }

    /// Whether no message is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the buffer is at capacity (always true for capacity 0).
    pub fn is_full(&self) -> bool {
        self.chan.capacity().is_some_and(|c| self.len() >= c)
    }

    /// The capacity; `None` for an unbounded channel.
    pub fn capacity(&self) -> Option<usize> {
        self.chan.capacity()
    }

    /// Whether every sender is gone (what is buffered can still be received).
    pub fn is_disconnected(&self) -> bool {
        self.chan.senders_gone()
    }

    /// Whether both ends belong to the same channel (every [`never()`]
    /// receiver is the same channel, as in crossbeam).
    pub fn same_channel(&self, other: &Receiver<T>) -> bool {
        self.chan.same_as(&other.chan)
    }
}

// A panic never leaves a channel half-updated: every change is made under
// its internal lock, which is never held across user code (crossbeam's
// endpoints are unwind-safe too).
impl<T> std::panic::UnwindSafe for Sender<T> {}
impl<T> std::panic::RefUnwindSafe for Sender<T> {}
impl<T> std::panic::UnwindSafe for Receiver<T> {}
impl<T> std::panic::RefUnwindSafe for Receiver<T> {}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.chan.add_sender();
        Sender {
            chan: self.chan.clone(),
            spare: Spare::new(),
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        self.chan.add_receiver();
        Receiver::from_chan(self.chan.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.chan.drop_sender();
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.chan.drop_receiver();
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}
