//! A self-checking stress run: many tasks doing a mix of everything, then an
//! audit of what they did.
//!
//! ```text
//! cargo run --release --example stress
//! cargo run --release --example stress -- --tasks 2000 --workers 4 --quantum-us 200 --seconds 10
//! cargo run --release --example stress -- --quantum-us 0 --mix yield,mutex,channel
//! cargo run --release --example stress -- --park-all --tasks 1000000
//! ```
//!
//! Each of `--tasks` actors loops until the deadline, picking operations from
//! `--mix` at random: spawn (and join, or detach) a child, yield, allocate,
//! print, increment a shared counter under `kvant::sync::Mutex`, send and
//! receive over shared bounded channels, sleep. At the end it checks that
//! every task is accounted for, the counter equals the number of increments,
//! everything sent was received, and every allocation kept its contents;
//! any violation (or a hang) exits non-zero. `print` writes lines to
//! `/dev/null` through a shared `std::sync::Mutex` held inside
//! `kvant::preempt::disable()` (the documented pattern for std locks), or
//! with `println!` under `--print-to stdout` (redirect it: `> /dev/null`).
//!
//! `--park-all` instead spawns `--tasks` tasks that all park at once on one
//! channel, then wakes them all, and prints the time of each phase, the
//! memory per parked task and the mappings its stacks took (a million fit
//! in Linux's default `vm.max_map_count` on 6.13+ kernels).

use std::io::{IsTerminal, LineWriter, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use kvant::channel::{Receiver, Sender};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Op {
    Spawn,
    Yield,
    Alloc,
    Print,
    Mutex,
    Channel,
    Sleep,
}

/// Where the `print` operation writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PrintTo {
    /// `/dev/null`, through a std mutex inside `kvant::preempt::disable()`.
    Null,
    /// `println!` (stdout's own lock).
    Stdout,
}

#[derive(Parser, Debug)]
#[command(about = "Mixed-workload stress run of kvant with self-checks")]
struct Args {
    /// Concurrent actor tasks.
    #[arg(long, default_value_t = 512)]
    tasks: usize,
    /// Worker threads (default: available parallelism).
    #[arg(long)]
    workers: Option<usize>,
    /// Quantum in microseconds; 0 = cooperative.
    #[arg(long, default_value_t = 1000)]
    quantum_us: u64,
    /// How long the actors run (default: $KVANT_STRESS_SECS or 2).
    #[arg(long)]
    seconds: Option<f64>,
    /// Operations to mix, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "spawn,yield,alloc,print,mutex,channel,sleep"
    )]
    mix: Vec<Op>,
    /// Where `print` writes.
    #[arg(long, value_enum, default_value = "null")]
    print_to: PrintTo,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Pin worker i to the i-th CPU the process may use
    /// (`Builder::worker_affinity`), and report where each worker ran.
    #[arg(long)]
    affinity: bool,
    /// Park all `--tasks` at once, wake them all, print memory and timing.
    #[arg(long)]
    park_all: bool,
}

/// Shared channels; each actor sends one message and receives one on the
/// same channel, so a channel never holds more messages than there are
/// actors between those two steps: no deadlock, whatever the interleaving.
const CHANNELS: usize = 16;
const CHANNEL_CAP: usize = 8;

/// What all actors did, summed.
#[derive(Default)]
struct Tally {
    ops: AtomicU64,
    children_spawned: AtomicU64,
    children_done: AtomicU64,
    children_bad: AtomicU64,
    yields: AtomicU64,
    alloc_bytes: AtomicU64,
    alloc_bad: AtomicU64,
    printed: AtomicU64,
    increments: AtomicU64,
    sent: AtomicU64,
    sent_sum: AtomicU64,
    received: AtomicU64,
    received_sum: AtomicU64,
    sleeps: AtomicU64,
}

struct World {
    tally: Tally,
    counter: kvant::sync::Mutex<u64>,
    chans: Vec<(Sender<u64>, Receiver<u64>)>,
    stop: AtomicBool,
    mix: Vec<Op>,
    /// `None`: print with `println!`.
    null: Option<std::sync::Mutex<LineWriter<std::fs::File>>>,
}

/// xorshift64*: cheap per-actor randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A child's job: a little arithmetic it can check.
fn child_work(n: u64) -> u64 {
    (0..n).fold(0u64, |a, i| a.wrapping_add(i * i))
}

fn actor(world: Arc<World>, id: usize, seed: u64) {
    let mut rng = Rng(seed ^ (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let t = &world.tally;
    let mut kids = Vec::new();
    while !world.stop.load(Ordering::Relaxed) {
        let op = world.mix[rng.below(world.mix.len() as u64) as usize];
        t.ops.fetch_add(1, Ordering::Relaxed);
        match op {
            Op::Spawn => {
                let n = rng.below(2000);
                let w = world.clone();
                t.children_spawned.fetch_add(1, Ordering::Relaxed);
                let h = kvant::spawn(move || {
                    if n.is_multiple_of(3) {
                        kvant::yield_now();
                    }
                    let r = child_work(n);
                    w.tally.children_done.fetch_add(1, Ordering::Relaxed);
                    r
                });
                // Join two thirds now; keep the rest to join at the end.
                if rng.below(3) == 0 {
                    kids.push((n, h));
                } else if h.join().map_or(true, |r| r != child_work(n)) {
                    t.children_bad.fetch_add(1, Ordering::Relaxed);
                }
            }
            Op::Yield => {
                kvant::yield_now();
                t.yields.fetch_add(1, Ordering::Relaxed);
            }
            Op::Alloc => {
                let len = 1 + rng.below(64 * 1024) as usize;
                let byte = rng.next() as u8;
                let v = vec![byte; len];
                if rng.below(4) == 0 {
                    kvant::yield_now(); // hold it across a switch
                }
                if v.len() != len || v.iter().any(|&b| b != byte) {
                    t.alloc_bad.fetch_add(1, Ordering::Relaxed);
                }
                t.alloc_bytes.fetch_add(len as u64, Ordering::Relaxed);
            }
            Op::Print => {
                let line = format!(
                    "actor {id} op {} value {:x}",
                    t.ops.load(Ordering::Relaxed),
                    rng.next()
                );
                let ok = match &world.null {
                    Some(file) => {
                        // A std guard must not be held across a preemption
                        // (another task on this worker would block the
                        // thread on it): no preemption while we hold it.
                        let _no_preempt = kvant::preempt::disable();
                        let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
                        writeln!(f, "{line}").is_ok()
                    }
                    None => {
                        println!("{line}");
                        true
                    }
                };
                if ok {
                    t.printed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Op::Mutex => {
                let mut g = world.counter.lock();
                *g += 1;
                if rng.below(8) == 0 {
                    kvant::yield_now(); // contend: others queue behind us
                }
                drop(g);
                t.increments.fetch_add(1, Ordering::Relaxed);
            }
            Op::Channel => {
                let (tx, rx) = &world.chans[rng.below(CHANNELS as u64) as usize];
                let v = rng.below(1 << 32);
                tx.send(v).expect("channel open");
                t.sent.fetch_add(1, Ordering::Relaxed);
                t.sent_sum.fetch_add(v, Ordering::Relaxed);
                let got = rx.recv().expect("channel open");
                t.received.fetch_add(1, Ordering::Relaxed);
                t.received_sum.fetch_add(got, Ordering::Relaxed);
            }
            Op::Sleep => {
                kvant::sleep(Duration::from_micros(rng.below(200)));
                t.sleeps.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    for (n, h) in kids {
        if h.join().map_or(true, |r| r != child_work(n)) {
            t.children_bad.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(4, |n| n.get()))
        .max(1);
    let secs = args.seconds.unwrap_or_else(|| {
        std::env::var("KVANT_STRESS_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2.0)
    });
    let run_for = Duration::from_secs_f64(secs.max(0.0));
    let quantum = (args.quantum_us > 0).then(|| Duration::from_micros(args.quantum_us));
    if args.park_all {
        return park_all(args.tasks, workers, quantum);
    }
    let mut mix = args.mix.clone();
    mix.dedup();
    if mix.is_empty() {
        eprintln!("--mix is empty");
        return ExitCode::from(2);
    }
    println!(
        "stress: {} actors on {workers} workers, quantum {}, {secs} s, mix {:?}",
        args.tasks,
        quantum.map_or("none (cooperative)".to_string(), |q| format!("{q:?}")),
        mix
    );

    // Where each worker's thread runs (`sched_getcpu` in the start hook).
    let cpus = Arc::new(std::sync::Mutex::new(vec![None; workers]));
    let cpus_hook = cpus.clone();
    let rt = match kvant::Runtime::builder()
        .workers(workers)
        .quantum(quantum)
        .worker_affinity(args.affinity)
        .on_worker_start(move |i| {
            // SAFETY: sched_getcpu has no preconditions.
            let cpu = unsafe { libc::sched_getcpu() };
            if let Some(slot) = cpus_hook.lock().unwrap().get_mut(i) {
                *slot = usize::try_from(cpu).ok();
            }
        })
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot build runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let world = Arc::new(World {
        tally: Tally::default(),
        counter: kvant::sync::Mutex::new(0),
        chans: (0..CHANNELS)
            .map(|_| kvant::channel::bounded(CHANNEL_CAP))
            .collect(),
        stop: AtomicBool::new(false),
        mix,
        null: match args.print_to {
            PrintTo::Stdout => None,
            PrintTo::Null => match std::fs::File::create("/dev/null") {
                Ok(f) => Some(std::sync::Mutex::new(LineWriter::new(f))),
                Err(e) => {
                    eprintln!("cannot open /dev/null: {e}");
                    return ExitCode::from(2);
                }
            },
        },
    });
    let start = Instant::now();
    let actors: Vec<_> = (0..args.tasks)
        .map(|i| {
            let w = world.clone();
            let seed = args.seed;
            rt.spawn(move || actor(w, i, seed))
        })
        .collect();

    // Progress: a bar on a terminal, nothing otherwise (logs stay clean).
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(run_for.as_millis() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {elapsed:>4} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    while start.elapsed() < run_for {
        std::thread::sleep(Duration::from_millis(50).min(run_for.saturating_sub(start.elapsed())));
        if let Some(b) = &bar {
            b.set_position(start.elapsed().as_millis() as u64);
            b.set_message(format!("{} ops", world.tally.ops.load(Ordering::Relaxed)));
        }
    }
    world.stop.store(true, Ordering::Relaxed);
    if let Some(b) = bar {
        b.finish_and_clear();
    }

    // Join with a watchdog: a hang is a failure too.
    let mut failures: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10) + run_for;
    let mut joined = 0usize;
    for h in actors {
        match h.join_deadline(deadline) {
            Ok(Ok(())) => joined += 1,
            Ok(Err(e)) => failures.push(format!("actor failed: {e}")),
            Err(_) => {
                failures.push("actors still running 10 s after the deadline (hang?)".into());
                break;
            }
        }
    }
    let stopped_in = start.elapsed().saturating_sub(run_for);
    while rt.metrics().live_tasks > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }

    let t = &world.tally;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let m = rt.metrics();
    let total = m.total();
    let mut check = |ok: bool, what: String| {
        if !ok {
            failures.push(what);
        }
    };
    check(
        joined == args.tasks,
        format!("actors joined {joined} != spawned {}", args.tasks),
    );
    check(
        get(&t.children_spawned) == get(&t.children_done),
        format!(
            "children spawned {} != completed {}",
            get(&t.children_spawned),
            get(&t.children_done)
        ),
    );
    check(
        get(&t.children_bad) == 0,
        format!("{} children returned a wrong result", get(&t.children_bad)),
    );
    let tasks_spawned = args.tasks as u64 + get(&t.children_spawned);
    check(
        total.spawned == tasks_spawned,
        format!(
            "runtime counted {} spawns, we made {tasks_spawned}",
            total.spawned
        ),
    );
    check(
        total.completed == tasks_spawned,
        format!(
            "runtime completed {} tasks, we spawned {tasks_spawned}",
            total.completed
        ),
    );
    check(
        m.live_tasks == 0,
        format!("{} tasks still alive", m.live_tasks),
    );
    let counter = *world.counter.lock();
    check(
        counter == get(&t.increments),
        format!(
            "mutex counter {counter} != increments {}",
            get(&t.increments)
        ),
    );
    check(
        get(&t.sent) == get(&t.received) && get(&t.sent_sum) == get(&t.received_sum),
        format!(
            "channels: sent {} (sum {}) != received {} (sum {})",
            get(&t.sent),
            get(&t.sent_sum),
            get(&t.received),
            get(&t.received_sum)
        ),
    );
    let leftover: usize = world.chans.iter().map(|(_, rx)| rx.len()).sum();
    check(
        leftover == 0,
        format!("{leftover} messages left in channels"),
    );
    check(
        get(&t.alloc_bad) == 0,
        format!("{} allocations lost their contents", get(&t.alloc_bad)),
    );

    let secs_run = (run_for + stopped_in).as_secs_f64().max(1e-9);
    println!(
        "ops {} ({:.0}/s): {} children, {} yields, {} MiB allocated, {} lines printed, {} increments, \
         {} messages, {} sleeps",
        get(&t.ops),
        get(&t.ops) as f64 / secs_run,
        get(&t.children_spawned),
        get(&t.yields),
        get(&t.alloc_bytes) >> 20,
        get(&t.printed),
        get(&t.increments),
        get(&t.sent),
        get(&t.sleeps),
    );
    println!(
        "scheduler: {} slices, {} preemptions ({} deferred signals), {} steals, {} worker sleeps; all actors \
         stopped {:.1} ms after the deadline",
        total.tasks_run,
        total.preemptions,
        total.deferrals,
        total.steal_ops,
        total.sleeps,
        stopped_in.as_secs_f64() * 1e3
    );
    // Per-worker share of the run spent awake (running tasks or looking for
    // them), to see whether every core was used.
    let wall = (run_for + stopped_in).as_secs_f64().max(1e-9);
    let cpus = cpus.lock().unwrap().clone();
    let shares: Vec<String> = m
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let cpu = match (args.affinity, cpus.get(i).copied().flatten()) {
                (true, Some(c)) => format!(" (cpu {c})"),
                _ => String::new(),
            };
            format!("w{i}{cpu} {:.0}%", 100.0 * w.busy_time.as_secs_f64() / wall)
        })
        .collect();
    println!("busy share per worker: {}", shares.join(", "));
    if failures.is_empty() {
        println!("OK: every check passed");
        ExitCode::SUCCESS
    } else {
        for f in &failures {
            eprintln!("FAILED: {f}");
        }
        ExitCode::FAILURE
    }
}

/// A field of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Lines of `/proc/self/maps`: the mappings `vm.max_map_count` limits.
fn mappings() -> u64 {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count() as u64)
}

/// `--park-all`: `n` tasks park on one channel at once, then all are woken.
fn park_all(n: usize, workers: usize, quantum: Option<Duration>) -> ExitCode {
    let limit = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .map_or_else(|_| "?".into(), |s| s.trim().to_string());
    println!("park-all: {n} tasks on {workers} workers, vm.max_map_count {limit}");
    let rt = match kvant::Runtime::builder()
        .workers(workers)
        .quantum(quantum)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot build runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(|| ());
    let (rss0, maps0) = (status_kib("VmRSS"), mappings());
    let (tx, rx) = kvant::channel::unbounded::<u64>();
    let parked = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (rx, parked) = (rx.clone(), parked.clone());
            rt.spawn(move || {
                parked.fetch_add(1, Ordering::Relaxed);
                rx.recv().unwrap_or(0)
            })
        })
        .collect();
    let spawned = t0.elapsed();
    drop(rx);
    // Every task has started and the channel holds them all as waiters.
    let deadline = Instant::now() + Duration::from_secs(600);
    while (parked.load(Ordering::Relaxed) as usize) < n || rt.metrics().total().blocked < n as u64 {
        if Instant::now() > deadline {
            eprintln!(
                "FAIL: only {} of {n} tasks parked",
                parked.load(Ordering::Relaxed)
            );
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let all_parked = t0.elapsed();
    let (rss1, maps1) = (status_kib("VmRSS"), mappings());
    let stacks = rt.metrics().stacks_mapped;
    let t1 = Instant::now();
    for i in 0..n as u64 {
        tx.send(i).unwrap();
    }
    let mut sum = 0u64;
    let mut failed = 0;
    for h in handles {
        match h.join() {
            Ok(v) => sum = sum.wrapping_add(v),
            Err(e) => {
                if failed == 0 {
                    eprintln!("a task failed: {e}");
                }
                failed += 1;
            }
        }
    }
    let woken = t1.elapsed();
    let per = |d: Duration| d.as_nanos() as f64 / n.max(1) as f64;
    println!(
        "spawn {:.0} ns/task, all parked after {:.2} s, wake and join {:.0} ns/task",
        per(spawned),
        all_parked.as_secs_f64(),
        per(woken)
    );
    println!(
        "parked: RSS +{:.1} MiB = {:.2} KiB/task, mappings +{} = {:.2} per 1,000 tasks, {} stacks mapped",
        (rss1.saturating_sub(rss0)) as f64 / 1024.0,
        (rss1.saturating_sub(rss0)) as f64 / n.max(1) as f64,
        maps1.saturating_sub(maps0),
        maps1.saturating_sub(maps0) as f64 * 1000.0 / n.max(1) as f64,
        stacks
    );
    let want = (n as u64).wrapping_sub(1).wrapping_mul(n as u64) / 2;
    if failed > 0 || sum != want {
        eprintln!("FAIL: {failed} tasks failed, sum {sum} (want {want})");
        return ExitCode::FAILURE;
    }
    println!("ok: every task parked, woke and returned its message");
    ExitCode::SUCCESS
}
