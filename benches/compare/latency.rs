//! (e) Sleeper lateness beside CPU hogs: one worker runs 4 hogs and a task
//! that sleeps 1 ms in a loop; lateness = how much later than 1 ms it woke and
//! ran again. Cooperative scheduling starves it until a hog finishes;
//! preemption bounds it by about one quantum, and wake-up preemption
//! (`Builder::min_slice`, on by default) by about `min_slice` plus a
//! signal's latency.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use super::util::{self, Mode, Table, burn, calibrate_burn, fmt_dur, fmt_n, percentile};

const SLEEP: Duration = Duration::from_millis(1);
const HOGS: usize = 4;

struct Outcome {
    name: String,
    samples: Vec<Duration>,
    extra: String,
}

fn kvant_run(
    quantum: Option<Duration>,
    min_slice: Option<Duration>,
    hogs: usize,
    run_for: Duration,
    step: u64,
) -> Outcome {
    let rt = kvant::Runtime::builder()
        .workers(1)
        .quantum(quantum)
        .min_slice(min_slice)
        .build()
        .expect("kvant runtime");
    let end = Instant::now() + run_for;
    let sleeper = rt.spawn(move || {
        let mut v = Vec::with_capacity(8192);
        while Instant::now() < end {
            let t0 = Instant::now();
            kvant::sleep(SLEEP);
            v.push(t0.elapsed().saturating_sub(SLEEP));
        }
        v
    });
    let hog_handles: Vec<_> = (0..hogs)
        .map(|_| {
            rt.spawn(move || {
                let mut x = 0u64;
                let mut units = 0u64;
                while Instant::now() < end {
                    x ^= burn(step);
                    units += 1;
                }
                std::hint::black_box(x);
                units
            })
        })
        .collect();
    let mut samples = sleeper.join().expect("sleeper");
    let mut units = 0;
    for h in hog_handles {
        units += h.join().expect("hog");
    }
    let m = rt.metrics().total();
    samples.sort();
    Outcome {
        name: match (quantum, hogs, min_slice) {
            (Some(q), 0, _) => format!("kvant, quantum {q:?}, no hogs (not saturated)"),
            (None, _, _) => "kvant, quantum None (cooperative)".into(),
            (Some(q), _, Some(_)) => format!("kvant, quantum {q:?}"),
            (Some(q), _, None) => format!("kvant, quantum {q:?}, min_slice(None)"),
        },
        samples,
        extra: format!(
            "{} preemptions, {} signals, {} deferred; hogs did {} units",
            m.preemptions,
            m.signals,
            m.deferrals,
            fmt_n(units)
        ),
    }
}

fn os_run(cpu: usize, run_for: Duration, step: u64) -> Outcome {
    let start = Arc::new(Barrier::new(HOGS + 1));
    let pinned = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let end_at = Arc::new(parking_lot::Mutex::new(None::<Instant>));
    let spawn_pinned = |body: Box<dyn FnOnce(Instant) -> Vec<Duration> + Send>| {
        let (start, pinned, end_at) = (start.clone(), pinned.clone(), end_at.clone());
        std::thread::spawn(move || {
            if util::pin_current_thread(cpu) {
                pinned.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            util::precise_timers();
            start.wait();
            let end = end_at.lock().expect("end set before the barrier releases");
            body(end)
        })
    };
    *end_at.lock() = Some(Instant::now() + run_for + Duration::from_millis(5));
    let sleeper = spawn_pinned(Box::new(|end| {
        let mut v = Vec::with_capacity(8192);
        while Instant::now() < end {
            let t0 = Instant::now();
            std::thread::sleep(SLEEP);
            v.push(t0.elapsed().saturating_sub(SLEEP));
        }
        v
    }));
    let hog_handles: Vec<_> = (0..HOGS)
        .map(|_| {
            spawn_pinned(Box::new(move |end| {
                let mut x = 0u64;
                while Instant::now() < end {
                    x ^= burn(step);
                }
                std::hint::black_box(x);
                Vec::new()
            }))
        })
        .collect();
    let mut samples = sleeper.join().expect("sleeper");
    for h in hog_handles {
        h.join().expect("hog");
    }
    samples.sort();
    let ok = pinned.load(std::sync::atomic::Ordering::Relaxed);
    Outcome {
        name: format!("OS threads: {HOGS} hogs + sleeper pinned to CPU {cpu}"),
        samples,
        extra: format!("{ok}/{} threads pinned (sched_setaffinity)", HOGS + 1),
    }
}

pub fn run(mode: &Mode) {
    let run_for = Duration::from_millis(mode.pick(500, 3000));
    let step = calibrate_burn(Duration::from_micros(20));
    let cpus = util::allowed_cpus();
    let cpu = *cpus.last().unwrap_or(&0);
    let ms = |n| Some(Duration::from_millis(n));
    let min = Some(kvant::DEFAULT_MIN_SLICE);
    let outcomes = vec![
        kvant_run(ms(1), min, 0, run_for, step),
        kvant_run(None, None, HOGS, run_for, step),
        kvant_run(ms(10), min, HOGS, run_for, step),
        kvant_run(ms(10), None, HOGS, run_for, step),
        kvant_run(ms(1), min, HOGS, run_for, step),
        kvant_run(ms(1), None, HOGS, run_for, step),
        kvant_run(Some(Duration::from_micros(100)), min, HOGS, run_for, step),
        os_run(cpu, run_for, step),
    ];
    let mut t = Table::new(
        &format!(
            "(e) sleeper lateness beside {HOGS} CPU hogs on one worker ({} run each)",
            fmt_dur(run_for)
        ),
        &["scheduler", "wake-ups", "p50", "p99", "max", "notes"],
    );
    for o in &outcomes {
        t.row(vec![
            o.name.clone(),
            fmt_n(o.samples.len() as u64),
            fmt_dur(percentile(&o.samples, 50.0)),
            fmt_dur(percentile(&o.samples, 99.0)),
            fmt_dur(o.samples.last().copied().unwrap_or_default()),
            o.extra.clone(),
        ]);
    }
    t.note(format!(
        "Lateness = time from the sleep call to running again, minus the 1 ms asked for. The hogs \
         spin until the end of the run, checking the clock every ~20 µs; a cooperative worker \
         therefore cannot run the sleeper until the first hog returns (lateness ~ the run length, \
         one sample). kvant: 1 worker, its timer and monitor threads are free to use the other \
         CPUs. OS threads: all {} threads pinned to one CPU with sched_setaffinity so that they \
         compete for one CPU like the kvant tasks do; the sleeper's timer slack is set to 1 ns \
         (PR_SET_TIMERSLACK), as kvant's timer thread does. The first row has no hogs: the \
         timer path alone (goal there: p99 < 200 µs). Goal with hogs: p99 <= 1 ms at the default 10 ms \
         quantum with wake-up preemption (min_slice {:?}, the default); min_slice(None) rows show \
         the quantum alone. Hog units: ~20 µs of work each, all hogs together.",
        HOGS + 1,
        kvant::DEFAULT_MIN_SLICE,
    ));
    t.print();
}
