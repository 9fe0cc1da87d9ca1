//! The operations a select is made of: [`RecvOp`] and [`SendOp`] behind
//! the engine's [`Op`] trait (`select.rs`), and the [`Grant`] a selected
//! send holds until its message is sent.

use std::sync::Arc;

use super::chan::Chan;
use super::reserve::Permit;
use super::select::{Observer, SelCtx};
use super::slot::{DISCONNECTED, DONE, PARTNER, RETRY, Slot};
use super::{Receiver, RecvError, SendError, Sender};
use crate::task::WaitingOn;

/// One operation of a select, erased over its message type.
#[doc(hidden)]
pub trait Op<'w> {
    /// Step 1: complete a receive, or take a send's permit. True if done.
    fn attempt(&mut self) -> bool;
    /// Whether it would complete now, not counting the select `me`'s own
    /// slots, and the channel's version (nothing is consumed).
    fn ready(&self, me: Option<&Arc<SelCtx>>) -> (bool, u64);
    /// The channel's version now.
    fn version(&self) -> u64;
    /// Step 2: queue as operation `index` of `ctx`, unless it can complete
    /// now (true: nothing queued).
    fn register(&mut self, ctx: &Arc<SelCtx>, index: usize) -> bool;
    /// Take this operation's slot out of its queue if it is still there.
    fn unregister(&mut self);
    /// The operation was claimed: take what the counterpart handed over
    /// (waiting for a message still being made). False: the counterpart
    /// withdrew, start over.
    fn collect(&mut self) -> bool;
    /// The select is unwound after this operation was claimed: give back
    /// what was handed over.
    fn abandon(&mut self);
    /// Whether it can ever complete (a removed operation cannot).
    fn is_live(&self) -> bool;
    fn observe(&self, o: &Arc<Observer>);
    fn unobserve(&self, o: &Arc<Observer>);
    /// Mark the operation as the one selected.
    fn set_won(&mut self);
}

/// A receive operation (used by `select!` and [`Select::recv`](super::Select::recv)).
#[doc(hidden)]
pub struct RecvOp<'a, T> {
    r: &'a Receiver<T>,
    got: Option<Result<T, RecvError>>,
    slot: Option<Arc<Slot<T>>>,
    won: bool,
}

impl<'a, T> RecvOp<'a, T> {
    pub fn new(r: &'a Receiver<T>) -> Self {
        RecvOp {
            r,
            got: None,
            slot: None,
            won: false,
        }
    }

    pub fn won(&self) -> bool {
        self.won
    }

    pub(super) fn receiver(&self) -> &'a Receiver<T> {
        self.r
    }

    /// The message received (or the disconnection), once selected.
    pub fn take(&mut self) -> Result<T, RecvError> {
        self.got
            .take()
            .expect("kvant: a select's receive result is taken once")
    }
}

impl<'w, T: 'w> Op<'w> for RecvOp<'_, T> {
    fn attempt(&mut self) -> bool {
        match self.r.chan.try_recv(&self.r.spare) {
            Ok(v) => self.got = Some(Ok(v)),
            Err(super::chan::RecvFail::Disconnected) => self.got = Some(Err(RecvError)),
            Err(super::chan::RecvFail::Empty) => return false,
        }
        true
    }
    fn ready(&self, me: Option<&Arc<SelCtx>>) -> (bool, u64) {
        self.r.chan.recv_ready(me)
    }
    fn version(&self) -> u64 {
        self.r.chan.version()
    }
    fn register(&mut self, ctx: &Arc<SelCtx>, index: usize) -> bool {
        let slot = Slot::for_select(ctx, index);
        if self.r.chan.register(&slot, true) {
            return true;
        }
        self.slot = Some(slot);
        false
    }
    fn unregister(&mut self) {
        if let Some(s) = &self.slot {
            self.r.chan.unregister(s, true);
        }
    }
    fn collect(&mut self) -> bool {
        let slot = self
            .slot
            .take()
            .expect("kvant internal error: a claimed receive without its slot");
        self.got = match slot.w.park(None, WaitingOn::Select) {
            DONE => Some(Ok(slot.take())),
            DISCONNECTED => Some(Err(RecvError)),
            s => {
                debug_assert_eq!(s, RETRY);
                return false;
            }
        };
        true
    }
    fn abandon(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.r.chan.abandon_recv(&slot);
        }
    }
    fn is_live(&self) -> bool {
        true
    }
    fn observe(&self, o: &Arc<Observer>) {
        self.r.chan.observe(o);
    }
    fn unobserve(&self, o: &Arc<Observer>) {
        self.r.chan.unobserve(o);
    }
    fn set_won(&mut self) {
        self.won = true;
    }
}

/// A selected send's permit, with its channel: dropped unused, it gives
/// the permit back (a buffer place to the next sender, a reserved receiver
/// back to its own wait).
pub(super) struct Grant<T> {
    chan: Arc<Chan<T>>,
    permit: Option<Permit<T>>,
}

impl<T> Grant<T> {
    pub(super) fn send(mut self, msg: T) -> Result<(), SendError<T>> {
        let permit = self.permit.take().expect("a grant is used once");
        self.chan.send_permitted(permit, msg).map_err(SendError)
    }

    pub(super) fn chan(&self) -> &Arc<Chan<T>> {
        &self.chan
    }
}

impl<T> Drop for Grant<T> {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            self.chan.release(p);
        }
    }
}

/// A send operation (used by `select!` and [`Select::send`](super::Select::send)).
#[doc(hidden)]
pub struct SendOp<'a, T> {
    s: &'a Sender<T>,
    grant: Option<Grant<T>>,
    slot: Option<Arc<Slot<T>>>,
    won: bool,
}

impl<'a, T> SendOp<'a, T> {
    pub fn new(s: &'a Sender<T>) -> Self {
        SendOp {
            s,
            grant: None,
            slot: None,
            won: false,
        }
    }

    pub fn won(&self) -> bool {
        self.won
    }

    pub(super) fn sender(&self) -> &'a Sender<T> {
        self.s
    }

    /// Send the message of the selected arm.
    pub fn send(&mut self, msg: T) -> Result<(), SendError<T>> {
        self.take_grant().send(msg)
    }

    pub(super) fn take_grant(&mut self) -> Grant<T> {
        self.grant
            .take()
            .expect("kvant: a select's send is completed once")
    }

    fn grant(&mut self, permit: Permit<T>) {
        self.grant = Some(Grant {
            chan: self.s.chan.clone(),
            permit: Some(permit),
        });
    }
}

impl<'w, T: 'w> Op<'w> for SendOp<'_, T> {
    fn attempt(&mut self) -> bool {
        match self.s.chan.reserve_send() {
            Some(p) => {
                self.grant(p);
                true
            }
            None => false,
        }
    }
    fn ready(&self, me: Option<&Arc<SelCtx>>) -> (bool, u64) {
        self.s.chan.send_ready(me)
    }
    fn version(&self) -> u64 {
        self.s.chan.version()
    }
    fn register(&mut self, ctx: &Arc<SelCtx>, index: usize) -> bool {
        let slot = Slot::for_select(ctx, index);
        if self.s.chan.register(&slot, false) {
            return true;
        }
        self.slot = Some(slot);
        false
    }
    fn unregister(&mut self) {
        if let Some(s) = &self.slot {
            self.s.chan.unregister(s, false);
        }
    }
    fn collect(&mut self) -> bool {
        let slot = self
            .slot
            .take()
            .expect("kvant internal error: a claimed send without its slot");
        let permit = match slot.w.park(None, WaitingOn::Select) {
            DONE => Permit::Room,
            PARTNER => Permit::Partner(slot.take_partner()),
            s => {
                debug_assert_eq!(s, DISCONNECTED);
                Permit::Disconnected
            }
        };
        self.grant(permit);
        true
    }
    fn abandon(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        // The claim and its resolution happen under the channel's lock:
        // once that is taken, the state is final.
        self.s.chan.unregister(&slot, false);
        let permit = match slot.w.state() {
            DONE => Permit::Room,
            PARTNER => Permit::Partner(slot.take_partner()),
            _ => return,
        };
        self.s.chan.release(permit);
    }
    fn is_live(&self) -> bool {
        true
    }
    fn observe(&self, o: &Arc<Observer>) {
        self.s.chan.observe(o);
    }
    fn unobserve(&self, o: &Arc<Observer>) {
        self.s.chan.unobserve(o);
    }
    fn set_won(&mut self) {
        self.won = true;
    }
}

impl<T> std::fmt::Debug for RecvOp<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvOp")
            .field("won", &self.won)
            .finish_non_exhaustive()
    }
}

impl<T> std::fmt::Debug for SendOp<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendOp")
            .field("won", &self.won)
            .finish_non_exhaustive()
    }
}
