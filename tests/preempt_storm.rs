//! Preemption storm: a 50 µs quantum on 2 workers while tasks print Debug
//! structs, grow vectors, churn hash maps, spawn children and share a
//! `std::sync::Mutex`. This exercises the safe-point logic: a task
//! interrupted inside `println!` (stdout or the test harness's capture
//! buffer, both behind locks owned by the *thread*), inside the allocator,
//! or inside the runtime must not be switched out there, or the next task on
//! the same worker would find the lock held by "itself" (a `RefCell`
//! "already borrowed" panic, or a deadlock).
//!
//! The std `Mutex` is used the way users write it: a plain `lock()`. A
//! holder preempted on the same worker as a waiter would deadlock the worker
//! if the waiter's futex wait were not a switch point.
//!
//! Runs for `KVANT_STRESS_SECS` seconds (default 2).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvant::Runtime;

const TASKS: usize = 8;
/// Print one line every this many iterations (keeps captured output to a
/// few MB while still printing thousands of times a second).
const PRINT_EVERY: u64 = 128;
/// Spawn and join a child every this many iterations.
const CHILD_EVERY: u64 = 97;

fn stress_duration() -> Duration {
    let secs = std::env::var("KVANT_STRESS_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

/// Printed with a hand-written `Debug`, so the formatting loop runs in user
/// code while `println!`'s locks are held by frames further up.
struct Sample {
    task: usize,
    iter: u64,
    tags: Vec<String>,
    weights: HashMap<u32, f64>,
}

impl fmt::Debug for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Sample {{ task: {}, iter: {}, tags: [",
            self.task, self.iter
        )?;
        for (i, t) in self.tags.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{t:?}")?;
        }
        f.write_str("], weights: ")?;
        let mut keys: Vec<_> = self.weights.keys().copied().collect();
        keys.sort_unstable();
        f.debug_map()
            .entries(keys.iter().map(|k| (k, self.weights[k])))
            .finish()?;
        f.write_str(" }")
    }
}

/// What the shared, std-Mutex-protected state counts.
#[derive(Default)]
struct Shared {
    total: u64,
    per_task: HashMap<usize, u64>,
}

/// What one task did.
#[derive(Debug, Default, Clone, Copy)]
struct Ops {
    iterations: u64,
    prints: u64,
    pushes: u64,
    map_ops: u64,
    locks: u64,
    children: u64,
}

fn storm_task(
    me: usize,
    until: Instant,
    shared: Arc<Mutex<Shared>>,
    printed: Arc<AtomicU64>,
    child_runs: Arc<AtomicU64>,
) -> Ops {
    let mut ops = Ops::default();
    let mut vec: Vec<u64> = Vec::new();
    let mut map: HashMap<String, Vec<u8>> = HashMap::new();
    let mut i = 0u64;
    while Instant::now() < until {
        i += 1;
        // Grow (and periodically drop) a vector: realloc in the allocator.
        vec.push(i.wrapping_mul(0x9E37_79B9));
        ops.pushes += 1;
        if vec.len() > 4096 {
            vec = Vec::new();
        }
        // Hash map churn with heap keys and values.
        let key = format!("k{}", i % 512);
        if i.is_multiple_of(3) {
            map.remove(&key);
        } else {
            map.insert(key, vec![me as u8; (i % 64) as usize]);
        }
        ops.map_ops += 1;
        // Shared state behind a std Mutex, held across a HashMap update.
        {
            let mut g = shared.lock().unwrap();
            g.total += 1;
            *g.per_task.entry(me).or_default() += 1;
        }
        ops.locks += 1;
        if i.is_multiple_of(PRINT_EVERY) {
            let sample = Sample {
                task: me,
                iter: i,
                tags: (0..4).map(|t| format!("tag-{me}-{t}")).collect(),
                weights: (0..6)
                    .map(|k| (k, f64::from(k) * 0.5 + me as f64))
                    .collect(),
            };
            println!("{sample:?} vec={} map={}", vec.len(), map.len());
            printed.fetch_add(1, Ordering::Relaxed);
            ops.prints += 1;
        }
        if i.is_multiple_of(CHILD_EVERY) {
            let runs = child_runs.clone();
            let child = kvant::spawn(move || {
                runs.fetch_add(1, Ordering::Relaxed);
                (0..100u64).map(|x| x * x).sum::<u64>()
            });
            assert_eq!(child.join().expect("child task"), 328_350);
            ops.children += 1;
        }
        ops.iterations += 1;
    }
    ops
}

#[test]
fn preemption_storm() {
    let run_for = stress_duration();
    let rt = Runtime::builder()
        .workers(2)
        .quantum(Some(kvant::MIN_QUANTUM))
        .build()
        .unwrap();
    let shared = Arc::new(Mutex::new(Shared::default()));
    let printed = Arc::new(AtomicU64::new(0));
    let child_runs = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let until = started + run_for;
    let handles: Vec<_> = (0..TASKS)
        .map(|me| {
            let (s, p, c) = (shared.clone(), printed.clone(), child_runs.clone());
            rt.spawn(move || storm_task(me, until, s, p, c))
        })
        .collect();

    // Generous: debug builds, a loaded machine, and a deadline-based loop.
    let hang_at = until + Duration::from_secs(60);
    let mut per_task = Vec::new();
    let mut failures = Vec::new();
    for (me, h) in handles.into_iter().enumerate() {
        match h.join_deadline(hang_at) {
            Ok(Ok(ops)) => per_task.push(ops),
            Ok(Err(e)) => failures.push(format!("task {me}: {e}")),
            Err(h) => failures.push(format!("task {me} hung: {h:?} (a worker is deadlocked?)")),
        }
    }
    let m = rt.metrics();
    let t = m.total();
    eprintln!(
        "storm {:?}: {:?}\nper worker: {:?}",
        started.elapsed(),
        t,
        m.workers
            .iter()
            .map(|w| (w.preemptions, w.deferrals, w.signals, w.sync_switches))
            .collect::<Vec<_>>()
    );
    assert!(failures.is_empty(), "crashed tasks: {failures:#?}");

    let sum = |f: fn(&Ops) -> u64| per_task.iter().map(f).sum::<u64>();
    eprintln!(
        "iterations {} prints {} locks {} children {} map ops {} pushes {}",
        sum(|o| o.iterations),
        sum(|o| o.prints),
        sum(|o| o.locks),
        sum(|o| o.children),
        sum(|o| o.map_ops),
        sum(|o| o.pushes)
    );
    for (me, ops) in per_task.iter().enumerate() {
        assert!(ops.iterations > 0, "task {me} made no progress: {ops:?}");
    }
    // Conservation: nothing lost or duplicated across preemptions.
    let g = shared.lock().unwrap();
    assert_eq!(g.total, sum(|o| o.locks));
    for (me, ops) in per_task.iter().enumerate() {
        assert_eq!(
            g.per_task.get(&me).copied().unwrap_or(0),
            ops.locks,
            "task {me}"
        );
    }
    assert_eq!(printed.load(Ordering::Relaxed), sum(|o| o.prints));
    assert_eq!(child_runs.load(Ordering::Relaxed), sum(|o| o.children));
    assert!(sum(|o| o.prints) > 0);

    assert!(t.preemptions > 0, "no preemption at a 50 µs quantum: {t:?}");
    assert!(
        t.deferrals > 0,
        "no deferral although tasks spend time in println and malloc: {t:?}"
    );
    let report = rt.shutdown_timeout(Duration::from_secs(10));
    assert!(report.all_finished, "{report:?}");
}
