//! A parallel search that stops the rest of the work when the first hit
//! arrives: `JoinSet` for the workers, `select!` to wait for a hit, a
//! progress tick or a deadline, and `abort` to cancel what is still running.
//!
//! The search: find a number whose 64-bit mix has `BITS` leading zero bits
//! (about one in 2^BITS numbers). The range is cut into chunks, one task
//! each, more tasks than workers; the first hit aborts everything else, and
//! the program prints how much of the range it never had to scan.
//!
//! ```text
//! cargo run --release --example search [BITS] [WORKERS]
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kvant::JoinSet;
use kvant::channel::{after, tick, unbounded};

const CHUNK: u64 = 1 << 22;
const CHUNKS: u64 = 256;

/// A 64-bit mixer (splitmix64's finaliser): a stand-in for real work.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let bits: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(26);
    let workers: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let rt = kvant::Runtime::builder()
        .workers(workers)
        .build()
        .expect("runtime");
    let scanned = Arc::new(AtomicU64::new(0));
    let (hits_tx, hits) = unbounded::<u64>();
    let t0 = Instant::now();

    let mut set = JoinSet::new();
    for c in 0..CHUNKS {
        let (scanned, hits_tx) = (scanned.clone(), hits_tx.clone());
        set.spawn_on(&rt, move || {
            let (lo, hi) = (1 + c * CHUNK, 1 + (c + 1) * CHUNK);
            for base in (lo..hi).step_by(4096) {
                // A switch point every 4096 candidates: an abort lands here
                // (a pure loop would be preempted but never unwound).
                kvant::yield_now();
                for x in base..base + 4096 {
                    if mix(x).leading_zeros() >= bits {
                        let _ = hits_tx.send(x);
                    }
                }
                scanned.fetch_add(4096, Ordering::Relaxed);
            }
        });
    }
    drop(hits_tx);

    let progress = tick(Duration::from_millis(250));
    let deadline = after(Duration::from_secs(30));
    let found = loop {
        kvant::select! {
            recv(hits) -> hit => break hit.ok(),
            recv(progress) -> _ => {
                let done = scanned.load(Ordering::Relaxed);
                println!("  … {:5.1}% scanned", 100.0 * done as f64 / (CHUNK * CHUNKS) as f64);
            }
            recv(deadline) -> _ => break None,
        }
    };
    let t_hit = t0.elapsed();
    set.abort_all();
    let (mut finished, mut cancelled) = (0, 0);
    while let Some(r) = set.join_next() {
        match r {
            Ok(()) => finished += 1,
            Err(e) if e.is_cancelled() => cancelled += 1,
            Err(e) => panic!("{e}"),
        }
    }
    let done = scanned.load(Ordering::Relaxed);
    let total = CHUNK * CHUNKS;
    match found {
        Some(x) => println!(
            "hit: {x} (mix = {:#018x}, {} leading zero bits) after {:.0?}",
            mix(x),
            mix(x).leading_zeros(),
            t_hit
        ),
        None => println!("no hit within the range or the deadline"),
    }
    println!(
        "{CHUNKS} tasks on {workers} workers: {finished} finished, {cancelled} cancelled; \
         scanned {done} of {total} numbers, so the abort saved {:.1}% of the work \
         (all cancelled within {:.0?} of the hit)",
        100.0 * (total - done) as f64 / total as f64,
        t0.elapsed() - t_hit
    );
}
