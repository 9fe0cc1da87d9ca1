//! Shared helpers of the comparison bench: run sizes, timing statistics,
//! tables, machine facts read from /proc, CPU pinning and child processes.

use std::fmt::Write as _;
use std::hint::black_box;
use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Run sizes: `KVANT_BENCH_QUICK=1` shrinks every workload.
#[derive(Clone, Copy, Debug)]
pub struct Mode {
    /// Quick mode (CI smoke run) rather than the full run.
    pub quick: bool,
    /// Worker threads given to every pool (available parallelism).
    pub workers: usize,
}

impl Mode {
    /// Read the mode from the environment.
    pub fn from_env() -> Mode {
        let quick = std::env::var("KVANT_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        Mode { quick, workers }
    }

    /// `quick` in quick mode, `full` otherwise.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }

    /// Repetitions of each timed run (after one discarded warm-up).
    pub fn reps(&self) -> usize {
        self.pick(3, 7)
    }
}

/// Median and minimum of a set of timed repetitions.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    /// Median duration.
    pub median: Duration,
    /// Fastest repetition.
    pub min: Duration,
}

/// Run `f` once to warm up, then `reps` times; `f` returns the time it measured.
pub fn measure(reps: usize, mut f: impl FnMut() -> Duration) -> Stats {
    black_box(f());
    stats_of((0..reps).map(|_| f()).collect())
}

/// [`measure`] for variants compared with each other, their repetitions
/// interleaved (a, b, c, a, b, c, ...) so that all see the same host: on
/// this VM a run of ~20 ns switches can take 1.4x longer for a few hundred
/// ms, whatever the variant, and variants measured one after the other can
/// land on either side of such a stretch.
pub fn measure_interleaved(
    reps: usize,
    variants: &mut [&mut dyn FnMut() -> Duration],
) -> Vec<Stats> {
    for f in variants.iter_mut() {
        black_box(f());
    }
    let mut times = vec![Vec::with_capacity(reps); variants.len()];
    for _ in 0..reps {
        for (f, v) in variants.iter_mut().zip(&mut times) {
            v.push(f());
        }
    }
    times.into_iter().map(stats_of).collect()
}

fn stats_of(mut v: Vec<Duration>) -> Stats {
    v.sort();
    Stats {
        median: v[v.len() / 2],
        min: v[0],
    }
}

/// Like [`measure`], but a panic (a peer failing under load) becomes an
/// error message for the table instead of ending the whole run.
pub fn try_measure(reps: usize, f: impl FnMut() -> Duration) -> Result<Stats, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| measure(reps, f))).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".into());
        format!("failed: {msg}")
    })
}

/// Time one call of `f`.
pub fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// Nanoseconds per operation.
pub fn per_op(d: Duration, ops: u64) -> f64 {
    d.as_nanos() as f64 / ops.max(1) as f64
}

/// The `q`-quantile (0..=1) of `v`, which need not be sorted (a sorted copy
/// is taken): the element at the rounded rank `q * (len - 1)`.
pub fn quantile<T: Copy + PartialOrd>(v: &[T], q: f64) -> T {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// The median of `v` (the upper one for an even length).
pub fn median<T: Copy + PartialOrd>(v: &[T]) -> T {
    quantile(v, 0.5)
}

/// The `p`-th percentile (0..=100) of sorted `v`.
pub fn percentile(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

/// `peer / kvant` as `x1.23` (above 1: kvant is faster / smaller).
pub fn ratio(peer: f64, kvant: f64) -> String {
    if kvant <= 0.0 || !peer.is_finite() || !kvant.is_finite() {
        return "-".into();
    }
    format!("x{:.2}", peer / kvant)
}

/// A duration in a readable unit.
pub fn fmt_dur(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1_000_000_000.0 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// A plain number with thousands separators.
pub fn fmt_n(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A markdown table printed once complete.
pub struct Table {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    /// A table with a title and column names.
    pub fn new(title: &str, header: &[&str]) -> Table {
        Table {
            title: title.into(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Add a row (one cell per column).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Add a line printed under the table.
    pub fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }

    /// Print as a markdown table.
    pub fn print(&self) {
        let n = self.header.len();
        let mut w: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (i, wi) in w.iter().enumerate() {
                let c = cells.get(i).map_or("", |c| c.as_str());
                let pad = wi.saturating_sub(c.chars().count());
                if i == 0 {
                    let _ = write!(s, " {c}{} |", " ".repeat(pad));
                } else {
                    let _ = write!(s, " {}{c} |", " ".repeat(pad));
                }
            }
            s
        };
        let mut out = format!("\n### {}\n\n{}\n|", self.title, line(&self.header));
        for (i, wi) in w.iter().enumerate() {
            out.push_str(if i == 0 { ":" } else { " " });
            out.push_str(&"-".repeat(*wi));
            out.push_str(if i == 0 { " |" } else { ":|" });
        }
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r));
            out.push('\n');
        }
        for note in &self.notes {
            out.push_str(&format!("\n{note}\n"));
        }
        println!("{out}");
    }
}

/// A value of `/proc/self/status` in KiB (`VmRSS`, `VmPTE`, ...).
pub fn status_kib(key: &str) -> u64 {
    proc_kib("/proc/self/status", key)
}

/// A value of `/proc/meminfo` in KiB (`MemAvailable`, `Slab`, ...).
pub fn meminfo_kib(key: &str) -> u64 {
    proc_kib("/proc/meminfo", key)
}

fn proc_kib(path: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// Lines describing the machine and the run.
pub fn machine_info(mode: &Mode) -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
        .map_or("unknown".to_string(), |s| s.trim().to_string());
    let logical = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    vec![
        format!("date (UTC): {}", utc_now()),
        format!("CPU: {model}"),
        format!(
            "cores: {} available to this process ({logical} online); workers per pool: {}",
            mode.workers, mode.workers
        ),
        format!("memory: {} MiB total", meminfo_kib("MemTotal") / 1024),
        format!("kernel: {}", kernel.trim()),
        format!(
            "load average at start: {}",
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        ),
        format!(
            "mode: {} (KVANT_BENCH_QUICK={})",
            if mode.quick { "quick" } else { "full" },
            if mode.quick { "1" } else { "unset" }
        ),
    ]
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS` (no date crate needed).
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, and sched_getaffinity
    // writes at most size_of::<cpu_set_t>() bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pin the calling thread to one CPU; false if the kernel refused.
pub fn pin_current_thread(cpu: usize) -> bool {
    // SAFETY: as above; sched_setaffinity(0, ..) only affects the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Ask for exact timer expiry on this thread (like kvant's timer thread does).
pub fn precise_timers() {
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// CPU time consumed by the whole process so far.
pub fn process_cpu_time() -> Duration {
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts);
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
}

/// Deterministic xorshift64* generator (fixed seeds make runs comparable).
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// Next pseudo-random number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The busiest worker's share of the workers' busy time between two
/// metrics snapshots (0.5 is an even split on 2 workers).
pub fn busiest_share(before: &kvant::Metrics, after: &kvant::Metrics) -> f64 {
    let busy: Vec<f64> = after
        .workers
        .iter()
        .zip(&before.workers)
        .map(|(a, b)| a.busy_time.saturating_sub(b.busy_time).as_secs_f64())
        .collect();
    let total: f64 = busy.iter().sum();
    let max = busy.iter().copied().fold(0.0, f64::max);
    if total > 0.0 { max / total } else { 0.0 }
}

/// An echo task on `rt`: what comes in on the first channel goes back, plus
/// one, on the second (both `bounded(1)`); it ends when the sender drops.
pub fn kvant_echo(
    rt: &kvant::Runtime,
) -> (
    kvant::channel::Sender<u64>,
    kvant::channel::Receiver<u64>,
    kvant::JoinHandle<()>,
) {
    let (to_echo, echo_in) = kvant::channel::bounded::<u64>(1);
    let (echo_out, back) = kvant::channel::bounded::<u64>(1);
    let echo = rt.spawn(move || {
        for m in echo_in.iter() {
            if echo_out.send(m + 1).is_err() {
                break;
            }
        }
    });
    (to_echo, back, echo)
}

/// CPU-bound work: `iters` rounds of an LCG mixer the compiler cannot fold.
#[inline(never)]
pub fn burn(iters: u64) -> u64 {
    let mut x = black_box(0x1234_5678_9abc_def0u64);
    for _ in 0..black_box(iters) {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        x ^= x >> 29;
    }
    black_box(x)
}

/// Iterations of [`burn`] that take about `target` on this machine.
pub fn calibrate_burn(target: Duration) -> u64 {
    let probe = 2_000_000u64;
    let best = (0..5)
        .map(|_| {
            time(|| {
                black_box(burn(probe));
            })
        })
        .min()
        .unwrap_or(Duration::from_millis(1));
    ((target.as_nanos() as f64 / best.as_nanos().max(1) as f64) * probe as f64).max(1.0) as u64
}

/// Output of a child run of this bench binary (see `main`'s child dispatch).
pub struct ChildOutput {
    /// `key=value` pairs from lines starting with `RESULT `.
    pub values: Vec<(String, String)>,
    /// Why the child failed, if it did (exit status, timeout, stderr tail).
    pub error: Option<String>,
}

impl ChildOutput {
    /// The value printed for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value printed for `key`, as a number.
    pub fn num(&self, key: &str) -> Option<f64> {
        self.get(key)?.parse().ok()
    }
}

/// Run this executable again as child job `job` with `args`, killing it after `limit`.
pub fn run_child(job: &str, args: &[String], limit: Duration) -> ChildOutput {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            return ChildOutput {
                values: vec![],
                error: Some(format!("current_exe: {e}")),
            };
        }
    };
    let mut child = match Command::new(exe)
        .env("KVANT_BENCH_CHILD", job)
        .arg("--")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return ChildOutput {
                values: vec![],
                error: Some(format!("spawn: {e}")),
            };
        }
    };
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    let values = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect();
    let tail: String = {
        let lines: Vec<&str> = stderr.lines().rev().take(4).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
    };
    let error = match status {
        None => Some(format!("killed after {} s", limit.as_secs())),
        Some(s) if !s.success() => Some(format!("child exited with {s}: {tail}")),
        Some(_) => None,
    };
    ChildOutput { values, error }
}

/// CPU ticks (USER_HZ) used by the whole machine and by this process (with
/// its waited-for children), to tell how much other load shared the CPUs.
#[derive(Clone, Copy, Debug)]
pub struct CpuUse {
    machine_busy: u64,
    ours: u64,
    at: Instant,
}

impl CpuUse {
    /// A snapshot now.
    pub fn now() -> CpuUse {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let f: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal
        let get = |i: usize| f.get(i).copied().unwrap_or(0);
        let machine_busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
        let me = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the parenthesised command name; utime is field 14.
        let rest = me.rsplit_once(')').map_or("", |(_, r)| r);
        let g: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(4)
            .filter_map(|x| x.parse().ok())
            .collect();
        CpuUse {
            machine_busy,
            ours: g.iter().sum(),
            at: Instant::now(),
        }
    }

    /// Average number of CPUs that other processes kept busy since `self`.
    pub fn others_since(&self) -> f64 {
        let now = CpuUse::now();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let other = now.machine_busy.saturating_sub(self.machine_busy) as f64
            - now.ours.saturating_sub(self.ours) as f64;
        (other.max(0.0) / hz) / self.at.elapsed().as_secs_f64().max(1e-3)
    }
}
