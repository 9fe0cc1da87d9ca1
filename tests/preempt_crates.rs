//! Which crates' code is preempted: the program's own by default, another
//! crate's only once `Builder::preempt_crate` allows it, and a task that
//! runs long in code kvant will not preempt is counted and named.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kvant::{Error, PreemptionMode, Runtime};

/// One long call into another crate's code (proptest's deterministic RNG
/// filling a buffer: rand_core's loop over its algorithm), beside a
/// hog of our own so that the worker has other work, at 1 ms. Returns
/// (preemptions, overruns).
fn fill_beside_a_hog(builder: kvant::Builder) -> (u64, u64) {
    use proptest::prelude::Rng as _;
    use proptest::test_runner::{RngAlgorithm, TestRng};
    let rt = builder
        .workers(1)
        .quantum(Some(Duration::from_millis(1)))
        .build()
        .unwrap();
    assert_eq!(rt.preemption_mode(), PreemptionMode::LineTables);
    let stop = Arc::new(AtomicBool::new(false));
    let hog = {
        let stop = stop.clone();
        rt.spawn(move || {
            let mut x = 1u64;
            while !stop.load(Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            x
        })
    };
    let filler = rt.spawn(move || {
        let mut rng = TestRng::deterministic_rng(RngAlgorithm::XorShift);
        let mut buf = vec![0u8; 32 << 20];
        let t = std::time::Instant::now();
        rng.fill_bytes(&mut buf);
        (buf.iter().map(|&b| u64::from(b)).sum::<u64>(), t.elapsed())
    });
    let (sum, took) = common::join_ok(filler);
    stop.store(true, Ordering::Relaxed);
    common::join_ok(hog);
    assert!(sum > 0);
    // The call must outlast the overrun threshold (8 quanta, at least 20 ms)
    // for the test to say anything.
    assert!(
        took > Duration::from_millis(60),
        "filling took only {took:?}"
    );
    let m = rt.metrics().total();
    (m.preemptions, m.overruns)
}

#[test]
fn another_crates_code_is_preempted_only_once_allowed() {
    // By default the RNG's loop is not preempted: the slice overruns.
    let (_, overruns) = fill_beside_a_hog(Runtime::builder());
    assert!(
        overruns > 0,
        "another crate's code was preempted by default"
    );
    // Allowed (the crates its loop runs in), it is.
    let allowed = Runtime::builder()
        .preempt_crate("proptest")
        .preempt_crate("rand_core");
    let (preemptions, overruns) = fill_beside_a_hog(allowed);
    assert!(preemptions > 0);
    assert_eq!(
        overruns, 0,
        "the allowed crates' code was still not preempted"
    );
    assert!(kvant::preempt::crate_is_preemptible("rand_core"));
}

#[test]
fn preempt_crate_refuses_what_it_cannot_allow() {
    for name in ["kvant", "parking_lot", "no_such_crate"] {
        match Runtime::builder().preempt_crate(name).build() {
            Err(Error::CrateNotPreemptible { name: n, .. }) => assert_eq!(n, name),
            other => panic!("preempt_crate({name:?}): {:?}", other.map(|_| ())),
        }
    }
}
