//! kvant::channel: ordering, backpressure, disconnection, timeouts, try_*
//! semantics, rendezvous, and messaging between OS threads and tasks.
//! Every wait on a task goes through `join_ok()`, a generous `join_timeout` that
//! fails the test instead of hanging it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use kvant::channel::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError, bounded,
    unbounded,
};

mod common;
use common::{HANG, join_ok, rt};

#[test]
fn endpoints_are_send_sync_and_clone() {
    fn check<T: Send + Sync + Clone>() {}
    check::<kvant::channel::Sender<Vec<u8>>>();
    check::<kvant::channel::Receiver<Vec<u8>>>();
}

#[test]
fn per_producer_order_is_kept() {
    for cap in [Some(0), Some(1), Some(8), None] {
        let rt = rt(2, Some(Duration::from_micros(50)));
        let (tx, rx) = match cap {
            Some(c) => bounded(c),
            None => unbounded(),
        };
        let producers: Vec<_> = (0..4)
            .map(|p| {
                let tx = tx.clone();
                rt.spawn(move || (0..300).for_each(|i| tx.send((p, i)).unwrap()))
            })
            .collect();
        drop(tx);
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let rx = rx.clone();
                rt.spawn(move || {
                    let mut last = [None; 4];
                    let mut n = 0;
                    for (p, i) in &rx {
                        assert!(
                            last[p].is_none_or(|l| l < i),
                            "producer {p}: {i} after {last:?}"
                        );
                        last[p] = Some(i);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        drop(rx);
        producers.into_iter().for_each(join_ok);
        let total: usize = consumers.into_iter().map(join_ok).sum();
        assert_eq!(total, 4 * 300, "cap {cap:?}");
    }
    // One consumer sees exactly the sent order.
    let (tx, rx) = bounded(3);
    let t = std::thread::spawn(move || (0..100).for_each(|i| tx.send(i).unwrap()));
    assert_eq!(rx.iter().collect::<Vec<_>>(), (0..100).collect::<Vec<_>>());
    t.join().unwrap();
}

#[test]
fn bounded_send_waits_while_full() {
    // One cooperative worker: the producer fills the channel and must park
    // on the third send, letting the consumer run.
    let rt = rt(1, None);
    let (tx, rx) = bounded(2);
    let sent = Arc::new(AtomicUsize::new(0));
    let producer = {
        let sent = sent.clone();
        rt.spawn(move || {
            for i in 0..5 {
                tx.send(i).unwrap();
                sent.fetch_add(1, SeqCst);
            }
        })
    };
    let consumer = {
        let sent = sent.clone();
        rt.spawn(move || {
            while sent.load(SeqCst) < 2 {
                kvant::yield_now(); // whichever task the worker picked first
            }
            let seen_before = sent.load(SeqCst);
            assert_eq!(rx.len(), 2);
            assert!(rx.is_full());
            let got: Vec<i32> = rx.iter().collect();
            (seen_before, got)
        })
    };
    join_ok(producer);
    let (seen_before, got) = join_ok(consumer);
    assert_eq!(
        seen_before, 2,
        "the producer should have been parked by backpressure"
    );
    assert_eq!(got, [0, 1, 2, 3, 4]);
}

#[test]
fn try_semantics_len_and_capacity() {
    let (tx, rx) = bounded(2);
    assert_eq!(tx.capacity(), Some(2));
    assert!(rx.is_empty());
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    tx.try_send(1).unwrap();
    tx.try_send(2).unwrap();
    assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
    assert_eq!((tx.len(), rx.len(), tx.is_full()), (2, 2, true));
    assert_eq!(rx.try_iter().collect::<Vec<_>>(), [1, 2]);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));

    let (tx, rx) = unbounded();
    assert_eq!(rx.capacity(), None);
    (0..1000).for_each(|i| tx.try_send(i).unwrap());
    assert_eq!(rx.len(), 1000);
    assert!(!tx.is_full());
    assert!(tx.same_channel(&tx.clone()));
}

#[test]
fn rendezvous_channel_hands_over_directly() {
    let (tx, rx) = bounded::<u32>(0);
    assert_eq!(
        tx.try_send(1),
        Err(TrySendError::Full(1)),
        "nobody is receiving"
    );
    assert!(tx.is_full() && rx.is_empty());
    let t0 = Instant::now();
    assert_eq!(
        tx.send_timeout(2, Duration::from_millis(10)),
        Err(SendTimeoutError::Timeout(2))
    );
    assert!(t0.elapsed() >= Duration::from_millis(10));

    // A receiver parked in recv makes try_send succeed.
    let rt = rt(1, None);
    let r = {
        let rx = rx.clone();
        rt.spawn(move || rx.recv().unwrap())
    };
    let deadline = Instant::now() + HANG;
    let mut v = 7;
    while let Err(TrySendError::Full(back)) = tx.try_send(v) {
        assert!(Instant::now() < deadline, "receiver never showed up");
        v = back;
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(join_ok(r), 7);

    // A blocking send completes only once a receiver took the message.
    let s = rt.spawn(move || tx.send(9));
    assert_eq!(rx.recv_timeout(HANG), Ok(9));
    join_ok(s).unwrap();
    assert_eq!(rx.len(), 0);
}

#[test]
fn disconnection_in_both_directions() {
    // Senders gone: buffered messages drain, then Disconnected.
    let (tx, rx) = bounded(4);
    tx.send(1).unwrap();
    let tx2 = tx.clone();
    drop(tx);
    assert!(!rx.is_disconnected());
    drop(tx2);
    assert!(rx.is_disconnected());
    assert_eq!(rx.recv(), Ok(1));
    assert_eq!(rx.recv(), Err(RecvError));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(1)),
        Err(RecvTimeoutError::Disconnected)
    );

    // Receivers gone: sends fail and return the message.
    let (tx, rx) = unbounded();
    drop(rx);
    assert!(tx.is_disconnected());
    assert_eq!(tx.send("a"), Err(SendError("a")));
    assert_eq!(tx.try_send("b"), Err(TrySendError::Disconnected("b")));
    assert_eq!(
        tx.send_timeout("c", HANG),
        Err(SendTimeoutError::Disconnected("c"))
    );

    // A parked receiver is woken by the last sender leaving, and a parked
    // sender by the last receiver leaving (it gets its message back).
    let rt = rt(2, None);
    let (tx, rx) = bounded::<String>(0);
    let r = rt.spawn(move || rx.recv());
    std::thread::sleep(Duration::from_millis(5));
    drop(tx);
    assert_eq!(join_ok(r), Err(RecvError));

    let (tx, rx) = bounded(1);
    tx.send("kept".to_string()).unwrap();
    let s = rt.spawn(move || tx.send("returned".to_string()));
    std::thread::sleep(Duration::from_millis(5));
    drop(rx);
    assert_eq!(join_ok(s), Err(SendError("returned".to_string())));
}

/// Counts its drops: what a test checks was dropped, and when.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

#[test]
fn buffered_messages_are_dropped_with_the_last_receiver() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = unbounded();
    for _ in 0..3 {
        tx.send(Counted(drops.clone())).unwrap();
    }
    drop(rx);
    assert_eq!(drops.load(SeqCst), 3);
    assert!(tx.send(Counted(drops.clone())).is_err());
    assert_eq!(drops.load(SeqCst), 4);
}

#[test]
fn timeouts_fire() {
    let rt = rt(1, Some(Duration::from_millis(1)));
    let (tx, rx) = bounded::<u8>(1);
    let r = {
        let rx = rx.clone();
        rt.spawn(move || {
            let t0 = Instant::now();
            (rx.recv_timeout(Duration::from_millis(20)), t0.elapsed())
        })
    };
    let (res, elapsed) = join_ok(r);
    assert_eq!(res, Err(RecvTimeoutError::Timeout));
    assert!(elapsed >= Duration::from_millis(20), "{elapsed:?}");

    let t0 = Instant::now();
    assert_eq!(
        rx.recv_deadline(t0 + Duration::from_millis(10)),
        Err(RecvTimeoutError::Timeout)
    );
    assert!(t0.elapsed() >= Duration::from_millis(10));

    tx.send(1).unwrap();
    let s = rt.spawn(move || tx.send_timeout(2, Duration::from_millis(10)));
    assert_eq!(join_ok(s), Err(SendTimeoutError::Timeout(2)));
    assert_eq!(rx.try_recv(), Ok(1));
}

#[test]
fn timed_out_receivers_never_lose_or_duplicate_messages() {
    // Very short timeouts on both sides of a rendezvous channel make deadlines
    // expire while hand-offs are in flight; every message that a send
    // reported as delivered must be received exactly once.
    for (workers, quantum) in [(1, None), (2, Some(Duration::from_micros(50))), (4, None)] {
        let rt = rt(workers, quantum);
        let (tx, rx) = bounded::<u32>(0);
        let senders: Vec<_> = (0..2)
            .map(|p| {
                let tx = tx.clone();
                rt.spawn(move || {
                    let mut delivered = Vec::new();
                    for i in 0..300 {
                        let msg = p * 1000 + i;
                        let timeout = Duration::from_micros(u64::from(i % 5) * 15);
                        if tx.send_timeout(msg, timeout).is_ok() {
                            delivered.push(msg);
                        }
                    }
                    delivered
                })
            })
            .collect();
        drop(tx);
        let receivers: Vec<_> = (0..2)
            .map(|_| {
                let rx = rx.clone();
                rt.spawn(move || {
                    let mut got = Vec::new();
                    for k in 0u64.. {
                        match rx.recv_timeout(Duration::from_micros(k % 4 * 10)) {
                            Ok(m) => got.push(m),
                            Err(RecvTimeoutError::Timeout) => {}
                            Err(RecvTimeoutError::Disconnected) => break,
                        }
                        if k % 3 == 0 {
                            kvant::yield_now(); // let senders time out meanwhile
                        }
                    }
                    got
                })
            })
            .collect();
        drop(rx);
        let mut sent: Vec<u32> = senders.into_iter().flat_map(join_ok).collect();
        let mut got: Vec<u32> = receivers.into_iter().flat_map(join_ok).collect();
        sent.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, sent, "workers={workers} quantum={quantum:?}");
    }
}

#[test]
fn os_threads_and_tasks_talk_both_ways() {
    let rt = rt(2, Some(Duration::from_millis(1)));
    let (req_tx, req_rx) = bounded::<u64>(1);
    let (resp_tx, resp_rx) = unbounded::<u64>();
    let server = rt.spawn(move || {
        for x in &req_rx {
            resp_tx.send(x * x).unwrap();
        }
    });
    for x in 0..200 {
        req_tx.send(x).unwrap();
        assert_eq!(resp_rx.recv_timeout(HANG), Ok(x * x));
    }
    drop(req_tx);
    join_ok(server);
    assert_eq!(resp_rx.recv(), Err(RecvError));

    // An OS thread producing for a task consumer, through a tiny buffer.
    let (tx, rx) = bounded(1);
    let producer = std::thread::spawn(move || (0..500u64).for_each(|i| tx.send(i).unwrap()));
    let consumer = rt.spawn(move || rx.into_iter().sum::<u64>());
    producer.join().unwrap();
    assert_eq!(join_ok(consumer), (0..500).sum::<u64>());
}

#[test]
fn errors_format_without_debug_payloads() {
    struct Opaque;
    assert_eq!(format!("{:?}", SendError(Opaque)), "SendError { .. }");
    assert_eq!(format!("{:?}", TrySendError::Full(Opaque)), "Full(..)");
    assert_eq!(
        format!("{:?}", SendTimeoutError::Disconnected(Opaque)),
        "Disconnected(..)"
    );
    assert_eq!(
        SendError(Opaque).to_string(),
        "sending on a disconnected channel"
    );
    assert_eq!(
        TrySendError::Full(Opaque).to_string(),
        "sending on a full channel"
    );
    assert_eq!(
        RecvTimeoutError::Timeout.to_string(),
        "timed out waiting on receive operation"
    );
    let e: Box<dyn std::error::Error> = Box::new(TryRecvError::Disconnected);
    assert_eq!(
        e.to_string(),
        "receiving on an empty and disconnected channel"
    );
    assert!(TrySendError::Disconnected(1).is_disconnected());
    assert_eq!(SendTimeoutError::Timeout(5).into_inner(), 5);
}

/// An endpoint keeps the slot its last blocked call waited in and reuses it
/// for the next one; whoever blocks next (another task, an OS thread) must be
/// the one woken. On a rendezvous channel `try_send` succeeds only while a
/// receiver is blocked (and `try_recv` only while a sender is), so each turn
/// below really blocks on the slot the previous turn left, by a different
/// waiter each time. A misdirected wake-up hangs a turn (watchdog).
#[test]
fn an_endpoint_shared_by_tasks_and_threads_wakes_whoever_blocks_on_it() {
    let rt = rt(2, Some(Duration::from_millis(1)));
    let (tx, rx) = bounded::<u64>(0);
    let (tx, rx) = (Arc::new(tx), Arc::new(rx));
    // Hand `v` to a receiver that is blocked (or about to block) on `rx`.
    let hand = |v: u64| {
        let tx = tx.clone();
        rt.spawn(move || {
            while tx.try_send(v).is_err() {
                kvant::sleep(Duration::from_micros(50));
            }
        })
    };
    // Take a message from a sender that is blocked on `tx`.
    let take = || {
        let rx = rx.clone();
        rt.spawn(move || {
            loop {
                if let Ok(v) = rx.try_recv() {
                    return v;
                }
                kvant::sleep(Duration::from_micros(50));
            }
        })
    };
    // An OS thread's blocking call, bounded by a watchdog.
    fn on_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || done_tx.send(f()).unwrap());
        done_rx
            .recv_timeout(HANG)
            .expect("an OS thread blocked on a reused slot was never woken")
    }
    for round in 0..20u64 {
        let v = round * 10;
        // A task blocks receiving and gives up: its slot is kept.
        let r = rx.clone();
        let t = rt.spawn(move || r.recv_timeout(Duration::from_micros(300)));
        assert_eq!(join_ok(t), Err(RecvTimeoutError::Timeout));
        // An OS thread blocks on that slot next.
        let h = hand(v);
        let r = rx.clone();
        assert_eq!(on_thread(move || r.recv()), Ok(v));
        join_ok(h);
        // Then another task.
        let h = hand(v + 1);
        let r = rx.clone();
        assert_eq!(join_ok(rt.spawn(move || r.recv())), Ok(v + 1));
        join_ok(h);
        // The same for a blocked sender's slot: a task gives up, then an OS
        // thread, then a task block on it.
        let s = tx.clone();
        let t = rt.spawn(move || s.send_timeout(v + 2, Duration::from_micros(300)));
        assert_eq!(join_ok(t), Err(SendTimeoutError::Timeout(v + 2)));
        let h = take();
        let s = tx.clone();
        on_thread(move || s.send(v + 3)).unwrap();
        assert_eq!(join_ok(h), v + 3);
        let h = take();
        let s = tx.clone();
        assert_eq!(join_ok(rt.spawn(move || s.send(v + 4))), Ok(()));
        assert_eq!(join_ok(h), v + 4);
    }
}

/// The slot an endpoint keeps for reuse must not keep its last waiter
/// alive: a detached task that blocked on a channel which outlives it still
/// has its result dropped when it ends (that drop may close a file or
/// release a lock).
#[test]
fn a_kept_slot_does_not_keep_a_finished_task_or_its_result() {
    let rt = rt(1, None);
    let (tx, rx) = bounded::<u32>(0);
    let rx = Arc::new(rx);
    let dropped = Arc::new(AtomicUsize::new(0));
    let (r, d) = (rx.clone(), dropped.clone());
    // Blocks in `recv` (nothing is sent yet), so its slot is the one kept.
    let h = rt.spawn(move || {
        let got = r.recv().unwrap();
        (got, Counted(d))
    });
    common::wait_for("the task to block in recv", || tx.try_send(7).is_ok());
    drop(h); // detached: its result goes when the task does
    common::wait_for("the detached task's result to be dropped", || {
        dropped.load(SeqCst) == 1
    });
    // The endpoint and its kept slot are still usable.
    let r = rx.clone();
    let h = rt.spawn(move || r.recv());
    common::wait_for("a second receiver to block", || tx.try_send(8).is_ok());
    assert_eq!(join_ok(h), Ok(8));
}
