//! Signals and syscalls: preemption signals land in the middle of real
//! system calls (file writes, fsync, directory reads, sleeps, socket reads,
//! process spawning) and must never surface as errors. The preemption
//! handler is installed with `SA_RESTART` and std retries calls the kernel
//! does not restart, so `ErrorKind::Interrupted` must never reach user code,
//! and every byte read back must equal what was written.
//!
//! Two workers, the smallest quantum (50 µs), CPU spinners next to the I/O
//! tasks so the workers are always contended. Runs for `KVANT_STRESS_SECS`
//! (default 1 s; fractions allowed).
//!
//! Blocking syscalls inside tasks are exactly what `docs/safety.md` tells
//! users to avoid for *throughput*; here they are done on purpose, because
//! they must still be *correct*.

use std::fs::{self, File};
use std::hint::black_box;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kvant::{JoinHandle, Runtime};

/// Far beyond anything a passing test needs; only a hang reaches it.
const HANG: Duration = Duration::from_secs(120);

fn stress_duration() -> Duration {
    let secs = std::env::var("KVANT_STRESS_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs)
}

/// A fresh path in the temp directory, unique per process and `tag`.
fn temp_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kvant-syscalls-{}-{tag}", std::process::id()))
}

/// Deterministic content for (`seed`, `len`), different for every seed.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Some user-mode work between syscalls: preemptible code.
fn spin(rounds: u64) -> u64 {
    (0..rounds).fold(0u64, |a, x| black_box(a.rotate_left(5) ^ x))
}

/// What an I/O task did: operations completed, or the first failure.
type Outcome = Result<u64, String>;

/// Turn an io error into a failure, calling out `Interrupted` in particular.
fn fail(what: &str, e: std::io::Error) -> String {
    if e.kind() == ErrorKind::Interrupted {
        format!("{what}: EINTR surfaced to user code: {e}")
    } else {
        format!("{what}: {e}")
    }
}

/// Write, fsync, read back and compare files until `until`.
fn file_task(id: u64, until: Instant) -> Outcome {
    let mut ops = 0;
    while Instant::now() < until {
        let path = temp_path(&format!("file-{id}-{ops}"));
        let data = pattern(id * 1_000_003 + ops, 4096 + (ops as usize % 7) * 1000);
        let mut f = File::create(&path).map_err(|e| fail("create", e))?;
        f.write_all(&data).map_err(|e| fail("write", e))?;
        f.sync_all().map_err(|e| fail("fsync", e))?;
        drop(f);
        black_box(spin(2_000));
        let mut back = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut back))
            .map_err(|e| fail("read back", e))?;
        fs::remove_file(&path).map_err(|e| fail("remove", e))?;
        if back != data {
            return Err(format!("{path:?}: read back differs from what was written"));
        }
        ops += 1;
    }
    Ok(ops)
}

/// `std::thread::sleep` never returns early, signals or not.
fn sleep_task(until: Instant) -> Outcome {
    let mut ops = 0;
    while Instant::now() < until {
        let want = Duration::from_micros(100 + (ops % 5) * 200);
        let t = Instant::now();
        std::thread::sleep(want);
        let got = t.elapsed();
        if got < want {
            return Err(format!("sleep({want:?}) returned after {got:?}"));
        }
        black_box(spin(5_000));
        ops += 1;
    }
    Ok(ops)
}

/// List a directory of known files over and over.
fn read_dir_task(dir: PathBuf, files: usize, until: Instant) -> Outcome {
    let mut ops = 0;
    while Instant::now() < until {
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map_err(|e| fail("read_dir", e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|e| fail("read_dir entry", e))?;
        names.sort();
        if names.len() != files {
            return Err(format!("read_dir saw {} of {files} files", names.len()));
        }
        black_box(spin(2_000));
        ops += 1;
    }
    Ok(ops)
}

/// Send messages through a socket to an echo thread and check the echoes.
fn socket_task(id: u64, mut sock: UnixStream, until: Instant) -> Outcome {
    let mut ops = 0;
    let mut back = vec![0u8; 16 * 1024];
    while Instant::now() < until {
        let len = 1 + (ops as usize * 977) % back.len();
        let msg = pattern(id << 32 | ops, len);
        sock.write_all(&msg).map_err(|e| fail("socket write", e))?;
        sock.read_exact(&mut back[..len])
            .map_err(|e| fail("socket read", e))?;
        if back[..len] != msg[..] {
            return Err(format!("echo {ops} differs from what was sent"));
        }
        black_box(spin(1_000));
        ops += 1;
    }
    Ok(ops)
}

/// The plain OS thread on the other end: echo until the task hangs up. It
/// sleeps a little now and then, so the task blocks in `read`.
fn echo_thread(mut sock: UnixStream) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 8 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = sock.read(&mut buf)?;
        if n == 0 {
            return Ok(bytes);
        }
        if bytes.is_multiple_of(7) {
            std::thread::sleep(Duration::from_micros(200));
        }
        sock.write_all(&buf[..n])?;
        bytes += n as u64;
    }
}

/// Start short-lived processes (fork/exec or posix_spawn, then waitpid).
fn process_task(until: Instant) -> Outcome {
    let mut ops = 0;
    while Instant::now() < until && ops < 200 {
        let status = std::process::Command::new("true")
            .status()
            .map_err(|e| fail("spawn `true`", e))?;
        if !status.success() {
            return Err(format!("`true` exited with {status}"));
        }
        black_box(spin(2_000));
        ops += 1;
    }
    Ok(ops)
}

fn join_outcome(what: &str, h: JoinHandle<Outcome>) -> u64 {
    match h.join_timeout(HANG) {
        Ok(Ok(Ok(ops))) => {
            assert!(ops > 0, "{what} did nothing");
            ops
        }
        Ok(Ok(Err(e))) => panic!("{what}: {e}"),
        Ok(Err(e)) => panic!("{what} failed: {e}"),
        Err(_) => panic!("{what} did not finish"),
    }
}

#[test]
fn syscalls_under_a_tiny_quantum_never_fail() {
    let rt = Runtime::builder()
        .workers(2)
        .quantum(Some(kvant::MIN_QUANTUM))
        .build()
        .unwrap();
    let run_for = stress_duration();
    let until = Instant::now() + run_for;

    let dir = temp_path("dir");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir(&dir).unwrap();
    const FILES: usize = 50;
    for i in 0..FILES {
        fs::write(dir.join(format!("f{i}")), pattern(i as u64, 10)).unwrap();
    }

    let mut io: Vec<(String, JoinHandle<Outcome>)> = Vec::new();
    for id in 0..2 {
        io.push((format!("file-{id}"), rt.spawn(move || file_task(id, until))));
    }
    io.push(("sleep".into(), rt.spawn(move || sleep_task(until))));
    let d = dir.clone();
    io.push((
        "read_dir".into(),
        rt.spawn(move || read_dir_task(d, FILES, until)),
    ));
    let mut echoes = Vec::new();
    for id in 0..2 {
        let (mine, theirs) = UnixStream::pair().unwrap();
        echoes.push(std::thread::spawn(move || echo_thread(theirs)));
        io.push((
            format!("socket-{id}"),
            rt.spawn(move || socket_task(id, mine, until)),
        ));
    }
    io.push(("process".into(), rt.spawn(move || process_task(until))));
    // CPU hogs: keep both workers contended so that the quantum expires.
    let stop = Arc::new(AtomicBool::new(false));
    let hogs: Vec<_> = (0..2)
        .map(|i| {
            let stop = stop.clone();
            rt.spawn(move || {
                let mut x = i;
                while !stop.load(Ordering::Relaxed) {
                    x = black_box(spin(1_000) ^ x);
                }
                x
            })
        })
        .collect();

    for (what, h) in io {
        let ops = join_outcome(&what, h);
        eprintln!("{what}: {ops} operations");
    }
    stop.store(true, Ordering::Relaxed);
    for h in hogs {
        h.join_timeout(HANG).expect("hog ends").expect("no panic");
    }
    for e in echoes {
        let bytes = e.join().expect("echo thread").expect("echo I/O");
        assert!(bytes > 0);
    }
    fs::remove_dir_all(&dir).unwrap();

    let t = rt.metrics().total();
    eprintln!(
        "{run_for:?}: signals={} preemptions={} deferrals={}",
        t.signals, t.preemptions, t.deferrals
    );
    assert!(t.preemptions > 0, "no preemptions: {t:?}");
    assert!(t.deferrals > 0, "no signal landed in a syscall: {t:?}");
}

/// Read 5 × 100 bytes that a plain thread sends 20 ms apart through a
/// socket with a read timeout, retrying on `Interrupted`; returns how many
/// `Interrupted` errors reached user code. With `company`, a CPU hog shares
/// the (single) worker, so the monitor has a reason to preempt.
fn read_with_timeout(company: bool) -> u64 {
    let rt = Runtime::builder()
        .workers(1)
        .quantum(Some(kvant::MIN_QUANTUM))
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let hog = company.then(|| {
        let stop = stop.clone();
        rt.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                black_box(spin(1_000));
            }
        })
    });
    let (mut mine, mut theirs) = UnixStream::pair().unwrap();
    let peer = std::thread::spawn(move || {
        for i in 0..5u8 {
            std::thread::sleep(Duration::from_millis(20));
            theirs.write_all(&[i; 100]).unwrap();
        }
    });
    let h = rt.spawn(move || {
        mine.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (mut interrupted, mut got) = (0u64, Vec::new());
        let mut buf = [0u8; 100];
        while got.len() < 500 {
            match mine.read(&mut buf) {
                Ok(0) => return Err("peer hung up early".to_string()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => interrupted += 1,
                Err(e) => return Err(fail("read", e)),
            }
        }
        Ok((interrupted, got))
    });
    let (interrupted, got) = h.join_timeout(HANG).unwrap().unwrap().unwrap();
    peer.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    if let Some(hog) = hog {
        hog.join_timeout(HANG).unwrap().unwrap();
    }
    let want: Vec<u8> = (0..5u8).flat_map(|i| [i; 100]).collect();
    assert_eq!(got, want);
    eprintln!(
        "read with SO_RCVTIMEO (company: {company}): {interrupted} Interrupted errors \
         reached user code; signals={}",
        rt.metrics().total().signals
    );
    interrupted
}

/// Socket calls with a timeout (`SO_RCVTIMEO`) are never restarted by the
/// kernel, `SA_RESTART` or not (signal(7)), and std's `Read::read` passes
/// `Interrupted` on (`read_exact` / `read_to_end` retry). `docs/safety.md`
/// promises: a task alone on its worker is never signalled (so it never sees
/// `Interrupted`); one that shares its worker may, and code that retries on
/// `Interrupted`, as std's `Read` docs ask, stays correct.
#[test]
fn socket_read_with_timeout_alone_is_never_interrupted() {
    assert_eq!(read_with_timeout(false), 0);
}

#[test]
fn socket_read_with_timeout_and_company_retries_correctly() {
    read_with_timeout(true);
}
