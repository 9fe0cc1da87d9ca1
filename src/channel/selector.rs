//! [`Select`]: a set of channel operations built at run time (crossbeam's
//! `Select`), over the same engine as [`select!`](crate::select)
//! (`select.rs`).

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::chan::Chan;
use super::ops::{Grant, Op, RecvOp, SendOp};
use super::select::{self, Observer, SelCtx, Until};
use super::{Receiver, RecvError, SendError, Sender};

/// A dynamic set of channel operations to wait on, crossbeam's `Select`.
///
/// Add operations with [`recv`](Self::recv) and [`send`](Self::send) (each
/// returns its index), then [`select`](Self::select) one. A selected receive
/// has already happened: [`SelectedOperation::recv`] returns its message. A
/// selected send holds what it needs (a buffer place, or a receiver that
/// waits for it): complete it with [`SelectedOperation::send`]. Among ready
/// operations each is chosen with equal probability ([`new_biased`](Self::new_biased):
/// the first added wins).
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
#[derive(Clone, Default)]
pub struct Select<'a> {
    /// `None`: removed.
    handles: Vec<Option<Arc<dyn Handle<'a> + 'a>>>,
    biased: bool,
}

/// One added operation: makes the engine's operation for each call.
trait Handle<'a>: Send + Sync {
    fn op(&self) -> Box<dyn ErasedOp<'a> + 'a>;
}

/// [`Op`] plus what a selected operation hands to [`SelectedOperation`].
trait ErasedOp<'w>: Op<'w> {
    /// The completed receive's result, or the selected send's grant.
    fn outcome(&mut self) -> Box<dyn Any>;
    fn chan_addr(&self) -> usize;
}

struct RecvHandle<'a, T>(&'a Receiver<T>);
struct SendHandle<'a, T>(&'a Sender<T>);

impl<'a, T: Send + 'static> Handle<'a> for RecvHandle<'a, T> {
    fn op(&self) -> Box<dyn ErasedOp<'a> + 'a> {
        Box::new(RecvOp::new(self.0))
    }
}

impl<'a, T: Send + 'static> Handle<'a> for SendHandle<'a, T> {
    fn op(&self) -> Box<dyn ErasedOp<'a> + 'a> {
        Box::new(SendOp::new(self.0))
    }
}

/// A selected receive's result; dropped unread, the message goes back to
/// the channel.
struct Received<T> {
    chan: Arc<Chan<T>>,
    got: Option<Result<T, RecvError>>,
}

impl<T> Drop for Received<T> {
    fn drop(&mut self) {
        if let Some(Ok(msg)) = self.got.take() {
            self.chan.give_back(msg);
        }
    }
}

fn addr<T>(chan: &Arc<Chan<T>>) -> usize {
    Arc::as_ptr(chan) as *const () as usize
}

impl<'w, T: Send + 'static> ErasedOp<'w> for RecvOp<'_, T> {
    fn outcome(&mut self) -> Box<dyn Any> {
        Box::new(Received {
            chan: self.receiver().chan.clone(),
            got: Some(self.take()),
        })
    }
    fn chan_addr(&self) -> usize {
        addr(&self.receiver().chan)
    }
}

impl<'w, T: Send + 'static> ErasedOp<'w> for SendOp<'_, T> {
    fn outcome(&mut self) -> Box<dyn Any> {
        Box::new(self.take_grant())
    }
    fn chan_addr(&self) -> usize {
        addr(&self.sender().chan)
    }
}

/// The operation a [`Select`] selected; complete it with the same channel.
/// Dropping it uncompleted panics, as crossbeam's does (a selected send's
/// place or receiver is given back first, and a received message goes back
/// to its channel, so nothing is lost or left waiting).
#[must_use = "a selected operation must be completed with recv or send"]
pub struct SelectedOperation<'a> {
    index: usize,
    chan: usize,
    outcome: Option<Box<dyn Any>>,
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

/// A removed operation: never ready.
struct Removed;

impl<'w> Op<'w> for Removed {
    fn attempt(&mut self) -> bool {
        false
    }
    fn ready(&self, _me: Option<&Arc<SelCtx>>) -> (bool, u64) {
        (false, 0)
    }
    fn version(&self) -> u64 {
        0
    }
    fn register(&mut self, _ctx: &Arc<SelCtx>, _index: usize) -> bool {
        false
    }
    fn unregister(&mut self) {}
    fn collect(&mut self) -> bool {
        unreachable!("a removed operation is never claimed")
    }
    fn abandon(&mut self) {}
    fn is_live(&self) -> bool {
        false
    }
    fn observe(&self, _o: &Arc<Observer>) {}
    fn unobserve(&self, _o: &Arc<Observer>) {}
    fn set_won(&mut self) {}
}

impl ErasedOp<'_> for Removed {
    fn outcome(&mut self) -> Box<dyn Any> {
        unreachable!("a removed operation is never selected")
    }
    fn chan_addr(&self) -> usize {
        0
    }
}

impl<'a> Select<'a> {
    /// An empty select; among ready operations the choice is random.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty select that prefers the operation added first among those
    /// ready (`select_biased!`).
    pub fn new_biased() -> Self {
        Select {
            handles: Vec::new(),
            biased: true,
        }
    }

    /// Add a receive on `r`; returns its index.
    pub fn recv<T: Send + 'static>(&mut self, r: &'a Receiver<T>) -> usize {
        self.handles.push(Some(Arc::new(RecvHandle(r))));
        self.handles.len() - 1
    }

    /// Add a send on `s`; returns its index.
    pub fn send<T: Send + 'static>(&mut self, s: &'a Sender<T>) -> usize {
        self.handles.push(Some(Arc::new(SendHandle(s))));
        self.handles.len() - 1
    }

    /// Remove the operation at `index` (indices of the others stay).
    ///
    /// # Panics
    /// If `index` was never returned by this select, or was removed already.
    pub fn remove(&mut self, index: usize) {
        assert!(
            self.handles.get(index).is_some_and(Option::is_some),
            "kvant: Select::remove({index}): no such operation"
        );
        self.handles[index] = None;
    }

    /// This select's capacity, emptied and with another lifetime
    /// (crossbeam's `recycle`).
    pub fn recycle<'b>(self) -> Select<'b> {
        Select {
            handles: Vec::new(),
            biased: self.biased,
        }
    }

    fn ops(&self) -> Vec<Box<dyn ErasedOp<'a> + 'a>> {
        self.handles
            .iter()
            .map(|h| match h {
                Some(h) => h.op(),
                None => Box::new(Removed),
            })
            .collect()
    }

    fn run(&mut self, until: Until) -> Option<SelectedOperation<'a>> {
        let mut ops = self.ops();
        let mut refs: Vec<&mut (dyn Op<'a> + 'a)> = ops
            .iter_mut()
            .map(|o| &mut **o as &mut (dyn Op<'a> + 'a))
            .collect();
        let index = select::run(&mut refs, until, self.biased)?;
        drop(refs);
        let op = &mut ops[index];
        Some(SelectedOperation {
            index,
            chan: op.chan_addr(),
            outcome: Some(op.outcome()),
            _sel: std::marker::PhantomData,
        })
    }

    fn look(&mut self, until: Until) -> Option<usize> {
        let mut ops = self.ops();
        let mut refs: Vec<&mut (dyn Op<'a> + 'a)> = ops
            .iter_mut()
            .map(|o| &mut **o as &mut (dyn Op<'a> + 'a))
            .collect();
        select::ready(&mut refs, until)
    }

    /// Wait until one operation completes (a receive) or can (a send).
    /// Inside a task only the green thread parks.
    ///
    /// # Panics
    /// If the select has no operation (it would wait forever).
    pub fn select(&mut self) -> SelectedOperation<'a> {
        self.run(Until::Deadline(None))
            .expect("an untimed select returns an operation")
    }

    /// Like [`select`](Self::select), giving up after `timeout`.
    pub fn select_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<SelectedOperation<'a>, SelectTimeoutError> {
        self.run(Until::after(timeout)).ok_or(SelectTimeoutError)
    }

    /// Like [`select`](Self::select), giving up at `deadline`.
    pub fn select_deadline(
        &mut self,
        deadline: Instant,
    ) -> Result<SelectedOperation<'a>, SelectTimeoutError> {
        self.run(Until::Deadline(Some(deadline)))
            .ok_or(SelectTimeoutError)
    }

    /// Select an operation that is ready now, without waiting. Linearizable:
    /// it fails only if at one moment during the call no operation was ready.
    pub fn try_select(&mut self) -> Result<SelectedOperation<'a>, TrySelectError> {
        self.run(Until::Now).ok_or(TrySelectError)
    }

    /// Wait until some operation is ready and return its index, without
    /// performing it (another receiver may take the message first). A
    /// select's own operations are not each other's partners.
    pub fn ready(&mut self) -> usize {
        self.look(Until::Deadline(None))
            .expect("an untimed ready returns an operation")
    }

    /// Like [`ready`](Self::ready), giving up after `timeout`.
    pub fn ready_timeout(&mut self, timeout: Duration) -> Result<usize, ReadyTimeoutError> {
        self.look(Until::after(timeout)).ok_or(ReadyTimeoutError)
    }

    /// Like [`ready`](Self::ready), giving up at `deadline`.
    pub fn ready_deadline(&mut self, deadline: Instant) -> Result<usize, ReadyTimeoutError> {
        self.look(Until::Deadline(Some(deadline)))
            .ok_or(ReadyTimeoutError)
    }

    /// The index of an operation ready now, if any.
    pub fn try_ready(&mut self) -> Result<usize, TryReadyError> {
        self.look(Until::Now).ok_or(TryReadyError)
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
            addr(&r.chan),
            "kvant: SelectedOperation::recv with a receiver of another operation"
        );
        let outcome = self.outcome.take().expect("completed once");
        let mut got = match outcome.downcast::<Received<T>>() {
            Ok(got) => got,
            Err(other) => {
                self.outcome = Some(other);
                panic!("kvant: SelectedOperation::recv on a send operation");
            }
        };
        got.got.take().expect("received once")
    }

    /// Complete the selected send. It does not wait: its buffer place, or
    /// the receiver it met, was reserved at the selection.
    ///
    /// # Panics
    /// If the selected operation is not a send on `s`.
    pub fn send<T: Send + 'static>(mut self, s: &Sender<T>, msg: T) -> Result<(), SendError<T>> {
        assert_eq!(
            self.chan,
            addr(&s.chan),
            "kvant: SelectedOperation::send with a sender of another operation"
        );
        let outcome = self.outcome.take().expect("completed once");
        match outcome.downcast::<Grant<T>>() {
            Ok(grant) => {
                debug_assert!(Arc::ptr_eq(grant.chan(), &s.chan));
                grant.send(msg)
            }
            Err(other) => {
                self.outcome = Some(other);
                panic!("kvant: SelectedOperation::send on a receive operation");
            }
        }
    }
}

impl Drop for SelectedOperation<'_> {
    fn drop(&mut self) {
        if let Some(outcome) = self.outcome.take() {
            // Gives back what was reserved or received.
            drop(outcome);
            if !std::thread::panicking() {
                panic!("dropped `SelectedOperation` without completing the operation");
            }
        }
    }
}

impl std::fmt::Debug for Select<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Select")
            .field("ops", &self.handles.iter().flatten().count())
            .field("biased", &self.biased)
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
