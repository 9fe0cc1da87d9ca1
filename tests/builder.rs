//! Runtime builder: every invalid setting is a typed error with a clear
//! message, and the defaults are what the docs promise.
//!
//! The defaults depend on the process environment (`KVANT_WORKERS`), which is
//! process-global. Rather than mutating it under a lock (unsound while other
//! threads may read it), the environment tests re-run this test binary as a
//! child process with a controlled environment: the child test
//! `env_child_probe` builds a default runtime and prints what it got, and the
//! parent test checks that line. Every other test here sets `workers(..)`
//! explicitly, so it does not depend on the environment at all.

use std::process::Command;
use std::time::Duration;

use kvant::{Error, Runtime};

/// Environment variable that turns `env_child_probe` from a no-op into the probe.
const PROBE: &str = "KVANT_TEST_ENV_PROBE";
/// Prefix of the probe's one line of output.
const RESULT: &str = "KVANT_PROBE_RESULT:";

#[test]
fn zero_workers_is_an_error() {
    let err = Runtime::builder().workers(0).build().unwrap_err();
    assert!(matches!(err, Error::ZeroWorkers), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("at least 1 worker"), "unclear message: {msg}");
}

#[test]
fn too_many_workers_is_an_error() {
    let err = Runtime::builder()
        .workers(kvant::MAX_WORKERS + 1)
        .build()
        .unwrap_err();
    match err {
        Error::TooManyWorkers { requested, max } => {
            assert_eq!(requested, kvant::MAX_WORKERS + 1);
            assert_eq!(max, kvant::MAX_WORKERS);
        }
        other => panic!("expected TooManyWorkers, got {other:?}"),
    }
    let msg = Runtime::builder()
        .workers(kvant::MAX_WORKERS + 1)
        .build()
        .unwrap_err()
        .to_string();
    assert!(msg.contains(&(kvant::MAX_WORKERS + 1).to_string()), "{msg}");
}

#[test]
fn stack_below_minimum_is_an_error() {
    assert_eq!(kvant::MIN_STACK_SIZE, 16 * 1024);
    for bad in [0, 1, 4096, kvant::MIN_STACK_SIZE - 1] {
        let err = Runtime::builder()
            .workers(1)
            .stack_size(bad)
            .build()
            .unwrap_err();
        match &err {
            Error::StackTooSmall { requested, min } => {
                assert_eq!(*requested, bad);
                assert_eq!(*min, kvant::MIN_STACK_SIZE);
            }
            other => panic!("stack_size({bad}): expected StackTooSmall, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(&bad.to_string()) && msg.contains(&kvant::MIN_STACK_SIZE.to_string()),
            "message should name the value and the minimum: {msg}"
        );
    }
    // The minimum itself is accepted and runs tasks.
    let rt = Runtime::builder()
        .workers(1)
        .stack_size(kvant::MIN_STACK_SIZE)
        .build()
        .unwrap();
    assert_eq!(rt.block_on(|| 40 + 2), 42);
}

#[test]
fn stack_above_maximum_is_an_error() {
    let err = Runtime::builder()
        .workers(1)
        .stack_size(kvant::MAX_STACK_SIZE + 1)
        .build()
        .unwrap_err();
    assert!(
        matches!(err, Error::StackTooLarge { requested, max }
            if requested == kvant::MAX_STACK_SIZE + 1 && max == kvant::MAX_STACK_SIZE),
        "{err:?}"
    );
}

#[test]
fn quantum_outside_range_is_an_error() {
    assert_eq!(kvant::MIN_QUANTUM, Duration::from_micros(50));
    assert_eq!(kvant::MAX_QUANTUM, Duration::from_secs(1));
    let bad = [
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_micros(49),
        Duration::from_nanos(49_999),
        Duration::from_secs(1) + Duration::from_nanos(1),
        Duration::from_secs(3600),
    ];
    for q in bad {
        let err = Runtime::builder()
            .workers(1)
            .quantum(Some(q))
            .build()
            .unwrap_err();
        match &err {
            Error::QuantumOutOfRange {
                requested,
                min,
                max,
            } => {
                assert_eq!(*requested, q);
                assert_eq!(*min, kvant::MIN_QUANTUM);
                assert_eq!(*max, kvant::MAX_QUANTUM);
            }
            other => panic!("quantum {q:?}: expected QuantumOutOfRange, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("{q:?}")) && msg.contains("quantum(None)"),
            "message should name the value and the cooperative alternative: {msg}"
        );
    }
}

#[test]
fn quantum_range_bounds_are_inclusive() {
    for q in [kvant::MIN_QUANTUM, kvant::MAX_QUANTUM] {
        let rt = Runtime::builder()
            .workers(1)
            .quantum(Some(q))
            .build()
            .unwrap_or_else(|e| panic!("quantum {q:?} must be accepted: {e}"));
        assert_eq!(rt.quantum(), Some(q));
        assert_eq!(rt.block_on(|| 7), 7);
    }
    let rt = Runtime::builder().workers(1).quantum(None).build().unwrap();
    assert_eq!(rt.quantum(), None);
}

#[test]
fn invalid_preempt_signal_is_an_error() {
    let bad = [
        0,
        -1,
        1000,
        libc_sig::SIGKILL,
        libc_sig::SIGSTOP,
        libc_sig::SIGSEGV,
        libc_sig::SIGBUS,
        libc_sig::SIGILL,
        libc_sig::SIGFPE,
    ];
    for sig in bad {
        let err = Runtime::builder()
            .workers(1)
            .quantum(Some(Duration::from_millis(1)))
            .preempt_signal(sig)
            .build()
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidSignal(s) if s == sig),
            "signal {sig}: expected InvalidSignal, got {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&sig.to_string()), "{msg}");
        assert!(
            msg.contains("SIGURG"),
            "the message suggests a signal: {msg}"
        );
        if sig == libc_sig::SIGSEGV {
            assert!(
                msg.contains("(SIGSEGV)") && msg.contains("invalid memory accesses"),
                "the message names the signal and why: {msg}"
            );
        }
    }
}

/// Signal numbers of Linux x86_64, so this test needs no `libc` import.
mod libc_sig {
    pub const SIGILL: i32 = 4;
    pub const SIGBUS: i32 = 7;
    pub const SIGFPE: i32 = 8;
    pub const SIGKILL: i32 = 9;
    pub const SIGSEGV: i32 = 11;
    pub const SIGSTOP: i32 = 19;
}

#[test]
fn zero_blocking_threads_is_an_error() {
    let err = Runtime::builder()
        .workers(1)
        .blocking_threads(0)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::ZeroBlockingThreads), "{err:?}");
}

#[test]
fn explicit_settings_are_reported_back() {
    let rt = Runtime::builder()
        .workers(3)
        .quantum(Some(Duration::from_millis(2)))
        .name("custom")
        .build()
        .unwrap();
    assert_eq!(rt.workers(), 3);
    assert_eq!(rt.quantum(), Some(Duration::from_millis(2)));
    assert_eq!(rt.metrics().workers.len(), 3);
    let name = rt.block_on(|| std::thread::current().name().map(str::to_owned));
    let name = name.expect("worker threads are named");
    assert!(name.starts_with("custom-worker-"), "{name}");
}

#[test]
fn default_quantum_is_preemptive_where_supported() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    if kvant::preempt::SUPPORTED {
        assert_eq!(rt.quantum(), Some(kvant::DEFAULT_QUANTUM));
    } else {
        assert_eq!(rt.quantum(), None);
    }
}

#[test]
fn error_is_a_std_error_with_clear_messages() {
    fn assert_error<E: std::error::Error + Send + Sync + 'static>(_: &E) {}
    let errors = [
        Error::ZeroWorkers,
        Error::ZeroBlockingThreads,
        Error::Shutdown,
        Error::NoRuntime,
        Error::InvalidSignal(9),
        Error::InvalidEnv {
            var: "KVANT_WORKERS",
            value: "lots".into(),
        },
    ];
    for e in &errors {
        assert_error(e);
        let msg = e.to_string();
        assert!(msg.len() > 15, "message too terse: {msg:?}");
        assert!(
            !msg.ends_with('.'),
            "messages are fragments, not sentences: {msg:?}"
        );
    }
    // An I/O cause is the source, not repeated in the message.
    let io = Error::Io(std::io::Error::other("out of maps"));
    assert!(!io.to_string().contains("out of maps"), "{io}");
    assert_eq!(
        std::error::Error::source(&io).map(|s| s.to_string()),
        Some("out of maps".to_string())
    );
    let env = errors[5].to_string();
    assert!(
        env.contains("KVANT_WORKERS") && env.contains("lots"),
        "{env}"
    );
}

// ---- environment (child processes) -------------------------------------------

/// Not a test of its own: with `KVANT_TEST_ENV_PROBE` set, build a default
/// runtime and print what happened. Without it, it does nothing.
#[test]
fn env_child_probe() {
    let Some(mode) = std::env::var_os(PROBE) else {
        return;
    };
    let mut builder = Runtime::builder();
    if mode == "explicit" {
        builder = builder.workers(2);
    }
    match builder.build() {
        Ok(rt) => println!("{RESULT} workers={}", rt.workers()),
        Err(Error::InvalidEnv { var, value }) => {
            println!("{RESULT} invalid_env var={var} value={value:?}")
        }
        Err(e) => println!("{RESULT} other_error {e:?}"),
    }
}

/// Run `env_child_probe` in a child process with `KVANT_WORKERS` set to
/// `workers` (or removed) and return its result line.
fn probe(workers: Option<&str>) -> String {
    probe_mode("default", workers)
}

/// Like [`probe`]; `mode` "explicit" makes the child call `workers(2)`.
fn probe_mode(mode: &str, workers: Option<&str>) -> String {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "env_child_probe",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(PROBE, mode);
    match workers {
        Some(v) => cmd.env("KVANT_WORKERS", v),
        None => cmd.env_remove("KVANT_WORKERS"),
    };
    let out = cmd.output().expect("run the probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.split_once(RESULT).map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("probe printed no result:\n{stdout}"))
        .trim()
        .to_owned()
}

#[test]
fn default_workers_is_available_parallelism() {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(probe(None), format!("workers={n}"));
}

#[test]
fn kvant_workers_env_overrides_default() {
    assert_eq!(probe(Some("3")), "workers=3");
    // Surrounding whitespace is tolerated.
    assert_eq!(probe(Some(" 2 ")), "workers=2");
}

#[test]
fn invalid_kvant_workers_env_is_an_error() {
    for bad in ["many", "-1", "2.5", ""] {
        assert_eq!(
            probe(Some(bad)),
            format!("invalid_env var=KVANT_WORKERS value={bad:?}"),
            "KVANT_WORKERS={bad:?}"
        );
    }
    // Zero from the environment is the same error as workers(0).
    assert_eq!(probe(Some("0")), "other_error ZeroWorkers");
}

#[test]
fn explicit_workers_win_over_env() {
    assert_eq!(probe_mode("explicit", Some("3")), "workers=2");
    // An explicit value means the environment is not even parsed.
    assert_eq!(probe_mode("explicit", Some("garbage")), "workers=2");
}

#[test]
fn too_many_compensating_threads_is_an_error() {
    let err = Runtime::builder()
        .workers(1)
        .max_compensation(kvant::MAX_WORKERS + 1)
        .build()
        .unwrap_err();
    match &err {
        Error::TooManyCompensating { requested, max } => {
            assert_eq!(*requested, kvant::MAX_WORKERS + 1);
            assert_eq!(*max, kvant::MAX_WORKERS);
        }
        other => panic!("expected TooManyCompensating, got {other:?}"),
    }
    assert!(err.to_string().contains("max_compensation"), "{err}");
    // Zero turns compensation off; the default allows 256, and metrics
    // list only the slots used so far.
    let rt = Runtime::builder()
        .workers(2)
        .max_compensation(0)
        .build()
        .unwrap();
    assert!(rt.metrics().compensating.is_empty());
    let rt = Runtime::builder().workers(2).build().unwrap();
    assert!(rt.metrics().compensating.is_empty());
    assert_eq!(kvant::DEFAULT_MAX_COMPENSATION, 256);
}
