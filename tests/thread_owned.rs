//! Locks the OS thread owns keep their meaning: a task that holds
//! `stdout().lock()` (or stderr's) while it computes, yields and sleeps,
//! under a 50 µs quantum, writes its lines in one block; no other task on
//! its thread re-enters the lock meanwhile.
//!
//! Each case runs in a child process (this binary, with `KVANT_OWNED_CHILD`
//! naming the stream and worker count), whose output the parent reads.

mod common;

use std::io::Write;
use std::time::Duration;

use common::burn;
use kvant::{PreemptionMode, Runtime};

const TASKS: u64 = 8;
const LINES: u64 = 12;

/// The child: tasks that compute (preemptible), then hold the stream's lock
/// across computation, a yield and a sleep while writing their lines.
fn child(stream: &str, workers: usize) {
    let rt = Runtime::builder()
        .workers(workers)
        .quantum(Some(Duration::from_micros(50)))
        .build()
        .unwrap();
    assert_eq!(rt.preemption_mode(), PreemptionMode::LineTables);
    let stderr = stream == "stderr";
    let hs: Vec<_> = (0..TASKS)
        .map(|i| {
            rt.spawn(move || {
                // Unlocked work first, so that tasks are preempted.
                let mut acc = burn(i, 2_000_000);
                let mut out: Box<dyn Write> = if stderr {
                    Box::new(std::io::stderr().lock())
                } else {
                    Box::new(std::io::stdout().lock())
                };
                for k in 0..LINES {
                    writeln!(out, "task {i} line {k}").unwrap();
                    acc = acc.wrapping_add(burn(i + k, 200_000));
                    if k == 3 {
                        kvant::yield_now();
                    }
                    if k == 6 {
                        kvant::sleep(Duration::from_millis(1));
                    }
                }
                out.flush().unwrap();
                acc
            })
        })
        .collect();
    for h in hs {
        common::join_ok(h);
    }
    let m = rt.metrics().total();
    assert!(m.preemptions > 0, "nothing was preempted: {m:?}");
    std::io::stdout().flush().unwrap();
}

/// Run the child and return the task numbers of its lines, in order.
fn lines_of(stream: &str, workers: usize) -> Vec<u64> {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_task_holding_a_std_stream_lock_keeps_its_lines_together",
        ])
        .args(["--nocapture", "--test-threads=1"])
        .env("KVANT_OWNED_CHILD", format!("{stream}:{workers}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{stream}, {workers} worker(s): the child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = if stream == "stderr" {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        // The harness may print "test <name> ... " on the same line first.
        .filter_map(|l| l[l.rfind("task ")? + 5..].split(' ').next()?.parse().ok())
        .collect()
}

#[test]
fn a_task_holding_a_std_stream_lock_keeps_its_lines_together() {
    if let Ok(what) = std::env::var("KVANT_OWNED_CHILD") {
        let (stream, workers) = what.split_once(':').unwrap();
        child(stream, workers.parse().unwrap());
        return;
    }
    for stream in ["stdout", "stderr"] {
        for workers in [1, 2] {
            let ids = lines_of(stream, workers);
            assert_eq!(
                ids.len() as u64,
                TASKS * LINES,
                "{stream}, {workers} worker(s)"
            );
            let blocks = 1 + ids.windows(2).filter(|w| w[0] != w[1]).count();
            assert_eq!(
                blocks as u64, TASKS,
                "{stream}, {workers} worker(s): lines of different tasks interleave: {ids:?}"
            );
        }
    }
}
