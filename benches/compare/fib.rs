//! (c) Fork-join: naive Fibonacci, split in two above a cutoff and computed
//! sequentially below it. `kvant::join` against `rayon::join` (the same
//! shape), plus spawn-based versions on kvant, tokio and may.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::time::Instant;

use super::util::{Mode, Stats, Table, fmt_dur, measure, ratio, time};

/// Below this, fib is computed sequentially (same for every runtime).
const CUTOFF: u64 = 20;

#[inline(never)]
fn seq(n: u64) -> u64 {
    if n < 2 { n } else { seq(n - 1) + seq(n - 2) }
}

fn kvant_join(n: u64) -> u64 {
    if n < CUTOFF {
        return seq(n);
    }
    let (a, b) = kvant::join(|| kvant_join(n - 1), || kvant_join(n - 2));
    a + b
}

fn kvant_spawn(n: u64) -> u64 {
    if n < CUTOFF {
        return seq(n);
    }
    let h = kvant::spawn(move || kvant_spawn(n - 2));
    let a = kvant_spawn(n - 1);
    a + h.join().expect("fib task")
}

fn rayon_join(n: u64) -> u64 {
    if n < CUTOFF {
        return seq(n);
    }
    let (a, b) = rayon::join(|| rayon_join(n - 1), || rayon_join(n - 2));
    a + b
}

fn tokio_spawn(n: u64) -> Pin<Box<dyn Future<Output = u64> + Send>> {
    Box::pin(async move {
        if n < CUTOFF {
            return seq(n);
        }
        let h = tokio::spawn(tokio_spawn(n - 2));
        let a = tokio_spawn(n - 1).await;
        a + h.await.expect("fib task")
    })
}

fn may_spawn(n: u64) -> u64 {
    if n < CUTOFF {
        return seq(n);
    }
    let h = may::go!(move || may_spawn(n - 2));
    let a = may_spawn(n - 1);
    a + h.join().expect("fib coroutine")
}

pub fn run(mode: &Mode) {
    let w = mode.workers;
    let n = mode.pick(32u64, 35);
    let reps = mode.reps();
    let expect = seq(n);
    let check = move |v: u64| assert_eq!(v, expect, "wrong fib result");
    let mut rows: Vec<(&str, Stats)> = Vec::new();

    rows.push((
        "sequential (1 thread)",
        measure(reps, || time(|| check(seq(black_box(n))))),
    ));

    let rt = kvant::Runtime::builder()
        .workers(w)
        .build()
        .expect("kvant runtime");
    let before = rt.metrics().total();
    rows.push((
        "kvant::join",
        measure(reps, || {
            rt.block_on(move || time(|| check(kvant_join(black_box(n)))))
        }),
    ));
    let after = rt.metrics().total();
    // One block_on task per run, the rest are `join` splits.
    let splits = (after.spawned - before.spawned) as f64 / (reps + 1) as f64 - 1.0;
    let steals = (after.steal_ops - before.steal_ops) as f64 / (reps + 1) as f64;
    rows.push((
        "kvant::spawn + join",
        measure(reps, || {
            rt.block_on(move || time(|| check(kvant_spawn(black_box(n)))))
        }),
    ));
    drop(rt);

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(w)
        .build()
        .expect("rayon pool");
    rows.push((
        "rayon::join",
        measure(reps, || {
            pool.install(|| time(|| check(rayon_join(black_box(n)))))
        }),
    ));
    drop(pool);

    let trt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(w)
        .build()
        .expect("tokio runtime");
    rows.push((
        "tokio::spawn + await",
        measure(reps, || {
            trt.block_on(async move {
                tokio::spawn(async move {
                    let t = Instant::now();
                    check(tokio_spawn(black_box(n)).await);
                    t.elapsed()
                })
                .await
                .expect("outer task")
            })
        }),
    ));
    drop(trt);

    rows.push((
        "may go! + join",
        measure(reps, || {
            may::go!(move || time(|| check(may_spawn(black_box(n)))))
                .join()
                .expect("outer coroutine")
        }),
    ));

    let secs = |s: &Stats| s.median.as_secs_f64();
    let seq_t = secs(&rows[0].1);
    let kvant_t = secs(&rows[1].1);
    let mut t = Table::new(
        &format!("(c) fork-join fib({n}), sequential below {CUTOFF}"),
        &[
            "runtime",
            "time",
            "(min)",
            "speedup vs sequential",
            "time / kvant::join",
        ],
    );
    for (name, s) in &rows {
        t.row(vec![
            name.to_string(),
            fmt_dur(s.median),
            format!("({})", fmt_dur(s.min)),
            format!("{:.2}", seq_t / secs(s)),
            if *name == "kvant::join" {
                "1 (base)".into()
            } else {
                ratio(secs(s), kvant_t)
            },
        ]);
    }
    t.note(format!(
        "{w} workers everywhere; every runtime computes the same tree with the same cutoff. \
         `time / kvant::join` above 1 means kvant::join is faster (goal: rayon::join / kvant::join \
         >= 0.67, i.e. kvant within 1.5x of rayon). The spawn-based rows spawn the n-2 branch and \
         compute n-1 inline. kvant::join split (spawned a stealable task) {splits:.0} times per \
         run out of {} joins above the cutoff, with {steals:.0} steal operations per run.",
        joins_above(n)
    ));
    t.print();
}

/// Number of `join` calls fib(n) makes above the cutoff.
fn joins_above(n: u64) -> u64 {
    if n < CUTOFF {
        0
    } else {
        1 + joins_above(n - 1) + joins_above(n - 2)
    }
}
