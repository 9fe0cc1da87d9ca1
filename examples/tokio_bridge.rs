//! A tokio service that hands CPU work to kvant and stays responsive.
//!
//! Two runs of the same job, 2,000 CPU-bound requests, on a tokio
//! multi-thread runtime with as many threads as cores, beside a 1 ms tokio
//! interval standing in for the service's other traffic:
//!
//! 1. computed inline in tokio tasks: they hold tokio's threads and the
//!    interval waits behind them;
//! 2. handed to a kvant runtime and `.await`ed: tokio's threads stay free.
//!
//! `cargo run --release --example tokio_bridge`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const REQUESTS: u64 = 2_000;

/// A request's CPU work (about 0.5 ms here).
fn work(seed: u64) -> u64 {
    let mut x = seed | 1;
    for i in 0..300_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_add(i);
    }
    x
}

/// Run the job with `handle` answering each request; return the wall time
/// and the interval's lateness (p50, p99, max) meanwhile.
fn run(
    tokio_rt: &tokio::runtime::Runtime,
    handle: impl Fn(u64) -> tokio::task::JoinHandle<u64>,
) -> (Duration, [Duration; 3]) {
    tokio_rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut interval = tokio::time::interval(Duration::from_millis(1));
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut late = Vec::new();
                while !stop.load(Ordering::Acquire) {
                    let at = interval.tick().await;
                    late.push(at.elapsed());
                }
                late.sort();
                let q = |f: f64| late[((late.len() - 1) as f64 * f) as usize];
                [q(0.5), q(0.99), q(1.0)]
            }
        });
        let t0 = Instant::now();
        let requests: Vec<_> = (0..REQUESTS).map(&handle).collect();
        let mut check = 0u64;
        for r in requests {
            check ^= r.await.unwrap();
        }
        let took = t0.elapsed();
        std::hint::black_box(check);
        stop.store(true, Ordering::Release);
        (took, ticker.await.unwrap())
    })
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_time()
        .build()
        .unwrap();
    let kvant_rt = kvant::Runtime::builder().workers(cores).build().unwrap();
    println!(
        "{REQUESTS} CPU-bound requests (~0.5 ms each), {cores} tokio threads, a 1 ms tokio interval beside them\n"
    );
    println!(
        "{:<34} {:>9} {:>11} {:>11} {:>11}",
        "", "wall", "late p50", "late p99", "late max"
    );
    let inline = run(&tokio_rt, |i| tokio::spawn(async move { work(i) }));
    let kvant = kvant_rt.handle();
    let bridged = run(&tokio_rt, move |i| {
        let job = kvant.spawn(move || work(i));
        // The kvant task's JoinHandle is a Future: awaiting it blocks nothing.
        tokio::spawn(async move { job.await.unwrap() })
    });
    for (name, (wall, [p50, p99, max])) in [
        ("computed inline in tokio tasks", inline),
        ("handed to kvant and awaited", bridged),
    ] {
        println!(
            "{name:<34} {:>7.0}ms {:>9.2}ms {:>9.2}ms {:>9.2}ms",
            wall.as_secs_f64() * 1e3,
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
        );
    }
}
