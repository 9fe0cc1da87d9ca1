//! Criterion micro-benchmarks of kvant's hot paths: `cargo bench --bench micro`.
//!
//! Every measurement is taken *inside* a task (`iter_custom` + `block_on`), so
//! the cost of waking the benchmark's own OS thread is not counted. Times are
//! short on purpose (the whole run takes about a minute); for comparisons with
//! other runtimes see `benches/compare.rs`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kvant::Runtime;
use kvant::sync::{Mutex, MutexGuard};

fn runtime(workers: usize, quantum: Option<Duration>) -> Runtime {
    Runtime::builder()
        .workers(workers)
        .quantum(quantum)
        .build()
        .expect("kvant runtime")
}

fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Spawn + join: one at a time (latency) and in batches of 1000 (throughput).
fn spawn_join(c: &mut Criterion) {
    let rt = runtime(workers(), Some(kvant::DEFAULT_QUANTUM));
    let mut g = c.benchmark_group("spawn_join");
    g.bench_function("single, from a task", |b| {
        b.iter_custom(|iters| {
            rt.block_on(move || {
                let t = Instant::now();
                for _ in 0..iters {
                    kvant::spawn(|| black_box(1u64)).join().expect("task");
                }
                t.elapsed()
            })
        })
    });
    g.bench_function("single, from an OS thread", |b| {
        b.iter(|| rt.spawn(|| black_box(1u64)).join().expect("task"))
    });
    g.throughput(Throughput::Elements(1000));
    g.bench_function("batch of 1000, from a task", |b| {
        b.iter_custom(|iters| {
            rt.block_on(move || {
                let t = Instant::now();
                for _ in 0..iters {
                    let hs: Vec<_> = (0..1000).map(|_| kvant::spawn(|| ())).collect();
                    for h in hs {
                        h.join().expect("task");
                    }
                }
                t.elapsed()
            })
        })
    });
    g.finish();
}

/// Two tasks on one worker taking turns with `yield_now`: time per yield.
fn yield_pingpong(c: &mut Criterion) {
    let mut g = c.benchmark_group("yield_pingpong");
    for (name, q) in [
        ("1 worker, cooperative", None),
        ("1 worker, quantum 10ms", Some(kvant::DEFAULT_QUANTUM)),
    ] {
        let rt = runtime(1, q);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let each = iters.div_ceil(2);
                let t = Instant::now();
                let hs: Vec<_> = (0..2)
                    .map(|_| {
                        rt.spawn(move || {
                            for _ in 0..each {
                                kvant::yield_now();
                            }
                        })
                    })
                    .collect();
                for h in hs {
                    h.join().expect("task");
                }
                t.elapsed()
            })
        });
    }
    g.finish();
}

/// A message to an echo task and back, over two `bounded(1)` channels.
fn channel_roundtrip(c: &mut Criterion) {
    let mut g = c.benchmark_group("channel_roundtrip");
    let both = workers().max(2);
    for (name, w) in [("1 worker", 1), ("2+ workers", both)] {
        let rt = runtime(w, Some(kvant::DEFAULT_QUANTUM));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(move || {
                    let (to_echo, echo_in) = kvant::channel::bounded::<u64>(1);
                    let (echo_out, back) = kvant::channel::bounded::<u64>(1);
                    let echo = kvant::spawn(move || {
                        for m in echo_in.iter() {
                            if echo_out.send(m + 1).is_err() {
                                break;
                            }
                        }
                    });
                    let t = Instant::now();
                    for i in 0..iters {
                        to_echo.send(i).expect("echo alive");
                        black_box(back.recv().expect("echo reply"));
                    }
                    let d = t.elapsed();
                    drop(to_echo);
                    echo.join().expect("echo task");
                    d
                })
            })
        });
    }
    g.finish();
}

/// kvant::sync::Mutex: uncontended, contended by two tasks on two workers,
/// and a strict hand-off (`unlock_fair`) between two tasks on one worker.
fn mutex(c: &mut Criterion) {
    let mut g = c.benchmark_group("mutex");
    let rt1 = runtime(1, Some(kvant::DEFAULT_QUANTUM));
    g.bench_function("uncontended lock+unlock", |b| {
        b.iter_custom(|iters| {
            rt1.block_on(move || {
                let m = Mutex::new(0u64);
                let t = Instant::now();
                for _ in 0..iters {
                    *m.lock() += 1;
                }
                black_box(*m.lock());
                t.elapsed()
            })
        })
    });
    g.bench_function("hand-off (unlock_fair), 2 tasks, 1 worker", |b| {
        b.iter_custom(|iters| {
            let m = Arc::new(Mutex::new(0u64));
            let each = iters.div_ceil(2);
            let t = Instant::now();
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let m = m.clone();
                    rt1.spawn(move || {
                        for _ in 0..each {
                            let mut guard = m.lock();
                            *guard += 1;
                            // Hold the lock across a switch so the other task
                            // queues on it, then hand it over directly.
                            kvant::yield_now();
                            MutexGuard::unlock_fair(guard);
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().expect("task");
            }
            t.elapsed()
        })
    });
    let rt2 = runtime(workers().max(2), Some(kvant::DEFAULT_QUANTUM));
    g.bench_function("contended, 2 tasks, 2+ workers", |b| {
        b.iter_custom(|iters| {
            let m = Arc::new(Mutex::new(0u64));
            let each = iters.div_ceil(2);
            let t = Instant::now();
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let m = m.clone();
                    rt2.spawn(move || {
                        for _ in 0..each {
                            *m.lock() += 1;
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().expect("task");
            }
            t.elapsed()
        })
    });
    g.finish();
}

/// The shortest timed sleep: a trip through the runtime's timer thread.
fn timer(c: &mut Criterion) {
    let rt = runtime(1, Some(kvant::DEFAULT_QUANTUM));
    let mut g = c.benchmark_group("timer");
    g.bench_function("sleep(1 µs) in a task", |b| {
        b.iter_custom(|iters| {
            rt.block_on(move || {
                let t = Instant::now();
                for _ in 0..iters {
                    kvant::sleep(Duration::from_micros(1));
                }
                t.elapsed()
            })
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = spawn_join, yield_pingpong, channel_roundtrip, mutex, timer
}
criterion_main!(benches);
