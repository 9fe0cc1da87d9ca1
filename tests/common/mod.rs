//! Helpers shared by the integration tests. Every wait is bounded by
//! [`HANG`], so a scheduler bug fails a test instead of hanging the suite.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use kvant::{JoinHandle, Runtime};

/// Far beyond anything a passing test needs; only a hang reaches it.
pub const HANG: Duration = Duration::from_secs(60);

/// A runtime with `workers` workers and the given quantum.
pub fn rt(workers: usize, quantum: Option<Duration>) -> Runtime {
    Runtime::builder()
        .workers(workers)
        .quantum(quantum)
        .build()
        .unwrap()
}

/// Join `h`, failing the test (not hanging it) if the task does not finish
/// within [`HANG`] or ends without a value.
pub fn join_ok<T: Send + 'static>(h: JoinHandle<T>) -> T {
    join_within(h, HANG)
}

/// [`join_ok`] with another bound (the stress tests' is longer).
pub fn join_within<T: Send + 'static>(h: JoinHandle<T>, bound: Duration) -> T {
    match h.join_timeout(bound) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("task failed: {e}"),
        Err(h) => panic!(
            "task {:?} still running after {bound:?}: lost wake-up or deadlock",
            h.id()
        ),
    }
}

/// The message of a caught panic.
pub fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "<non-string payload>".to_owned())
}

/// Poll `cond` until it holds, failing the test after [`HANG`].
pub fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    wait_within(what, HANG, cond)
}

/// [`wait_for`] with another bound (the stress tests' is longer).
pub fn wait_within(what: &str, bound: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The current worker thread's name, looked up afresh on every call (not
/// inlined, so a thread-local address cached before a migration cannot be
/// reused after it).
#[inline(never)]
pub fn worker_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_owned()
}

/// User code that computes for a while without a switch point: where
/// preemption lands (an xorshift loop, kept out of line and opaque).
#[inline(never)]
pub fn burn(seed: u64, rounds: u64) -> u64 {
    let mut x = seed | 1;
    for i in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_add(i);
    }
    std::hint::black_box(x)
}
