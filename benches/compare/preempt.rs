//! (f) What preemption costs: the same fixed CPU-bound work (4 hogs with a
//! fixed iteration count) on a cooperative runtime and on preemptive ones
//! with shrinking quanta. Configurations are interleaved run by run so that
//! background load on a shared machine hits all of them alike.
//!
//! Two costs show up separately: CPU time (signals, monitor wake-ups) and
//! wall time, which also suffers when the hogs end up unevenly spread over
//! the workers (a preempted task is pinned to its worker by default), hence
//! the `migrate_preempted(true)` rows and the busy-time split per worker.

use std::time::{Duration, Instant};

use super::util::{self, Mode, Table, burn, calibrate_burn, fmt_dur, median, quantile};

const HOGS: usize = 4;

#[derive(Clone, Copy)]
struct Config {
    quantum: Option<Duration>,
    migrate: bool,
    /// `Builder::cpu_clock_quantum`: the workers' own CPU-clock timers.
    cpu_clock: bool,
}

impl Config {
    fn label(&self) -> String {
        match (self.quantum, self.migrate, self.cpu_clock) {
            (None, _, _) => "None (cooperative)".into(),
            (Some(q), _, true) => format!("{q:?}, cpu_clock_quantum"),
            (Some(q), false, _) => format!("{q:?}"),
            (Some(q), true, _) => format!("{q:?}, migrate_preempted"),
        }
    }
}

#[derive(Default)]
struct Acc {
    wall: Vec<Duration>,
    cpu: Vec<Duration>,
    /// Busiest worker's share of the summed busy time, per run.
    busiest: Vec<f64>,
    preemptions: u64,
    signals: u64,
    deferrals: u64,
    runs: u64,
}

fn one_run(w: usize, cfg: Config, iters: u64, acc: &mut Acc) {
    let rt = kvant::Runtime::builder()
        .workers(w)
        .quantum(cfg.quantum)
        .migrate_preempted(cfg.migrate)
        .cpu_clock_quantum(cfg.cpu_clock)
        .build()
        .expect("kvant runtime");
    rt.block_on(|| ()); // workers are up and the monitor has started
    let before = rt.metrics();
    let cpu0 = util::process_cpu_time();
    let t0 = Instant::now();
    let hs: Vec<_> = (0..HOGS).map(|_| rt.spawn(move || burn(iters))).collect();
    for h in hs {
        h.join().expect("hog");
    }
    acc.wall.push(t0.elapsed());
    acc.cpu.push(util::process_cpu_time().saturating_sub(cpu0));
    let after = rt.metrics();
    acc.busiest.push(util::busiest_share(&before, &after));
    let m = after.total();
    acc.preemptions += m.preemptions;
    acc.signals += m.signals;
    acc.deferrals += m.deferrals;
    acc.runs += 1;
}

pub fn run(mode: &Mode) {
    let w = mode.workers;
    let reps = mode.reps();
    let per_hog = Duration::from_millis(mode.pick(50, 250));
    let iters = calibrate_burn(per_hog);
    let q = |us: u64, migrate: bool| Config {
        quantum: Some(Duration::from_micros(us)),
        migrate,
        cpu_clock: false,
    };
    let cpu = |us: u64| Config {
        cpu_clock: true,
        ..q(us, false)
    };
    let configs = [
        Config {
            quantum: None,
            migrate: false,
            cpu_clock: false,
        },
        q(10_000, false),
        q(1_000, false),
        q(100, false),
        q(10_000, true),
        q(1_000, true),
        q(4_000, false),
        cpu(10_000),
        cpu(4_000),
    ];
    let mut accs: Vec<Acc> = configs.iter().map(|_| Acc::default()).collect();
    // One warm-up round, discarded.
    for c in configs {
        one_run(w, c, iters, &mut Acc::default());
    }
    for _ in 0..reps {
        for (c, acc) in configs.iter().zip(accs.iter_mut()) {
            one_run(w, *c, iters, acc);
        }
    }
    let base_wall = median(&accs[0].wall).as_secs_f64();
    let base_min = accs[0]
        .wall
        .iter()
        .min()
        .copied()
        .unwrap_or_default()
        .as_secs_f64();
    let base_cpu = median(&accs[0].cpu).as_secs_f64();
    let pct = |x: f64, base: f64| format!("{:+.2}%", 100.0 * (x / base - 1.0));
    let mut t = Table::new(
        &format!(
            "(f) preemption overhead: {HOGS} hogs x ~{} of work on {w} workers",
            fmt_dur(per_hog)
        ),
        &[
            "quantum",
            "wall",
            "spread",
            "overhead",
            "overhead (min/min)",
            "busiest worker (worst)",
            "CPU time",
            "CPU overhead",
            "preemptions/run",
            "signals/run",
            "deferred/run",
        ],
    );
    for (i, (c, a)) in configs.iter().zip(&accs).enumerate() {
        let wall = median(&a.wall).as_secs_f64();
        let min = a
            .wall
            .iter()
            .min()
            .copied()
            .unwrap_or_default()
            .as_secs_f64();
        let max = a
            .wall
            .iter()
            .max()
            .copied()
            .unwrap_or_default()
            .as_secs_f64();
        let cpu = median(&a.cpu).as_secs_f64();
        let runs = a.runs.max(1);
        let base = |s: String| if i == 0 { "base".to_string() } else { s };
        t.row(vec![
            c.label(),
            fmt_dur(median(&a.wall)),
            format!("{:.1}%", 100.0 * (max - min) / wall),
            base(pct(wall, base_wall)),
            base(pct(min, base_min)),
            format!(
                "{:.0}% ({:.0}%)",
                100.0 * median(&a.busiest),
                100.0 * a.busiest.iter().copied().fold(0.0, f64::max)
            ),
            fmt_dur(median(&a.cpu)),
            base(pct(cpu, base_cpu)),
            format!("{}", a.preemptions / runs),
            format!("{}", a.signals / runs),
            format!("{}", a.deferrals / runs),
        ]);
    }
    t.note(format!(
        "Each hog runs {iters} LCG rounds (no yields, no allocation). Wall: spawn of the first hog \
         to join of the last, median of {reps} interleaved runs (min/min compares the fastest run \
         of each); spread = (max - min) / median of the wall times. Busiest worker: its share of \
         the workers' summed busy time, median and (worst run); 50% is an even split on 2 workers, and \
         with {HOGS} equal hogs on {w} workers a 3:1 split shows as 75% and costs +50% wall time. CPU time: the whole \
         process (workers, timer and monitor threads); it does not depend on how the hogs are \
         spread, so CPU overhead is the cost of preemption itself. Counters are from \
         rt.metrics() (signals: the monitor's; a cpu_clock_quantum row's preemptions come from \
         the workers' own CPU-clock ticks, which are not counted as signals). Goals: <= 1% at \
         1 ms, <= 5% at 100 µs."
    ));
    t.print();

    // The floor: the same work on plain threads with a per-thread timer.
    // Both overheads are a few per cent at 1 ms, about the run-to-run noise
    // of this VM, so each repetition measures kvant (cooperative, then at
    // the quantum) and the floor (no timer, then timers) back to back, and
    // the overheads are paired within the repetition before taking medians:
    // slow drift of the host cancels out instead of landing on one side.
    let intervals = [4_000u64, 1_000, 100];
    let mut paired: Vec<[Vec<f64>; 3]> = intervals.iter().map(|_| Default::default()).collect();
    let coop = configs[0];
    for _ in 0..reps {
        for (k, &us) in intervals.iter().enumerate() {
            let mut a0 = Acc::default();
            let mut aq = Acc::default();
            one_run(w, coop, iters, &mut a0);
            one_run(w, q(us, false), iters, &mut aq);
            let fl = super::floor::measure(w, HOGS, iters, Duration::from_micros(us));
            let over = |x: Duration, base: Duration| x.as_secs_f64() / base.as_secs_f64() - 1.0;
            paired[k][0].push(over(aq.cpu[0], a0.cpu[0]));
            paired[k][1].push(over(fl.mono, fl.none));
            paired[k][2].push(over(fl.thread_cpu, fl.none));
        }
    }
    let mut f = Table::new(
        &format!("(f2) preemption CPU overhead against the floor of timer signals, {w} workers"),
        &[
            "quantum",
            "kvant CPU overhead (p25..p75)",
            "floor: per-thread CLOCK_MONOTONIC timer, empty handler (p25..p75)",
            "kvant / floor",
            "per-thread CLOCK_THREAD_CPUTIME_ID timer",
        ],
    );
    let quart = |v: &[f64]| (quantile(v, 0.25), quantile(v, 0.5), quantile(v, 0.75));
    let pct = |x: f64| format!("{:+.2}%", 100.0 * x);
    for (k, &us) in intervals.iter().enumerate() {
        let (k25, kvant, k75) = quart(&paired[k][0]);
        let (f25, mono, f75) = quart(&paired[k][1]);
        let (_, thread_cpu, _) = quart(&paired[k][2]);
        f.row(vec![
            fmt_dur(Duration::from_micros(us)),
            format!("{} ({}..{})", pct(kvant), pct(k25), pct(k75)),
            format!("{} ({}..{})", pct(mono), pct(f25), pct(f75)),
            if mono > 0.0 {
                format!("{:.2}x", kvant / mono)
            } else {
                "-".into()
            },
            pct(thread_cpu),
        ]);
    }
    f.note(format!(
        "Floor: {w} OS threads do the same {HOGS} x {iters} rounds of work (no runtime), each with \
         its own POSIX timer (timer_create, SIGEV_THREAD_ID) firing at the quantum into an empty \
         handler; CPU overhead against the same threads without a timer. kvant: CPU overhead of \
         the quantum against a cooperative runtime. Each of {reps} repetitions runs, per quantum, \
         kvant cooperative, kvant at the quantum, the floor without and with its timers, back to \
         back; overheads are paired within a repetition, then the median (and quartiles) taken \
         over repetitions. It is what any timer-signal preemption costs here at least. The \
         thread-CPU-clock timer fires on the kernel tick (4 ms at HZ=250) whatever interval is \
         asked, which is why it costs almost nothing; it also never fires for an idle or blocked \
         thread. Goal: kvant <= 1.25x the floor at 1 ms."
    ));
    f.print();
}
