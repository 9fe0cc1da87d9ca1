//! Chrome trace event format, as read by Perfetto and `chrome://tracing`.
//!
//! Format reference: "Trace Event Format" (Google doc linked from the
//! Catapult project). We emit one process (`pid` 1, named after the crate)
//! with one thread track per worker (`tid` = worker index), and one complete
//! event (`"ph": "X"`, start + duration in microseconds) per slice. Metadata
//! events (`"ph": "M"`) name the tracks so the viewer shows `worker 0` rather
//! than a bare number, and order them by index.

use serde_json::{Value, json};

use super::Trace;

/// Microseconds as a float: the unit the format uses; fractions keep ns precision.
fn us(d: std::time::Duration) -> f64 {
    d.as_nanos() as f64 / 1000.0
}

pub(super) fn to_value(trace: &Trace) -> Value {
    let mut events = Vec::with_capacity(trace.slices().len() + 2 * trace.workers() + 1);
    events.push(json!({
        "name": "process_name", "ph": "M", "pid": 1, "tid": 0,
        "args": { "name": "kvant" },
    }));
    for w in 0..trace.workers() {
        events.push(json!({
            "name": "thread_name", "ph": "M", "pid": 1, "tid": w,
            "args": { "name": format!("worker {w}") },
        }));
        events.push(json!({
            "name": "thread_sort_index", "ph": "M", "pid": 1, "tid": w,
            "args": { "sort_index": w },
        }));
    }
    for s in trace.slices() {
        events.push(json!({
            "name": s.label(),
            "cat": "task",
            "ph": "X",
            "ts": us(s.start),
            "dur": us(s.duration()),
            "pid": 1,
            "tid": s.worker,
            "args": { "task": s.task.as_u64(), "end": s.end_reason.as_str() },
        }));
    }
    json!({
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "workers": trace.workers(),
            "dropped_slices": trace.dropped(),
        },
    })
}
