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

use super::ops::Op;
use crate::task::WaitingOn;
use crate::task::park::{self, Unparker};

/// A waiting select, shared by the slots of all its operations.
#[doc(hidden)]
#[derive(Debug)]
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
#[derive(Debug)]
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

/// How long a select may wait.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
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
                if !park::park_deadline(deadline, WaitingOn::Select) {
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
            if !park::park_deadline(deadline, WaitingOn::Select) {
                break;
            }
        }
        drop(watching);
    }
}
