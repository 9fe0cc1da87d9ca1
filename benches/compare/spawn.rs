//! (a) Spawn and complete N empty tasks: amortised cost per task, from the
//! time the first spawn starts until every task has finished and was joined.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, Yielder};
use parking_lot::{Condvar, Mutex};

use super::util::{Mode, Stats, Table, fmt_n, measure, per_op, ratio, time};

/// One measured row: who, how, how many, what it cost.
struct Row {
    runtime: &'static str,
    how: &'static str,
    origin: &'static str,
    n: u64,
    stats: Stats,
}

pub fn run(mode: &Mode) {
    let w = mode.workers;
    let n = mode.pick(20_000u64, 200_000);
    let n_threads = mode.pick(500u64, 5_000);
    let n_coro = mode.pick(200_000u64, 2_000_000);
    let reps = mode.reps();
    let mut rows = Vec::new();

    let rt = kvant::Runtime::builder()
        .workers(w)
        .build()
        .expect("kvant runtime");
    rows.push(Row {
        runtime: "kvant",
        how: "rt.spawn + join",
        origin: "outside",
        n,
        stats: measure(reps, || {
            time(|| {
                let hs: Vec<_> = (0..n).map(|_| rt.spawn(|| ())).collect();
                for h in hs {
                    h.join().expect("task");
                }
            })
        }),
    });
    rows.push(Row {
        runtime: "kvant",
        how: "kvant::spawn + join",
        origin: "inside",
        n,
        stats: measure(reps, || {
            rt.block_on(move || {
                time(|| {
                    let hs: Vec<_> = (0..n).map(|_| kvant::spawn(|| ())).collect();
                    for h in hs {
                        h.join().expect("task");
                    }
                })
            })
        }),
    });
    let quantum = rt.quantum();
    drop(rt);

    rows.push(Row {
        runtime: "std::thread",
        how: "spawn + join",
        origin: "outside",
        n: n_threads,
        stats: measure(reps, || {
            time(|| {
                let hs: Vec<_> = (0..n_threads).map(|_| std::thread::spawn(|| ())).collect();
                for h in hs {
                    h.join().expect("thread");
                }
            })
        }),
    });

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(w)
        .build()
        .expect("rayon pool");
    rows.push(Row {
        runtime: "rayon",
        how: "pool.spawn + counter latch",
        origin: "outside",
        n,
        stats: measure(reps, || {
            let latch = Arc::new((AtomicU64::new(n), Mutex::new(false), Condvar::new()));
            time(|| {
                for _ in 0..n {
                    let l = latch.clone();
                    pool.spawn(move || {
                        if l.0.fetch_sub(1, Ordering::AcqRel) == 1 {
                            *l.1.lock() = true;
                            l.2.notify_one();
                        }
                    });
                }
                let mut done = latch.1.lock();
                while !*done {
                    latch.2.wait(&mut done);
                }
            })
        }),
    });
    rows.push(Row {
        runtime: "rayon",
        how: "scope + s.spawn",
        origin: "inside",
        n,
        stats: measure(reps, || {
            pool.install(|| {
                time(|| {
                    rayon::scope(|s| {
                        for _ in 0..n {
                            s.spawn(|_| ());
                        }
                    })
                })
            })
        }),
    });
    drop(pool);

    let trt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(w)
        .build()
        .expect("tokio runtime");
    rows.push(Row {
        runtime: "tokio",
        how: "rt.spawn + await",
        origin: "outside",
        n,
        stats: measure(reps, || {
            time(|| {
                let hs: Vec<_> = (0..n).map(|_| trt.spawn(async {})).collect();
                trt.block_on(async {
                    for h in hs {
                        h.await.expect("task");
                    }
                });
            })
        }),
    });
    rows.push(Row {
        runtime: "tokio",
        how: "tokio::spawn + await",
        origin: "inside",
        n,
        stats: measure(reps, || {
            trt.block_on(async move {
                tokio::spawn(async move {
                    let t = Instant::now();
                    let hs: Vec<_> = (0..n).map(|_| tokio::spawn(async {})).collect();
                    for h in hs {
                        h.await.expect("task");
                    }
                    t.elapsed()
                })
                .await
                .expect("outer task")
            })
        }),
    });
    drop(trt);

    rows.push(Row {
        runtime: "may",
        how: "go! + join",
        origin: "outside",
        n,
        stats: measure(reps, || {
            time(|| {
                let hs: Vec<_> = (0..n).map(|_| may::go!(|| ())).collect();
                for h in hs {
                    h.join().expect("coroutine");
                }
            })
        }),
    });
    rows.push(Row {
        runtime: "may",
        how: "go! + join",
        origin: "inside",
        n,
        stats: measure(reps, || {
            may::go!(move || {
                time(|| {
                    let hs: Vec<_> = (0..n).map(|_| may::go!(|| ())).collect();
                    for h in hs {
                        h.join().expect("coroutine");
                    }
                })
            })
            .join()
            .expect("outer coroutine")
        }),
    });

    let mut stack = Some(DefaultStack::new(64 * 1024).expect("stack"));
    rows.push(Row {
        runtime: "corosensei (raw)",
        how: "with_stack + resume, 1 thread",
        origin: "inside",
        n: n_coro,
        stats: measure(reps, || {
            time(|| {
                for i in 0..n_coro {
                    let s = stack.take().expect("the stack is back");
                    let mut c = Coroutine::with_stack(s, move |_: &Yielder<(), ()>, ()| {
                        std::hint::black_box(i);
                    });
                    let _ = c.resume(());
                    stack = Some(c.into_stack());
                }
            })
        }),
    });

    let base = |origin: &str| {
        rows.iter()
            .find(|r| r.runtime == "kvant" && r.origin == origin)
            .map_or(f64::NAN, |r| per_op(r.stats.median, r.n))
    };
    let mut t = Table::new(
        "(a) spawn + complete empty tasks (ns per task, amortised)",
        &[
            "runtime",
            "how",
            "spawned from",
            "N",
            "ns/task",
            "(min)",
            "peer/kvant",
        ],
    );
    for r in &rows {
        let ns = per_op(r.stats.median, r.n);
        t.row(vec![
            r.runtime.into(),
            r.how.into(),
            r.origin.into(),
            fmt_n(r.n),
            format!("{ns:.0}"),
            format!("({:.0})", per_op(r.stats.min, r.n)),
            if r.runtime == "kvant" {
                "1 (base)".into()
            } else {
                ratio(ns, base(r.origin))
            },
        ]);
    }
    t.note(format!(
        "All N tasks are spawned first, then joined in order. Pools have {w} workers; kvant uses its \
         defaults (256 KiB pooled stacks, quantum {quantum:?}). `peer/kvant` compares with the kvant \
         row of the same origin (`inside`: spawned by a task running on the pool); above 1 means \
         kvant is faster. std::thread uses N = {}; raw corosensei runs single-threaded on one reused \
         64 KiB stack (no scheduler, no queue, no join handle: the floor for a stackful task).",
        fmt_n(n_threads)
    ));
    t.print();
}
