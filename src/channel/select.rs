//! Waiting on several channel operations at once: the engine under
//! [`Select`](super::Select), [`select!`](crate::select) and
//! [`select_biased!`](crate::select_biased).
//!
//! A round has three steps (crossbeam-channel's and Go's shape):
//!
//! 1. **Try** each operation once, in a uniformly random order (biased: in
//!    the written order). A receive completes at once; a send takes a
//!    *permit* (`chan.rs`): a buffer place, or a waiting receiver taken out
//!    of its queue, so the message made after the selection has somewhere
//!    to go that nobody else can take.
//! 2. **Register**: queue one slot per operation in its channel, all marked
//!    with one [`SelCtx`]. A counterpart that finds such a slot claims the
//!    select with a compare-and-swap on the context, so at most one
//!    operation completes, and completes exactly as it would for a plain
//!    blocked caller. An operation found ready while registering (it became
//!    ready after step 1) aborts the round, which starts over.
//! 3. **Wait** until claimed, or the deadline: then *abort* the context. If
//!    the abort wins, no operation was claimed, and none can be: the select
//!    times out. If it loses, the claimed operation completes.
//!
//! A select that must not wait (`try_select`, `default`) or whose deadline
//! has passed still registers and then aborts at once. That makes it
//! linearizable: at the moment of the abort every operation sat queued and
//! unclaimed, and every change that could make one ready claims a queued
//! slot, so at that moment none was ready. Without it, two looks in turn can
//! miss a message that moves from the second channel to the first between
//! them.
//!
//! A select's own slots never count as each other's partner (a send and a
//! receive on one rendezvous channel in one select do not meet), and two
//! selects meet like a plain send and receive: the first registers, the
//! second claims it.
//!
//! `ready` (which only looks) uses observers instead: a channel wakes them
//! all at its next change. A non-blocking `ready` that saw nothing checks
//! that no channel changed since it looked, else it looks again.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::chan::{Chan, DISCONNECTED, DONE, PARTNER, Permit, RETRY, Slot};
use super::{Receiver, RecvError, SendError, Sender};
use crate::task::park::{self, Unparker};

/// A waiting select, shared by the slots of all its operations.
#[doc(hidden)]
pub struct SelCtx {
    /// `OPEN`, `ABORTED`, or the index of the claimed operation.
    state: AtomicUsize,
}

const OPEN: usize = usize::MAX;
const ABORTED: usize = usize::MAX - 1;

impl SelCtx {
    fn new() -> Arc<SelCtx> {
        Arc::new(SelCtx {
            state: AtomicUsize::new(OPEN),
        })
    }

    /// Claim operation `i` for a counterpart; fails if another operation
    /// was claimed first or the select gave up.
    pub(super) fn claim(&self, i: usize) -> bool {
        self.state
            .compare_exchange(OPEN, i, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub(super) fn is_open(&self) -> bool {
        self.state.load(Ordering::Acquire) == OPEN
    }

    /// Give up: `Err(i)` if operation `i` was claimed first.
    fn abort(&self) -> Result<(), usize> {
        match self
            .state
            .compare_exchange(OPEN, ABORTED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Ok(()),
            Err(i) => Err(i),
        }
    }
}

/// A `ready` call waiting for any of its channels to change.
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
        self.got = match slot.w.park(None) {
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
        let permit = match slot.w.park(None) {
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

    fn deadline(self) -> Option<Instant> {
        match self {
            Until::Now => Some(Instant::now()),
            Until::Deadline(d) => d,
        }
    }
}

/// A cheap per-thread random number (xorshift64).
fn random() -> u64 {
    thread_local! {
        static SEED: Cell<u64> = Cell::new(crate::clock::ticks() | 1);
    }
    SEED.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

/// The order to try operations in: a uniformly random permutation (so the
/// first ready one is a uniform choice among the ready ones), or the written
/// order. On the stack for up to 32 operations.
struct Order {
    small: [u16; 32],
    big: Vec<usize>,
    n: usize,
}

impl Order {
    fn new(n: usize, biased: bool) -> Order {
        let mut o = Order {
            small: [0; 32],
            big: Vec::new(),
            n,
        };
        if n <= o.small.len() {
            for (i, x) in o.small.iter_mut().enumerate().take(n) {
                *x = i as u16;
            }
        } else {
            o.big = (0..n).collect();
        }
        if !biased {
            // Fisher–Yates.
            for i in (1..n).rev() {
                let j = (random() % (i as u64 + 1)) as usize;
                o.swap(i, j);
            }
        }
        o
    }

    fn swap(&mut self, i: usize, j: usize) {
        if self.big.is_empty() {
            self.small.swap(i, j);
        } else {
            self.big.swap(i, j);
        }
    }

    fn get(&self, k: usize) -> usize {
        if self.big.is_empty() {
            self.small[k] as usize
        } else {
            self.big[k]
        }
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.n).map(|k| self.get(k))
    }
}

fn no_operations(until: Until) -> Option<usize> {
    match until {
        Until::Now => None,
        Until::Deadline(Some(d)) => {
            crate::sleep_until(d);
            None
        }
        Until::Deadline(None) => {
            panic!("kvant: select with no operations and no timeout would wait forever")
        }
    }
}

/// One round's registration: on every exit, the unwinding of a cancelled
/// task included, the select is aborted and its slots leave their queues;
/// what a counterpart already handed over is given back if nobody will
/// take it.
struct Round<'r, 'o, 'a> {
    ops: &'r mut [&'o mut (dyn Op<'a> + 'a)],
    ctx: Arc<SelCtx>,
    done: bool,
}

impl Round<'_, '_, '_> {
    /// Abort and unregister. `Err(i)`: operation `i` was claimed first.
    fn finish(&mut self) -> Result<(), usize> {
        self.done = true;
        let r = self.ctx.abort();
        for op in self.ops.iter_mut() {
            op.unregister();
        }
        r
    }
}

impl Drop for Round<'_, '_, '_> {
    fn drop(&mut self) {
        if !self.done
            && let Err(i) = self.finish()
        {
            self.ops[i].abandon();
        }
    }
}

/// Which of `ops` was selected (marked `won`), or `None` if none was ready
/// before `until`. A selected receive has completed; a selected send holds
/// its permit. `biased`: try in the written order.
#[doc(hidden)]
pub fn run<'a>(ops: &mut [&mut (dyn Op<'a> + 'a)], until: Until, biased: bool) -> Option<usize> {
    let n = ops.len();
    if n == 0 {
        return no_operations(until);
    }
    let deadline = until.deadline();
    loop {
        let order = Order::new(n, biased);
        if let Some(i) = order.iter().find(|&i| ops[i].attempt()) {
            ops[i].set_won();
            return Some(i);
        }
        let wait = deadline.is_none_or(|d| Instant::now() < d);
        if wait && deadline.is_none() && !ops.iter().any(|op| op.is_live()) {
            panic!("kvant: select with no operations left and no timeout would wait forever");
        }
        let mut round = Round {
            ops: &mut *ops,
            ctx: SelCtx::new(),
            done: false,
        };
        let ctx = round.ctx.clone();
        let mut ready = false;
        for i in order.iter() {
            if round.ops[i].register(&ctx, i) {
                ready = true;
                break;
            }
            if !ctx.is_open() {
                break;
            }
        }
        if !ready && wait {
            while ctx.is_open() {
                if !park::park_deadline(deadline) {
                    break;
                }
            }
        }
        let outcome = round.finish();
        drop(round);
        match outcome {
            // Something became ready while registering: try again.
            Ok(()) if ready => continue,
            Ok(()) => return None,
            Err(i) => {
                if ops[i].collect() {
                    ops[i].set_won();
                    return Some(i);
                }
            }
        }
    }
}

/// The index of an operation that is ready (nothing is consumed), or
/// `None` if none was before `until`.
#[doc(hidden)]
pub fn ready<'a>(ops: &mut [&mut (dyn Op<'a> + 'a)], until: Until) -> Option<usize> {
    let n = ops.len();
    if n == 0 {
        return no_operations(until);
    }
    let deadline = until.deadline();
    let mut versions = vec![0u64; n];
    loop {
        let order = Order::new(n, false);
        for i in order.iter() {
            let (r, v) = ops[i].ready(None);
            if r {
                return Some(i);
            }
            versions[i] = v;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            // Nothing was ready; unless a channel changed meanwhile, at the
            // end of that look none was.
            if (0..n).all(|i| !ops[i].is_live() || ops[i].version() == versions[i]) {
                return None;
            }
            continue;
        }
        if deadline.is_none() && !ops.iter().any(|op| op.is_live()) {
            panic!("kvant: select with no operations left and no timeout would wait forever");
        }
        let o = Arc::new(Observer {
            notified: AtomicBool::new(false),
            who: park::current_unparker(),
        });
        struct Watching<'r, 'o, 'a>(&'r [&'o mut (dyn Op<'a> + 'a)], Arc<Observer>);
        impl Drop for Watching<'_, '_, '_> {
            fn drop(&mut self) {
                for op in self.0 {
                    op.unobserve(&self.1);
                }
            }
        }
        let watching = Watching(&*ops, o.clone());
        for op in watching.0 {
            op.observe(&o);
        }
        // A change between the look and the registration woke nobody.
        if let Some(i) = (0..n).find(|&i| watching.0[i].ready(None).0) {
            return Some(i);
        }
        while !o.notified.load(Ordering::Acquire) {
            if !park::park_deadline(deadline) {
                break;
            }
        }
        drop(watching);
    }
}
