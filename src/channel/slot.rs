//! What a blocked caller waits in: a [`Slot`] in one of a channel's queues,
//! how a counterpart claims it, and the [`Spare`] an endpoint keeps for its
//! next wait (see `chan.rs` for the protocol).

use std::collections::VecDeque;
use std::sync::Arc;

use crossbeam_utils::atomic::AtomicCell;

use super::select::SelCtx;
pub(super) use crate::sync::waiters::WAITING;
use crate::sync::waiters::Waiter;

/// The counterpart took the message or delivered one; for a select's send,
/// a buffer place was reserved for it.
pub(super) const DONE: u8 = 1;
/// The other side disconnected while this caller waited.
pub(super) const DISCONNECTED: u8 = 2;
/// A select's send was claimed by a receiver that now waits in `partner`.
pub(super) const PARTNER: u8 = 3;
/// A reserved receiver whose select dropped its permit: start over.
pub(super) const RETRY: u8 = 4;
/// A reserved receiver unwound (its task was cancelled): its select sends
/// the message elsewhere.
pub(super) const ABANDONED: u8 = 5;

/// A blocked caller and its message (a sender's, or one handed to a receiver).
pub(crate) struct Slot<T> {
    pub(super) w: Waiter,
    pub(super) msg: parking_lot::Mutex<Option<T>>,
    /// One operation of a waiting select: the select and the operation's
    /// index in it. `None`: a plain `send` or `recv`.
    pub(super) sel: Option<(Arc<SelCtx>, usize)>,
    /// A select's send claimed by a receiver: that receiver's slot.
    pub(super) partner: parking_lot::Mutex<Option<Arc<Slot<T>>>>,
}

impl<T> Slot<T> {
    fn new(msg: Option<T>, sel: Option<(Arc<SelCtx>, usize)>) -> Arc<Slot<T>> {
        Arc::new(Slot {
            w: Waiter::current(),
            msg: parking_lot::Mutex::new(msg),
            sel,
            partner: parking_lot::Mutex::new(None),
        })
    }

    /// The slot of operation `index` of the calling select.
    pub(super) fn for_select(ctx: &Arc<SelCtx>, index: usize) -> Arc<Slot<T>> {
        Slot::new(None, Some((ctx.clone(), index)))
    }

    /// A slot for the caller to wait in with `msg`: `spare` if nobody else
    /// holds it any more, a new one otherwise.
    pub(super) fn reuse(spare: &Spare<T>, msg: Option<T>) -> Arc<Slot<T>> {
        if let Some(mut s) = spare.0.take()
            && let Some(slot) = Arc::get_mut(&mut s)
        {
            slot.w.renew();
            *slot.msg.get_mut() = msg;
            return s;
        }
        Slot::new(msg, None)
    }

    /// Take the slot for a hand-off: a plain caller is always there; a
    /// select only if none of its other operations was taken first.
    #[inline]
    pub(super) fn claim(&self) -> bool {
        match &self.sel {
            None => true,
            Some((ctx, i)) => ctx.claim(*i),
        }
    }

    /// Whether the slot could still be claimed by someone other than `me`.
    pub(super) fn live_for(&self, me: Option<&Arc<SelCtx>>) -> bool {
        match &self.sel {
            None => true,
            Some((ctx, _)) => ctx.is_open() && me.is_none_or(|m| !Arc::ptr_eq(m, ctx)),
        }
    }

    pub(super) fn put(&self, msg: T) {
        *self.msg.lock() = Some(msg);
    }

    pub(super) fn take(&self) -> T {
        self.msg
            .lock()
            .take()
            .expect("kvant internal error: channel slot without a message")
    }

    /// The receiver waiting for this (select's send) slot's message.
    pub(super) fn take_partner(&self) -> Arc<Slot<T>> {
        self.partner
            .lock()
            .take()
            .expect("kvant internal error: claimed send without its receiver")
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
    pub(super) fn keep(&self, mut slot: Arc<Slot<T>>) {
        let Some(s) = Arc::get_mut(&mut slot) else {
            return;
        };
        s.w.forget();
        // Normally empty; if another call on this endpoint kept one
        // meanwhile, that one goes.
        drop(self.0.swap(Some(slot)));
    }
}

/// Remove `slot` from `q`. Returns whether it was there.
pub(super) fn withdraw<T>(q: &mut VecDeque<Arc<Slot<T>>>, slot: &Arc<Slot<T>>) -> bool {
    match q.iter().position(|s| Arc::ptr_eq(s, slot)) {
        Some(i) => {
            q.remove(i);
            true
        }
        None => false,
    }
}

/// The first slot of `q` that can be claimed; stale ones are dropped.
#[inline]
pub(super) fn pop_claimed<T>(q: &mut VecDeque<Arc<Slot<T>>>) -> Option<Arc<Slot<T>>> {
    while let Some(s) = q.pop_front() {
        if s.claim() {
            return Some(s);
        }
    }
    None
}
