//! The channel core shared by every `Sender` and `Receiver` of one channel.
//!
//! One internal lock guards the buffer, the endpoint counts and two FIFO
//! queues of blocked callers. A blocked sender waits in a [`Slot`] holding its
//! message; a blocked receiver waits in an empty one. Whoever completes a
//! blocked caller does it entirely under the lock: takes the slot out of its
//! queue, moves the message in or out, and resolves the waiter. Invariants
//! (under the lock):
//!
//! * receivers wait only while the buffer is empty and no sender waits;
//! * senders wait only while the buffer is full (always, for capacity 0).
//!
//! So a message is in exactly one place at a time (a sender's slot, the
//! buffer, a receiver's slot), and a caller whose deadline passes settles the
//! race under the lock: if its slot is still queued it withdraws (a sender
//! gets its message back), otherwise the hand-off happened and it is honoured
//! (a receiver returns the message even though its deadline just passed).
//! Messages are never dropped while the lock is held (a message's destructor
//! may itself use the channel).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_utils::atomic::AtomicCell;

use super::select::Observer;
use crate::sync::waiters::{Internal, OnUnwind, WAITING, Waiter};

/// The counterpart took the message or delivered one.
const DONE: u8 = 1;
/// The other side disconnected while this caller waited.
const DISCONNECTED: u8 = 2;

/// A blocked caller and its message (a sender's, or one handed to a receiver).
struct Slot<T> {
    w: Waiter,
    msg: parking_lot::Mutex<Option<T>>,
}

impl<T> Slot<T> {
    fn new(msg: Option<T>) -> Arc<Slot<T>> {
        Arc::new(Slot {
            w: Waiter::current(),
            msg: parking_lot::Mutex::new(msg),
        })
    }

    /// A slot for the caller to wait in with `msg`: `spare` if nobody else
    /// holds it any more, a new one otherwise.
    fn reuse(spare: &Spare<T>, msg: Option<T>) -> Arc<Slot<T>> {
        if let Some(mut s) = spare.0.take()
            && let Some(slot) = Arc::get_mut(&mut s)
        {
            slot.w.renew();
            *slot.msg.get_mut() = msg;
            return s;
        }
        Slot::new(msg)
    }

    fn take(&self) -> T {
        self.msg
            .lock()
            .take()
            .expect("kvant internal error: channel slot without a message")
    }
}

/// The slot an endpoint's last blocking call waited in, kept for its next
/// one, so that a blocked send or receive allocates nothing (malloc and
/// free were an eighth of a channel hop's instructions). Taken and kept
/// with one atomic swap each, so it never blocks anyone: an endpoint shared
/// by several tasks at once just allocates now and then. A kept slot holds
/// no message and wakes nobody: it keeps no task alive (nor, through it, a
/// detached task's result).
pub(crate) struct Spare<T>(AtomicCell<Option<Arc<Slot<T>>>>);

impl<T> Spare<T> {
    pub(crate) fn new() -> Self {
        // One pointer with a niche: a plain atomic word, no lock behind it.
        const { assert!(AtomicCell::<Option<Arc<Slot<T>>>>::is_lock_free()) };
        Spare(AtomicCell::new(None))
    }

    /// Keep `slot` (its message gone: taken or handed over) for the next
    /// call, if nobody else holds it any more (a resolver on another worker
    /// may still, for a moment: then it is simply dropped).
    fn keep(&self, mut slot: Arc<Slot<T>>) {
        let Some(s) = Arc::get_mut(&mut slot) else {
            return;
        };
        s.w.forget();
        // Normally empty; if another call on this endpoint kept one
        // meanwhile, that one goes.
        drop(self.0.swap(Some(slot)));
    }
}

struct State<T> {
    buf: VecDeque<T>,
    senders: usize,
    receivers: usize,
    send_q: VecDeque<Arc<Slot<T>>>,
    recv_q: VecDeque<Arc<Slot<T>>>,
    /// Selects waiting for this channel to change (`select.rs`); all are
    /// woken, and drop out, at the next change that could make one of
    /// their operations ready.
    /// With each, whether it waits to receive: on a zero-capacity channel
    /// such a select counts as a receiver for a select's send (see
    /// `send_ready`).
    observers: Vec<(Arc<Observer>, bool)>,
}

impl<T> State<T> {
    /// Take the observers to wake once the lock is released.
    fn changed(&mut self) -> Vec<(Arc<Observer>, bool)> {
        if self.observers.is_empty() {
            Vec::new() // no allocation on the plain path
        } else {
            std::mem::take(&mut self.observers)
        }
    }
}

#[inline]
fn wake_observers(list: Vec<(Arc<Observer>, bool)>) {
    // The plain path (nobody selects on this channel) is this test, inlined
    // where `changed` made the empty list: nothing to call, build or drop.
    if !list.is_empty() {
        notify_observers(list);
    }
}

#[cold]
fn notify_observers(list: Vec<(Arc<Observer>, bool)>) {
    for (o, _) in list {
        o.notify();
    }
}

fn withdraw<T>(q: &mut VecDeque<Arc<Slot<T>>>, slot: &Arc<Slot<T>>) {
    if let Some(i) = q.iter().position(|s| Arc::ptr_eq(s, slot)) {
        q.remove(i);
    }
}

/// Why a send did not complete.
pub(crate) enum SendFail<T> {
    /// No room (and the deadline passed, or the caller would not wait).
    Full(T),
    /// Every receiver is gone.
    Disconnected(T),
}

/// Why a receive did not complete.
pub(crate) enum RecvFail {
    /// Nothing to receive (and the deadline passed, or no waiting allowed).
    Empty,
    /// Nothing to receive, and every sender is gone.
    Disconnected,
}

/// How long a call may wait: not at all, until a deadline, or forever.
#[derive(Clone, Copy)]
pub(crate) enum Wait {
    No,
    Until(Option<Instant>),
}

impl Wait {
    #[inline]
    fn expired(self) -> bool {
        match self {
            Wait::No => true,
            Wait::Until(d) => d.is_some_and(|d| Instant::now() >= d),
        }
    }

    #[inline]
    fn deadline(self) -> Option<Instant> {
        match self {
            Wait::No => Some(Instant::now()),
            Wait::Until(d) => d,
        }
    }
}

pub(crate) struct Chan<T> {
    /// `None`: unbounded.
    cap: Option<usize>,
    state: Internal<State<T>>,
}

impl<T> Chan<T> {
    /// A channel with one sender and one receiver.
    pub(crate) fn new(cap: Option<usize>) -> Chan<T> {
        Chan {
            cap,
            state: Internal::new(State {
                buf: VecDeque::new(),
                senders: 1,
                receivers: 1,
                send_q: VecDeque::new(),
                recv_q: VecDeque::new(),
                observers: Vec::new(),
            }),
        }
    }

    /// `spare`: the sending endpoint's (see [`Spare`]). Inlined into the
    /// endpoints' calls (see `Receiver::recv`): its critical sections hold
    /// the internal lock's preemption guard whether or not they sit in the
    /// user's frame.
    #[inline(always)]
    pub(crate) fn send(&self, msg: T, wait: Wait, spare: &Spare<T>) -> Result<(), SendFail<T>> {
        let slot = {
            let mut st = self.state.lock();
            if st.receivers == 0 {
                return Err(SendFail::Disconnected(msg));
            }
            if let Some(r) = st.recv_q.pop_front() {
                *r.msg.lock() = Some(msg);
                r.w.resolve(DONE);
                let _no_preempt = st.unlock();
                r.w.wake();
                return Ok(());
            }
            if self.cap.is_none_or(|c| st.buf.len() < c) {
                st.buf.push_back(msg);
                let obs = st.changed();
                drop(st);
                wake_observers(obs);
                return Ok(());
            }
            if wait.expired() {
                return Err(SendFail::Full(msg));
            }
            let slot = Slot::reuse(spare, Some(msg));
            st.send_q.push_back(slot.clone());
            // A select receiving here can take this message now.
            let obs = st.changed();
            drop(st);
            wake_observers(obs);
            slot
        };
        // Cancelled: withdraw; the message is dropped with the slot.
        let cleanup = OnUnwind::new(|| {
            self.settle(&slot, true);
        });
        let mut s = slot.w.park(wait.deadline());
        if s == WAITING {
            s = self.settle(&slot, true);
        }
        cleanup.disarm();
        let r = match s {
            DONE => Ok(()),
            DISCONNECTED => Err(SendFail::Disconnected(slot.take())),
            _ => Err(SendFail::Full(slot.take())),
        };
        spare.keep(slot);
        r
    }

    /// `spare`: the receiving endpoint's (see [`Spare`]). Inlined as
    /// [`send`](Chan::send) is.
    #[inline(always)]
    pub(crate) fn recv(&self, wait: Wait, spare: &Spare<T>) -> Result<T, RecvFail> {
        let slot = {
            let mut st = self.state.lock();
            if let Some(msg) = st.buf.pop_front() {
                // Room now: the oldest blocked sender's message moves in.
                let sender = st.send_q.pop_front();
                if let Some(s) = &sender {
                    let m = s.take();
                    st.buf.push_back(m);
                    s.w.resolve(DONE);
                }
                // Room for a select's send (if no blocked sender took it).
                let obs = if sender.is_none() {
                    st.changed()
                } else {
                    Vec::new()
                };
                let _no_preempt = st.unlock();
                wake_observers(obs);
                if let Some(s) = sender {
                    s.w.wake();
                }
                return Ok(msg);
            }
            if let Some(s) = st.send_q.pop_front() {
                // Capacity 0: take it straight from the sender.
                let msg = s.take();
                s.w.resolve(DONE);
                let _no_preempt = st.unlock();
                s.w.wake();
                return Ok(msg);
            }
            if st.senders == 0 {
                return Err(RecvFail::Disconnected);
            }
            if wait.expired() {
                return Err(RecvFail::Empty);
            }
            let slot = Slot::reuse(spare, None);
            st.recv_q.push_back(slot.clone());
            // A select sending here (capacity 0) can hand its message now.
            let obs = st.changed();
            drop(st);
            wake_observers(obs);
            slot
        };
        let cleanup = OnUnwind::new(|| self.abandon_recv(&slot));
        let mut s = slot.w.park(wait.deadline());
        if s == WAITING {
            s = self.settle(&slot, false);
        }
        cleanup.disarm();
        let r = match s {
            DONE => Ok(slot.take()),
            DISCONNECTED => Err(RecvFail::Disconnected),
            _ => Err(RecvFail::Empty),
        };
        spare.keep(slot);
        r
    }

    /// A wait ended without seeing a resolution: under the lock, withdraw the
    /// slot if it is still queued. Returns the settled state (`WAITING`:
    /// withdrawn).
    fn settle(&self, slot: &Arc<Slot<T>>, sender: bool) -> u8 {
        let mut st = self.state.lock();
        let s = slot.w.state();
        if s == WAITING {
            let q = if sender {
                &mut st.send_q
            } else {
                &mut st.recv_q
            };
            withdraw(q, slot);
        }
        s
    }

    /// A receiver is unwound (cancelled) out of its wait. A message handed to
    /// it at the last moment must not be lost: it goes to the next waiting
    /// receiver, or back to the front of the buffer (which may then hold one
    /// message more than its capacity until it drains).
    fn abandon_recv(&self, slot: &Arc<Slot<T>>) {
        let mut st = self.state.lock();
        match slot.w.state() {
            WAITING => withdraw(&mut st.recv_q, slot),
            DONE => {
                let msg = slot.take();
                if let Some(r) = st.recv_q.pop_front() {
                    *r.msg.lock() = Some(msg);
                    r.w.resolve(DONE);
                    let _no_preempt = st.unlock();
                    r.w.wake();
                } else {
                    st.buf.push_front(msg);
                    // A select receiving here can take it now.
                    let obs = st.changed();
                    drop(st);
                    wake_observers(obs);
                }
            }
            _ => {}
        }
    }

    /// Whether a receive would complete now (a message, or disconnected).
    pub(crate) fn recv_ready(&self) -> bool {
        let st = self.state.lock();
        !st.buf.is_empty() || !st.send_q.is_empty() || st.senders == 0
    }

    /// Whether a send would complete now (room, a waiting receiver, or
    /// disconnected). On a zero-capacity channel a select waiting to
    /// receive counts as a waiting receiver: the send then blocks in the
    /// queue, which wakes that select, which takes the message. Without this
    /// a select's send and another select's receive would never meet.
    /// `me`: the asking select's own observer, which does not count.
    pub(crate) fn send_ready(&self, me: Option<&Arc<Observer>>) -> bool {
        let st = self.state.lock();
        let other = |o: &Arc<Observer>| me.is_none_or(|m| !Arc::ptr_eq(m, o));
        st.receivers == 0
            || !st.recv_q.is_empty()
            || self.cap.is_none_or(|c| st.buf.len() < c)
            || (self.cap == Some(0) && st.observers.iter().any(|(o, recv)| *recv && other(o)))
    }

    /// Wake `o` at this channel's next change (unless it is already ready:
    /// the caller checks again after registering). `recv`: it waits to
    /// receive here.
    pub(crate) fn observe(&self, o: &Arc<Observer>, recv: bool) {
        let mut st = self.state.lock();
        // A new would-be receiver on a rendezvous channel makes selects
        // waiting to send here ready: wake those. Only those: waking other
        // receiving selects would make two of them wake each other forever.
        let wake = if recv && self.cap == Some(0) && st.observers.iter().any(|(_, r)| !r) {
            let (send, keep) = std::mem::take(&mut st.observers)
                .into_iter()
                .partition(|(_, r)| !r);
            st.observers = keep;
            send
        } else {
            Vec::new()
        };
        st.observers.push((o.clone(), recv));
        drop(st);
        wake_observers(wake);
    }

    pub(crate) fn unobserve(&self, o: &Arc<Observer>) {
        self.state
            .lock()
            .observers
            .retain(|(x, _)| !Arc::ptr_eq(x, o));
    }

    pub(crate) fn add_sender(&self) {
        self.state.lock().senders += 1;
    }

    pub(crate) fn add_receiver(&self) {
        self.state.lock().receivers += 1;
    }

    /// The last sender leaving wakes every blocked receiver.
    pub(crate) fn drop_sender(&self) {
        let mut st = self.state.lock();
        st.senders -= 1;
        if st.senders > 0 {
            return;
        }
        let blocked = std::mem::take(&mut st.recv_q);
        let obs = st.changed();
        disconnect(st, blocked, VecDeque::new());
        wake_observers(obs);
    }

    /// The last receiver leaving wakes every blocked sender (they get their
    /// messages back) and drops the buffered messages.
    pub(crate) fn drop_receiver(&self) {
        let mut st = self.state.lock();
        st.receivers -= 1;
        if st.receivers > 0 {
            return;
        }
        let blocked = std::mem::take(&mut st.send_q);
        let buf = std::mem::take(&mut st.buf);
        let obs = st.changed();
        disconnect(st, blocked, buf);
        wake_observers(obs);
    }

    pub(crate) fn len(&self) -> usize {
        self.state.lock().buf.len()
    }

    pub(crate) fn capacity(&self) -> Option<usize> {
        self.cap
    }

    pub(crate) fn senders_gone(&self) -> bool {
        self.state.lock().senders == 0
    }

    pub(crate) fn receivers_gone(&self) -> bool {
        self.state.lock().receivers == 0
    }
}

/// Resolve `blocked` as disconnected, release the lock, then wake them and
/// drop `buf` (destructors run without the lock).
fn disconnect<T>(
    st: crate::sync::waiters::InternalGuard<'_, State<T>>,
    blocked: VecDeque<Arc<Slot<T>>>,
    buf: VecDeque<T>,
) {
    for s in &blocked {
        s.w.resolve(DISCONNECTED);
    }
    let no_preempt = st.unlock();
    for s in &blocked {
        s.w.wake();
    }
    drop(no_preempt); // user destructors below stay preemptible
    drop(buf);
}
