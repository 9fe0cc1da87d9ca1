//! (i) Go, in the same run: spawn + complete, yield ping-pong, sleeper
//! lateness beside 4 hogs on one P, and 4 hogs of fixed work, each run by
//! `benches/compare/go/main.go` (built once with the installed `go`) and by
//! kvant right here, with ratios. Skipped, with a note, without a `go`
//! toolchain (`apt-get install golang-go`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::util::{Mode, Table, burn, calibrate_burn, fmt_dur, median};

/// Build the Go program; `None` (and why) if there is no toolchain.
fn build() -> Result<PathBuf, String> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/compare/go/main.go");
    let out = std::env::temp_dir().join(format!("kvant-go-bench-{}", std::process::id()));
    let cache = std::env::temp_dir().join("kvant-go-cache");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(&src)
        .env("GOCACHE", &cache)
        .status()
        .map_err(|e| {
            format!("no `go` toolchain ({e}); `apt-get install golang-go` adds Go 1.19")
        })?;
    if !status.success() {
        return Err(format!("`go build` failed ({status})"));
    }
    Ok(out)
}

/// Run one workload with `GOMAXPROCS=procs`; its `key value` lines.
fn go(bin: &PathBuf, procs: usize, args: &[String]) -> HashMap<String, f64> {
    let out = Command::new(bin)
        .args(args)
        .env("GOMAXPROCS", procs.to_string())
        .output()
        .expect("run the Go benchmark");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn kvant_spawn(w: usize, n: u64) -> f64 {
    let rt = kvant::Runtime::builder().workers(w).build().expect("kvant");
    rt.block_on(move || {
        // Warm the stack pool, as the long-lived runtime of (a) is.
        let hs: Vec<_> = (0..10_000).map(|_| kvant::spawn(|| ())).collect();
        for h in hs {
            h.join().expect("task");
        }
        let t = Instant::now();
        let mut done = 0;
        while done < n {
            let batch = (n - done).min(10_000);
            let hs: Vec<_> = (0..batch).map(|_| kvant::spawn(|| ())).collect();
            for h in hs {
                h.join().expect("task");
            }
            done += batch;
        }
        t.elapsed().as_nanos() as f64 / n as f64
    })
}

fn kvant_yield(n: u64) -> f64 {
    let rt = kvant::Runtime::builder().workers(1).build().expect("kvant");
    let t = Instant::now();
    let hs: Vec<_> = (0..2)
        .map(|_| {
            rt.spawn(move || {
                for _ in 0..n / 2 {
                    kvant::yield_now();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().expect("task");
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

/// p50, p99 of a 1 ms sleeper's lateness beside 4 hogs on one worker.
fn kvant_sleeper(run_for: Duration, step: u64) -> (f64, f64) {
    let rt = kvant::Runtime::builder().workers(1).build().expect("kvant");
    let end = Instant::now() + run_for;
    let hogs: Vec<_> = (0..4)
        .map(|_| {
            rt.spawn(move || {
                let mut x = 0;
                while Instant::now() < end {
                    x ^= burn(step);
                }
                x
            })
        })
        .collect();
    let mut late = rt
        .spawn(move || {
            let mut v = Vec::new();
            while Instant::now() < end {
                let t = Instant::now();
                kvant::sleep(Duration::from_millis(1));
                v.push(t.elapsed().saturating_sub(Duration::from_millis(1)));
            }
            v
        })
        .join()
        .expect("sleeper");
    for h in hogs {
        h.join().expect("hog");
    }
    late.sort();
    let p = |q: f64| late[((late.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    (p(0.5), p(0.99))
}

fn kvant_hogs(w: usize, iters: u64) -> f64 {
    let rt = kvant::Runtime::builder().workers(w).build().expect("kvant");
    rt.block_on(|| ());
    let t = Instant::now();
    let hs: Vec<_> = (0..4).map(|_| rt.spawn(move || burn(iters))).collect();
    for h in hs {
        h.join().expect("hog");
    }
    t.elapsed().as_secs_f64() * 1e3
}

pub fn run(mode: &Mode) {
    let bin = match build() {
        Ok(b) => b,
        Err(why) => {
            println!("\n### (i) Go: skipped: {why}\n");
            return;
        }
    };
    let w = mode.workers;
    let reps = mode.reps();
    let n_spawn = mode.pick(20_000u64, 200_000);
    let n_yield = mode.pick(200_000u64, 2_000_000);
    let run_for = Duration::from_millis(mode.pick(500, 2000));
    let step = calibrate_burn(Duration::from_micros(20));
    let iters = calibrate_burn(Duration::from_millis(mode.pick(50, 250)));
    let s = |v: u64| v.to_string();
    let (mut gs, mut ks, mut gy, mut ky, mut gh, mut kh) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut g50, mut g99, mut k50, mut k99) = (vec![], vec![], vec![], vec![]);
    for _ in 0..reps {
        gs.push(go(&bin, w, &["spawn".into(), s(n_spawn)])["ns_per_task"]);
        ks.push(kvant_spawn(w, n_spawn));
        gy.push(go(&bin, 1, &["yield".into(), s(n_yield)])["ns_per_yield"]);
        ky.push(kvant_yield(n_yield));
        gh.push(go(&bin, w, &["hogs".into(), s(iters)])["wall_ms"]);
        kh.push(kvant_hogs(w, iters));
    }
    // Lateness runs are long: one each.
    let g = go(
        &bin,
        1,
        &["sleeper".into(), s(run_for.as_millis() as u64), s(step)],
    );
    g50.push(g["p50_us"]);
    g99.push(g["p99_us"]);
    let (a, b) = kvant_sleeper(run_for, step);
    k50.push(a);
    k99.push(b);
    let _ = std::fs::remove_file(&bin);
    let mut t = Table::new(
        "(i) Go 1.19 and kvant, same workloads, same run",
        &["workload", "Go", "kvant", "Go / kvant"],
    );
    let mut row = |name: &str, unit: &str, g: f64, k: f64| {
        t.row(vec![
            name.to_string(),
            format!("{g:.1} {unit}"),
            format!("{k:.1} {unit}"),
            format!("{:.2}x", g / k),
        ]);
    };
    row(
        &format!("spawn + complete inside ({w} P / workers, batches of 10k)"),
        "ns",
        median(&gs),
        median(&ks),
    );
    row(
        "yield ping-pong, 2 tasks, 1 P / worker (Gosched / yield_now)",
        "ns",
        median(&gy),
        median(&ky),
    );
    row(
        "sleeper lateness p50 beside 4 hogs, 1 P / worker",
        "µs",
        median(&g50),
        median(&k50),
    );
    row(
        "sleeper lateness p99 beside 4 hogs, 1 P / worker",
        "µs",
        median(&g99),
        median(&k99),
    );
    row(
        &format!(
            "4 hogs x {} of work, {w} P / workers (wall)",
            fmt_dur(Duration::from_millis(mode.pick(50, 250)))
        ),
        "ms",
        median(&gh),
        median(&kh),
    );
    t.note(format!(
        "Go: benches/compare/go/main.go, built with the installed toolchain, GOMAXPROCS as shown, \
         preemption on (Go's default, 10 ms); kvant: defaults (10 ms quantum, wake-up preemption \
         after {:?}). Median of {reps} runs (lateness: one {} run each). A ratio above 1 means \
         kvant is faster.",
        kvant::DEFAULT_MIN_SLICE,
        fmt_dur(run_for)
    ));
    t.print();
}
