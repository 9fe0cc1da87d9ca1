//! Chrome trace event format, as read by Perfetto and `chrome://tracing`.
//!
//! Format reference: "Trace Event Format" (Google doc linked from the
//! Catapult project). We emit one process (`pid` 1, named after the crate)
//! with one thread track per worker (`tid` = worker index), and one complete
//! event (`"ph": "X"`, start + duration in microseconds) per slice. Metadata
//! events (`"ph": "M"`) name the tracks so the viewer shows `worker 0` rather
//! than a bare number, and order them by index. Intervals a task spent
//! blocked in the kernel are complete events of category `kernel`, nested in
//! the slice they happened in.

use serde_json::{Value, json};

use super::{SliceEnd, Trace};

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
        let name = if trace.is_compensating(w) {
            format!("compensating {}", &trace.lane_label(w)[1..])
        } else {
            format!("worker {w}")
        };
        events.push(json!({
            "name": "thread_name", "ph": "M", "pid": 1, "tid": w,
            "args": { "name": name },
        }));
        events.push(json!({
            "name": "thread_sort_index", "ph": "M", "pid": 1, "tid": w,
            "args": { "sort_index": w },
        }));
    }
    for s in trace.slices() {
        // An in-kernel interval lies inside one of the task's slices on the
        // same track, so the viewers draw it nested under that slice.
        let (name, cat) = if s.end_reason == SliceEnd::InKernel {
            (format!("{} (blocked in kernel)", s.label()), "kernel")
        } else {
            (s.label(), "task")
        };
        events.push(json!({
            "name": name,
            "cat": cat,
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
