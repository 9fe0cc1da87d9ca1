//! Model checks of a task's lifecycle against a mock scheduler: real task
//! headers, real join packets and the real run claim, with a queue in
//! place of the runtime (`Schedule` is all the core knows of it). Under
//! loom, the body cell is loom's `UnsafeCell`, so two run claims touching
//! one task at once fail the model as a data race, and every party that
//! queues a task is counted.
//!
//! `RUSTFLAGS="--cfg loom" cargo test --lib loom_` (run by `.ci/run`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use loom::sync::Mutex;
use loom::sync::atomic::{AtomicUsize, Ordering};

use super::coroutine::Resume;
use super::join::{Completion, Owner, Packet};
use super::park::Unparker;
use super::schedule::{Schedule, TimerKey};
use super::state::{self, Phase, Plan};
use super::{Task, TaskCell, TaskId};

/// The runtime, reduced to a run queue and a count of pushes.
#[derive(Default)]
struct Mock {
    queue: Mutex<VecDeque<Arc<Task>>>,
    pushes: AtomicUsize,
}

impl Schedule for Mock {
    fn wake(&self, task: Arc<Task>) {
        self.push(task);
    }
    fn arm_timer(&self, _: Instant, _: Unparker) -> TimerKey {
        unreachable!("no timers in the models")
    }
    fn cancel_timer(&self, _: TimerKey) {}
    fn shutting_down(&self) -> bool {
        false
    }
    fn panic_on_blocking(&self) -> bool {
        false
    }
    fn take_blocking_report(&self, _: TaskId) -> Option<String> {
        None
    }
    fn stall_report(&self) -> Option<String> {
        None
    }
}

impl Mock {
    fn push(&self, task: Arc<Task>) {
        self.pushes.fetch_add(1, Ordering::Relaxed);
        self.queue.lock().unwrap().push_back(task);
    }

    fn pop(&self) -> Option<Arc<Task>> {
        self.queue.lock().unwrap().pop_front()
    }

    fn pushes(&self) -> usize {
        self.pushes.load(Ordering::Relaxed)
    }

    /// Empty the queue at the end of a model: a queued task holds the mock
    /// through its header, and the mock holds the task.
    fn drain(&self) {
        self.queue.lock().unwrap().clear();
    }
}

/// A task of `mock`'s with `packet`, not in any queue yet.
fn task(mock: &Arc<Mock>, packet: Packet<()>, id: u64) -> Arc<Task> {
    let sched: Arc<dyn Schedule> = mock.clone();
    TaskCell::new(sched, None, 64 * 1024, true, packet, TaskId(id))
}

/// A task of `mock`'s, queued (as spawn leaves it) and not yet counted.
fn spawn(mock: &Arc<Mock>, id: u64) -> Arc<Task> {
    let t = task(mock, Packet::new(None), id);
    mock.queue.lock().unwrap().push_back(t.clone());
    t
}

/// `JoinHandle::abort`, as the handle calls it.
fn abort(t: Arc<Task>) {
    super::abort::abort_task(&t);
}

/// Run `f` on `t` from another model thread.
fn in_thread(t: &Arc<Task>, f: fn(Arc<Task>)) -> loom::thread::JoinHandle<()> {
    let t = t.clone();
    loom::thread::spawn(move || f(t))
}

/// A worker's slice of a task that parks: pop, claim, touch the body as a
/// resume does, check the token as `park` does, end the slice (the claim
/// ends with it, as in `WorkerCtx::slice`), then `finish_park` and requeue
/// on a token. Returns whether the task switched out (false: it took a
/// token instead of sleeping).
fn slice_that_parks(mock: &Mock) -> bool {
    park_slice(mock, mock.pop().expect("the task is queued"), |_| true)
}

/// [`slice_that_parks`] for a task already taken out of the queue, whose
/// wait first runs `wait` (registering itself and re-checking its
/// condition; false: the wait is over without parking).
fn park_slice(mock: &Mock, t: Arc<Task>, wait: impl FnOnce(&Arc<Task>) -> bool) -> bool {
    // SAFETY: just popped from the only queue: the unique claim.
    let (claim, snap) = unsafe { t.begin_run() };
    if !snap.started() {
        t.state.set_started(); // as `RunClaim::start` does
    }
    claim.model_touch();
    let switched_out = wait(&t) && !t.take_token();
    drop(claim);
    if switched_out && t.finish_park() {
        mock.push(t);
    }
    switched_out
}

/// A worker's slice that runs whatever is queued, if anything, to the end.
fn slice_that_finishes(mock: &Mock) -> Option<Plan> {
    let t = mock.pop()?;
    // SAFETY: just popped from the only queue: the unique claim.
    let (claim, snap) = unsafe { t.begin_run() };
    let plan = state::plan(snap, false, false, || t.shield.load(Ordering::Relaxed) > 0);
    claim.model_touch();
    t.finish();
    drop(claim);
    Some(plan)
}

/// A wake-up racing a park, with a second worker ready to run whatever is
/// queued: the task is queued exactly once unless it took the token, and
/// no two claims ever touch its body at once.
#[test]
fn loom_park_against_a_wake_up_and_a_second_worker() {
    loom::model(|| {
        let mock = Arc::new(Mock::default());
        let t = spawn(&mock, 1);
        let waker = in_thread(&t, |t| Unparker::Task(t).unpark());
        // The second worker looks while the first one's slice runs.
        let mine = mock.pop().expect("queued");
        let second = {
            let mock = mock.clone();
            loom::thread::spawn(move || slice_that_finishes(&mock))
        };
        let took = !park_slice(&mock, mine, |_| true);
        waker.join().unwrap();
        let ran = second.join().unwrap().is_some();
        let queued_now = mock.queue.lock().unwrap().len();
        let pushes = mock.pushes();
        if took {
            assert_eq!(pushes, 0, "the task never slept; nobody queues it");
        } else {
            assert_eq!(pushes, 1, "exactly one party queues the parked task");
            assert_eq!(
                usize::from(ran) + queued_now,
                1,
                "queued once, run or waiting"
            );
        }
        drop(t);
        mock.drain();
    });
}

/// An abort racing a park: the task is queued once, and whoever claims
/// it next sees it cancelled and unwinds it.
#[test]
fn loom_abort_against_a_park() {
    loom::model(|| {
        let mock = Arc::new(Mock::default());
        let t = spawn(&mock, 1);
        let aborter = in_thread(&t, abort);
        let took = !slice_that_parks(&mock);
        aborter.join().unwrap();
        if took {
            assert_eq!(mock.pushes(), 0);
        } else {
            assert_eq!(
                mock.pushes(),
                1,
                "the cancelled task is queued exactly once"
            );
            let plan = slice_that_finishes(&mock).expect("queued");
            assert_eq!(plan, Plan::Resume(Resume::Cancel), "it is unwound");
        }
        assert!(t.state.snapshot().cancelled());
        mock.drain();
    });
}

/// An abort racing the task's end: a finishing task is never queued
/// again, and it ends done.
#[test]
fn loom_abort_against_finishing() {
    loom::model(|| {
        let mock = Arc::new(Mock::default());
        let t = spawn(&mock, 1);
        let aborter = in_thread(&t, abort);
        assert!(slice_that_finishes(&mock).is_some());
        aborter.join().unwrap();
        assert_eq!(
            mock.pushes(),
            0,
            "a running or done task is never queued by an abort"
        );
        assert_eq!(t.phase(), Phase::Done, "word {:#b}", t.state.raw());
        mock.drain();
    });
}

/// Shutdown's claim of a parked task against a wake-up: exactly one of
/// them queues it, and a task claimed by shutdown comes out cancelled.
#[test]
fn loom_shutdown_claim_against_a_wake_up() {
    loom::model(|| {
        let mock = Arc::new(Mock::default());
        let t = spawn(&mock, 1);
        assert!(slice_that_parks(&mock), "parked, nobody woke it yet");
        let waker = in_thread(&t, |t| Unparker::Task(t).unpark());
        let claimed = t.claim_idle();
        if claimed {
            mock.push(t.clone());
        }
        waker.join().unwrap();
        assert_eq!(mock.pushes(), 1, "queued by exactly one of them");
        assert_eq!(t.state.snapshot().cancelled(), claimed);
        mock.drain();
    });
}

/// A joiner registering its wake-up against the joined task finishing:
/// either it sees the result and does not park, or it is woken (queued)
/// exactly once. A lost wake-up would leave the joiner asleep for good.
#[test]
fn loom_join_waiter_against_finishing() {
    loom::model(|| {
        let mock = Arc::new(Mock::default());
        let joiner = spawn(&mock, 1);
        let joined = Arc::new(Packet::<u32>::new(None));
        let finisher = {
            let joined = joined.clone();
            loom::thread::spawn(move || {
                let owner = Owner {
                    id: TaskId(2),
                    name: None,
                };
                joined.complete(Ok(7), owner);
            })
        };
        // The joiner's slice: `wait_complete`'s protocol, then park.
        let t = mock.pop().expect("queued");
        let switched_out = park_slice(&mock, t.clone(), |t| {
            joined.add_waiter(Unparker::Task(t.clone())) && !joined.is_complete()
        });
        finisher.join().unwrap();
        assert!(joined.is_complete());
        if switched_out {
            assert_eq!(
                mock.pushes(),
                1,
                "the joiner that switched out is woken exactly once"
            );
            assert_eq!(t.phase(), Phase::Queued);
        } else {
            assert_eq!(
                mock.pushes(),
                0,
                "a joiner that saw the result was not queued"
            );
        }
        drop(joiner);
        mock.drain();
    });
}

/// An abort while the task waits in a shielded wait (`kvant::join`'s
/// join of its second half): the task is queued, resumed normally (the
/// wait goes on), and unwinds at its first switch point after the shield.
#[test]
fn loom_abort_during_a_shielded_wait() {
    loom::model(|| {
        let mock = Arc::new(Mock::default());
        let t = spawn(&mock, 1);
        t.shield.store(1, Ordering::Relaxed);
        let aborter = in_thread(&t, abort);
        let took = !slice_that_parks(&mock);
        aborter.join().unwrap();
        if !took {
            let t2 = mock.pop().expect("the cancelled task is queued");
            // SAFETY: just popped from the only queue: the unique claim.
            let (claim, snap) = unsafe { t2.begin_run() };
            assert_eq!(
                state::plan(snap, false, false, || t2.shield.load(Ordering::Relaxed) > 0),
                Plan::Resume(Resume::Run),
                "a shielded wait is resumed, not unwound"
            );
            drop(claim);
        }
        // The shield drops: the next switch point has the flag to act on,
        // and a worker that claimed it there would unwind it.
        t.shield.store(0, Ordering::Relaxed);
        let snap = t.state.snapshot();
        assert!(snap.needs_check());
        assert_eq!(
            state::plan(snap, false, false, || t.shield.load(Ordering::Relaxed) > 0),
            Plan::Resume(Resume::Cancel)
        );
        mock.drain();
    });
}

/// An abort racing a task's first slice, with its closure still in the
/// packet: either the abort takes the closure (and the worker, seeing the
/// flag or finding the closure gone, discards the task) or the worker
/// starts it first; the closure is taken exactly once, and an abort never
/// queues a task that never parked.
#[test]
fn loom_abort_against_the_first_slice() {
    loom::model(|| {
        let mock = Arc::new(Mock::default());
        /// Counts its drops: whoever takes the closure drops it.
        struct Dropped(Arc<AtomicUsize>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let drops = Arc::new(AtomicUsize::new(0));
        let body = {
            let guard = Dropped(drops.clone());
            Box::new(move || drop(guard)) as Box<dyn FnOnce() + Send>
        };
        let t = task(&mock, Packet::new(Some(body)), 1);
        let aborter = in_thread(&t, abort);
        // SAFETY: the task is in no queue; this is the only claim.
        let (claim, snap) = unsafe { t.begin_run() };
        match state::plan(snap, false, false, || false) {
            Plan::Discard => t.discard_fresh(&claim),
            Plan::Start => {
                t.state.set_started();
                claim.model_touch();
                // The body's first act: take the closure, if the abort left it.
                t.packet.drop_body();
            }
            other => panic!("a fresh task's plan is {other:?}"),
        }
        drop(claim);
        aborter.join().unwrap();
        t.finish();
        assert_eq!(
            mock.pushes(),
            0,
            "an abort never queues a task that never parked"
        );
        assert_eq!(
            drops.load(Ordering::Relaxed),
            1,
            "the closure is taken exactly once"
        );
        mock.drain();
    });
}
