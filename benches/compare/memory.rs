//! (g) Memory per parked task: spawn N tasks that each park in a long sleep
//! and read the process's resident set before and after. Each measurement
//! runs in a fresh child process so that allocator state left by earlier
//! runs does not blur the numbers.
//!
//! kvant runs every size at the kernel's default `vm.max_map_count` (65530),
//! as any user's program does: its stacks are carved 64 to a mapping with
//! guard markers (Linux 6.13+; see src/task/stack.rs), and the table shows
//! the mappings per 1,000 tasks. may's stacks are one mmap plus a guard page
//! each (two mappings), which caps it at ~32k tasks: its rows run with the
//! limit raised when this runs as root (restored at the end); tokio has no
//! stacks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::util::{self, Mode, Table, fmt_n, meminfo_kib, status_kib};

const MAP_COUNT: &str = "/proc/sys/vm/max_map_count";
const STACK: usize = 16 * 1024;
const PARK_FOR: Duration = Duration::from_secs(3600);

fn read_map_count() -> Option<u64> {
    std::fs::read_to_string(MAP_COUNT).ok()?.trim().parse().ok()
}

/// Restores `vm.max_map_count` when dropped.
struct MapCountGuard {
    original: u64,
    raised: bool,
}

impl MapCountGuard {
    fn raise_to(&mut self, v: u64) -> bool {
        if v <= read_map_count().unwrap_or(0) {
            return true;
        }
        let ok = std::fs::write(MAP_COUNT, v.to_string()).is_ok();
        self.raised |= ok;
        ok
    }
}

impl Drop for MapCountGuard {
    fn drop(&mut self) {
        if self.raised {
            let _ = std::fs::write(MAP_COUNT, self.original.to_string());
        }
    }
}

struct Row {
    runtime: &'static str,
    n: u64,
    limit: u64,
    out: util::ChildOutput,
}

pub fn run(mode: &Mode) {
    let sizes: [u64; 2] = if mode.quick {
        [10_000, 100_000]
    } else {
        [100_000, 1_000_000]
    };
    let limit = Duration::from_secs(mode.pick(60, 300));
    let Some(original) = read_map_count() else {
        println!("\n### (g) memory per parked task\n\nskipped: cannot read {MAP_COUNT}");
        return;
    };
    let mut guard = MapCountGuard {
        original,
        raised: false,
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut notes = Vec::new();
    let child = |rt: &'static str, n: u64| {
        util::run_child("memory", &[rt.to_string(), n.to_string()], limit)
    };

    // kvant at the default limit, every size.
    for &n in &sizes {
        rows.push(Row {
            runtime: "kvant",
            n,
            limit: original,
            out: child("kvant", n),
        });
    }
    let want = 2 * sizes[1] + 200_000;
    if want > original {
        if guard.raise_to(want) {
            notes.push(format!(
                "vm.max_map_count was raised from {original} to {want} for the rows marked so \
                 (running as root; may's rows need it) and restored to {original} at the end."
            ));
        } else {
            notes.push(format!(
                "vm.max_map_count is {original} and could not be raised (not root?): may's rows \
                 beyond ~{} tasks report stack failures.",
                fmt_n(original / 2)
            ));
        }
    }
    let now_limit = read_map_count().unwrap_or(original);
    for &n in &sizes {
        for rt in ["tokio", "may"] {
            // Skip a size that would not fit in memory, judging from the smaller run.
            let prev = rows
                .iter()
                .rev()
                .find(|r| r.runtime == rt && r.out.error.is_none() && r.limit == now_limit)
                .and_then(|r| Some(r.out.num("rss_kib")? / r.n as f64));
            let per_task_kib = prev.unwrap_or(if rt == "tokio" { 2.0 } else { 24.0 });
            let need_kib = per_task_kib * n as f64 * 1.5;
            let avail = meminfo_kib("MemAvailable") as f64;
            if need_kib > 0.7 * avail {
                notes.push(format!(
                    "{rt} with {} tasks skipped: would need ~{:.1} GiB, {:.1} GiB available.",
                    fmt_n(n),
                    need_kib / 1048576.0,
                    avail / 1048576.0
                ));
                continue;
            }
            rows.push(Row {
                runtime: rt,
                n,
                limit: now_limit,
                out: child(rt, n),
            });
        }
    }
    drop(guard);

    let mut t = Table::new(
        "(g) memory per parked task (16 KiB stacks where the runtime has stacks)",
        &[
            "runtime",
            "tasks",
            "max_map_count",
            "parked",
            "failed",
            "RSS growth",
            "RSS/task",
            "page tables/task",
            "mappings/1,000 tasks",
            "kernel slab/task (approx)",
            "spawn time/task",
            "notes",
        ],
    );
    for r in &rows {
        let o = &r.out;
        // Per parked task: tasks that failed to start hold (almost) nothing.
        let parked = o.num("parked").unwrap_or(r.n as f64).max(1.0);
        let per = |k: &str| {
            o.num(k)
                .map_or("-".into(), |v| format!("{:.2} KiB", v / parked))
        };
        t.row(vec![
            r.runtime.into(),
            fmt_n(r.n),
            fmt_n(r.limit),
            o.num("parked").map_or("-".into(), |v| fmt_n(v as u64)),
            o.num("failed").map_or("-".into(), |v| fmt_n(v as u64)),
            o.num("rss_kib")
                .map_or("-".into(), |v| format!("{:.1} MiB", v / 1024.0)),
            per("rss_kib"),
            per("pte_kib"),
            o.num("maps")
                .map_or("-".into(), |v| format!("{:.1}", v * 1000.0 / parked)),
            per("slab_kib"),
            o.num("spawn_ns")
                .map_or("-".into(), |v| format!("{:.0} ns", v / r.n as f64)),
            [
                o.error.clone(),
                o.get("note")
                    .filter(|s| *s != "-")
                    .map(|s| s.replace('_', " ")),
                (o.get("settled") == Some("false")).then(|| "did not settle in 240 s".to_string()),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; "),
        ]);
    }
    t.note(
        "Each row is a fresh child process. Tasks are spawned from outside, each bumps a counter \
         and parks in a 1-hour sleep (kvant::sleep, tokio::time::sleep, may::coroutine::sleep); \
         join handles are dropped. RSS growth = VmRSS after every task is parked minus VmRSS after \
         the runtime started, divided by the number of parked tasks. Page tables = VmPTE growth. \
         Mappings = growth of the lines of /proc/self/maps (the kernel's VMAs, which \
         vm.max_map_count limits). \
         Kernel slab = system-wide Slab growth from /proc/meminfo (VMA structs etc.; other processes \
         add noise): this memory is not in RSS. kvant: stack_size(16 KiB) + 4 KiB guard, default \
         workers and quantum; may: set_stack_size(16 KiB); tokio: no stacks. `parked` + `failed` = \
         tasks; failed tasks ended with an error (no stack: mmap/mprotect refused)."
            .to_string(),
    );
    for n in notes {
        t.note(n);
    }
    t.print();
}

/// Wait until `parked` stops moving and `done(parked)` holds, or a deadline.
fn settle(parked: &AtomicUsize, done: impl Fn(usize) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(240);
    while Instant::now() < deadline {
        if done(parked.load(Ordering::Acquire)) {
            // Let the last tasks finish switching out.
            std::thread::sleep(Duration::from_millis(200));
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Child process: args are the runtime name and the number of tasks.
pub fn child(args: &[String], mode: &Mode) {
    let rt_name = args.first().map_or("kvant", String::as_str);
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let parked = Arc::new(AtomicUsize::new(0));
    let maps =
        || std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count() as i64);
    let before = || {
        (
            status_kib("VmRSS"),
            status_kib("VmPTE"),
            meminfo_kib("Slab"),
            maps(),
        )
    };
    let (rss0, pte0, slab0, maps0, spawn, settled, failed, note);
    match rt_name {
        "kvant" => {
            let rt = kvant::Runtime::builder()
                .workers(mode.workers)
                .stack_size(STACK)
                .build()
                .expect("kvant runtime");
            rt.block_on(|| ());
            (rss0, pte0, slab0, maps0) = before();
            let t = Instant::now();
            for _ in 0..n {
                let p = parked.clone();
                drop(rt.spawn(move || {
                    p.fetch_add(1, Ordering::AcqRel);
                    kvant::sleep(PARK_FOR);
                }));
            }
            spawn = t.elapsed();
            // Done when every task still alive is parked (failed ones retire).
            settled = settle(&parked, |p| p as u64 >= rt.metrics().live_tasks);
            let m = rt.metrics();
            failed = n as u64 - m.live_tasks;
            note = format!("{}_stacks_mapped", m.stacks_mapped);
            std::mem::forget(rt); // exit without cancelling a million tasks
        }
        "tokio" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(mode.workers)
                .enable_time()
                .build()
                .expect("tokio runtime");
            rt.block_on(async {});
            (rss0, pte0, slab0, maps0) = before();
            let t = Instant::now();
            for _ in 0..n {
                let p = parked.clone();
                drop(rt.spawn(async move {
                    p.fetch_add(1, Ordering::AcqRel);
                    tokio::time::sleep(PARK_FOR).await;
                }));
            }
            spawn = t.elapsed();
            settled = settle(&parked, |p| p >= n);
            failed = 0;
            note = String::new();
            std::mem::forget(rt);
        }
        "may" => {
            may::config()
                .set_workers(mode.workers)
                .set_stack_size(STACK / std::mem::size_of::<usize>());
            may::go!(|| ()).join().expect("warm-up coroutine");
            (rss0, pte0, slab0, maps0) = before();
            let t = Instant::now();
            for _ in 0..n {
                let p = parked.clone();
                drop(may::go!(move || {
                    p.fetch_add(1, Ordering::AcqRel);
                    may::coroutine::sleep(PARK_FOR);
                }));
            }
            spawn = t.elapsed();
            settled = settle(&parked, |p| p >= n);
            failed = (n - parked.load(Ordering::Acquire)) as u64;
            note = String::new();
        }
        other => {
            eprintln!("unknown runtime {other:?}");
            std::process::exit(2);
        }
    }
    let (rss1, pte1, slab1, maps1) = before();
    println!(
        "RESULT parked={} failed={failed} rss_kib={} pte_kib={} slab_kib={} maps={} spawn_ns={} settled={settled} note={}",
        parked.load(Ordering::Acquire),
        rss1.saturating_sub(rss0),
        pte1.saturating_sub(pte0),
        slab1 as i64 - slab0 as i64,
        maps1 - maps0,
        spawn.as_nanos(),
        if note.is_empty() {
            "-".to_string()
        } else {
            note
        },
    );
    // Exit at once: tearing down a million parked tasks is not what we measure.
    std::process::exit(0);
}
