//! Scenarios from the soundness issues, as users write them: each runs on 1
//! and 2 workers at a 50 µs quantum, checks its results against a
//! sequential run, and (in a build with line tables) that tasks were
//! preempted. A watchdog ends a hung scenario with a failure.
//!
//! `kvant-scenarios preemptive|cooperative [NAME | -NAME]`: only the
//! scenarios whose name contains NAME, or all but those.

use std::fmt;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvant::{PreemptionMode, Runtime};

// The integration tests' helpers: one `burn` serves both.
#[path = "../../../common/mod.rs"]
mod common;
use common::burn;

const QUANTUM: Duration = Duration::from_micros(50);
const WATCHDOG: Duration = Duration::from_secs(120);

fn rt(workers: usize) -> Runtime {
    Runtime::builder()
        .workers(workers)
        .quantum(Some(QUANTUM))
        .build()
        .expect("runtime")
}

/// A value whose `Debug` computes for a while, printed with `println!`.
struct Slow(u64);

impl fmt::Debug for Slow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Slow({})", burn(self.0, 20_000))
    }
}

fn println_slow_debug(rt: &Runtime) -> Vec<u64> {
    let hs: Vec<_> = (0..8u64)
        .map(|i| {
            rt.spawn(move || {
                let mut sum = 0u64;
                for k in 0..40 {
                    println!("task {i} line {k}: {:?}", Slow(i * 100 + k));
                    sum = sum.wrapping_add(burn(i * 100 + k, 20_000));
                }
                sum
            })
        })
        .collect();
    hs.into_iter().map(|h| h.join().expect("task")).collect()
}

fn println_model() -> Vec<u64> {
    (0..8u64)
        .map(|i| (0..40).fold(0u64, |s, k| s.wrapping_add(burn(i * 100 + k, 20_000))))
        .collect()
}

fn tracing_spans(rt: &Runtime) -> Vec<u64> {
    spans(rt, false)
}

/// The documented way to keep a task's spans its own: explicit parents
/// (`docs/safety.md`, "Spans, thread-locals and locks the thread owns").
fn tracing_explicit_parents(rt: &Runtime) -> Vec<u64> {
    spans(rt, true)
}

/// 32 tasks entering spans around preemptible work; `explicit`: each span
/// names its parent instead of taking the thread's current span.
fn spans(rt: &Runtime, explicit: bool) -> Vec<u64> {
    let hs: Vec<_> = (0..32u64)
        .map(|i| {
            rt.spawn(move || {
                let mut sum = 0u64;
                for k in 0..20 {
                    let span = match explicit {
                        true => tracing::info_span!(parent: None, "work", task = i, step = k),
                        false => tracing::info_span!("work", task = i, step = k),
                    };
                    let _entered = span.enter();
                    tracing::info!(value = k, "computing");
                    sum = sum.wrapping_add(burn(i + k, 30_000));
                    let inner = match explicit {
                        true => tracing::debug_span!(parent: &span, "inner", k),
                        false => tracing::debug_span!("inner", k),
                    };
                    sum = sum.wrapping_add(inner.in_scope(|| {
                        tracing::info!("inside");
                        burn(k, 10_000)
                    }));
                }
                sum
            })
        })
        .collect();
    hs.into_iter().map(|h| h.join().expect("task")).collect()
}

fn tracing_model() -> Vec<u64> {
    (0..32u64)
        .map(|i| {
            (0..20).fold(0u64, |s, k| {
                s.wrapping_add(burn(i + k, 30_000))
                    .wrapping_add(burn(k, 10_000))
            })
        })
        .collect()
}

fn rand_thread_rng(rt: &Runtime) -> Vec<u64> {
    use rand::Rng as _;
    let hs: Vec<_> = (0..16u64)
        .map(|i| {
            rt.spawn(move || {
                let mut rng = rand::rng();
                let mut sum = 0u64;
                let mut draws = 0u64;
                for _ in 0..200 {
                    let r: u64 = rng.random();
                    draws += u64::from(r != 0 || r == 0);
                    sum = sum.wrapping_add(burn(i, 5_000));
                }
                kvant::yield_now();
                let r: u32 = rand::rng().random_range(0..10);
                assert!(r < 10);
                sum.wrapping_add(draws)
            })
        })
        .collect();
    hs.into_iter().map(|h| h.join().expect("task")).collect()
}

fn rand_model() -> Vec<u64> {
    (0..16u64)
        .map(|i| {
            (0..200)
                .fold(0u64, |s, _| s.wrapping_add(burn(i, 5_000)))
                .wrapping_add(200)
        })
        .collect()
}

fn rayon_inside(rt: &Runtime) -> Vec<u64> {
    use rayon::prelude::*;
    let hs: Vec<_> = (0..8u64)
        .map(|i| {
            rt.spawn(move || {
                // The task's own code first, while every task is queued on
                // the workers (rayon's waits below block a worker's thread,
                // and the monitor hands its queue to another thread).
                let first = burn(i, 2_000_000);
                let a: u64 = (0..64u64).into_par_iter().map(|k| burn(i + k, 2_000)).sum();
                let (b, c) = rayon::join(|| burn(i, 50_000), || burn(i + 1, 50_000));
                a.wrapping_add(b).wrapping_add(c).wrapping_add(first)
            })
        })
        .collect();
    hs.into_iter().map(|h| h.join().expect("task")).collect()
}

fn rayon_model() -> Vec<u64> {
    (0..8u64)
        .map(|i| {
            let a: u64 = (0..64u64).map(|k| burn(i + k, 2_000)).sum();
            a.wrapping_add(burn(i, 50_000))
                .wrapping_add(burn(i + 1, 50_000))
                .wrapping_add(burn(i, 2_000_000))
        })
        .collect()
}

fn tokio_inside(rt: &Runtime) -> Vec<u64> {
    let hs: Vec<_> = (0..8u64)
        .map(|i| {
            rt.spawn(move || {
                let t = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("tokio runtime");
                let sum = t.block_on(async move {
                    let mut sum = 0u64;
                    for k in 0..10 {
                        tokio::task::yield_now().await;
                        sum = sum.wrapping_add(burn(i + k, 20_000));
                    }
                    sum
                });
                sum.wrapping_add(burn(i, 2_000_000))
            })
        })
        .collect();
    hs.into_iter().map(|h| h.join().expect("task")).collect()
}

fn tokio_model() -> Vec<u64> {
    (0..8u64)
        .map(|i| {
            (0..10)
                .fold(0u64, |s, k| s.wrapping_add(burn(i + k, 20_000)))
                .wrapping_add(burn(i, 2_000_000))
        })
        .collect()
}

/// A destructor that sleeps and locks while its task unwinds.
struct SlowDrop {
    lock: Arc<Mutex<u64>>,
    klock: Arc<kvant::sync::Mutex<u64>>,
}

impl Drop for SlowDrop {
    fn drop(&mut self) {
        kvant::sleep(Duration::from_millis(1));
        *self.lock.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        *self.klock.lock() += 1;
        burn(7, 20_000);
        kvant::yield_now();
    }
}

/// Panicking tasks whose destructors sleep, lock and yield, beside tasks
/// that check `thread::panicking()` and use a std Mutex; then aborts of
/// tasks in such destructors' reach. Returns (good sums, panicked, aborted).
fn panics_and_aborts(rt: &Runtime) -> Vec<u64> {
    let lock = Arc::new(Mutex::new(0u64));
    let klock = Arc::new(kvant::sync::Mutex::new(0u64));
    let seen_panicking = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Mutex::new(0u64));
    let watchers: Vec<_> = (0..4u64)
        .map(|i| {
            let (seen, stop, shared) = (seen_panicking.clone(), stop.clone(), shared.clone());
            rt.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if std::thread::panicking() {
                        seen.fetch_add(1, Ordering::Relaxed);
                    }
                    // Never poisoned: only a task that panics while holding
                    // it could poison it, and none does.
                    *shared
                        .lock()
                        .expect("poisoned by a task that did not panic") += 1;
                    n = n.wrapping_add(burn(i, 3_000));
                    if n % 3 == 0 {
                        kvant::yield_now();
                    }
                }
                n
            })
        })
        .collect();
    let panickers: Vec<_> = (0..16u64)
        .map(|i| {
            let (lock, klock) = (lock.clone(), klock.clone());
            rt.spawn(move || {
                let _guard = SlowDrop { lock, klock };
                burn(i, 50_000);
                if i % 2 == 0 {
                    panic!("task {i} panics on purpose");
                }
                i
            })
        })
        .collect();
    let mut panicked = 0u64;
    for h in panickers {
        match h.join() {
            Ok(_) => {}
            Err(e) if e.is_panic() => panicked += 1,
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    // Aborts of tasks parked with such a destructor armed.
    let victims: Vec<_> = (0..8u64)
        .map(|_| {
            let (lock, klock) = (lock.clone(), klock.clone());
            rt.spawn(move || {
                let _guard = SlowDrop { lock, klock };
                kvant::sleep(Duration::from_secs(3600));
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    let mut aborted = 0u64;
    for h in &victims {
        h.abort();
    }
    for h in victims {
        match h.join() {
            Err(e) if e.is_cancelled() => aborted += 1,
            other => panic!("an aborted task ended with {other:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in watchers {
        w.join().expect("watcher");
    }
    let seen = seen_panicking.load(Ordering::Relaxed);
    assert_eq!(seen, 0, "tasks saw another task's panic");
    assert!(!shared.is_poisoned());
    let drops = *lock.lock().unwrap_or_else(|e| e.into_inner());
    vec![panicked, aborted, drops, *klock.lock()]
}

fn panics_model() -> Vec<u64> {
    vec![8, 8, 24, 24]
}

/// Locks and waits that park the *thread*, held or awaited across
/// preemptions in the tasks' own code: a parking_lot guard held while its
/// term is computed, a `OnceCell` whose initialiser computes while the
/// other tasks wait for it, and std mpsc from a computing producer. A
/// waiter on the holder's worker parks that thread; the worker is lent.
fn thread_parking_waits(rt: &Runtime) -> Vec<u64> {
    let total = Arc::new(parking_lot::Mutex::new(0u64));
    let cell = Arc::new(once_cell::sync::OnceCell::<u64>::new());
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let mut hs: Vec<_> = (0..8u64)
        .map(|i| {
            let (total, cell, tx) = (total.clone(), cell.clone(), tx.clone());
            rt.spawn(move || {
                let base = *cell.get_or_init(|| burn(99, 400_000) & 0xff);
                let mut mine = 0;
                for k in 0..20 {
                    let mut g = total.lock();
                    let term = base + (burn(i * 100 + k, 20_000) & 0xffff);
                    *g += term;
                    mine += term;
                }
                tx.send(mine).unwrap();
                mine
            })
        })
        .collect();
    drop(tx);
    hs.push(rt.spawn(move || rx.iter().sum::<u64>()));
    let mut out: Vec<u64> = hs.into_iter().map(|h| h.join().expect("task")).collect();
    out.push(*total.lock());
    out
}

fn thread_parking_model() -> Vec<u64> {
    let base = burn(99, 400_000) & 0xff;
    let mut out: Vec<u64> = (0..8u64)
        .map(|i| {
            (0..20)
                .map(|k| base + (burn(i * 100 + k, 20_000) & 0xffff))
                .sum()
        })
        .collect();
    let sum: u64 = out.iter().sum();
    out.push(sum);
    out.push(sum);
    out
}

/// One `Regex` shared by every task: regex keeps a cache per search, and
/// hands the thread that built it a fast path keyed by a thread id (the
/// owner's cache); other threads share a locked stack of caches. A search
/// preempted on the owner's cache, and another task's search on that
/// thread, must each get a cache of their own.
fn regex_shared(rt: &Runtime) -> Vec<u64> {
    let re = Arc::new(regex::Regex::new(r"(\d+)-(\d+)").expect("regex"));
    let hs: Vec<_> = (0..8u64)
        .map(|i| {
            let re = re.clone();
            rt.spawn(move || regex_work(&re, i))
        })
        .collect();
    hs.into_iter().map(|h| h.join().expect("task")).collect()
}

fn regex_text(i: u64) -> String {
    (0..400u64)
        .map(|k| format!("a{}-{} b ", burn(i * 1000 + k, 50) % 1000, k))
        .collect()
}

fn regex_work(re: &regex::Regex, i: u64) -> u64 {
    let text = regex_text(i);
    let mut sum = 0u64;
    for _ in 0..10 {
        for c in re.captures_iter(&text) {
            let a: u64 = c[1].parse().expect("digits");
            let b: u64 = c[2].parse().expect("digits");
            // Computing while the iterator holds its search cache.
            sum = sum.wrapping_add(a * 1000 + b).wrapping_add(burn(a, 200));
        }
    }
    sum
}

fn regex_model() -> Vec<u64> {
    let re = regex::Regex::new(r"(\d+)-(\d+)").expect("regex");
    (0..8u64).map(|i| regex_work(&re, i)).collect()
}

/// A concurrent map updated in place: `entry()` and `get_mut()` hold a
/// shard's write lock (parking_lot's, in dashmap) while the task computes
/// the new value, and other tasks wait for the shard.
fn dashmap_entries(rt: &Runtime) -> Vec<u64> {
    let map = Arc::new(dashmap::DashMap::<u64, u64>::new());
    let hs: Vec<_> = (0..8u64)
        .map(|i| {
            let map = map.clone();
            rt.spawn(move || {
                let mut mine = 0u64;
                for k in 0..200u64 {
                    let key = k % 16;
                    let term = burn(i * 1000 + k, 20_000) & 0xffff;
                    *map.entry(key).or_insert(0) += term;
                    if let Some(mut v) = map.get_mut(&key) {
                        *v += burn(k, 5_000) & 0xff;
                    }
                    mine = mine.wrapping_add(term);
                }
                mine
            })
        })
        .collect();
    let mut out: Vec<u64> = hs.into_iter().map(|h| h.join().expect("task")).collect();
    let mut keys: Vec<_> = map.iter().map(|e| (*e.key(), *e.value())).collect();
    keys.sort_unstable();
    out.extend(keys.into_iter().map(|(_, v)| v));
    out
}

fn dashmap_model() -> Vec<u64> {
    let mut per_key = [0u64; 16];
    let mine = (0..8u64)
        .map(|i| {
            (0..200u64).fold(0u64, |mine, k| {
                let term = burn(i * 1000 + k, 20_000) & 0xffff;
                per_key[(k % 16) as usize] += term + (burn(k, 5_000) & 0xff);
                mine.wrapping_add(term)
            })
        })
        .collect::<Vec<u64>>();
    mine.into_iter().chain(per_key).collect()
}

type Scenario = (&'static str, fn(&Runtime) -> Vec<u64>, fn() -> Vec<u64>);

const SCENARIOS: &[Scenario] = &[
    ("println of a slow Debug", println_slow_debug, println_model),
    (
        "tracing-subscriber spans, contextual parents",
        tracing_spans,
        tracing_model,
    ),
    (
        "tracing-subscriber spans, explicit parents",
        tracing_explicit_parents,
        tracing_model,
    ),
    ("rand::rng()", rand_thread_rng, rand_model),
    ("rayon inside a task", rayon_inside, rayon_model),
    ("tokio runtime inside a task", tokio_inside, tokio_model),
    (
        "panics and aborts whose destructors sleep and lock",
        panics_and_aborts,
        panics_model,
    ),
    (
        "parking_lot guards, a OnceCell and std mpsc across preemptions",
        thread_parking_waits,
        thread_parking_model,
    ),
    ("one regex shared by every task", regex_shared, regex_model),
    ("dashmap entry and get_mut", dashmap_entries, dashmap_model),
];

fn main() {
    let mut args = std::env::args().skip(1);
    let expect = args.next().unwrap_or_else(|| "preemptive".into());
    let only = args.next();
    // Spans and events go through a real subscriber (per-thread span
    // stacks, pooled buffers) into a sink.
    tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .with_max_level(tracing::Level::DEBUG)
        .init();
    let watchdog = Arc::new(AtomicU64::new(0));
    {
        let w = watchdog.clone();
        std::thread::spawn(move || {
            let mut last = (w.load(Ordering::Relaxed), Instant::now());
            loop {
                std::thread::sleep(Duration::from_millis(200));
                let now = w.load(Ordering::Relaxed);
                if now != last.0 {
                    last = (now, Instant::now());
                } else if last.1.elapsed() > WATCHDOG {
                    eprintln!("kvant-scenarios: scenario {now} hung for {WATCHDOG:?}");
                    std::process::exit(3);
                }
            }
        });
    }
    for (n, (name, run, model)) in SCENARIOS.iter().enumerate() {
        let skip = match only.as_deref() {
            Some(o) => match o.strip_prefix('-') {
                Some(not) => name.contains(not),
                None => !name.contains(o),
            },
            None => false,
        };
        if skip {
            continue;
        }
        let want = model();
        for workers in [1, 2] {
            watchdog.fetch_add(1, Ordering::Relaxed);
            let rt = rt(workers);
            let mode = rt.preemption_mode();
            match expect.as_str() {
                "preemptive" => assert_eq!(mode, PreemptionMode::LineTables, "{name}"),
                _ => assert!(!mode.is_preemptive(), "{name}: {mode:?}"),
            }
            let got = run(&rt);
            assert_eq!(
                got, want,
                "{name}, {workers} worker(s): results differ from the sequential run"
            );
            let m = rt.metrics().total();
            eprintln!(
                "kvant-scenarios: #{n} {name}, {workers} worker(s), {mode:?}: ok, {} preemptions, {} deferrals, {} overruns, {} lends",
                m.preemptions, m.deferrals, m.overruns, m.lends
            );
            if expect == "preemptive" {
                assert!(
                    m.preemptions > 0,
                    "{name}, {workers} worker(s): nothing was preempted: {m:?} {:?}",
                    kvant::preempt::safe_point_verdicts()
                );
            } else {
                assert_eq!(m.preemptions, 0, "{name}");
            }
        }
    }
    let _ = std::io::stdout().flush();
    eprintln!("kvant-scenarios: all passed");
}
