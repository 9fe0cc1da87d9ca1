//! The channel core shared by every `Sender` and `Receiver` of one channel.
//!
//! One internal lock guards the buffer, the endpoint counts and two FIFO
//! queues of blocked callers. A blocked sender waits in a [`Slot`] holding its
//! message; a blocked receiver waits in an empty one. A waiting select
//! (`select.rs`) queues one slot per operation, each marked with the select's
//! [`SelCtx`]. Whoever completes a blocked caller does it under the lock:
//! takes the slot out of its queue, *claims* it (always granted for a plain
//! caller; for a select, only if no other operation of that select was
//! claimed first: a compare-and-swap on its context), moves the message in or
//! out, and resolves the waiter. A slot that fails its claim is stale (its
//! select already completed elsewhere or gave up) and is dropped. Invariants
//! (under the lock):
//!
//! * receivers wait only while the buffer is empty;
//! * senders wait only while the buffer has no room, counting the places
//!   `reserved` for selected sends whose message is not made yet.
//!
//! So a message is in exactly one place at a time (a sender's slot, the
//! buffer, a receiver's slot), and a caller whose deadline passes settles the
//! race under the lock: if its slot is still queued it withdraws (a sender
//! gets its message back), otherwise the hand-off happened and it is honoured
//! (a receiver returns the message even though its deadline just passed).
//!
//! A selected send evaluates its message only after the selection (as
//! crossbeam's does), so the select holds a *permit* meanwhile: a buffer place
//! (`reserved`), or the receiver it took out of the queue, which waits for
//! that message and cannot time out while it is reserved. The same holds the
//! other way round: a receiver that claims a waiting select's send becomes
//! that select's partner and waits for its message. A permit dropped unused
//! gives the place back, or sends the reserved receiver back to try again
//! (`RETRY`). Messages are never dropped while the lock is held (a message's
//! destructor may itself use the channel).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::select::Observer;
pub(super) use super::slot::Spare;
use super::slot::{
    ABANDONED, DISCONNECTED, DONE, PARTNER, RETRY, Slot, WAITING, pop_claimed, withdraw,
};
use crate::sync::waiters::{Internal, InternalGuard, OnUnwind};
use crate::task::WaitingOn;

/// An empty buffer with room for more messages than this gives memory back.
const SHRINK_ABOVE: usize = 4096;

pub(super) struct State<T> {
    pub(super) buf: VecDeque<T>,
    pub(super) senders: usize,
    pub(super) receivers: usize,
    pub(super) send_q: VecDeque<Arc<Slot<T>>>,
    pub(super) recv_q: VecDeque<Arc<Slot<T>>>,
    /// Buffer places granted to selected sends that have not sent yet.
    pub(super) reserved: usize,
    /// Bumped by every change that can make an operation ready: a
    /// non-blocking `ready` that saw nothing checks that none of its
    /// channels moved meanwhile (`select.rs`).
    pub(super) version: u64,
    /// `Select::ready` callers waiting for this channel to change; all are
    /// woken, and drop out, at the next change.
    pub(super) observers: Vec<Arc<Observer>>,
}

impl<T> State<T> {
    /// Note a change; take the observers to wake once the lock is released.
    #[inline]
    pub(super) fn changed(&mut self) -> Vec<Arc<Observer>> {
        self.version = self.version.wrapping_add(1);
        if self.observers.is_empty() {
            Vec::new() // no allocation on the plain path
        } else {
            std::mem::take(&mut self.observers)
        }
    }
}

#[inline]
pub(super) fn wake_observers(list: Vec<Arc<Observer>>) {
    // The plain path (nobody waits on `ready` here) is this test, inlined
    // where `changed` made the empty list: nothing to call, build or drop.
    if !list.is_empty() {
        notify_observers(list);
    }
}

#[cold]
fn notify_observers(list: Vec<Arc<Observer>>) {
    for o in list {
        o.notify();
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
    pub(super) cap: Option<usize>,
    pub(super) state: Internal<State<T>>,
    /// A zero-period `tick`: a new message whenever the buffer empties.
    refill: Option<fn() -> T>,
    /// A `never()` channel: every one is the same channel.
    never: bool,
}

impl<T> Chan<T> {
    /// A channel with one sender and one receiver.
    pub(crate) fn new(cap: Option<usize>) -> Chan<T> {
        Chan::with(cap, None, false)
    }

    /// A channel that holds `first` at once and, with `refill`, makes a new
    /// message whenever it is emptied; `never`: see [`Chan::same_as`].
    pub(super) fn with(cap: Option<usize>, refill: Option<fn() -> T>, never: bool) -> Chan<T> {
        Chan {
            cap,
            state: Internal::new(State {
                buf: VecDeque::new(),
                senders: 1,
                receivers: 1,
                send_q: VecDeque::new(),
                recv_q: VecDeque::new(),
                reserved: 0,
                version: 0,
                observers: Vec::new(),
            }),
            refill,
            never,
        }
    }

    /// Whether `self` and `other` are one channel (all `never()`s are).
    /// The channel's address, as a task dump names it.
    fn addr(&self) -> usize {
        self as *const Self as *const () as usize
    }

    pub(super) fn same_as(self: &Arc<Self>, other: &Arc<Self>) -> bool {
        Arc::ptr_eq(self, other) || (self.never && other.never)
    }

    #[inline]
    pub(super) fn has_room(&self, st: &State<T>) -> bool {
        self.cap.is_none_or(|c| st.buf.len() + st.reserved < c)
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
            if let Some(r) = pop_claimed(&mut st.recv_q) {
                r.put(msg);
                r.w.resolve(DONE);
                let _no_preempt = st.unlock();
                r.w.wake();
                return Ok(());
            }
            if self.has_room(&st) {
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
            // A receive can complete now (rendezvous).
            let obs = st.changed();
            drop(st);
            wake_observers(obs);
            slot
        };
        // Cancelled: withdraw; the message is dropped with the slot.
        let cleanup = OnUnwind::new(|| {
            self.settle_send(&slot);
        });
        let mut s = slot.w.park(wait.deadline(), WaitingOn::Send(self.addr()));
        if s == WAITING {
            s = self.settle_send(&slot);
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
        loop {
            let slot = {
                let mut st = self.state.lock();
                if let Some(msg) = st.buf.pop_front() {
                    let (sender, obs) = self.after_pop(&mut st);
                    let _no_preempt = st.unlock();
                    wake_observers(obs);
                    if let Some(s) = sender {
                        s.w.wake();
                    }
                    return Ok(msg);
                }
                if let Some(s) = pop_claimed(&mut st.send_q) {
                    if s.sel.is_none() {
                        // Capacity 0 (or all room reserved): take it straight
                        // from the sender.
                        let msg = s.take();
                        s.w.resolve(DONE);
                        let _no_preempt = st.unlock();
                        s.w.wake();
                        return Ok(msg);
                    }
                    // A waiting select's send: its message is made only
                    // now; wait for it as its partner, whatever `wait` says
                    // (the hand-off is decided).
                    let me = Slot::reuse(spare, None);
                    *s.partner.lock() = Some(me.clone());
                    s.w.resolve(PARTNER);
                    let _no_preempt = st.unlock();
                    s.w.wake();
                    (me, None)
                } else {
                    if st.senders == 0 {
                        return Err(RecvFail::Disconnected);
                    }
                    if wait.expired() {
                        return Err(RecvFail::Empty);
                    }
                    let slot = Slot::reuse(spare, None);
                    st.recv_q.push_back(slot.clone());
                    // A send can complete now (rendezvous).
                    let obs = st.changed();
                    drop(st);
                    wake_observers(obs);
                    (slot, wait.deadline())
                }
            };
            let (slot, deadline) = slot;
            let cleanup = OnUnwind::new(|| self.abandon_recv(&slot));
            let mut s = slot.w.park(deadline, WaitingOn::Recv(self.addr()));
            if s == WAITING {
                s = self.settle_recv(&slot);
            }
            cleanup.disarm();
            let r = match s {
                DONE => Ok(slot.take()),
                DISCONNECTED => Err(RecvFail::Disconnected),
                RETRY => {
                    // The select that reserved this receiver sent nothing:
                    // start over, within the same deadline.
                    spare.keep(slot);
                    continue;
                }
                _ => Err(RecvFail::Empty),
            };
            spare.keep(slot);
            return r;
        }
    }

    /// A receive that does not wait (`try_recv`, a select's first try).
    /// Only the common cases are here; the rest (a blocked sender, which
    /// may be a select whose message is still to be made) is in
    /// [`recv`](Chan::recv), not inlined: a large message is then copied
    /// through fewer stack slots of the caller's frame (crossbeam's suite
    /// receives 32 KiB messages on a task's stack).
    #[inline]
    pub(crate) fn try_recv(&self, spare: &Spare<T>) -> Result<T, RecvFail> {
        {
            let mut st = self.state.lock();
            if let Some(msg) = st.buf.pop_front() {
                let (sender, obs) = self.after_pop(&mut st);
                let _no_preempt = st.unlock();
                wake_observers(obs);
                if let Some(s) = sender {
                    s.w.wake();
                }
                return Ok(msg);
            }
            if st.send_q.is_empty() {
                return Err(if st.senders == 0 {
                    RecvFail::Disconnected
                } else {
                    RecvFail::Empty
                });
            }
        }
        self.recv_outlined(spare)
    }

    #[inline(never)]
    fn recv_outlined(&self, spare: &Spare<T>) -> Result<T, RecvFail> {
        self.recv(Wait::No, spare)
    }

    /// A message was just taken from the buffer: refill a zero-period tick,
    /// let the oldest blocked sender fill the place. Returns that sender (to
    /// wake) and the observers (if the place is still free).
    #[inline]
    fn after_pop(&self, st: &mut State<T>) -> (Option<Arc<Slot<T>>>, Vec<Arc<Observer>>) {
        if st.buf.is_empty() {
            if let Some(make) = self.refill {
                st.buf.push_back(make());
            } else if st.buf.capacity() > SHRINK_ABOVE {
                // A burst is over: an unbounded channel does not keep
                // its peak memory for good.
                st.buf.shrink_to(SHRINK_ABOVE / 8);
            }
        }
        let sender = self.fill_place(st);
        let obs = if sender.is_none() {
            st.changed()
        } else {
            st.version = st.version.wrapping_add(1);
            Vec::new()
        };
        (sender, obs)
    }

    /// If the buffer has room, the oldest blocked sender takes it: a plain
    /// one's message moves in, a select's send gets a reserved place.
    /// Returns the sender to wake.
    pub(super) fn fill_place(&self, st: &mut State<T>) -> Option<Arc<Slot<T>>> {
        if !self.has_room(st) {
            return None;
        }
        let s = pop_claimed(&mut st.send_q)?;
        if s.sel.is_none() {
            let m = s.take();
            st.buf.push_back(m);
        } else {
            st.reserved += 1;
        }
        s.w.resolve(DONE);
        Some(s)
    }

    /// A sender's wait ended without seeing a resolution: under the lock,
    /// withdraw the slot if it is still queued. Returns the settled state
    /// (`WAITING`: withdrawn).
    fn settle_send(&self, slot: &Arc<Slot<T>>) -> u8 {
        let mut st = self.state.lock();
        let s = slot.w.state();
        if s == WAITING {
            withdraw(&mut st.send_q, slot);
        }
        s
    }

    /// A receiver's deadline passed: withdraw it if it is still queued
    /// (`WAITING`), or honour what it was handed. A receiver that is out of
    /// the queue but not resolved is reserved by a selected send, which will
    /// either hand it the message or let it go (`RETRY`): it waits for that.
    fn settle_recv(&self, slot: &Arc<Slot<T>>) -> u8 {
        {
            let mut st = self.state.lock();
            let s = slot.w.state();
            if s != WAITING || withdraw(&mut st.recv_q, slot) {
                return s;
            }
        }
        slot.w.park(None, WaitingOn::Recv(self.addr()))
    }

    /// A receiver is unwound (cancelled) out of its wait. A message handed to
    /// it at the last moment must not be lost (see [`Chan::give_back`]); a
    /// selected send that reserved it must send elsewhere.
    pub(super) fn abandon_recv(&self, slot: &Arc<Slot<T>>) {
        let mut st = self.state.lock();
        match slot.w.state() {
            WAITING if !withdraw(&mut st.recv_q, slot) => slot.w.resolve(ABANDONED),
            DONE => {
                let msg = slot.take();
                self.give_back_locked(st, msg);
            }
            _ => {}
        }
    }

    /// A received message its receiver cannot take after all (it was
    /// unwound, or dropped a selected operation): it goes to the next
    /// waiting receiver, or back to the front of the buffer (which may then
    /// hold one message more than its capacity until it drains).
    pub(super) fn give_back(&self, msg: T) {
        let st = self.state.lock();
        self.give_back_locked(st, msg);
    }

    pub(super) fn give_back_locked(&self, mut st: InternalGuard<'_, State<T>>, msg: T) {
        if let Some(r) = pop_claimed(&mut st.recv_q) {
            r.put(msg);
            r.w.resolve(DONE);
            let _no_preempt = st.unlock();
            r.w.wake();
        } else {
            st.buf.push_front(msg);
            let obs = st.changed();
            drop(st);
            wake_observers(obs);
        }
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

/// Resolve `blocked` as disconnected (stale select slots are dropped),
/// release the lock, then wake them and drop `buf` (destructors run without
/// the lock).
fn disconnect<T>(
    st: InternalGuard<'_, State<T>>,
    blocked: VecDeque<Arc<Slot<T>>>,
    buf: VecDeque<T>,
) {
    let blocked: Vec<_> = blocked.into_iter().filter(|s| s.claim()).collect();
    for s in &blocked {
        s.w.resolve(DISCONNECTED);
    }
    let no_preempt = st.unlock();
    for s in &blocked {
        s.w.wake();
    }
    drop(no_preempt); // user destructors below stay preemptible
    drop_messages(buf);
}

/// Drop buffered messages in order. If one's destructor panics, the rest
/// are leaked rather than dropped during the unwind (a second panic would
/// abort the process), as crossbeam does.
fn drop_messages<T>(buf: VecDeque<T>) {
    struct LeakOnUnwind<T>(VecDeque<T>);
    impl<T> Drop for LeakOnUnwind<T> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                std::mem::forget(std::mem::take(&mut self.0));
            }
        }
    }
    let mut rest = LeakOnUnwind(buf);
    while let Some(m) = rest.0.pop_front() {
        drop(m);
    }
}
