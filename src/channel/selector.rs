//! [`Select`]: a set of channel operations built at run time (crossbeam's
//! `Select`), over the same engine as [`select!`](crate::select)
//! (`select.rs`).

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::select::{Observer, Op, RecvOp, SendOp, Until, Watch, run};
use super::{Receiver, RecvError, SendError, Sender};

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
