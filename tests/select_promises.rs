//! crossbeam-channel's promises for select, each checked from OS threads and
//! inside tasks (1 and 2 workers, 50 µs quantum): a rendezvous send
//! completes only with the receiver it reserved, selects offering a send and
//! a receive on one channel meet, non-blocking and timed selects are
//! linearizable, the choice among ready operations is uniform, and the
//! semantics and API of crossbeam's timers, `never`, `ready`,
//! `SelectedOperation` and `select!` syntax.

use std::panic::{RefUnwindSafe, UnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kvant::Runtime;
use kvant::channel::{
    Receiver, Select, Sender, after, at, bounded, never, select, tick, unbounded,
};

mod common;
use common::join_ok;

/// A user item named like the macro (crossbeam's golang suite has one):
/// `use kvant::channel::select` must not clash with it.
mod select {}

const HANG: Duration = Duration::from_secs(20);

/// Where a check runs: plain OS threads, or tasks of a runtime with this
/// many workers at a 50 µs quantum.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Threads,
    Tasks(usize),
}

const MODES: [Mode; 3] = [Mode::Threads, Mode::Tasks(1), Mode::Tasks(2)];

/// Run `parts` concurrently in `mode`; fail (not hang) past `HANG`.
fn concurrently(mode: Mode, parts: Vec<Box<dyn FnOnce() + Send>>) {
    let (done_tx, done_rx) = unbounded::<()>();
    let n = parts.len();
    let rt = match mode {
        Mode::Threads => None,
        Mode::Tasks(w) => Some(
            Runtime::builder()
                .workers(w)
                .quantum(Some(Duration::from_micros(50)))
                .build()
                .unwrap(),
        ),
    };
    let mut threads = Vec::new();
    let mut tasks = Vec::new();
    for p in parts {
        let done = done_tx.clone();
        let f = move || {
            p();
            done.send(()).unwrap();
        };
        match &rt {
            None => threads.push(std::thread::spawn(f)),
            Some(rt) => tasks.push(rt.spawn(f)),
        }
    }
    let deadline = Instant::now() + HANG;
    for _ in 0..n {
        done_rx
            .recv_deadline(deadline)
            .unwrap_or_else(|_| panic!("{mode:?}: a part did not finish within {HANG:?}"));
    }
    threads.into_iter().for_each(|t| t.join().unwrap());
    tasks.into_iter().for_each(join_ok);
    if let Some(rt) = rt {
        assert_eq!(
            rt.preemption_mode(),
            kvant::PreemptionMode::LineTables,
            "the 50 µs quantum is enforced here"
        );
    }
}

#[test]
fn a_rendezvous_send_completes_with_the_receiver_it_reserved() {
    // crossbeam's zero.rs `recv_in_send`: the message of a selected send
    // is itself a receive on the same channel. The receiver the select met
    // is reserved for it; the plain sender that comes meanwhile serves the
    // select's own receive, not that reserved receiver.
    for mode in MODES {
        for _ in 0..20 {
            let (s, r) = bounded::<u32>(0);
            let (go_tx, go_rx) = bounded::<()>(1);
            let (got_tx, got_rx) = unbounded::<u32>();
            let (r1, s2, r3) = (r.clone(), s.clone(), r.clone());
            let waiting = {
                let s = s.clone();
                move || {
                    // Returns once a receiver waits: the partner is there.
                    let mut sel = Select::new();
                    sel.send(&s);
                    sel.ready();
                }
            };
            concurrently(
                mode,
                vec![
                    Box::new(move || got_tx.send(r1.recv().unwrap()).unwrap()),
                    Box::new(move || {
                        go_rx.recv().unwrap();
                        s2.send(7).unwrap();
                    }),
                    Box::new(move || {
                        waiting();
                        select! {
                            send(s, {
                                go_tx.send(()).unwrap();
                                r3.recv().unwrap() + 1
                            }) -> res => res.unwrap(),
                        }
                    }),
                ],
            );
            assert_eq!(got_rx.try_recv(), Ok(8), "{mode:?}");
        }
    }
}

#[test]
fn selects_offering_a_send_and_a_receive_on_one_channel_meet() {
    // Go's TestSelfSelect: no deadlock, and on a rendezvous channel a
    // select never receives its own message.
    for mode in MODES {
        for cap in [0usize, 10] {
            let (s, r) = bounded::<usize>(cap);
            let parts: Vec<Box<dyn FnOnce() + Send>> = (0..2)
                .map(|p| {
                    let (s, r) = (s.clone(), r.clone());
                    Box::new(move || {
                        for i in 0..1000 {
                            let own = if p == 0 || i % 2 == 0 {
                                select! {
                                    send(s, p) -> res => { res.unwrap(); None }
                                    recv(r) -> v => Some(v.unwrap()),
                                }
                            } else {
                                select! {
                                    recv(r) -> v => Some(v.unwrap()),
                                    send(s, p) -> res => { res.unwrap(); None }
                                }
                            };
                            if cap == 0 {
                                assert_ne!(own, Some(p), "a select received its own message");
                            }
                        }
                    }) as Box<dyn FnOnce() + Send>
                })
                .collect();
            concurrently(mode, parts);
        }
    }
}

/// crossbeam's `linearizable_*` shape: one of two channels always holds a
/// message, while the other side moves it from the first to the second.
/// A select that does not wait (or only a moment) must still find one.
fn linearizable(mode: Mode, how: fn(&Receiver<u32>, &Receiver<u32>) -> bool) {
    const ROUNDS: usize = 2_000;
    for bounded_chans in [true, false] {
        let ((s1, r1), (s2, r2)) = if bounded_chans {
            (bounded::<u32>(1), bounded::<u32>(1))
        } else {
            (unbounded::<u32>(), unbounded::<u32>())
        };
        let (start_s, start_r) = bounded::<()>(0);
        let (end_s, end_r) = bounded::<()>(0);
        let missed = Arc::new(AtomicUsize::new(0));
        let m = missed.clone();
        let (r1b, r2b) = (r1.clone(), r2.clone());
        concurrently(
            mode,
            vec![
                Box::new(move || {
                    for _ in 0..ROUNDS {
                        start_s.send(()).unwrap();
                        s1.send(1).unwrap();
                        if !how(&r1b, &r2b) {
                            m.fetch_add(1, Ordering::Relaxed);
                        }
                        end_s.send(()).unwrap();
                        let _ = r2b.try_recv();
                    }
                }),
                Box::new(move || {
                    for _ in 0..ROUNDS {
                        start_r.recv().unwrap();
                        s2.send(1).unwrap();
                        let _ = r1.try_recv();
                        end_r.recv().unwrap();
                    }
                    drop(r2);
                }),
            ],
        );
        assert_eq!(missed.load(Ordering::Relaxed), 0, "{mode:?}");
    }
}

#[test]
fn a_select_with_default_is_linearizable() {
    for mode in MODES {
        linearizable(mode, |r1, r2| {
            select! {
                recv(r1) -> _ => true,
                recv(r2) -> _ => true,
                default => false,
            }
        });
    }
}

#[test]
fn try_select_and_a_zero_timeout_are_linearizable() {
    for mode in MODES {
        linearizable(mode, |r1, r2| {
            let mut sel = Select::new();
            let a = sel.recv(r1);
            let b = sel.recv(r2);
            match sel.try_select() {
                Ok(op) if op.index() == a => op.recv(r1).is_ok(),
                Ok(op) => {
                    assert_eq!(op.index(), b);
                    op.recv(r2).is_ok()
                }
                Err(_) => false,
            }
        });
        linearizable(mode, |r1, r2| {
            select! {
                recv(r1) -> _ => true,
                recv(r2) -> _ => true,
                default(Duration::ZERO) => false,
            }
        });
    }
}

/// Shares of `picks` (indices below `k`) are each within ±3 % of 1/k.
fn assert_uniform(picks: &[usize], k: usize, what: &str) {
    let mut hits = vec![0usize; k];
    for &p in picks {
        hits[p] += 1;
    }
    for (i, h) in hits.iter().enumerate() {
        let share = *h as f64 / picks.len() as f64;
        assert!(
            (share - 1.0 / k as f64).abs() <= 0.03,
            "{what}: operation {i} won {h} of {} ({hits:?})",
            picks.len()
        );
    }
}

#[test]
fn the_choice_among_ready_operations_is_uniform() {
    const N: usize = 10_000;
    // Four channels, two of them (in the middle) or all four ready: a
    // random rotation would favour the first ready one after a gap.
    let chans: Vec<_> = (0..4).map(|_| unbounded::<u8>()).collect();
    for &(ready, k) in &[(&[1usize, 2][..], 2usize), (&[0, 1, 2, 3][..], 4)] {
        for &i in ready {
            for _ in 0..N {
                chans[i].0.send(0).unwrap();
            }
        }
        let rs: Vec<&Receiver<u8>> = chans.iter().map(|c| &c.1).collect();
        let picks: Vec<usize> = (0..N)
            .map(|_| {
                let i = select! {
                    recv(rs[0]) -> _ => 0,
                    recv(rs[1]) -> _ => 1,
                    recv(rs[2]) -> _ => 2,
                    recv(rs[3]) -> _ => 3,
                };
                ready.iter().position(|&r| r == i).expect("a ready one")
            })
            .collect();
        assert_uniform(&picks, k, "select!");
        let picks: Vec<usize> = (0..N)
            .map(|_| {
                let mut sel = Select::new();
                for r in &rs {
                    sel.recv(r);
                }
                let op = sel.select();
                let i = op.index();
                op.recv(rs[i]).unwrap();
                ready.iter().position(|&r| r == i).expect("a ready one")
            })
            .collect();
        assert_uniform(&picks, k, "Select");
        for (_, r) in &chans {
            while r.try_recv().is_ok() {}
        }
    }
    // Biased: always the first written among the ready ones.
    let (s1, r1) = unbounded::<u8>();
    let (s2, r2) = unbounded::<u8>();
    for _ in 0..100 {
        s1.send(1).unwrap();
        s2.send(2).unwrap();
    }
    for _ in 0..100 {
        let first = kvant::select_biased! {
            recv(r2) -> v => v.unwrap(),
            recv(r1) -> v => v.unwrap(),
        };
        assert_eq!(first, 2);
    }
    let mut sel = Select::new_biased();
    sel.recv(&r1);
    sel.recv(&r2);
    assert_eq!(sel.try_ready(), Ok(0));
}

#[test]
fn timers_and_never_behave_as_in_crossbeam() {
    // A zero-period tick always has a tick; a zero `after` is ready at once.
    let t = tick(Duration::ZERO);
    for _ in 0..10 {
        select! {
            recv(t) -> v => assert!(v.is_ok()),
            default => panic!("a zero-period tick is always ready"),
        }
    }
    select! {
        recv(after(Duration::ZERO)) -> v => assert!(v.is_ok()),
        default => panic!("after(0) is ready at once"),
    }
    select! {
        recv(at(Instant::now())) -> v => assert!(v.is_ok()),
        default => panic!("at(now) is ready at once"),
    }
    let later = at(Instant::now() + Duration::from_millis(20));
    assert!(later.try_recv().is_err());
    assert!(later.recv_timeout(HANG).is_ok());
    // Every never() is the same channel; other channels are not.
    assert!(never::<u8>().same_channel(&never()));
    assert!(!after(Duration::ZERO).same_channel(&after(Duration::ZERO)));
}

#[test]
fn ready_does_not_count_a_selects_own_operations() {
    let (s, r) = bounded::<u8>(0);
    let mut sel = Select::new();
    sel.send(&s);
    sel.recv(&r);
    assert!(sel.ready_timeout(Duration::from_millis(20)).is_err());
    assert!(
        sel.ready_deadline(Instant::now() + Duration::from_millis(5))
            .is_err()
    );
    let (s, r) = unbounded::<u8>();
    let mut sel = Select::new();
    let send = sel.send(&s);
    sel.recv(&r);
    assert_eq!(sel.ready_timeout(Duration::from_millis(20)), Ok(send));
}

#[test]
fn an_uncompleted_selected_operation_panics_and_gives_back_what_it_held() {
    // A selected send reserved the waiting receiver: dropping the operation
    // panics (crossbeam's contract) and lets that receiver go on waiting,
    // to get the next message.
    let (s, r) = bounded::<u8>(0);
    let receiver = std::thread::spawn(move || r.recv_timeout(HANG));
    let mut sel = Select::new();
    sel.send(&s);
    sel.ready(); // the receiver waits
    let op = sel.select();
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(op)));
    let msg = *dropped.unwrap_err().downcast::<&str>().unwrap();
    assert!(msg.contains("without completing"), "{msg}");
    s.send(5).unwrap();
    assert_eq!(receiver.join().unwrap(), Ok(5));

    // A selected receive dropped unread: the message goes back.
    let (s, r) = unbounded::<u8>();
    s.send(9).unwrap();
    let mut sel = Select::new();
    sel.recv(&r);
    let op = sel.select();
    assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(op))).is_err());
    assert_eq!(r.try_recv(), Ok(9));

    // A selected send on a buffered channel: the reserved place comes back.
    let (s, r) = bounded::<u8>(1);
    let mut sel = Select::new();
    sel.send(&s);
    let op = sel.select();
    assert!(s.try_send(1).is_err(), "the place is reserved");
    assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(op))).is_err());
    s.try_send(1).unwrap();
    assert_eq!(r.try_recv(), Ok(1));

    // A panicking message expression gives the permit back the same way.
    fn no_message() -> u8 {
        panic!("no message")
    }
    let (s, r) = bounded::<u8>(1);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        select! { send(s, no_message()) -> _ => {} }
    }));
    assert!(panicked.is_err());
    s.try_send(2).unwrap();
    assert_eq!(r.try_recv(), Ok(2));
}

#[test]
fn the_api_surface_matches_crossbeam() {
    fn clone_send_sync<T: Clone + Send + Sync>() {}
    fn unwind_safe<T: UnwindSafe + RefUnwindSafe>() {}
    clone_send_sync::<Select<'static>>();
    unwind_safe::<Sender<Box<u8>>>();
    unwind_safe::<Receiver<Box<u8>>>();

    let (s, r) = unbounded::<i32>();
    // Trailing commas inside operations and after arms, `default()`.
    select! {
        send(s, 1,) -> res => res.unwrap(),
        default() => panic!(),
    }
    select! {
        recv(r,) -> v => assert_eq!(v, Ok(1)),
        default => {},
    }
    select! {
        default() => {}
    }
    // A temporary inside an operand lives as long as the select.
    let none: Option<&Receiver<i32>> = std::hint::black_box(None);
    let fired = select! {
        recv(none.unwrap_or(&never())) -> _ => false,
        default(Duration::from_millis(1)) => true,
    };
    assert!(fired);
    // An operand is evaluated once, a message only if its arm is selected.
    let evaluated = AtomicUsize::new(0);
    let (full_s, _full_r) = bounded::<i32>(0);
    select! {
        send(full_s, { evaluated.fetch_add(1, Ordering::Relaxed); 0 }) -> _ => panic!(),
        recv({ evaluated.fetch_add(10, Ordering::Relaxed); &r }) -> _ => panic!(),
        default => {}
    }
    assert_eq!(evaluated.load(Ordering::Relaxed), 10);
    // A cloned select selects independently; `recycle` empties it.
    let (s2, r2) = unbounded::<i32>();
    s2.send(3).unwrap();
    let mut sel = Select::new();
    sel.recv(&r2);
    let mut copy = sel.clone();
    assert_eq!(copy.select().recv(&r2), Ok(3));
    assert!(sel.try_select().is_err());
    let mut empty = sel.recycle();
    assert!(empty.try_select().is_err());
}

#[test]
fn forgetting_a_selected_operation_loses_its_reservation_and_hangs_nothing() {
    // A documented difference: crossbeam's `forget_select_bounded` asserts
    // that dropping the channel's ends hangs after this ("TODO: should not
    // hang"). In kvant the forgotten reservation is lost, like a leaked
    // message: its place stays taken, and nothing waits for it.
    for queued in 0..2u8 {
        let (s, r) = bounded::<Box<u8>>(2);
        for i in 0..queued {
            s.send(Box::new(i)).unwrap();
        }
        {
            let mut sel = Select::new();
            sel.send(&s);
            std::mem::forget(sel.select());
        }
        for i in queued..1 {
            s.try_send(Box::new(i)).unwrap();
        }
        assert!(
            s.try_send(Box::new(9)).is_err(),
            "the forgotten place is taken"
        );
        assert_eq!(r.len(), 1);
        let (done_tx, done_rx) = unbounded();
        std::thread::spawn(move || {
            drop(s);
            drop(r);
            done_tx.send(()).unwrap();
        });
        done_rx
            .recv_timeout(HANG)
            .expect("dropping the ends returns");
    }
}
