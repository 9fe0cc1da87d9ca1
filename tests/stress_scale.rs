//! Scale: many short tasks, many parked tasks at once, and a mixed workload
//! under the smallest quantum, with every task, message and lock
//! acquisition accounted for.
//!
//! Sizes scale with `KVANT_STRESS_SECS` (default 1; fractions allowed) and
//! with the build: debug builds are roughly 10x slower per spawn, so they
//! run a fifth of the release sizes unless `KVANT_STRESS_SECS` asks for
//! more (see each test). The tests take a lock so that they run one at a
//! time: memory figures are process-wide, and the machine may have 2 cores.
//! Figures are printed with `eprintln!` (see them with `--nocapture`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kvant::{JoinHandle, Runtime};

mod common;

/// Far beyond anything a passing test needs; only a hang reaches it.
const HANG: Duration = Duration::from_secs(300);

/// One test at a time (see the module docs).
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `KVANT_STRESS_SECS`, if set to a positive number.
fn stress_secs() -> Option<f64> {
    std::env::var("KVANT_STRESS_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
}

/// `release` in release builds, `release / 5` in debug builds; a larger
/// `KVANT_STRESS_SECS` scales debug sizes up (to at most `release`).
fn scaled(release: usize) -> usize {
    if cfg!(debug_assertions) {
        let f = stress_secs().unwrap_or(1.0).max(1.0);
        ((release as f64 / 5.0 * f) as usize).min(release)
    } else {
        release
    }
}

fn join_ok<T: Send + 'static>(h: JoinHandle<T>) -> T {
    common::join_within(h, HANG)
}

fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    common::wait_within(what, HANG, cond)
}

/// A field of /proc/self/status in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Memory mappings this process has now.
fn map_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("read maps")
        .lines()
        .count()
}

#[test]
fn a_million_short_tasks_all_accounted_for() {
    let _serial = serial();
    // 1M in release; 200k in debug unless KVANT_STRESS_SECS >= 5.
    let n = scaled(1_000_000);
    const BATCH: usize = 10_000;
    let rt = Runtime::builder().workers(2).build().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let r = ran.clone();
    let sum = join_ok(rt.spawn(move || {
        let mut sum = 0u64;
        let mut next = 0;
        while next < n {
            let end = (next + BATCH).min(n);
            let batch: Vec<_> = (next..end)
                .map(|i| {
                    let r = r.clone();
                    kvant::spawn(move || {
                        r.fetch_add(1, Ordering::Relaxed);
                        i as u64
                    })
                })
                .collect();
            for h in batch {
                sum += h.join().expect("short task");
            }
            next = end;
        }
        sum
    }));
    let took = started.elapsed();
    let n64 = n as u64;
    assert_eq!(ran.load(Ordering::Relaxed), n);
    assert_eq!(sum, n64 * (n64 - 1) / 2);
    wait_for("live_tasks == 0", || rt.metrics().live_tasks == 0);
    let m = rt.metrics();
    let t = m.total();
    eprintln!(
        "{n} tasks in {took:?} ({:.0} ns/task); stacks mapped {}; peak RSS {} KiB; {t:?}",
        took.as_nanos() as f64 / n as f64,
        m.stacks_mapped,
        status_kib("VmHWM")
    );
    // The driver task plus the short ones.
    assert_eq!(t.spawned, n64 + 1);
    assert_eq!(t.completed, n64 + 1);
    assert!(
        m.stacks_mapped < 2 * BATCH as u64,
        "stacks are not reused: {}",
        m.stacks_mapped
    );
    let report = rt.shutdown_timeout(Duration::from_secs(5));
    assert!(report.all_finished, "{report:?}");
}

const MAX_MAP_COUNT: &str = "/proc/sys/vm/max_map_count";

/// Puts vm.max_map_count back to its old value when dropped.
struct MapCountRestore(Option<usize>);

impl Drop for MapCountRestore {
    fn drop(&mut self) {
        if let Some(old) = self.0 {
            match std::fs::write(MAX_MAP_COUNT, old.to_string()) {
                Ok(()) => eprintln!("restored vm.max_map_count to {old}"),
                Err(e) => eprintln!("could not restore vm.max_map_count to {old}: {e}"),
            }
        }
    }
}

/// Make room for `want` tasks (each stack is 2 mappings: the guard page and
/// the usable part): raise vm.max_map_count if we may (until the returned
/// guard drops), else scale down. Returns how many tasks fit.
/// `KVANT_STRESS_NO_SYSCTL=1` skips the raise (to test the scale-down).
fn fit_parked_tasks(want: usize) -> (usize, MapCountRestore) {
    // Headroom for the runtime's threads, allocator arenas and the like.
    const SLACK: usize = 4096;
    let limit: usize = std::fs::read_to_string(MAX_MAP_COUNT)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65_530);
    let need = map_count() + 2 * want + SLACK;
    if need <= limit {
        return (want, MapCountRestore(None));
    }
    let raised = if std::env::var_os("KVANT_STRESS_NO_SYSCTL").is_some() {
        Err(std::io::Error::other("KVANT_STRESS_NO_SYSCTL is set"))
    } else {
        std::fs::write(MAX_MAP_COUNT, need.to_string())
    };
    match raised {
        Ok(()) => {
            eprintln!("raised vm.max_map_count from {limit} to {need} for {want} parked tasks");
            (want, MapCountRestore(Some(limit)))
        }
        Err(e) => {
            let fit = limit.saturating_sub(map_count() + SLACK) / 2;
            eprintln!(
                "vm.max_map_count is {limit} and cannot be raised ({e}): \
                 parking {fit} tasks instead of {want}"
            );
            (fit, MapCountRestore(None))
        }
    }
}

#[test]
fn a_hundred_thousand_parked_tasks() {
    let _serial = serial();
    // 100k in release; 20k in debug unless KVANT_STRESS_SECS >= 5.
    let (n, _restore) = fit_parked_tasks(scaled(100_000));
    assert!(n > 1000, "too few mappings left to test anything: {n}");
    const STACK: usize = 16 * 1024;
    let rt = Runtime::builder().workers(2).build().unwrap();
    // Warm up the runtime's threads and allocator before the baseline.
    join_ok(rt.spawn(|| ()));
    let rss_before = status_kib("VmRSS");
    let (tx, rx) = kvant::channel::unbounded::<()>();
    let parked = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (rx, parked) = (rx.clone(), parked.clone());
            kvant::task::Builder::new()
                .stack_size(STACK)
                .spawn_on(&rt, move || {
                    parked.fetch_add(1, Ordering::Relaxed);
                    // Parks until the sender is dropped.
                    assert!(rx.recv().is_err());
                    i as u64
                })
                .expect("spawn")
        })
        .collect();
    drop(rx);
    // Every task has parked, or failed to get a stack (then it is finished).
    wait_for("all tasks to park", || {
        let p = parked.load(Ordering::Relaxed);
        p == n || p + handles.iter().filter(|h| h.is_finished()).count() == n
    });
    let spawn_time = started.elapsed();
    let m = rt.metrics();
    let rss_parked = status_kib("VmRSS");
    let per_task = (rss_parked.saturating_sub(rss_before)) as f64 * 1024.0 / n as f64;
    eprintln!(
        "{n} parked tasks ({} KiB stacks): spawned and parked in {spawn_time:?}; \
         RSS {rss_before} KiB -> {rss_parked} KiB = {per_task:.0} bytes per parked task; \
         stacks mapped {}; maps {}",
        STACK / 1024,
        m.stacks_mapped,
        map_count()
    );
    drop(tx); // release everyone
    let (mut sum, mut no_stack) = (0u64, 0usize);
    for h in handles {
        match h.join_timeout(HANG) {
            Ok(Ok(v)) => sum += v,
            Ok(Err(e)) if e.to_string().contains("could not get a stack") => no_stack += 1,
            Ok(Err(e)) => panic!("parked task failed: {e}"),
            Err(_) => panic!("a released task did not finish"),
        }
    }
    let n64 = n as u64;
    eprintln!(
        "released and joined in {:?}; peak RSS {} KiB; {no_stack} tasks got no stack",
        started.elapsed() - spawn_time,
        status_kib("VmHWM")
    );
    assert_eq!(no_stack, 0, "tasks without a stack despite room for {n}");
    assert_eq!(sum, n64 * (n64 - 1) / 2);
    assert!(per_task < 64.0 * 1024.0, "{per_task} bytes per parked task");
    wait_for("live_tasks == 0", || rt.metrics().live_tasks == 0);
    assert_eq!(rt.metrics().total().completed, n64 + 1);
    let report = rt.shutdown_timeout(Duration::from_secs(5));
    assert!(report.all_finished, "{report:?}");
}

#[test]
fn mixed_workload_under_the_smallest_quantum() {
    let _serial = serial();
    let run_for = Duration::from_secs_f64(stress_secs().unwrap_or(2.0));
    let rt = Runtime::builder()
        .workers(2)
        .quantum(Some(kvant::MIN_QUANTUM))
        .build()
        .unwrap();
    let until = Instant::now() + run_for;
    let counter = Arc::new(kvant::sync::Mutex::new(0u64));
    let children = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let (tx, rx) = kvant::channel::bounded::<u64>(64);
    // Consumers: count and sum every message until all senders are gone.
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let rx = rx.clone();
            rt.spawn(move || rx.iter().fold((0u64, 0u64), |(n, s), v| (n + 1, s + v)))
        })
        .collect();
    drop(rx);
    // Drivers: rounds of spawn, lock, send, spin, join until the deadline.
    let drivers: Vec<_> = (0..4u64)
        .map(|d| {
            let (counter, children, sent, tx) =
                (counter.clone(), children.clone(), sent.clone(), tx.clone());
            rt.spawn(move || {
                let mut value_sum = 0u64;
                let mut round = 0u64;
                while Instant::now() < until {
                    let kids: Vec<_> = (0..16u64)
                        .map(|k| {
                            let (counter, sent, tx) = (counter.clone(), sent.clone(), tx.clone());
                            let v = d * 1_000_000_007 + round * 16 + k;
                            kvant::spawn(move || {
                                {
                                    let mut c = counter.lock();
                                    // Read-modify-write with work in between:
                                    // lost updates would show in the total.
                                    let old = *c;
                                    std::hint::black_box((0..50u64).sum::<u64>());
                                    *c = old + 1;
                                }
                                if k % 4 == 0 {
                                    kvant::yield_now();
                                }
                                tx.send(v).expect("consumers are alive");
                                sent.fetch_add(1, Ordering::Relaxed);
                                std::hint::black_box((0..(k * 200)).sum::<u64>());
                                v
                            })
                        })
                        .collect();
                    children.fetch_add(kids.len() as u64, Ordering::Relaxed);
                    for h in kids {
                        value_sum += h.join().expect("child");
                    }
                    round += 1;
                }
                value_sum
            })
        })
        .collect();
    drop(tx);
    let joined_sum: u64 = drivers.into_iter().map(join_ok).sum();
    let (received, received_sum) = consumers
        .into_iter()
        .map(join_ok)
        .fold((0, 0), |(n, s), (n2, s2)| (n + n2, s + s2));
    let spawned = children.load(Ordering::Relaxed);
    wait_for("live_tasks == 0", || rt.metrics().live_tasks == 0);
    let t = rt.metrics().total();
    eprintln!(
        "{run_for:?}: {spawned} children, {received} messages; signals={} preemptions={} \
         deferrals={} steals={}; peak RSS {} KiB",
        t.signals,
        t.preemptions,
        t.deferrals,
        t.stolen_tasks,
        status_kib("VmHWM")
    );
    assert!(spawned > 0);
    assert_eq!(*counter.lock(), spawned, "lost mutex updates");
    assert_eq!(sent.load(Ordering::Relaxed), spawned);
    assert_eq!(received, spawned, "messages lost or duplicated");
    assert_eq!(received_sum, joined_sum, "message contents changed");
    // 2 consumers + 4 drivers + the children.
    assert_eq!(t.spawned, spawned + 6);
    assert_eq!(t.completed, spawned + 6);
    assert!(t.preemptions > 0, "{t:?}");
    let report = rt.shutdown_timeout(Duration::from_secs(5));
    assert!(report.all_finished, "{report:?}");
}
