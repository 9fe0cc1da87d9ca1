//! (d) A CPU-bound pool of uneven chunks: 1000 chunks whose sizes follow a
//! log-uniform law (1x to 128x a unit, fixed seed), summed by each runtime.
//! Efficiency = (sequential time / workers) / parallel time.

use std::sync::Arc;

use rayon::prelude::*;

use super::util::{Mode, Rng, Stats, Table, burn, calibrate_burn, fmt_dur, measure, ratio, time};

const CHUNKS: usize = 1000;

pub fn run(mode: &Mode) {
    let w = mode.workers;
    let reps = mode.reps();
    let target = std::time::Duration::from_millis(mode.pick(200, 1000));
    let mut rng = Rng::new(42);
    let units: Vec<u64> = (0..CHUNKS).map(|_| 1u64 << (rng.next_u64() % 8)).collect();
    let total_units: u64 = units.iter().sum();
    let per_unit = (calibrate_burn(target) / total_units).max(1);
    let sizes: Arc<Vec<u64>> = Arc::new(units.iter().map(|u| u * per_unit).collect());
    let expect: u64 = sizes.iter().map(|&k| burn(k)).fold(0, u64::wrapping_add);
    let check = move |v: u64| assert_eq!(v, expect, "wrong chunk sum");

    let mut rows: Vec<(&str, Stats)> = Vec::new();
    let s = sizes.clone();
    rows.push((
        "sequential (1 thread)",
        measure(reps, || {
            time(|| check(s.iter().map(|&k| burn(k)).fold(0, u64::wrapping_add)))
        }),
    ));

    let rt = kvant::Runtime::builder()
        .workers(w)
        .build()
        .expect("kvant runtime");
    let s = sizes.clone();
    rows.push((
        "kvant: spawn per chunk",
        measure(reps, || {
            let s = s.clone();
            rt.block_on(move || {
                time(|| {
                    let hs: Vec<_> = s.iter().map(|&k| kvant::spawn(move || burn(k))).collect();
                    check(
                        hs.into_iter()
                            .map(|h| h.join().expect("chunk"))
                            .fold(0, u64::wrapping_add),
                    );
                })
            })
        }),
    ));
    let quantum = rt.quantum();
    drop(rt);

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(w)
        .build()
        .expect("rayon pool");
    let s = sizes.clone();
    rows.push((
        "rayon: par_iter",
        measure(reps, || {
            pool.install(|| {
                time(|| {
                    check(
                        s.par_iter()
                            .map(|&k| burn(k))
                            .reduce(|| 0, u64::wrapping_add),
                    )
                })
            })
        }),
    ));
    drop(pool);

    let s = sizes.clone();
    rows.push((
        "std::thread: static split",
        measure(reps, || {
            time(|| {
                let hs: Vec<_> = (0..w)
                    .map(|i| {
                        let s = s.clone();
                        std::thread::spawn(move || {
                            let (lo, hi) = (i * s.len() / w, (i + 1) * s.len() / w);
                            s[lo..hi]
                                .iter()
                                .map(|&k| burn(k))
                                .fold(0, u64::wrapping_add)
                        })
                    })
                    .collect();
                check(
                    hs.into_iter()
                        .map(|h| h.join().expect("thread"))
                        .fold(0, u64::wrapping_add),
                );
            })
        }),
    ));

    let trt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(w)
        .build()
        .expect("tokio runtime");
    let s = sizes.clone();
    rows.push((
        "tokio: spawn per chunk",
        measure(reps, || {
            let s = s.clone();
            trt.block_on(async move {
                tokio::spawn(async move {
                    let t = std::time::Instant::now();
                    let hs: Vec<_> = s
                        .iter()
                        .map(|&k| tokio::spawn(async move { burn(k) }))
                        .collect();
                    let mut sum = 0u64;
                    for h in hs {
                        sum = sum.wrapping_add(h.await.expect("chunk"));
                    }
                    check(sum);
                    t.elapsed()
                })
                .await
                .expect("outer task")
            })
        }),
    ));
    drop(trt);

    let s = sizes.clone();
    rows.push((
        "may: go! per chunk",
        measure(reps, || {
            let s = s.clone();
            may::go!(move || {
                time(|| {
                    let hs: Vec<_> = s.iter().map(|&k| may::go!(move || burn(k))).collect();
                    check(
                        hs.into_iter()
                            .map(|h| h.join().expect("chunk"))
                            .fold(0, u64::wrapping_add),
                    );
                })
            })
            .join()
            .expect("outer coroutine")
        }),
    ));

    let seq = rows[0].1.median.as_secs_f64();
    let kv = rows[1].1.median.as_secs_f64();
    let mut t = Table::new(
        &format!("(d) {CHUNKS} uneven CPU-bound chunks on {w} workers"),
        &[
            "runtime",
            "time",
            "(min)",
            "chunks/s",
            "efficiency",
            "time / kvant",
        ],
    );
    for (name, st) in &rows {
        let secs = st.median.as_secs_f64();
        let workers = if name.starts_with("sequential") {
            1.0
        } else {
            w as f64
        };
        t.row(vec![
            name.to_string(),
            fmt_dur(st.median),
            format!("({})", fmt_dur(st.min)),
            format!("{:.0}", CHUNKS as f64 / secs),
            format!("{:.0}%", 100.0 * (seq / workers) / secs),
            if name.starts_with("kvant") {
                "1 (base)".into()
            } else {
                ratio(secs, kv)
            },
        ]);
    }
    let biggest = sizes.iter().max().copied().unwrap_or(0) as f64 / per_unit as f64;
    t.note(format!(
        "Chunk sizes: 1x..{biggest:.0}x a unit of {per_unit} LCG rounds, log-uniform, seed 42; \
         total {total_units} units (target ~{} sequential). Efficiency: ideal time (sequential / \
         {w}) over measured time; the sequential row is 100% by definition. kvant quantum \
         {quantum:?}; the static split gives each thread the same number of chunks, not the same work.",
        fmt_dur(target)
    ));
    t.print();
}
