//! kvant side by side with its peers: `cargo bench --bench compare`.
//!
//! Every workload runs on kvant and on the peers (std threads, rayon, tokio,
//! may, raw corosensei) in this one process, under the same worker count, and
//! prints a markdown table of absolute numbers and `peer/kvant` ratios. Nothing
//! is hard-coded: each printed number was measured in this run.
//! `KVANT_BENCH_QUICK=1` shrinks every size (under a minute on 2 cores).
//!
//! Runs that need a fresh process (may's global scheduler with one worker,
//! memory per parked task) re-execute this binary with `KVANT_BENCH_CHILD`
//! set; see [`child`].

mod compare {
    pub mod blocking;
    pub mod chunks;
    pub mod fib;
    pub mod floor;
    pub mod go_peer;
    pub mod latency;
    pub mod memory;
    pub mod preempt;
    pub mod profile;
    pub mod spawn;
    pub mod util;
    pub mod yields;
}

use compare::util::{Mode, machine_info};
use compare::{
    blocking, chunks, fib, go_peer, latency, memory, preempt, profile, spawn, util, yields,
};

fn main() {
    let mode = Mode::from_env();
    if let Ok(job) = std::env::var("KVANT_BENCH_CHILD") {
        child(&job, &mode);
        return;
    }
    // may's scheduler is global and reads its configuration once.
    may::config().set_workers(mode.workers);

    let only = selected();
    println!("# kvant comparison benchmarks\n");
    for line in machine_info(&mode) {
        println!("- {line}");
    }
    println!(
        "- every time is the median of {} repetitions after one warm-up (min in parentheses where shown)",
        mode.reps()
    );
    let started = std::time::Instant::now();
    let run = |name: &str, f: &dyn Fn(&Mode)| {
        if only.as_ref().is_none_or(|o| o.iter().any(|x| x == name)) {
            let t = std::time::Instant::now();
            let cpu = util::CpuUse::now();
            // One workload failing (a peer panicking under a kernel limit)
            // must not cost the tables of the others.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mode))).is_err() {
                println!("\n### {name}: FAILED (panic, see stderr); continuing\n");
            }
            println!(
                "_Background load while this ran: other processes kept {:.2} of the machine's \
                 CPUs busy on average._",
                cpu.others_since()
            );
            eprintln!("[compare] {name} took {:.1} s", t.elapsed().as_secs_f64());
        }
    };
    run("spawn", &spawn::run);
    run("yield", &yields::run);
    run("fib", &fib::run);
    run("chunks", &chunks::run);
    run("latency", &latency::run);
    run("preempt", &preempt::run);
    run("blocking", &blocking::run);
    run("go", &go_peer::run);
    run("memory", &memory::run);
    println!("\nTotal run time: {:.1} s", started.elapsed().as_secs_f64());
}

/// Workloads named in `KVANT_BENCH_ONLY` (comma-separated), if set.
fn selected() -> Option<Vec<String>> {
    let v = std::env::var("KVANT_BENCH_ONLY").ok()?;
    Some(v.split(',').map(|s| s.trim().to_string()).collect())
}

/// A child run: `job` names the workload, arguments follow `--`. Results are
/// printed as `RESULT key=value ...` lines for the parent to parse.
fn child(job: &str, mode: &Mode) {
    let args: Vec<String> = std::env::args().skip_while(|a| a != "--").skip(1).collect();
    match job {
        "may-yield" => yields::may_child(&args),
        "memory" => memory::child(&args, mode),
        "profile" => profile::child(&args, mode),
        other => {
            eprintln!("unknown child job {other:?}");
            std::process::exit(2);
        }
    }
}
