//! What the monitor thread costs while nothing blocks: its own CPU time
//! (from `/proc/self/task/*/schedstat`) beside 4 CPU-bound tasks on 2
//! workers for one second, by `blocking_threshold`, cooperative (the tasks
//! yield) and preemptive (10 ms quantum). `cargo bench --bench monitor`.
//! The default threshold (2 ms) was chosen from these figures (BENCHMARKS.md).

use std::time::{Duration, Instant};
fn monitor_cpu_ns() -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir("/proc/self/task").unwrap() {
        let p = e.unwrap().path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        if comm.trim().ends_with("monitor") {
            let s = std::fs::read_to_string(p.join("schedstat")).unwrap();
            total += s.split_whitespace().next().unwrap().parse::<u64>().unwrap();
        }
    }
    total
}
fn main() {
    println!(
        "| quantum | blocking_threshold | monitor CPU (share of one core) | signals, preemptions, deferrals |"
    );
    println!("|:--|--:|--:|--:|");
    for q in [None, Some(Duration::from_millis(10))] {
        for t in [1u64, 2, 5, 10] {
            let rt = kvant::Runtime::builder()
                .workers(2)
                .quantum(q)
                .blocking_threshold(Duration::from_millis(t))
                .build()
                .unwrap();
            rt.block_on(|| ());
            let c0 = monitor_cpu_ns();
            let t0 = Instant::now();
            let until = t0 + Duration::from_millis(1000);
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    rt.spawn(move || {
                        let mut n = 0u64;
                        while Instant::now() < until {
                            for _ in 0..200 {
                                n = n.wrapping_mul(31).wrapping_add(std::hint::black_box(1));
                            }
                            if q.is_none() {
                                kvant::yield_now();
                            }
                        }
                        n
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            let el = t0.elapsed();
            let c = monitor_cpu_ns() - c0;
            let m = rt.metrics().total();
            println!(
                "| {q:?} | {t} ms | {:.2}% ({:.1} ms in {:.2} s) | {}, {}, {} |",
                100.0 * c as f64 / el.as_nanos() as f64,
                c as f64 / 1e6,
                el.as_secs_f64(),
                m.signals,
                m.preemptions,
                m.deferrals
            );
        }
    }
}
