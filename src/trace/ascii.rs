//! The terminal picture of a trace: one row per worker, one character per
//! time bucket.
//!
//! A bucket usually holds many slices (a 1 ms quantum against a 10 ms
//! column), so each character names the task that ran *most* of the bucket,
//! or `.` when the worker was idle most of it. That keeps the picture honest
//! about shares (a hog that monopolises a worker is a solid run of one
//! letter; round-robin hogs interleave) while short tasks, which never
//! dominate a bucket, are listed under the legend with their run time.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::Duration;

use super::{SliceEnd, Trace};
use crate::task::TaskId;

/// Symbols for tasks, handed out in order of first appearance in the picture.
const SYMBOLS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Symbol for dominant tasks beyond the 62 that get their own.
const OVERFLOW: char = '*';
const IDLE: char = '.';
const PREEMPT: char = '^';
const IN_KERNEL: char = '~';
/// Fewest time buckets drawn, however narrow `width` is.
const MIN_COLS: usize = 10;

/// Time per task in one bucket, in nanoseconds (a bucket rarely holds more
/// than a handful of tasks, so a small vector beats a map).
type Bucket = Vec<(usize, u64)>;

pub(super) fn render(trace: &Trace, width: usize) -> String {
    let (from, to) = trace.span();
    let workers = trace.workers().max(1);
    if trace.slices().is_empty() || to <= from {
        return format!("(empty trace: {workers} workers, no slices)\n");
    }
    let label_w = (0..workers)
        .map(|w| trace.lane_label(w).len())
        .max()
        .unwrap_or(2)
        + 1;
    let cols = width.saturating_sub(label_w + 2).max(MIN_COLS);
    let from_ns = from.as_nanos() as u64;
    let span_ns = (to - from).as_nanos() as u64;
    // Bucket `i` covers [from + i*span/cols, from + (i+1)*span/cols).
    let edge = |i: usize| from_ns + (span_ns as u128 * i as u128 / cols as u128) as u64;
    let bucket_of = |t: u64| {
        ((t.saturating_sub(from_ns) as u128 * cols as u128 / span_ns as u128) as usize)
            .min(cols - 1)
    };

    // Dense task indices, in first-seen order.
    let mut task_index: HashMap<TaskId, usize> = HashMap::new();
    let mut labels: Vec<String> = Vec::new();
    let mut busy: Vec<u64> = Vec::new(); // ns inside the span, per task
    let mut grid: Vec<Vec<Bucket>> = vec![vec![Vec::new(); cols]; workers];
    let mut preempt: Vec<Vec<bool>> = vec![vec![false; cols]; workers];
    let mut any_preempt = false;
    // Time the worker's thread sat blocked in the kernel, per bucket.
    let mut kernel: Vec<Vec<u64>> = vec![vec![0; cols]; workers];
    let mut any_kernel = false;

    for s in trace.slices() {
        let w = s.worker.min(workers - 1);
        if s.end_reason == SliceEnd::InKernel {
            let (a, b) = (s.start.as_nanos() as u64, s.end.as_nanos() as u64);
            let (a, b) = (a.max(from_ns), b.min(from_ns + span_ns));
            if b > a {
                let (first, last) = (bucket_of(a), bucket_of(b - 1));
                for (i, k) in kernel[w].iter_mut().enumerate().take(last + 1).skip(first) {
                    *k += b.min(edge(i + 1)).saturating_sub(a.max(edge(i)));
                }
            }
            continue;
        }
        let t = *task_index.entry(s.task).or_insert_with(|| {
            labels.push(s.label());
            busy.push(0);
            labels.len() - 1
        });
        let (a, b) = (s.start.as_nanos() as u64, s.end.as_nanos() as u64);
        let (a, b) = (a.max(from_ns), b.min(from_ns + span_ns));
        if s.end_reason == SliceEnd::Preempted && s.end >= from && s.end <= to {
            // Mark the column where the preempted slice last ran.
            let last = (s.end.as_nanos() as u64)
                .saturating_sub(1)
                .max(s.start.as_nanos() as u64);
            preempt[w][bucket_of(last)] = true;
            any_preempt = true;
        }
        if b <= a {
            continue;
        }
        busy[t] += b - a;
        let (first, last) = (bucket_of(a), bucket_of(b.saturating_sub(1).max(a)));
        for (i, bucket) in grid[w].iter_mut().enumerate().take(last + 1).skip(first) {
            let overlap = b.min(edge(i + 1)).saturating_sub(a.max(edge(i)));
            if overlap == 0 {
                continue;
            }
            match bucket.iter_mut().find(|(task, _)| *task == t) {
                Some((_, ns)) => *ns += overlap,
                None => bucket.push((t, overlap)),
            }
        }
    }

    // The dominant task of each bucket, or None for idle.
    let dominant: Vec<Vec<Option<usize>>> = grid
        .iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .map(|(i, bucket)| {
                    let len = edge(i + 1) - edge(i);
                    let used: u64 = bucket.iter().map(|&(_, ns)| ns).sum();
                    let idle = len.saturating_sub(used);
                    // First-listed task wins ties: it started earlier in the bucket.
                    let best = bucket
                        .iter()
                        .fold(None, |best: Option<(usize, u64)>, &(t, ns)| match best {
                            Some((_, b)) if b >= ns => best,
                            _ => Some((t, ns)),
                        });
                    best.filter(|&(_, ns)| ns >= idle).map(|(t, _)| t)
                })
                .collect()
        })
        .collect();

    // Symbols: where the whole snapshot has few enough tasks, each task's
    // rank in it, so a task has the same letter in every view (a window of
    // the trace included); otherwise in order of appearance, reading the
    // picture column by column, so the dominant tasks get letters.
    let mut symbol: Vec<Option<char>> = vec![None; labels.len()];
    let stable = trace.ranked() <= SYMBOLS.len();
    if stable {
        for (id, &t) in &task_index {
            if dominant.iter().any(|row| row.contains(&Some(t))) {
                symbol[t] = Some(SYMBOLS[trace.rank(*id)] as char);
            }
        }
    }
    let mut next = 0;
    for i in 0..cols {
        if stable {
            break;
        }
        for row in &dominant {
            if let Some(t) = row[i]
                && symbol[t].is_none()
            {
                symbol[t] = Some(SYMBOLS.get(next).map_or(OVERFLOW, |&c| c as char));
                next += 1;
            }
        }
    }

    let mut out = String::new();
    // Axis: start time at the left edge, end time at the right, scale between.
    let left = fmt_dur(from);
    let right = fmt_dur(to);
    let scale = format!(
        "1 column = {}",
        fmt_dur(Duration::from_nanos(span_ns / cols as u64))
    );
    let mut axis = format!("{:w$}{left}", "", w = label_w + 1);
    let room = cols.saturating_sub(left.len() + right.len());
    if room >= scale.len() + 2 {
        let pad = room - scale.len();
        let _ = write!(
            axis,
            "{:l$}{scale}{:r$}",
            "",
            "",
            l = pad / 2,
            r = pad - pad / 2
        );
    } else {
        let _ = write!(axis, "{:room$}", "");
    }
    axis.push_str(&right);
    out.push_str(axis.trim_end());
    out.push('\n');

    for (w, row) in dominant.iter().enumerate() {
        let cells: String = row
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if 2 * kernel[w][i] >= edge(i + 1) - edge(i) {
                    any_kernel = true;
                    IN_KERNEL
                } else {
                    d.map_or(IDLE, |t| symbol[t].unwrap_or(OVERFLOW))
                }
            })
            .collect();
        let _ = writeln!(out, "{:<label_w$}|{cells}|", trace.lane_label(w));
        if any_preempt {
            let marks: String = preempt[w]
                .iter()
                .map(|&p| if p { PREEMPT } else { ' ' })
                .collect();
            let line = format!("{:label_w$} {marks}", "");
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }

    // Legend: shown tasks by symbol, then the biggest of the hidden ones.
    let mut shown: Vec<usize> = (0..labels.len()).filter(|&t| symbol[t].is_some()).collect();
    shown.sort_by_key(|&t| {
        SYMBOLS
            .iter()
            .position(|&c| Some(c as char) == symbol[t])
            .unwrap_or(usize::MAX)
    });
    let mut entries: Vec<String> = shown
        .iter()
        .map(|&t| {
            format!(
                "{}={} {}",
                symbol[t].unwrap_or(OVERFLOW),
                labels[t],
                fmt_dur(Duration::from_nanos(busy[t]))
            )
        })
        .collect();
    let mut key = format!("{IDLE}=idle");
    if any_preempt {
        let _ = write!(key, " {PREEMPT}=preempted");
    }
    if any_kernel {
        let _ = write!(key, " {IN_KERNEL}=blocked in the kernel");
    }
    entries.push(key);
    wrap_into(&mut out, &entries, width.max(label_w + 2 + MIN_COLS));

    let mut hidden: Vec<usize> = (0..labels.len())
        .filter(|&t| symbol[t].is_none() && busy[t] > 0)
        .collect();
    if !hidden.is_empty() {
        hidden.sort_by_key(|&t| std::cmp::Reverse(busy[t]));
        let total: u64 = hidden.iter().map(|&t| busy[t]).sum();
        let mut items = vec![format!(
            "{} task{} never dominate{} a column ({} in all):",
            hidden.len(),
            if hidden.len() == 1 { "" } else { "s" },
            if hidden.len() == 1 { "s" } else { "" },
            fmt_dur(Duration::from_nanos(total))
        )];
        items.extend(
            hidden
                .iter()
                .take(3)
                .map(|&t| format!("{} {}", labels[t], fmt_dur(Duration::from_nanos(busy[t])))),
        );
        if hidden.len() > 3 {
            items.push("...".to_string());
        }
        wrap_into(&mut out, &items, width.max(label_w + 2 + MIN_COLS));
    }
    out
}

/// Append `entries` separated by two spaces, wrapped at `width`.
fn wrap_into(out: &mut String, entries: &[String], width: usize) {
    let mut line = String::new();
    for e in entries {
        if !line.is_empty() && line.len() + 2 + e.len() > width {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push_str("  ");
        }
        line.push_str(e);
    }
    if !line.is_empty() {
        out.push_str(&line);
        out.push('\n');
    }
}

/// A short human duration in ASCII: `0`, `850us`, `12.5ms`, `1.21s`.
pub(super) fn fmt_dur(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        "0".to_string()
    } else if ns < 10_000 {
        format!("{:.1}us", ns as f64 / 1e3)
    } else if ns < 1_000_000 {
        format!("{}us", ns / 1000)
    } else if ns < 100_000_000 {
        format!("{:.1}ms", ns as f64 / 1e6)
    } else if ns < 10_000_000_000 {
        format!("{:.0}ms", ns as f64 / 1e6)
    } else {
        format!("{:.1}s", ns as f64 / 1e9)
    }
}
