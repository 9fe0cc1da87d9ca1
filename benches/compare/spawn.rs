//! (a) Spawn and complete N empty tasks: amortised cost per task, from the
//! time the first spawn starts until every task has finished and was joined.
//! Tasks are spawned in batches of [`BATCH`], each batch joined before the
//! next: may gives every coroutine its stack at spawn time, and N stacks at
//! once would exceed the kernel's map count limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, Yielder};
use parking_lot::{Condvar, Mutex};

use super::util::{Mode, Stats, Table, fmt_n, per_op, ratio, time, try_measure};

/// Tasks alive at most at once (spawned, not yet joined).
const BATCH: u64 = 10_000;

/// One measured row: who, how, how many, what it cost.
struct Row {
    runtime: &'static str,
    how: &'static str,
    origin: &'static str,
    n: u64,
    stats: Result<Stats, String>,
}

/// Sizes of the batches that make up `n` tasks.
fn batches(n: u64) -> impl Iterator<Item = u64> {
    (0..n.div_ceil(BATCH)).map(move |i| BATCH.min(n - i * BATCH))
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
        stats: try_measure(reps, || {
            time(|| {
                for b in batches(n) {
                    let hs: Vec<_> = (0..b).map(|_| rt.spawn(|| ())).collect();
                    for h in hs {
                        h.join().expect("task");
                    }
                }
            })
        }),
    });
    rows.push(Row {
        runtime: "kvant",
        how: "kvant::spawn + join",
        origin: "inside",
        n,
        stats: try_measure(reps, || {
            rt.block_on(move || {
                time(|| {
                    for b in batches(n) {
                        let hs: Vec<_> = (0..b).map(|_| kvant::spawn(|| ())).collect();
                        for h in hs {
                            h.join().expect("task");
                        }
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
        stats: try_measure(reps, || {
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
        stats: try_measure(reps, || {
            time(|| {
                for b in batches(n) {
                    let latch = Arc::new((AtomicU64::new(b), Mutex::new(false), Condvar::new()));
                    for _ in 0..b {
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
                }
            })
        }),
    });
    rows.push(Row {
        runtime: "rayon",
        how: "scope + s.spawn",
        origin: "inside",
        n,
        stats: try_measure(reps, || {
            pool.install(|| {
                time(|| {
                    for b in batches(n) {
                        rayon::scope(|s| {
                            for _ in 0..b {
                                s.spawn(|_| ());
                            }
                        })
                    }
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
        stats: try_measure(reps, || {
            time(|| {
                for b in batches(n) {
                    let hs: Vec<_> = (0..b).map(|_| trt.spawn(async {})).collect();
                    trt.block_on(async {
                        for h in hs {
                            h.await.expect("task");
                        }
                    });
                }
            })
        }),
    });
    rows.push(Row {
        runtime: "tokio",
        how: "tokio::spawn + await",
        origin: "inside",
        n,
        stats: try_measure(reps, || {
            trt.block_on(async move {
                tokio::spawn(async move {
                    let t = Instant::now();
                    for b in batches(n) {
                        let hs: Vec<_> = (0..b).map(|_| tokio::spawn(async {})).collect();
                        for h in hs {
                            h.await.expect("task");
                        }
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
        stats: try_measure(reps, || {
            time(|| {
                for b in batches(n) {
                    let hs: Vec<_> = (0..b).map(|_| may::go!(|| ())).collect();
                    for h in hs {
                        h.join().expect("coroutine");
                    }
                }
            })
        }),
    });
    rows.push(Row {
        runtime: "may",
        how: "go! + join",
        origin: "inside",
        n,
        stats: try_measure(reps, || {
            may::go!(move || {
                time(|| {
                    for b in batches(n) {
                        let hs: Vec<_> = (0..b).map(|_| may::go!(|| ())).collect();
                        for h in hs {
                            h.join().expect("coroutine");
                        }
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
        stats: try_measure(reps, || {
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

    print(&rows, w, quantum, n_threads);
}

fn print(rows: &[Row], w: usize, quantum: Option<Duration>, n_threads: u64) {
    let base = |origin: &str| {
        rows.iter()
            .find(|r| r.runtime == "kvant" && r.origin == origin)
            .and_then(|r| r.stats.as_ref().ok().map(|s| per_op(s.median, r.n)))
            .unwrap_or(f64::NAN)
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
    for r in rows {
        let (ns, min) = match &r.stats {
            Ok(s) => (
                format!("{:.0}", per_op(s.median, r.n)),
                format!("({:.0})", per_op(s.min, r.n)),
            ),
            Err(e) => (e.clone(), String::new()),
        };
        let rel = match &r.stats {
            Ok(_) if r.runtime == "kvant" => "1 (base)".into(),
            Ok(s) => ratio(per_op(s.median, r.n), base(r.origin)),
            Err(_) => "-".into(),
        };
        t.row(vec![
            r.runtime.into(),
            r.how.into(),
            r.origin.into(),
            fmt_n(r.n),
            ns,
            min,
            rel,
        ]);
    }
    t.note(format!(
        "Tasks are spawned in batches of {} and each batch is joined in order before the next \
         (may allocates a coroutine's stack at spawn time; more unjoined coroutines than \
         vm.max_map_count / 2 make its spawn panic). Pools have {w} workers; kvant uses its \
         defaults (256 KiB pooled stacks, quantum {quantum:?}). `peer/kvant` compares with the \
         kvant row of the same origin (`inside`: spawned by a task running on the pool); above 1 \
         means kvant is faster. std::thread uses N = {} (all spawned, then joined); raw corosensei \
         runs single-threaded on one reused 64 KiB stack (no scheduler, no queue, no join handle: \
         the floor for a stackful task).",
        fmt_n(BATCH),
        fmt_n(n_threads)
    ));
    t.print();
}
