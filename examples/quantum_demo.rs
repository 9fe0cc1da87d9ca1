//! See the scheduler: the same workload, cooperative then preemptive.
//!
//! ```text
//! cargo run --release --example quantum_demo
//! cargo run --release --example quantum_demo -- --workers 2 --trace /tmp/kvant.json
//! ```
//!
//! A few CPU hogs each burn a fixed amount of their *own* CPU time (so the
//! work is the same in both modes, and each phase lasts about 1.2 s), while an
//! interactive task sleeps 1 ms in a loop and measures how late it wakes up.
//!
//! * Cooperative (`quantum(None)`): a hog never gives its worker back until it
//!   is done, so the hogs run one after another and the sleeper waits for a
//!   whole hog each time: its lateness *is* the hog's run time.
//! * Preemptive (10 ms quantum, the default): the hogs share the worker round-robin and the
//!   sleeper runs at the next switch, within about one quantum, when only the
//!   quantum preempts (`min_slice(None)`, shown in the summary);
//! * and within about a signal's latency with wake-up preemption (the
//!   default, `Builder::min_slice`): when the sleeper's timer fires, the
//!   running hog is preempted at once if it has had 100 µs.
//!
//! Both runs are traced; the demo prints each worker's timeline, a zoom on a
//! few milliseconds, the sleeper's lateness and the scheduler's counters.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use kvant::{Runtime, Trace};

/// Off-CPU gaps longer than this are not counted as a hog's own run time.
const GAP: Duration = Duration::from_micros(200);
/// Whatever happens, a phase's hogs stop after this long (keeps the demo bounded).
const HARD_LIMIT: Duration = Duration::from_secs(4);
/// How long the zoomed timeline covers.
const ZOOM: Duration = Duration::from_millis(12);

#[derive(Parser, Debug)]
#[command(about = "Cooperative vs preemptive scheduling of CPU hogs and a sleeper, side by side")]
struct Args {
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// CPU hogs (default: workers + 2).
    #[arg(long)]
    hogs: Option<usize>,
    /// CPU time each hog burns, in ms (default: 1200 * workers / hogs).
    #[arg(long)]
    hog_ms: Option<u64>,
    /// Quantum of the preemptive run, in microseconds (the runtime's default).
    #[arg(long, default_value_t = 10_000)]
    quantum_us: u64,
    /// Let other workers steal preempted tasks (`Builder::migrate_preempted`).
    /// By default a preempted task stays on its worker until it yields or
    /// blocks, which a CPU hog never does: with several workers, one that
    /// runs out of work cannot take hogs queued on another.
    #[arg(long)]
    migrate_preempted: bool,
    /// Width of the timelines, in columns.
    #[arg(long, default_value_t = 100)]
    width: usize,
    /// Write the preemptive run's Chrome trace here (and the cooperative
    /// run's next to it, with `.coop` before the extension). Open in
    /// https://ui.perfetto.dev or chrome://tracing.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Write SVG timelines of both runs into this directory (created if
    /// needed): the whole run and a 10 ms zoom of each, same colours
    /// everywhere. Open in a browser.
    #[arg(long)]
    svg: Option<PathBuf>,
}

/// What one phase measured.
struct Outcome {
    wall: Duration,
    hog_done: Vec<Duration>,
    lateness: Vec<Duration>,
    metrics: kvant::WorkerMetrics,
    trace: Trace,
    hit_limit: bool,
}

/// Burn `budget` of this task's own CPU time: time between two clock reads
/// counts only if the gap is short, i.e. the task was not switched out.
fn hog(budget: Duration, hard_deadline: Instant) -> (u64, bool) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut ran = Duration::ZERO;
    let mut last = Instant::now();
    loop {
        for _ in 0..500 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
        }
        let now = Instant::now();
        let d = now - last;
        if d < GAP {
            ran += d;
        }
        last = now;
        if ran >= budget {
            return (x, false);
        }
        if now >= hard_deadline {
            return (x, true);
        }
    }
}

fn run_phase(
    args: &Args,
    hogs: usize,
    budget: Duration,
    quantum: Option<Duration>,
    min_slice: Option<Duration>,
) -> Outcome {
    let rt = Runtime::builder()
        .workers(args.workers)
        .quantum(quantum)
        .min_slice(min_slice)
        .migrate_preempted(args.migrate_preempted)
        .trace(true)
        .build()
        .expect("build runtime");
    let start = Instant::now();
    let hard_deadline = start + HARD_LIMIT;
    let left = Arc::new(AtomicUsize::new(hogs));
    let lateness = Arc::new(Mutex::new(Vec::new()));

    // The sleeper is spawned first so that it is asleep when the hogs start.
    let sleeper = {
        let left = left.clone();
        let lateness = lateness.clone();
        kvant::task::Builder::new()
            .name("sleeper")
            .spawn_on(&rt, move || {
                while left.load(Ordering::Acquire) > 0 {
                    let asked = Duration::from_millis(1);
                    let t = Instant::now();
                    kvant::sleep(asked);
                    let late = t.elapsed().saturating_sub(asked);
                    lateness.lock().unwrap().push(late);
                }
            })
            .expect("spawn sleeper")
    };
    let hog_handles: Vec<_> = (1..=hogs)
        .map(|i| {
            let left = left.clone();
            kvant::task::Builder::new()
                .name(format!("hog-{i}"))
                .spawn_on(&rt, move || {
                    let (x, hit) = hog(budget, hard_deadline);
                    left.fetch_sub(1, Ordering::AcqRel);
                    (start.elapsed(), hit, x)
                })
                .expect("spawn hog")
        })
        .collect();
    let mut hog_done = Vec::new();
    let mut hit_limit = false;
    for h in hog_handles {
        let (at, hit, _) = h.join().expect("hog");
        hog_done.push(at);
        hit_limit |= hit;
    }
    sleeper.join().expect("sleeper");
    let wall = start.elapsed();
    // Joins return when a task's result is ready, a hair before its last
    // slice is recorded: wait for the runtime to retire everything.
    while rt.metrics().live_tasks > 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let metrics = rt.metrics().total();
    let trace = rt.trace().expect("traced runtime");
    let mut lateness = std::mem::take(&mut *lateness.lock().unwrap());
    lateness.sort();
    hog_done.sort();
    Outcome {
        wall,
        hog_done,
        lateness,
        metrics,
        trace,
        hit_limit,
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e3;
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.2} ms")
    }
}

fn report(title: &str, o: &Outcome, width: usize) {
    println!("== {title} ==");
    let (from, to) = o.trace.span();
    // From the runtime's start, so both phases share the same origin.
    println!(
        "{}",
        o.trace.window(Duration::ZERO, to).ascii_timeline(width)
    );
    let mid = from + (to - from) / 2;
    println!("zoom on {} .. {}:", ms(mid), ms(mid + ZOOM));
    println!("{}", o.trace.window(mid, mid + ZOOM).ascii_timeline(width));
    let done: Vec<String> = o.hog_done.iter().map(|d| ms(*d)).collect();
    println!("hogs finished at   {}", done.join(", "));
    println!(
        "sleeper            {} wake-up{}, lateness p50 {}, p99 {}, max {}",
        o.lateness.len(),
        if o.lateness.len() == 1 { "" } else { "s" },
        ms(pct(&o.lateness, 0.5)),
        ms(pct(&o.lateness, 0.99)),
        ms(o.lateness.last().copied().unwrap_or_default()),
    );
    let m = &o.metrics;
    println!(
        "scheduler          {} slices, {} preemptions, {} deferrals, {} signals, {} yields, {} blocked",
        m.tasks_run, m.preemptions, m.deferrals, m.signals, m.voluntary_yields, m.blocked
    );
    if o.trace.dropped() > 0 {
        println!(
            "trace              {} oldest slices dropped (buffer full)",
            o.trace.dropped()
        );
    }
    if o.hit_limit {
        println!("note               hogs stopped at the {HARD_LIMIT:?} safety limit");
    }
    println!();
}

/// The SVG views the README shows: each run whole (from the runtime's
/// start, like the ASCII view) and zoomed on 10 ms in its middle.
fn write_svgs(dir: &Path, coop: &Outcome, pre: &Outcome, q: Duration) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, what, o) in [
        (
            "cooperative",
            "cooperative: quantum(None)".to_string(),
            coop,
        ),
        (
            "preemptive",
            format!("preemptive: quantum {q:?} + wake-up preemption"),
            pre,
        ),
    ] {
        let (from, to) = o.trace.span();
        let whole = o.trace.window(Duration::ZERO, to);
        let mid = from + (to - from) / 2;
        let zoom = o.trace.window(mid, mid + ZOOM);
        for (file, t, title) in [
            (format!("{name}.svg"), &whole, what.clone()),
            (
                format!("{name}-zoom.svg"),
                &zoom,
                format!("{what}, zoom on {} .. {}", ms(mid), ms(mid + ZOOM)),
            ),
        ] {
            let path = dir.join(&file);
            std::fs::write(&path, t.to_svg(&title))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// `trace.json` -> `trace.coop.json`.
fn coop_path(p: &Path) -> PathBuf {
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match p.extension() {
        Some(ext) => format!("{stem}.coop.{}", ext.to_string_lossy()),
        None => format!("{stem}.coop"),
    };
    p.with_file_name(name)
}

fn main() {
    let args = Args::parse();
    let workers = args.workers.max(1);
    let args = Args { workers, ..args };
    let hogs = args.hogs.unwrap_or(workers + 2).max(1);
    let budget = Duration::from_millis(args.hog_ms.unwrap_or((1200 * workers / hogs) as u64));
    let quantum = Duration::from_micros(args.quantum_us);
    println!(
        "kvant quantum demo: {hogs} CPU hogs ({} of CPU each) + 1 sleeper (sleeps 1 ms, measures \
         how late it wakes) on {workers} worker{}",
        ms(budget),
        if workers == 1 { "" } else { "s" }
    );
    println!();

    let coop = run_phase(&args, hogs, budget, None, None);
    report("cooperative: quantum(None)", &coop, args.width);
    let min = kvant::DEFAULT_MIN_SLICE;
    let pre = run_phase(&args, hogs, budget, Some(quantum), Some(min));
    report(
        &format!("preemptive: quantum {quantum:?}, wake-up preemption after {min:?}"),
        &pre,
        args.width,
    );
    // The same without wake-up preemption: only the quantum ends a slice.
    let quantum_only = run_phase(&args, hogs, budget, Some(quantum), None);

    println!("== summary ==");
    println!(
        "{:<24}{:>14}{:>16}{:>16}",
        "", "cooperative", "quantum only", "+ wake-up"
    );
    let row = |name: &str, f: &dyn Fn(&Outcome) -> String| {
        println!(
            "{name:<24}{:>14}{:>16}{:>16}",
            f(&coop),
            f(&quantum_only),
            f(&pre)
        );
    };
    row("phase wall time", &|o| ms(o.wall));
    row("first hog finished", &|o| ms(o.hog_done[0]));
    row("sleeper wake-ups", &|o| o.lateness.len().to_string());
    row("lateness p50", &|o| ms(pct(&o.lateness, 0.5)));
    row("lateness p99", &|o| ms(pct(&o.lateness, 0.99)));
    row("lateness max", &|o| {
        ms(o.lateness.last().copied().unwrap_or_default())
    });
    row("preemptions", &|o| o.metrics.preemptions.to_string());
    row("deferred signals", &|o| o.metrics.deferrals.to_string());

    if let Some(dir) = &args.svg
        && let Err(e) = write_svgs(dir, &coop, &pre, quantum)
    {
        eprintln!("cannot write the SVG timelines to {}: {e}", dir.display());
    }

    if let Some(path) = &args.trace {
        let cpath = coop_path(path);
        for (p, o) in [(path, &pre), (&cpath, &coop)] {
            match o.trace.write_chrome_json(p) {
                Ok(()) => println!("wrote {} ({} slices)", p.display(), o.trace.slices().len()),
                Err(e) => eprintln!("cannot write {}: {e}", p.display()),
            }
        }
        println!("open them in https://ui.perfetto.dev or chrome://tracing");
    }
}
