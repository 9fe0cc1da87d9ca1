//! Every line kvant has to say goes through one hook
//! (`Builder::on_diagnostic`), with its kind; without a hook it goes to
//! stderr, unchanged.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvant::{DiagnosticKind, Runtime};

mod common;
use common::join_ok;

/// The blocking-call diagnostic reaches the hook, and not stderr (checked
/// in a child process, whose stderr is captured), once.
#[test]
fn diagnostics_go_to_the_hook_not_stderr() {
    if std::env::var_os("KVANT_DIAG_CHILD").is_some() {
        let said: Arc<Mutex<Vec<(DiagnosticKind, String)>>> = Arc::default();
        let keep = said.clone();
        let rt = Runtime::builder()
            .workers(1)
            .quantum(None)
            .on_diagnostic(move |d| keep.lock().unwrap().push((d.kind(), d.to_string())))
            .build()
            .unwrap();
        let napper = kvant::task::Builder::new()
            .name("napper")
            .spawn_on(&rt, || std::thread::sleep(Duration::from_millis(60)))
            .unwrap();
        let other = rt.spawn(|| std::hint::black_box(1));
        join_ok(napper);
        join_ok(other);
        // The hook runs on kvant's diagnostics thread, soon after.
        common::wait_for("the blocking-call diagnostic", || {
            said.lock()
                .unwrap()
                .iter()
                .any(|(k, _)| *k == DiagnosticKind::BlockingCall)
        });
        let said = said.lock().unwrap();
        let blocking: Vec<_> = said
            .iter()
            .filter(|(k, _)| *k == DiagnosticKind::BlockingCall)
            .collect();
        assert_eq!(blocking.len(), 1, "{said:?}");
        let msg = &blocking[0].1;
        assert!(
            msg.starts_with("kvant:") && msg.contains("'napper'") && msg.contains("sleep"),
            "{msg}"
        );
        println!("CHILD-OK");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "diagnostics_go_to_the_hook_not_stderr",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KVANT_DIAG_CHILD", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "child failed: {err}"
    );
    assert!(
        !err.lines().any(|l| l.starts_with("kvant:")),
        "a diagnostic went to stderr too:\n{err}"
    );
}

/// A panicking hook is contained: the runtime goes on.
#[test]
fn a_panicking_hook_does_not_take_the_runtime_down() {
    let rt = Runtime::builder()
        .workers(1)
        .quantum(None)
        .on_diagnostic(|_| panic!("hook panics on purpose"))
        .build()
        .unwrap();
    let napper = rt.spawn(|| std::thread::sleep(Duration::from_millis(30)));
    let other = rt.spawn(|| 7);
    join_ok(napper);
    assert_eq!(join_ok(other), 7);
    assert_eq!(join_ok(rt.spawn(|| 8)), 8);
}
