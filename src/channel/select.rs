//! Waiting on several channel operations at once: [`Select`] and
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

use std::any::Any;
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
    r: &'a Receiver<T>,
    got: Option<Result<T, RecvError>>,
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
        match self.r.chan.recv(Wait::No) {
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
    s: &'a Sender<T>,
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
            match deadline {
                None => park::park(),
                Some(d) if Instant::now() < d => park::park_until(d),
                Some(_) => break,
            }
        }
        drop(reg);
        if let Some(i) = try_all(ops, random_start(n), None) {
            return Some(i);
        }
    }
}

/// A dynamic set of channel operations to wait on, crossbeam's `Select`.
///
/// Add operations with [`recv`](Self::recv) and [`send`](Self::send) (each
/// returns its index), then [`select`](Self::select) one. A selected receive
/// has already happened: [`SelectedOperation::recv`] returns its message. A
/// selected send is ready: complete it with [`SelectedOperation::send`].
///
/// ```
/// use kvant::channel::{Select, unbounded};
///
/// let (tx1, rx1) = unbounded::<i32>();
/// let (_tx2, rx2) = unbounded::<&str>();
/// tx1.send(7).unwrap();
/// let mut sel = Select::new();
/// let a = sel.recv(&rx1);
/// let b = sel.recv(&rx2);
/// let oper = sel.select();
/// assert_eq!(oper.index(), a);
/// assert_eq!(oper.recv(&rx1), Ok(7));
/// # let _ = b;
/// ```
#[derive(Default)]
pub struct Select<'a> {
    ops: Vec<Box<dyn ErasedOp<'a> + 'a>>,
}

/// [`Op`] plus access to a completed receive's message.
trait ErasedOp<'w>: Op<'w> {
    fn take_any(&mut self) -> Option<Box<dyn Any + Send>>;
    fn chan_addr(&self) -> usize;
}

impl<'w, T: Send + 'static> ErasedOp<'w> for RecvOp<'_, T> {
    fn take_any(&mut self) -> Option<Box<dyn Any + Send>> {
        self.got.take().map(|r| Box::new(r) as Box<dyn Any + Send>)
    }
    fn chan_addr(&self) -> usize {
        Arc::as_ptr(&self.r.chan) as *const () as usize
    }
}

impl<'w, T: 'w> ErasedOp<'w> for SendOp<'_, T> {
    fn take_any(&mut self) -> Option<Box<dyn Any + Send>> {
        None
    }
    fn chan_addr(&self) -> usize {
        Arc::as_ptr(&self.s.chan) as *const () as usize
    }
}

/// The operation a [`Select`] selected; complete it with the same channel.
#[must_use = "a selected operation must be completed with recv or send"]
pub struct SelectedOperation<'a> {
    index: usize,
    chan: usize,
    got: Option<Box<dyn Any + Send>>,
    _sel: std::marker::PhantomData<&'a ()>,
}

/// No operation was ready (`try_select`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrySelectError;

/// No operation became ready before the timeout (`select_timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelectTimeoutError;

/// No operation was ready (`try_ready`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TryReadyError;

/// No operation became ready before the timeout (`ready_timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadyTimeoutError;

macro_rules! unit_error {
    ($($t:ident: $msg:literal),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($msg)
            }
        }
        impl std::error::Error for $t {}
    )*};
}
unit_error!(
    TrySelectError: "no operation was ready",
    SelectTimeoutError: "no operation became ready before the timeout",
    TryReadyError: "no operation was ready",
    ReadyTimeoutError: "no operation became ready before the timeout"
);

impl<'a> Select<'a> {
    /// An empty select.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a receive on `r`; returns its index.
    pub fn recv<T: Send + 'static>(&mut self, r: &'a Receiver<T>) -> usize {
        self.ops.push(Box::new(RecvOp::new(r)));
        self.ops.len() - 1
    }

    /// Add a send on `s`; returns its index.
    pub fn send<T>(&mut self, s: &'a Sender<T>) -> usize {
        self.ops.push(Box::new(SendOp::new(s)));
        self.ops.len() - 1
    }

    /// Remove the operation at `index` (indices of the others stay).
    ///
    /// # Panics
    /// If `index` was never returned by this select.
    pub fn remove(&mut self, index: usize) {
        assert!(
            index < self.ops.len(),
            "kvant: Select::remove({index}): no such operation"
        );
        self.ops[index] = Box::new(Removed);
    }

    fn run(&mut self, until: Until, consume: bool) -> Option<usize> {
        let mut ops: Vec<&mut (dyn Op<'a> + 'a)> = self
            .ops
            .iter_mut()
            .map(|o| &mut **o as &mut (dyn Op<'a> + 'a))
            .collect();
        run(&mut ops, until, consume)
    }

    fn selected(&mut self, index: usize) -> SelectedOperation<'a> {
        let op = &mut self.ops[index];
        SelectedOperation {
            index,
            chan: op.chan_addr(),
            got: op.take_any(),
            _sel: std::marker::PhantomData,
        }
    }

    /// Wait until one operation completes (a receive) or is ready (a send).
    /// Inside a task only the green thread parks.
    ///
    /// # Panics
    /// If the select has no operation (it would wait forever).
    pub fn select(&mut self) -> SelectedOperation<'a> {
        let i = self
            .run(Until::Deadline(None), true)
            .expect("an untimed select returns an operation");
        self.selected(i)
    }

    /// Like [`select`](Self::select), giving up after `timeout`.
    pub fn select_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<SelectedOperation<'a>, SelectTimeoutError> {
        self.select_deadline(Instant::now().checked_add(timeout))
    }

    /// Like [`select`](Self::select), giving up at `deadline` (`None`: never).
    pub fn select_deadline(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<SelectedOperation<'a>, SelectTimeoutError> {
        match self.run(Until::Deadline(deadline), true) {
            Some(i) => Ok(self.selected(i)),
            None => Err(SelectTimeoutError),
        }
    }

    /// Select an operation that is ready now, without waiting.
    pub fn try_select(&mut self) -> Result<SelectedOperation<'a>, TrySelectError> {
        match self.run(Until::Now, true) {
            Some(i) => Ok(self.selected(i)),
            None => Err(TrySelectError),
        }
    }

    /// Wait until some operation is ready and return its index, without
    /// performing it (another receiver may take the message first).
    pub fn ready(&mut self) -> usize {
        self.run(Until::Deadline(None), false)
            .expect("an untimed ready returns an operation")
    }

    /// Like [`ready`](Self::ready), giving up after `timeout`.
    pub fn ready_timeout(&mut self, timeout: Duration) -> Result<usize, ReadyTimeoutError> {
        self.run(Until::after(timeout), false)
            .ok_or(ReadyTimeoutError)
    }

    /// The index of an operation ready now, if any.
    pub fn try_ready(&mut self) -> Result<usize, TryReadyError> {
        self.run(Until::Now, false).ok_or(TryReadyError)
    }
}

/// A removed operation: never ready.
struct Removed;

impl<'w> Op<'w> for Removed {
    fn attempt(&mut self, _me: Option<&Arc<Observer>>) -> bool {
        false
    }
    fn is_ready(&self) -> bool {
        false
    }
    fn watch(&self) -> Option<(Arc<dyn Watch + 'w>, bool)> {
        None
    }
    fn set_won(&mut self) {}
}

impl ErasedOp<'_> for Removed {
    fn take_any(&mut self) -> Option<Box<dyn Any + Send>> {
        None
    }
    fn chan_addr(&self) -> usize {
        0
    }
}

impl SelectedOperation<'_> {
    /// The index [`Select::recv`] or [`Select::send`] returned for it.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The result of the selected receive.
    ///
    /// # Panics
    /// If the selected operation is not a receive on `r`.
    pub fn recv<T: Send + 'static>(mut self, r: &Receiver<T>) -> Result<T, RecvError> {
        assert_eq!(
            self.chan,
            Arc::as_ptr(&r.chan) as *const () as usize,
            "kvant: SelectedOperation::recv with a receiver of another operation"
        );
        let got = self
            .got
            .take()
            .expect("kvant: SelectedOperation::recv on a send operation");
        *got.downcast::<Result<T, RecvError>>()
            .expect("the same channel carries the same type")
    }

    /// Complete the selected send (it was ready; it waits only if another
    /// sender took the room meanwhile).
    ///
    /// # Panics
    /// If the selected operation is not a send on `s`.
    pub fn send<T>(self, s: &Sender<T>, msg: T) -> Result<(), SendError<T>> {
        assert!(
            self.chan == Arc::as_ptr(&s.chan) as *const () as usize && self.got.is_none(),
            "kvant: SelectedOperation::send with a sender of another operation"
        );
        s.send(msg)
    }
}

impl std::fmt::Debug for Select<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Select")
            .field("ops", &self.ops.len())
            .finish()
    }
}

impl std::fmt::Debug for SelectedOperation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelectedOperation")
            .field("index", &self.index)
            .finish()
    }
}
