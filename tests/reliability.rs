//! Reliability: a task that overflows its stack ends alone (its joiner gets
//! `JoinError::is_stack_overflow`, every other task keeps running), faults
//! that are *not* a task overflow still crash the process exactly as without
//! kvant, and misuse of the API (`tests/misuse.rs`) is a typed error or a clear panic,
//! never a hang.
//!
//! Crashes are tested in a child process: the parent re-runs this test
//! binary with `--exact <child test>` and [`CHILD`] set to the scenario; the
//! child test does the fatal thing and the parent checks how it died. Without
//! [`CHILD`] the child tests return at once.
//!
//! Related misuse already covered elsewhere: `kvant::current()` /
//! `kvant::spawn` outside a runtime and `block_on` inside a task
//! (`tests/spawn_join.rs`), spawning after shutdown from a task on a stuck
//! worker (`tests/shutdown.rs`), invalid preemption signals
//! (`tests/builder.rs`). `Runtime::try_spawn` *after* `shutdown_timeout`
//! cannot be written: `shutdown_timeout(self)` consumes the runtime, and
//! `JoinHandle::join(self)` consumes the handle, so joining twice does not
//! compile either.

use std::hint::black_box;
use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kvant::{JoinError, JoinHandle, Runtime};

mod common;
use common::{HANG, join_ok, panic_message, rt as runtime, wait_for};

/// The environment variable that turns a child test on (value: scenario).
const CHILD: &str = "KVANT_RELIABILITY_CHILD";
/// Stack size of the overflowing tasks.
const SMALL_STACK: usize = 32 * 1024;

fn join_err<T: Send + 'static>(h: JoinHandle<T>) -> JoinError {
    match h.join_timeout(HANG) {
        Ok(Ok(_)) => panic!("expected the task to fail"),
        Ok(Err(e)) => e,
        Err(h) => panic!("{h:?} did not finish within {HANG:?}"),
    }
}

/// Recurse forever with a 1 KiB array in every frame (kept alive across the
/// call, so it is neither a tail call nor optimised away).
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let mut frame = [0u8; 1024];
    frame[(depth % 1024) as usize] = depth as u8;
    black_box(&mut frame);
    if black_box(depth) == u64::MAX {
        return 0; // never: keeps the compiler from calling this infinite
    }
    recurse(depth + 1).wrapping_add(u64::from(frame[(depth % 1024) as usize]))
}

/// Overflow by deep recursion.
fn deep() -> u64 {
    recurse(0)
}

/// One frame far larger than the whole stack: the compiler's stack probes
/// touch it page by page from the top, so the first fault is the guard page.
#[inline(never)]
fn huge_frame() -> u64 {
    let mut buf = [0u8; 512 * 1024];
    black_box(&mut buf);
    u64::from(buf[4096])
}

/// Spawn a 32 KiB task named `name` that runs `f` (which overflows).
fn spawn_overflow(rt: &Runtime, name: &str, f: fn() -> u64) -> JoinHandle<u64> {
    kvant::task::Builder::new()
        .name(name)
        .stack_size(SMALL_STACK)
        .spawn_on(rt, f)
        .expect("spawn")
}

fn assert_overflow(e: &JoinError, name: &str) {
    assert!(e.is_stack_overflow(), "expected a stack overflow: {e}");
    assert!(!e.is_panic() && !e.is_cancelled() && !e.is_leaked(), "{e}");
    assert_eq!(e.task_name(), Some(name));
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("'{name}'"))
            && msg.contains("overflowed its stack")
            && msg.contains(&SMALL_STACK.to_string()),
        "unclear message: {msg}"
    );
}

/// Overflow `rounds` times (one at a time and `rounds` at once), with
/// ordinary tasks running alongside; every ordinary task must complete, and
/// the metrics must add up.
fn overflow_scenario(quantum: Option<Duration>, rounds: usize) {
    let rt = runtime(2, quantum);
    let sum = Arc::new(AtomicU64::new(0));
    let spin = |i: u64| (0..20_000u64).fold(i, |a, x| black_box(a ^ x.wrapping_mul(31)));
    // A steady background of ordinary tasks.
    let background: Vec<_> = (0..8u64)
        .map(|i| {
            let s = sum.clone();
            rt.spawn(move || {
                for _ in 0..20 {
                    s.fetch_add(1, Ordering::Relaxed);
                    black_box(spin(i));
                    kvant::yield_now();
                }
            })
        })
        .collect();
    for r in 0..rounds {
        let f = if r % 2 == 0 { deep } else { huge_frame };
        assert_overflow(&join_err(spawn_overflow(&rt, "deep", f)), "deep");
        // Other tasks (including ones spawned after the overflow) still run.
        assert_eq!(join_ok(rt.spawn(move || r * 2)), r * 2);
    }
    let burst: Vec<_> = (0..rounds)
        .map(|i| spawn_overflow(&rt, &format!("deep-{i}"), deep))
        .collect();
    for (i, h) in burst.into_iter().enumerate() {
        assert_overflow(&join_err(h), &format!("deep-{i}"));
    }
    for h in background {
        join_ok(h);
    }
    assert_eq!(sum.load(Ordering::Relaxed), 8 * 20);
    // Overflowed tasks count as completed (ended), not live.
    wait_for("live_tasks == 0", || rt.metrics().live_tasks == 0);
    let m = rt.metrics();
    let t = m.total();
    let overflows = 2 * rounds as u64;
    let ordinary = 8 + rounds as u64;
    eprintln!("{quantum:?}: {t:?}, stacks_mapped={}", m.stacks_mapped);
    assert_eq!(t.spawned, ordinary + overflows);
    assert_eq!(t.completed, ordinary + overflows, "{t:?}");
    // An overflowed stack is never reused or unmapped (its frames were
    // discarded, not unwound), so it stays mapped.
    assert!(m.stacks_mapped >= overflows, "{m:?}");
    let report = rt.shutdown_timeout(Duration::from_secs(5));
    assert!(report.all_finished, "{report:?}");
}

#[test]
fn stack_overflow_ends_only_that_task_preemptive() {
    overflow_scenario(Some(Duration::from_millis(1)), 4);
}

#[test]
fn stack_overflow_ends_only_that_task_cooperative() {
    overflow_scenario(None, 4);
}

#[test]
fn stack_overflow_inside_block_on_and_nested_tasks() {
    let rt = runtime(2, Some(Duration::from_millis(1)));
    // A parent task joins an overflowing child and carries on.
    let text = rt.block_on(|| {
        let child = kvant::task::Builder::new()
            .name("child")
            .stack_size(SMALL_STACK)
            .spawn(|| recurse(0))
            .unwrap();
        let e = child.join().expect_err("the child overflows");
        assert!(e.is_stack_overflow());
        e.to_string()
    });
    assert!(text.contains("'child' overflowed its stack"), "{text}");
    // block_on of an overflowing closure panics with the reason.
    let big = Runtime::builder()
        .workers(1)
        .stack_size(SMALL_STACK)
        .build()
        .unwrap();
    let p = catch_unwind(AssertUnwindSafe(|| big.block_on(|| recurse(0))))
        .expect_err("block_on of an overflowing closure panics");
    let msg = panic_message(p);
    assert!(msg.contains("overflowed its stack"), "{msg}");
    assert_eq!(big.block_on(|| 5), 5);
}

// ---------------------------------------------------------------- children

/// Run the child test `test` with scenario `mode`; returns (status, stderr).
fn run_child(test: &str, mode: &str) -> (std::process::ExitStatus, String) {
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, mode)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the child");
    let mut err = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + HANG;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the child") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("child '{mode}' hung");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    (status, reader.join().expect("stderr reader"))
}

fn signal_of(status: std::process::ExitStatus) -> Option<i32> {
    std::os::unix::process::ExitStatusExt::signal(&status)
}

/// Not a test of its own: the crash scenarios run by the parents below.
#[test]
fn child_crash() {
    let Ok(mode) = std::env::var(CHILD) else {
        return;
    };
    let rt = runtime(2, Some(Duration::from_millis(1)));
    // A task overflow first, so the handler has been used once already.
    assert!(join_err(spawn_overflow(&rt, "deep", deep)).is_stack_overflow());
    eprintln!("child: {mode}");
    match mode.as_str() {
        "null_write_in_task" => {
            let h = rt.spawn(|| {
                // Address 16: never mapped (below mmap_min_addr), and not the
                // null pointer, which std's debug checks would catch first.
                let p = black_box(16usize) as *mut u8;
                // SAFETY: deliberately not safe: this write must fault, and
                // the process must die of it (that is what the parent checks).
                unsafe { std::ptr::write_volatile(p, 1) };
            });
            let _ = h.join_timeout(HANG);
            eprintln!("child: survived a wild write");
        }
        "thread_overflow" => {
            let t = std::thread::Builder::new()
                .name("plain".into())
                .stack_size(64 * 1024)
                .spawn(|| recurse(0))
                .unwrap();
            let _ = t.join();
            eprintln!("child: survived a thread overflow");
        }
        "near_stack_end" => near_stack_end_under_preemption(false),
        "near_stack_end_cpu" => near_stack_end_under_preemption(true),
        "no_stack" => no_stack_for_a_task(&rt),
        other => panic!("unknown child mode {other}"),
    }
}

#[test]
fn wild_write_in_a_task_still_crashes_with_sigsegv() {
    let (status, stderr) = run_child("child_crash", "null_write_in_task");
    assert_eq!(
        signal_of(status),
        Some(libc::SIGSEGV),
        "child should die of SIGSEGV, got {status}; stderr:\n{stderr}"
    );
    assert!(!stderr.contains("survived"), "{stderr}");
}

#[test]
fn plain_thread_overflow_still_aborts_like_std() {
    let (status, stderr) = run_child("child_crash", "thread_overflow");
    assert_eq!(
        signal_of(status),
        Some(libc::SIGABRT),
        "child should abort, got {status}; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("thread 'plain'") && stderr.contains("has overflowed its stack"),
        "std's message is missing:\n{stderr}"
    );
}

/// With the address space limited (`RLIMIT_AS`, process-wide, hence in a
/// child), a task whose stack cannot be mapped fails to its joiner instead
/// of hanging or crashing, and tasks that reuse pooled stacks still run.
fn no_stack_for_a_task(rt: &Runtime) {
    // Fill the worker's stack cache, then cap the address space.
    for h in (0..8).map(|i| rt.spawn(move || i)).collect::<Vec<_>>() {
        join_ok(h);
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let vm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize");
    // Headroom for whatever else the process maps meanwhile (glibc arenas of
    // 64 MiB, thread alt stacks), far below the 1 GiB stack asked for below.
    let cap = (vm_kib + 384 * 1024) * 1024;
    let lim = libc::rlimit {
        rlim_cur: cap,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid rlimit struct; it only lowers this
    // (child) process's soft address-space limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) }, 0);
    for _ in 0..3 {
        let h = kvant::task::Builder::new()
            .name("huge")
            .stack_size(kvant::MAX_STACK_SIZE)
            .spawn_on(rt, || 1)
            .unwrap();
        let e = join_err(h);
        let msg = e.to_string();
        assert!(
            msg.contains("'huge'") && msg.contains("could not get a stack"),
            "unclear message: {msg}"
        );
        assert!(!e.is_stack_overflow() && !e.is_panic(), "{e}");
        assert_eq!(join_ok(rt.spawn(|| 2)), 2);
    }
    eprintln!("child: no_stack ok");
}

#[test]
fn a_task_without_a_stack_fails_to_its_joiner() {
    let (status, stderr) = run_child("child_crash", "no_stack");
    assert!(
        status.success() && stderr.contains("child: no_stack ok"),
        "child failed: {status}; stderr:\n{stderr}"
    );
}

/// The usable range `[lo, hi)` of the stack mapping that holds `addr`
/// (from /proc/self/maps; the guard page is a separate PROT_NONE mapping).
fn mapping_of(addr: usize) -> (usize, usize) {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read maps");
    for line in maps.lines() {
        let range = line.split_whitespace().next().unwrap_or("");
        let (a, b) = range.split_once('-').expect("maps range");
        let lo = usize::from_str_radix(a, 16).unwrap();
        let hi = usize::from_str_radix(b, 16).unwrap();
        if (lo..hi).contains(&addr) {
            return (lo, hi);
        }
    }
    panic!("{addr:#x} is in no mapping");
}

/// Recurse until fewer than `margin` bytes of stack are left above `lo`,
/// then spin for `spin` there (where preemption signals arrive).
#[inline(never)]
fn descend(lo: usize, margin: usize, spin: Duration) -> u64 {
    let mut frame = [0u8; 64];
    black_box(&mut frame);
    let here = frame.as_ptr() as usize;
    if here - lo < margin {
        let end = Instant::now() + spin;
        let mut x = 0u64;
        while Instant::now() < end {
            for i in 0..1000 {
                x = black_box(x.wrapping_add(i));
            }
        }
        return x;
    }
    descend(lo, margin, spin).wrapping_add(u64::from(frame[7]))
}

/// A task that runs with only `margin` bytes of stack left while the
/// monitor keeps sending it preemption signals. The kernel pushes each
/// signal frame (several KiB with AVX-512 state) onto the task's stack.
/// Acceptable: the task finishes, or ends as a stack overflow. Not
/// acceptable: the process dies, or a later overflow is no longer caught.
/// With `cpu_clock`, the signals are the worker's own CPU-clock timer ticks
/// (`Builder::cpu_clock_quantum`), which nobody counts as they are sent.
fn near_stack_end_under_preemption(cpu_clock: bool) {
    let rt = if cpu_clock {
        Runtime::builder()
            .workers(1)
            .quantum(Some(Duration::from_micros(200)))
            .cpu_clock_quantum(true)
            .build()
            .unwrap()
    } else {
        runtime(1, Some(Duration::from_micros(200)))
    };
    // A task alone on its worker is not preempted: give it company.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let company = rt.spawn(move || {
        while !s.load(Ordering::Relaxed) {
            std::hint::spin_loop();
        }
    });
    let (mut ok, mut overflowed) = (0, 0);
    for margin in (0..=12 * 1024).step_by(256) {
        if std::env::var_os("KVANT_VERBOSE").is_some() {
            eprintln!("child: margin {margin}");
        }
        let h = kvant::task::Builder::new()
            .name(format!("margin-{margin}"))
            .stack_size(SMALL_STACK)
            .spawn_on(&rt, move || {
                let probe = 0u8;
                let (lo, _) = mapping_of(&probe as *const u8 as usize);
                descend(lo, margin, Duration::from_millis(10))
            })
            .unwrap();
        match h.join_timeout(HANG) {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(e)) if e.is_stack_overflow() => overflowed += 1,
            Ok(Err(e)) => panic!("margin {margin}: {e}"),
            Err(_) => panic!("margin {margin}: hung"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    join_ok(company);
    let t = rt.metrics().total();
    eprintln!(
        "child: near stack end: {ok} finished, {overflowed} overflowed; \
         signals={} preemptions={} deferrals={}",
        t.signals, t.preemptions, t.deferrals
    );
    // Each near-end task ran ~10 ms next to the spinner: many signals.
    if cpu_clock {
        // About two ticks (4 ms each at HZ=250) act on each 10 ms task.
        assert!(
            t.preemptions + t.deferrals > 40,
            "too few CPU-clock ticks acted: {t:?}"
        );
    } else {
        assert!(t.signals > 100, "the scenario sent too few signals: {t:?}");
    }
    // The overflow handler must still be in place.
    assert!(join_err(spawn_overflow(&rt, "after", deep)).is_stack_overflow());
    eprintln!("child: near stack end: survived");
}

/// When a preemption signal arrives while a task has less stack left than a
/// signal frame needs, the kernel cannot push the frame and raises SIGSEGV
/// with `si_code == SI_KERNEL` and no address. Passed on to std's handler,
/// that reset SIGSEGV to the default action, and the next one killed the
/// process (the bug this test found). Now the lost preemption is dropped.
#[test]
fn preemption_signals_near_the_end_of_a_task_stack() {
    for mode in ["near_stack_end", "near_stack_end_cpu"] {
        let (status, stderr) = run_child("child_crash", mode);
        eprintln!("{mode}: {stderr}");
        assert!(
            status.success() && stderr.contains("near stack end: survived"),
            "child ({mode}) died: {status}; stderr:\n{stderr}"
        );
    }
}

/// Stacks of the runtime's size are carved 64 to a slab (`SLAB_STACKS` in
/// src/task/stack.rs) where the kernel has guard markers: an overflow ends
/// only its task whether its stack is a slab's first, its last, or one a
/// finished task handed back. On one worker the order is exact: the first
/// task gets a new slab's first stack, 62 parked tasks the next ones, the
/// next task the last; then a finished task's stack is reused.
#[test]
fn overflow_ends_only_its_task_at_a_slabs_first_and_last_stack_and_in_a_reused_one() {
    let rt = Runtime::builder()
        .workers(1)
        .stack_size(SMALL_STACK)
        .build()
        .unwrap();
    let overflow = |name: &str| {
        kvant::task::Builder::new()
            .name(name)
            .spawn_on(&rt, deep)
            .expect("spawn")
    };
    // Where each task's stack is: the address of one of its locals.
    let here = || {
        let x = 0u8;
        black_box(&x) as *const u8 as usize
    };
    let maps = || {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .count()
    };
    let first = overflow("first");
    assert_overflow(&join_err(first), "first");
    let maps_before = maps();
    let (tx, rx) = kvant::channel::unbounded::<()>();
    let parked: Vec<_> = (0..62)
        .map(|_| {
            let rx = rx.clone();
            rt.spawn(move || {
                let at = here();
                rx.recv().unwrap();
                at
            })
        })
        .collect();
    wait_for("62 parked tasks", || {
        rt.dump()
            .tasks()
            .iter()
            .filter(|t| matches!(t.status, kvant::dump::Status::Parked(_)))
            .count()
            == 62
    });
    // Slabs with guard markers: no mapping for 62 stacks (the slab is the
    // one already mapped); the older kernels' path (forced by the parent
    // test below): a mapping and a guard per stack. The count is the
    // process's, and tests running beside this one (and the dump's first
    // read of the debug info) add a few: the bound only tells the paths
    // apart.
    let grown = maps().saturating_sub(maps_before);
    if std::env::var_os("KVANT_STACK_GUARDS").is_some_and(|v| v == "mprotect") {
        assert!(grown >= 2 * 62, "{grown} new mappings for 62 stacks");
    } else {
        assert!(grown < 62, "{grown} new mappings for 62 stacks");
    }
    let last = overflow("last");
    assert_overflow(&join_err(last), "last");
    // A finished task's stack is reused by the next task on this worker.
    tx.send(()).unwrap();
    let mut parked = parked.into_iter();
    let freed = join_ok(parked.next().unwrap());
    let next = join_ok(rt.spawn(here));
    assert!(
        next.abs_diff(freed) < SMALL_STACK,
        "a finished task's stack was not reused: {next:#x} vs {freed:#x}"
    );
    let again = overflow("reused");
    assert_overflow(&join_err(again), "reused");
    // Everything else still runs.
    for _ in 0..61 {
        tx.send(()).unwrap();
    }
    drop(tx);
    for h in parked {
        join_ok(h);
    }
    let ok: u64 = (0..100).map(|i| join_ok(rt.spawn(move || i))).sum();
    assert_eq!(ok, 4950);
}

/// The same on the older kernels' path (a mapping plus an `mprotect`ed
/// guard page per stack), forced in a child process.
#[test]
fn overflow_ends_only_its_task_on_the_older_kernels_stack_path() {
    let exe = std::env::current_exe().expect("test binary path");
    let test = "overflow_ends_only_its_task_at_a_slabs_first_and_last_stack_and_in_a_reused_one";
    let out = Command::new(exe)
        .args(["--exact", test, "--test-threads=1"])
        .env("KVANT_STACK_GUARDS", "mprotect")
        .output()
        .expect("run the child");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("1 passed"), "{text}");
}
