//! (f) What preemption costs: the same fixed CPU-bound work (4 hogs with a
//! fixed iteration count) on a cooperative runtime and on preemptive ones
//! with shrinking quanta. Configurations are interleaved run by run so that
//! background load on a shared machine hits all of them alike.

use std::time::{Duration, Instant};

use super::util::{self, Mode, Table, burn, calibrate_burn, fmt_dur};

const HOGS: usize = 4;

#[derive(Default)]
struct Acc {
    wall: Vec<Duration>,
    cpu: Vec<Duration>,
    preemptions: u64,
    signals: u64,
    deferrals: u64,
    runs: u64,
}

fn one_run(w: usize, quantum: Option<Duration>, iters: u64, acc: &mut Acc) {
    let rt = kvant::Runtime::builder()
        .workers(w)
        .quantum(quantum)
        .build()
        .expect("kvant runtime");
    rt.block_on(|| ()); // workers are up and the monitor has started
    let cpu0 = util::process_cpu_time();
    let t0 = Instant::now();
    let hs: Vec<_> = (0..HOGS).map(|_| rt.spawn(move || burn(iters))).collect();
    for h in hs {
        h.join().expect("hog");
    }
    acc.wall.push(t0.elapsed());
    acc.cpu.push(util::process_cpu_time().saturating_sub(cpu0));
    let m = rt.metrics().total();
    acc.preemptions += m.preemptions;
    acc.signals += m.signals;
    acc.deferrals += m.deferrals;
    acc.runs += 1;
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

pub fn run(mode: &Mode) {
    let w = mode.workers;
    let reps = mode.reps();
    let per_hog = Duration::from_millis(mode.pick(50, 250));
    let iters = calibrate_burn(per_hog);
    let configs: [Option<Duration>; 4] = [
        None,
        Some(Duration::from_millis(10)),
        Some(Duration::from_millis(1)),
        Some(Duration::from_micros(100)),
    ];
    let mut accs: Vec<Acc> = configs.iter().map(|_| Acc::default()).collect();
    // One warm-up round, discarded.
    for q in configs {
        one_run(w, q, iters, &mut Acc::default());
    }
    for _ in 0..reps {
        for (q, acc) in configs.iter().zip(accs.iter_mut()) {
            one_run(w, *q, iters, acc);
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
            "CPU time",
            "CPU overhead",
            "preemptions/run",
            "signals/run",
            "deferred/run",
        ],
    );
    for (q, a) in configs.iter().zip(&accs) {
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
        t.row(vec![
            q.map_or("None (cooperative)".into(), |q| format!("{q:?}")),
            fmt_dur(median(&a.wall)),
            format!("{:.1}%", 100.0 * (max - min) / wall),
            if q.is_none() {
                "base".into()
            } else {
                pct(wall, base_wall)
            },
            if q.is_none() {
                "base".into()
            } else {
                pct(min, base_min)
            },
            fmt_dur(median(&a.cpu)),
            if q.is_none() {
                "base".into()
            } else {
                pct(cpu, base_cpu)
            },
            format!("{}", a.preemptions / runs),
            format!("{}", a.signals / runs),
            format!("{}", a.deferrals / runs),
        ]);
    }
    t.note(format!(
        "Each hog runs {iters} LCG rounds (no yields, no allocation). Wall: spawn of the first hog \
         to join of the last, median of {reps} interleaved runs (min/min compares the fastest run \
         of each); spread = (max - min) / median of the wall times. CPU time: the whole process (workers, timer and monitor threads). Counters are \
         from rt.metrics().total(). Goals: <= 1% at 1 ms, <= 5% at 100 µs. On a shared machine, \
         differences below the run-to-run spread of the cooperative row are noise."
    ));
    t.print();
}
