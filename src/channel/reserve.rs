//! The channel's side of a select (`select.rs`): permits for selected
//! sends, queueing a select's operations, readiness for `ready`.

use std::sync::Arc;

use super::chan::{Chan, SendFail, Spare, State, Wait, wake_observers};
use super::select::{Observer, SelCtx};
use super::slot::{ABANDONED, DONE, RETRY, Slot, WAITING, pop_claimed, withdraw};

/// What a selected send holds until its message is made (see the module
/// docs).
pub(super) enum Permit<T> {
    /// A buffer place (counted in `reserved`), or an unbounded channel.
    Room,
    /// A receiver taken out of the queue, waiting for the message.
    Partner(Arc<Slot<T>>),
    /// Every receiver is gone: the send fails with its message.
    Disconnected,
}

impl<T> Chan<T> {
    /// For a select's send: reserve what the send needs, if it can
    /// complete now (see [`Permit`]).
    pub(super) fn reserve_send(&self) -> Option<Permit<T>> {
        let mut st = self.state.lock();
        if st.receivers == 0 {
            return Some(Permit::Disconnected);
        }
        if let Some(r) = pop_claimed(&mut st.recv_q) {
            return Some(Permit::Partner(r));
        }
        if self.has_room(&st) {
            st.reserved += 1;
            return Some(Permit::Room);
        }
        None
    }

    /// Send `msg` with a permit from [`Chan::reserve_send`] or a claimed
    /// select slot.
    pub(super) fn send_permitted(&self, permit: Permit<T>, msg: T) -> Result<(), T> {
        match permit {
            Permit::Disconnected => Err(msg),
            Permit::Room => {
                let mut st = self.state.lock();
                st.reserved -= 1;
                if st.receivers == 0 {
                    drop(st);
                    return Err(msg);
                }
                if let Some(r) = pop_claimed(&mut st.recv_q) {
                    r.put(msg);
                    r.w.resolve(DONE);
                    // The message went past the buffer, so the reserved
                    // place is free again: a sender blocked while every
                    // place was reserved takes it.
                    let sender = self.fill_place(&mut st);
                    let _no_preempt = st.unlock();
                    r.w.wake();
                    if let Some(s) = sender {
                        s.w.wake();
                    }
                } else {
                    st.buf.push_back(msg);
                    let obs = st.changed();
                    drop(st);
                    wake_observers(obs);
                }
                Ok(())
            }
            Permit::Partner(r) => {
                let st = self.state.lock();
                if r.w.state() == ABANDONED {
                    drop(st);
                    // Its receiver was cancelled: an ordinary send.
                    return self
                        .send(msg, Wait::Until(None), &Spare::new())
                        .map_err(|e| match e {
                            SendFail::Full(m) | SendFail::Disconnected(m) => m,
                        });
                }
                r.put(msg);
                r.w.resolve(DONE);
                let _no_preempt = st.unlock();
                r.w.wake();
                Ok(())
            }
        }
    }

    /// Give up a permit unused: the place goes to the next sender, a
    /// reserved receiver starts over.
    pub(super) fn release(&self, permit: Permit<T>) {
        match permit {
            Permit::Disconnected => {}
            Permit::Room => {
                let mut st = self.state.lock();
                st.reserved -= 1;
                let sender = self.fill_place(&mut st);
                let obs = st.changed();
                let _no_preempt = st.unlock();
                wake_observers(obs);
                if let Some(s) = sender {
                    s.w.wake();
                }
            }
            Permit::Partner(r) => {
                let st = self.state.lock();
                if r.w.state() == WAITING {
                    r.w.resolve(RETRY);
                    let _no_preempt = st.unlock();
                    r.w.wake();
                }
            }
        }
    }

    /// Whether a receive would complete now (a message, a sender other than
    /// the select `me`, or disconnected), and the channel's version.
    pub(super) fn recv_ready(&self, me: Option<&Arc<SelCtx>>) -> (bool, u64) {
        let st = self.state.lock();
        (self.recv_ready_locked(&st, me), st.version)
    }

    pub(super) fn recv_ready_locked(&self, st: &State<T>, me: Option<&Arc<SelCtx>>) -> bool {
        !st.buf.is_empty() || st.senders == 0 || st.send_q.iter().any(|s| s.live_for(me))
    }

    /// Whether a send would complete now (room, a receiver other than the
    /// select `me`, or disconnected), and the channel's version.
    pub(super) fn send_ready(&self, me: Option<&Arc<SelCtx>>) -> (bool, u64) {
        let st = self.state.lock();
        (self.send_ready_locked(&st, me), st.version)
    }

    pub(super) fn send_ready_locked(&self, st: &State<T>, me: Option<&Arc<SelCtx>>) -> bool {
        st.receivers == 0 || self.has_room(st) || st.recv_q.iter().any(|s| s.live_for(me))
    }

    /// Queue a select's operation `slot` (a receive if `recv`), unless it
    /// can complete now: then nothing is queued and the result is true.
    pub(super) fn register(&self, slot: &Arc<Slot<T>>, recv: bool) -> bool {
        let me = slot.sel.as_ref().map(|(c, _)| c);
        let mut st = self.state.lock();
        let ready = if recv {
            self.recv_ready_locked(&st, me)
        } else {
            self.send_ready_locked(&st, me)
        };
        if ready {
            return true;
        }
        if recv {
            st.recv_q.push_back(slot.clone());
        } else {
            st.send_q.push_back(slot.clone());
        }
        let obs = st.changed();
        drop(st);
        wake_observers(obs);
        false
    }

    /// Take a select's operation out of its queue, if it is still there.
    pub(super) fn unregister(&self, slot: &Arc<Slot<T>>, recv: bool) {
        let mut st = self.state.lock();
        if recv {
            withdraw(&mut st.recv_q, slot);
        } else {
            withdraw(&mut st.send_q, slot);
        }
    }

    /// The version, for a non-blocking `ready` that saw nothing.
    pub(super) fn version(&self) -> u64 {
        self.state.lock().version
    }

    /// Wake `o` at this channel's next change.
    pub(super) fn observe(&self, o: &Arc<Observer>) {
        self.state.lock().observers.push(o.clone());
    }

    pub(super) fn unobserve(&self, o: &Arc<Observer>) {
        self.state.lock().observers.retain(|x| !Arc::ptr_eq(x, o));
    }
}
