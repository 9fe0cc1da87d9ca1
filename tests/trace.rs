//! A traced runtime records a consistent history: slices are well-formed, a
//! worker runs one slice at a time, every task ends with exactly one `Done`
//! slice, the per-task counts match the tasks' own statistics, and the
//! exports parse. Nothing here depends on timing luck: the assertions hold
//! for any interleaving the scheduler picks.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kvant::trace::SliceEnd;
use kvant::{Runtime, TaskId};

/// Spin for about `d` of wall-clock time (a CPU hog).
fn spin(d: Duration) -> u64 {
    let end = Instant::now() + d;
    let mut x = 1u64;
    while Instant::now() < end {
        for _ in 0..100 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
        }
    }
    x
}

/// Wait (bounded) until the runtime has no live task, so that every final
/// slice has been recorded and counted.
fn wait_quiet(rt: &Runtime) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while rt.metrics().live_tasks > 0 {
        assert!(Instant::now() < deadline, "tasks still alive after 30 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn traced_runtime_records_consistent_slices() {
    let before = Instant::now();
    let rt = Runtime::builder()
        .workers(2)
        .quantum(Some(Duration::from_millis(1)))
        .trace(true)
        .build()
        .unwrap();
    let mut handles = Vec::new();
    let mut kinds: HashMap<TaskId, &str> = HashMap::new();
    for i in 0..3 {
        let h = kvant::task::Builder::new()
            .name(format!("hog-{i}"))
            .spawn_on(&rt, || {
                spin(Duration::from_millis(15));
            })
            .unwrap();
        kinds.insert(h.id(), "hog");
        handles.push(h);
    }
    for _ in 0..4 {
        let h = rt.spawn(|| {
            for _ in 0..10 {
                kvant::yield_now();
            }
        });
        kinds.insert(h.id(), "yielder");
        handles.push(h);
    }
    for _ in 0..3 {
        let h = rt.spawn(|| {
            for _ in 0..3 {
                kvant::sleep(Duration::from_micros(500));
            }
        });
        kinds.insert(h.id(), "sleeper");
        handles.push(h);
    }
    // A task that spawns and joins children: their ids come back to us.
    let parent = rt.spawn(|| {
        let kids: Vec<_> = (0..5u64).map(|i| kvant::spawn(move || i * 2)).collect();
        let ids: Vec<TaskId> = kids.iter().map(|k| k.id()).collect();
        let sum: u64 = kids.into_iter().map(|k| k.join().unwrap()).sum();
        assert_eq!(sum, 20);
        ids
    });
    kinds.insert(parent.id(), "parent");

    wait_quiet(&rt);
    let elapsed = before.elapsed();
    let stats: HashMap<TaskId, kvant::TaskStats> =
        handles.iter().map(|h| (h.id(), h.stats())).collect();
    for h in handles {
        h.join().unwrap();
    }
    for kid in parent.join().unwrap() {
        kinds.insert(kid, "child");
    }

    let trace = rt.trace().expect("built with trace(true)");
    assert_eq!(trace.dropped(), 0);
    assert_eq!(trace.workers(), 2);
    let slices = trace.slices();
    assert!(!slices.is_empty());

    // Well-formed and sorted; inside the time the runtime existed (with slack
    // for the TSC calibration, which is good to ~0.1%).
    let limit = elapsed + elapsed / 100 + Duration::from_millis(1);
    for w in slices.windows(2) {
        assert!(w[0].start <= w[1].start, "slices are sorted by start");
    }
    for s in slices {
        assert!(s.end >= s.start, "{s:?}");
        assert!(s.end <= limit, "{s:?} ends after the runtime's {elapsed:?}");
        assert!(s.worker < 2, "{s:?}");
    }

    // One slice at a time per worker.
    for w in 0..2 {
        let mine: Vec<_> = slices.iter().filter(|s| s.worker == w).collect();
        for pair in mine.windows(2) {
            assert!(
                pair[0].end <= pair[1].start,
                "overlap on worker {w}: {pair:?}"
            );
        }
    }

    // Every task: exactly one Done slice, and it is its last; reasons match
    // what the task did; slice counts match the task's own statistics.
    let summaries = trace.tasks();
    assert_eq!(
        summaries.len(),
        kinds.len(),
        "every task appears, no stranger does"
    );
    for t in &summaries {
        let kind = kinds
            .get(&t.task)
            .unwrap_or_else(|| panic!("unknown task {}", t.task));
        let own: Vec<_> = slices.iter().filter(|s| s.task == t.task).collect();
        let done = own
            .iter()
            .filter(|s| s.end_reason == SliceEnd::Done)
            .count();
        assert_eq!(done, 1, "{kind} {} has {done} Done slices", t.task);
        assert_eq!(own.last().unwrap().end_reason, SliceEnd::Done);
        assert!(t.done);
        match *kind {
            "hog" => assert!(t.name.as_deref().unwrap().starts_with("hog-")),
            "yielder" => assert_eq!(t.yields, 10, "{t:?}"),
            // A sleep whose deadline passed before it parked does not block.
            "sleeper" => assert!(t.blocked <= 3, "{t:?}"),
            _ => {}
        }
        if let Some(st) = stats.get(&t.task) {
            assert_eq!(st.slices, t.slices, "{kind}: trace vs TaskStats");
            assert_eq!(st.preemptions, t.preempted, "{kind}: trace vs TaskStats");
            let diff = st.run_time.abs_diff(t.run_time);
            assert!(diff <= Duration::from_micros(t.slices), "{kind}: {diff:?}");
        }
    }
    let m = rt.metrics().total();
    assert_eq!(
        m.tasks_run,
        slices.len() as u64,
        "every slice counted is recorded"
    );
    let preempted = slices
        .iter()
        .filter(|s| s.end_reason == SliceEnd::Preempted)
        .count();
    assert_eq!(m.preemptions, preempted as u64);

    // Exports.
    let json: serde_json::Value = serde_json::from_str(&trace.to_chrome_json()).unwrap();
    let events = json["traceEvents"].as_array().unwrap();
    let complete: Vec<_> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(complete.len(), slices.len());
    assert!(
        complete
            .iter()
            .all(|e| e["ts"].is_number() && e["dur"].as_f64().unwrap() >= 0.0)
    );
    assert!(complete.iter().any(|e| e["name"] == "hog-0"));
    let path = std::env::temp_dir().join(format!("kvant-trace-test-{}.json", std::process::id()));
    trace.write_chrome_json(&path).unwrap();
    let from_file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(from_file, json);

    let picture = trace.ascii_timeline(80);
    assert!(picture.lines().all(|l| l.len() <= 80), "{picture}");
    assert!(
        picture.contains("w0 |") && picture.contains("w1 |"),
        "{picture}"
    );

    // A window keeps only the overlapping slices and renders its own span.
    let (from, to) = trace.span();
    let mid = from + (to - from) / 2;
    let half = trace.window(from, mid);
    assert_eq!(half.span(), (from, mid));
    assert!(half.slices().iter().all(|s| s.start < mid));
    assert!(half.slices().len() <= slices.len());
}

#[test]
fn untraced_runtime_has_no_trace() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    rt.spawn(|| ()).join().unwrap();
    assert!(rt.trace().is_none());
}
