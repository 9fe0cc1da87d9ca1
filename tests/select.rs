//! Select over kvant channels: `Select`, `select!`, `after`/`tick`/`never`.
//! Fair among ready operations, bounded waits, messages conserved.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{HANG, join_ok, rt};
use kvant::channel::{RecvError, Select, after, bounded, never, tick, unbounded};
use proptest::prelude::*;

#[test]
fn no_ready_arm_starves_over_10000_rounds() {
    let chans: Vec<_> = (0..4).map(|_| unbounded::<usize>()).collect();
    for (i, (tx, _)) in chans.iter().enumerate() {
        for _ in 0..10_000 {
            tx.send(i).unwrap();
        }
    }
    let (r0, r1, r2, r3) = (&chans[0].1, &chans[1].1, &chans[2].1, &chans[3].1);
    let mut counts = [0usize; 4];
    for _ in 0..10_000 {
        let i = kvant::select! {
            recv(r0) -> v => v.unwrap(),
            recv(r1) -> v => v.unwrap(),
            recv(r2) -> v => v.unwrap(),
            recv(r3) -> v => v.unwrap(),
        };
        counts[i] += 1;
    }
    // Each arm is always ready: each should win about a quarter.
    for c in counts {
        assert!(c > 2_000, "unfair: {counts:?}");
    }
}

#[test]
fn select_struct_is_fair_too() {
    let (ta, ra) = unbounded::<u8>();
    let (tb, rb) = unbounded::<u8>();
    for _ in 0..10_000 {
        ta.send(0).unwrap();
        tb.send(1).unwrap();
    }
    let mut counts = [0usize; 2];
    for _ in 0..10_000 {
        let mut sel = Select::new();
        let a = sel.recv(&ra);
        let b = sel.recv(&rb);
        let oper = sel.select();
        let v = if oper.index() == a {
            oper.recv(&ra).unwrap()
        } else {
            assert_eq!(oper.index(), b);
            oper.recv(&rb).unwrap()
        };
        counts[v as usize] += 1;
    }
    assert!(counts.iter().all(|&c| c > 4_000), "{counts:?}");
}

#[test]
fn select_timeout_and_default() {
    let (_tx, rx) = unbounded::<u8>();
    let t = Instant::now();
    let r = kvant::select! {
        recv(rx) -> _ => "message",
        default(Duration::from_millis(20)) => "timeout",
    };
    assert_eq!(r, "timeout");
    assert!(t.elapsed() >= Duration::from_millis(20));
    let r = kvant::select! {
        recv(rx) -> _ => "message",
        default => "nothing ready",
    };
    assert_eq!(r, "nothing ready");
    let mut sel = Select::new();
    sel.recv(&rx);
    assert!(sel.try_select().is_err());
    assert!(sel.select_timeout(Duration::from_millis(5)).is_err());
    assert!(sel.ready_timeout(Duration::from_millis(5)).is_err());
}

#[test]
fn select_in_a_task_wakes_on_a_send_from_another_task() {
    let rt = rt(1, Some(Duration::from_millis(1)));
    let (tx, rx) = unbounded::<u32>();
    let (_qtx, quit) = unbounded::<()>();
    let h = rt.spawn(move || {
        kvant::select! {
            recv(rx) -> v => v.unwrap(),
            recv(quit) -> _ => 0,
            default(HANG) => panic!("select never woke"),
        }
    });
    join_ok(rt.spawn(move || {
        kvant::sleep(Duration::from_millis(5));
        tx.send(42).unwrap();
    }));
    assert_eq!(join_ok(h), 42);
}

#[test]
fn send_arms_and_disconnection() {
    let (tx, rx) = bounded::<u32>(1);
    let (tx2, rx2) = bounded::<u32>(1);
    tx2.send(0).unwrap(); // full: its send arm is not ready
    let r = kvant::select! {
        send(tx, 7) -> res => { res.unwrap(); 1 }
        send(tx2, 8) -> res => { res.unwrap(); 2 }
    };
    assert_eq!(r, 1);
    assert_eq!(rx.recv(), Ok(7));
    drop(rx2);
    // Disconnected ends are ready (with an error).
    let r = kvant::select! {
        send(tx2, 9) -> res => res.is_err(),
    };
    assert!(r);
    drop(tx);
    let r = kvant::select! {
        recv(rx) -> v => v,
        default(HANG) => panic!("a disconnected receiver is ready"),
    };
    assert_eq!(r, Err(RecvError));
}

#[test]
fn rendezvous_with_a_plain_counterpart() {
    let rt = rt(2, None);
    let (tx, rx) = bounded::<u32>(0);
    let h = rt.spawn(move || rx.recv().unwrap());
    // The select's send becomes ready once the receiver blocks.
    kvant::select! {
        send(tx, 3) -> res => res.unwrap(),
        default(HANG) => panic!("the rendezvous never became ready"),
    }
    assert_eq!(join_ok(h), 3);
    let (tx, rx) = bounded::<u32>(0);
    let h = rt.spawn(move || tx.send(4).unwrap());
    let v = kvant::select! { recv(rx) -> v => v.unwrap() };
    assert_eq!(v, 4);
    join_ok(h);
}

#[test]
fn after_tick_and_never() {
    let t = Instant::now();
    let a = after(Duration::from_millis(10));
    let n = never::<()>();
    let r = kvant::select! {
        recv(a) -> v => v.unwrap(),
        recv(n) -> _ => unreachable!(),
        default(HANG) => panic!("after never fired"),
    };
    assert!(r >= t + Duration::from_millis(10));
    // Fires once, then never again (no disconnection either).
    assert!(a.recv_timeout(Duration::from_millis(20)).is_err());
    assert!(!a.is_disconnected());

    let tk = tick(Duration::from_millis(2));
    let mut last = Instant::now();
    for _ in 0..5 {
        let at = tk.recv_timeout(HANG).expect("tick");
        assert!(at >= last - Duration::from_millis(2));
        last = at;
    }
    let r = kvant::select! {
        recv(never::<u8>()) -> _ => 1,
        default(Duration::from_millis(5)) => 2,
    };
    assert_eq!(r, 2);
}

#[test]
fn an_aborted_select_leaves_no_observer_behind() {
    let rt = rt(1, None);
    let (tx, rx) = unbounded::<u32>();
    let rx2 = rx.clone();
    let h = rt.spawn(move || {
        kvant::select! { recv(rx2) -> _ => () }
    });
    std::thread::sleep(Duration::from_millis(5));
    h.abort();
    assert!(h.join().unwrap_err().is_cancelled());
    // The channel still works normally for others.
    tx.send(1).unwrap();
    assert_eq!(rx.recv(), Ok(1));
}

#[test]
#[should_panic(expected = "would wait forever")]
fn empty_select_without_timeout_panics() {
    Select::new().ready();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(16)
    ))]

    /// Producers send numbered messages on several channels (some
    /// rendezvous), plainly or by selecting between two send arms;
    /// consumers select over all of them: blocking, with a timeout, or
    /// not waiting at all. Every message is received exactly once, on any worker count
    /// and quantum down to 50 µs.
    #[test]
    fn select_conserves_messages(
        workers in 1usize..=4,
        quantum_us in prop_oneof![Just(None), (50u64..1_000).prop_map(Some)],
        caps in proptest::collection::vec(0usize..4, 2..4),
        per_producer in 1u64..200,
        consumers in 1usize..5,
    ) {
        let rt = rt(workers, quantum_us.map(Duration::from_micros));
        let chans: Vec<_> = caps.iter().map(|&c| bounded::<u64>(c)).collect();
        let total = per_producer * chans.len() as u64;
        let received = Arc::new(AtomicU64::new(0));
        let mut producers = Vec::new();
        for (k, (tx, _)) in chans.iter().enumerate() {
            let tx = tx.clone();
            let other = chans[(k + 1) % chans.len()].0.clone();
            producers.push(rt.spawn(move || {
                // Odd producers select between their channel and the next
                // one, waiting at most a moment: a message is made (and
                // counted) only for the arm selected.
                let made = std::cell::Cell::new(0u64);
                let next = || {
                    let i = made.get();
                    made.set(i + 1);
                    k as u64 * 1_000_000 + i
                };
                while made.get() < per_producer {
                    if k % 2 == 0 {
                        tx.send(next()).unwrap();
                        continue;
                    }
                    kvant::select! {
                        send(tx, next()) -> r => r.unwrap(),
                        send(other, next()) -> r => r.unwrap(),
                        default(Duration::from_micros(200)) => {}
                    }
                }
            }));
        }
        let rxs: Vec<_> = chans.iter().map(|(_, r)| r.clone()).collect();
        drop(chans);
        let mut cons = Vec::new();
        for c in 0..consumers {
            let rxs = rxs.clone();
            let received = received.clone();
            cons.push(rt.spawn(move || {
                let mut got = Vec::new();
                let mut open = vec![true; rxs.len()];
                while open.iter().any(|&o| o) && received.load(Ordering::SeqCst) < total {
                    let mut sel = Select::new();
                    // Disconnected channels leave the select (they would
                    // always be ready).
                    let idx: Vec<_> = rxs
                        .iter()
                        .map(|r| sel.recv(r))
                        .collect();
                    for (i, o) in open.iter().enumerate() {
                        if !o {
                            sel.remove(idx[i]);
                        }
                    }
                    let oper = match c % 3 {
                        0 => sel.select(),
                        1 => match sel.select_timeout(Duration::from_millis(1)) {
                            Ok(o) => o,
                            Err(_) => continue,
                        },
                        _ => match sel.try_select() {
                            Ok(o) => o,
                            Err(_) => {
                                kvant::yield_now();
                                continue;
                            }
                        },
                    };
                    let i = idx.iter().position(|&x| x == oper.index()).unwrap();
                    match oper.recv(&rxs[i]) {
                        Ok(v) => {
                            got.push(v);
                            received.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => open[i] = false,
                    }
                }
                got
            }));
        }
        for p in producers {
            join_ok(p);
        }
        drop(rxs);
        let mut seen: HashMap<u64, u32> = HashMap::new();
        for c in cons {
            for v in join_ok(c) {
                *seen.entry(v).or_default() += 1;
            }
        }
        prop_assert_eq!(seen.len() as u64, total);
        prop_assert!(seen.values().all(|&n| n == 1));
    }
}

#[test]
fn two_selects_meet_on_a_rendezvous_channel() {
    let rt = rt(2, Some(Duration::from_millis(1)));
    for _ in 0..50 {
        let (tx, rx) = bounded::<u32>(0);
        let (_keep, idle) = unbounded::<u32>();
        let receiver = rt.spawn(move || {
            kvant::select! {
                recv(rx) -> v => v.unwrap(),
                recv(idle) -> _ => unreachable!(),
                default(HANG) => panic!("the selects never met"),
            }
        });
        let sender = rt.spawn(move || {
            kvant::select! {
                send(tx, 9) -> res => res.unwrap(),
                default(HANG) => panic!("the selects never met"),
            }
        });
        join_ok(sender);
        assert_eq!(join_ok(receiver), 9);
    }
}

#[test]
fn a_selects_own_receive_is_not_the_partner_of_its_own_send() {
    let (tx, rx) = bounded::<u32>(0);
    let t = Instant::now();
    let r = kvant::select! {
        recv(rx) -> _ => "recv",
        send(tx, 1) -> _ => "send",
        default(Duration::from_millis(20)) => "timeout",
    };
    assert_eq!(r, "timeout");
    assert!(t.elapsed() < HANG);
}
