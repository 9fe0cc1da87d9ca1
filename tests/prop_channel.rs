//! Property: whatever the channel flavour, the number of producers and
//! consumers, the worker count and the quantum, every message sent is
//! received exactly once, and each consumer sees each producer's messages in
//! the order they were sent.

use std::time::Duration;

use kvant::Runtime;
use kvant::channel::{RecvTimeoutError, TryRecvError, bounded, unbounded};
use proptest::prelude::*;

mod common;
use common::join_ok;

/// How a consumer takes messages.
#[derive(Clone, Copy, Debug)]
enum Recv {
    Blocking,
    Timeout,
    TryThenYield,
}

fn consume(rx: kvant::channel::Receiver<(usize, usize)>, how: Recv) -> Vec<(usize, usize)> {
    let mut got = Vec::new();
    loop {
        let next = match how {
            Recv::Blocking => rx.recv().ok(),
            Recv::Timeout => match rx.recv_timeout(Duration::from_micros(100)) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => None,
            },
            Recv::TryThenYield => match rx.try_recv() {
                Ok(m) => Some(m),
                Err(TryRecvError::Empty) => {
                    kvant::yield_now();
                    continue;
                }
                Err(TryRecvError::Disconnected) => None,
            },
        };
        match next {
            Some(m) => got.push(m),
            None => return got,
        }
    }
}

fn run(
    cap: Option<usize>,
    producers: usize,
    consumers: usize,
    per_producer: usize,
    workers: usize,
    quantum: Option<Duration>,
    how: Recv,
) {
    let rt = Runtime::builder()
        .workers(workers)
        .quantum(quantum)
        .build()
        .unwrap();
    let (tx, rx) = match cap {
        Some(c) => bounded(c),
        None => unbounded(),
    };
    let ps: Vec<_> = (0..producers)
        .map(|p| {
            let tx = tx.clone();
            rt.spawn(move || {
                for i in 0..per_producer {
                    // Alternate blocking and timed sends (retrying on timeout).
                    let mut msg = (p, i);
                    if i % 2 == 0 {
                        tx.send(msg).unwrap();
                        continue;
                    }
                    while let Err(e) = tx.send_timeout(msg, Duration::from_micros(100)) {
                        assert!(e.is_timeout(), "receivers vanished");
                        msg = e.into_inner();
                    }
                }
            })
        })
        .collect();
    drop(tx);
    let cs: Vec<_> = (0..consumers)
        .map(|_| {
            let rx = rx.clone();
            rt.spawn(move || consume(rx, how))
        })
        .collect();
    drop(rx);
    ps.into_iter().for_each(join_ok);
    let streams: Vec<Vec<(usize, usize)>> = cs.into_iter().map(join_ok).collect();

    for s in &streams {
        for p in 0..producers {
            let mine: Vec<usize> = s.iter().filter(|m| m.0 == p).map(|m| m.1).collect();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "producer {p} reordered: {mine:?}"
            );
        }
    }
    let mut all: Vec<(usize, usize)> = streams.into_iter().flatten().collect();
    all.sort_unstable();
    let expected: Vec<(usize, usize)> = (0..producers)
        .flat_map(|p| (0..per_producer).map(move |i| (p, i)))
        .collect();
    assert_eq!(all, expected);
}

fn cap() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![
        Just(None),
        Just(Some(0)),
        Just(Some(1)),
        Just(Some(4)),
        Just(Some(64))
    ]
}

fn quantum() -> impl Strategy<Value = Option<Duration>> {
    prop_oneof![
        Just(None),
        Just(Some(Duration::from_micros(50))),
        Just(Some(Duration::from_millis(1)))
    ]
}

fn how() -> impl Strategy<Value = Recv> {
    prop_oneof![
        Just(Recv::Blocking),
        Just(Recv::Timeout),
        Just(Recv::TryThenYield)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn messages_are_conserved(
        cap in cap(),
        producers in 1usize..=4,
        consumers in 1usize..=4,
        per_producer in 0usize..300,
        workers in 1usize..=4,
        quantum in quantum(),
        how in how(),
    ) {
        run(cap, producers, consumers, per_producer, workers, quantum, how);
    }
}
