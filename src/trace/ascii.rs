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
    let columns = Columns {
        from_ns: from.as_nanos() as u64,
        span_ns: (to - from).as_nanos() as u64,
        cols: width.saturating_sub(label_w + 2).max(MIN_COLS),
    };
    let grid = Grid::fill(trace, workers, &columns);
    let dominant = grid.dominant(&columns);
    let symbol = symbols(trace, &grid, &dominant, columns.cols);

    let mut out = axis(from, to, &columns, label_w);
    let any_kernel = lanes(
        &mut out, trace, &grid, &dominant, &symbol, &columns, label_w,
    );
    legend(
        &mut out,
        &grid,
        &symbol,
        any_kernel,
        width.max(label_w + 2 + MIN_COLS),
    );
    out
}

/// The time buckets: bucket `i` covers
/// `[from + i*span/cols, from + (i+1)*span/cols)` nanoseconds.
struct Columns {
    from_ns: u64,
    span_ns: u64,
    cols: usize,
}

impl Columns {
    fn edge(&self, i: usize) -> u64 {
        self.from_ns + (self.span_ns as u128 * i as u128 / self.cols as u128) as u64
    }

    fn len(&self, i: usize) -> u64 {
        self.edge(i + 1) - self.edge(i)
    }

    fn bucket_of(&self, t: u64) -> usize {
        ((t.saturating_sub(self.from_ns) as u128 * self.cols as u128 / self.span_ns as u128)
            as usize)
            .min(self.cols - 1)
    }

    /// `[a, b)` clipped to the span, as `(a, b)`.
    fn clip(&self, a: Duration, b: Duration) -> (u64, u64) {
        let (a, b) = (a.as_nanos() as u64, b.as_nanos() as u64);
        (a.max(self.from_ns), b.min(self.from_ns + self.span_ns))
    }

    /// The time `[a, b)` spends in each bucket it touches.
    fn overlaps(&self, a: u64, b: u64) -> impl Iterator<Item = (usize, u64)> + '_ {
        let (first, last) = (
            self.bucket_of(a),
            self.bucket_of(b.saturating_sub(1).max(a)),
        );
        (first..=last)
            .map(move |i| {
                (
                    i,
                    b.min(self.edge(i + 1)).saturating_sub(a.max(self.edge(i))),
                )
            })
            .filter(|&(_, ns)| ns > 0)
    }
}

/// Each task's time in each bucket of each lane, with preemption marks and
/// kernel-blocked time.
struct Grid {
    /// Dense task indices, in first-seen order.
    task_index: HashMap<TaskId, usize>,
    labels: Vec<String>,
    /// Nanoseconds inside the span, per task.
    busy: Vec<u64>,
    cells: Vec<Vec<Bucket>>,
    preempt: Vec<Vec<bool>>,
    any_preempt: bool,
    /// Time the worker's thread sat blocked in the kernel, per bucket.
    kernel: Vec<Vec<u64>>,
}

impl Grid {
    fn fill(trace: &Trace, workers: usize, c: &Columns) -> Grid {
        let mut g = Grid {
            task_index: HashMap::new(),
            labels: Vec::new(),
            busy: Vec::new(),
            cells: vec![vec![Vec::new(); c.cols]; workers],
            preempt: vec![vec![false; c.cols]; workers],
            any_preempt: false,
            kernel: vec![vec![0; c.cols]; workers],
        };
        let (from, to) = trace.span();
        for s in trace.slices() {
            let w = s.worker.min(workers - 1);
            let (a, b) = c.clip(s.start, s.end);
            if s.end_reason == SliceEnd::InKernel {
                if b > a {
                    for (i, ns) in c.overlaps(a, b) {
                        g.kernel[w][i] += ns;
                    }
                }
                continue;
            }
            let t = *g.task_index.entry(s.task).or_insert_with(|| {
                g.labels.push(s.label());
                g.busy.push(0);
                g.labels.len() - 1
            });
            if s.end_reason == SliceEnd::Preempted && s.end >= from && s.end <= to {
                // Mark the column where the preempted slice last ran.
                let last = (s.end.as_nanos() as u64)
                    .saturating_sub(1)
                    .max(s.start.as_nanos() as u64);
                g.preempt[w][c.bucket_of(last)] = true;
                g.any_preempt = true;
            }
            if b <= a {
                continue;
            }
            g.busy[t] += b - a;
            for (i, ns) in c.overlaps(a, b) {
                let bucket = &mut g.cells[w][i];
                match bucket.iter_mut().find(|(task, _)| *task == t) {
                    Some((_, sum)) => *sum += ns,
                    None => bucket.push((t, ns)),
                }
            }
        }
        g
    }

    /// The dominant task of each bucket, or None for idle.
    fn dominant(&self, c: &Columns) -> Vec<Vec<Option<usize>>> {
        self.cells
            .iter()
            .map(|row| {
                row.iter()
                    .enumerate()
                    .map(|(i, bucket)| {
                        let used: u64 = bucket.iter().map(|&(_, ns)| ns).sum();
                        let idle = c.len(i).saturating_sub(used);
                        // First-listed task wins ties: it started earlier in the bucket.
                        let best =
                            bucket
                                .iter()
                                .fold(None, |best: Option<(usize, u64)>, &(t, ns)| match best {
                                    Some((_, b)) if b >= ns => best,
                                    _ => Some((t, ns)),
                                });
                        best.filter(|&(_, ns)| ns >= idle).map(|(t, _)| t)
                    })
                    .collect()
            })
            .collect()
    }
}

/// Symbols: where the whole snapshot has few enough tasks, each task's rank
/// in it, so a task has the same letter in every view (a window of the trace
/// included); otherwise in order of appearance, reading the picture column by
/// column, so the dominant tasks get letters.
fn symbols(
    trace: &Trace,
    grid: &Grid,
    dominant: &[Vec<Option<usize>>],
    cols: usize,
) -> Vec<Option<char>> {
    let mut symbol: Vec<Option<char>> = vec![None; grid.labels.len()];
    if trace.ranked() <= SYMBOLS.len() {
        for (id, &t) in &grid.task_index {
            if dominant.iter().any(|row| row.contains(&Some(t))) {
                symbol[t] = Some(SYMBOLS[trace.rank(*id)] as char);
            }
        }
        return symbol;
    }
    let mut next = 0;
    for i in 0..cols {
        for row in dominant {
            if let Some(t) = row[i]
                && symbol[t].is_none()
            {
                symbol[t] = Some(SYMBOLS.get(next).map_or(OVERFLOW, |&c| c as char));
                next += 1;
            }
        }
    }
    symbol
}

/// The axis line: start time at the left edge, end time at the right, the
/// scale between.
fn axis(from: Duration, to: Duration, c: &Columns, label_w: usize) -> String {
    let left = fmt_dur(from);
    let right = fmt_dur(to);
    let scale = format!(
        "1 column = {}",
        fmt_dur(Duration::from_nanos(c.span_ns / c.cols as u64))
    );
    let mut axis = format!("{:w$}{left}", "", w = label_w + 1);
    let room = c.cols.saturating_sub(left.len() + right.len());
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
    let mut out = axis.trim_end().to_string();
    out.push('\n');
    out
}

/// One row per worker (and one of preemption marks under it, if any).
/// Returns whether any column was drawn as blocked in the kernel.
fn lanes(
    out: &mut String,
    trace: &Trace,
    grid: &Grid,
    dominant: &[Vec<Option<usize>>],
    symbol: &[Option<char>],
    c: &Columns,
    label_w: usize,
) -> bool {
    let mut any_kernel = false;
    for (w, row) in dominant.iter().enumerate() {
        let cells: String = row
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if 2 * grid.kernel[w][i] >= c.len(i) {
                    any_kernel = true;
                    IN_KERNEL
                } else {
                    d.map_or(IDLE, |t| symbol[t].unwrap_or(OVERFLOW))
                }
            })
            .collect();
        let _ = writeln!(out, "{:<label_w$}|{cells}|", trace.lane_label(w));
        if grid.any_preempt {
            let marks: String = grid.preempt[w]
                .iter()
                .map(|&p| if p { PREEMPT } else { ' ' })
                .collect();
            let line = format!("{:label_w$} {marks}", "");
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    any_kernel
}

/// The legend: shown tasks by symbol and their run time, the key, then the
/// biggest of the tasks that never dominate a column.
fn legend(out: &mut String, grid: &Grid, symbol: &[Option<char>], any_kernel: bool, width: usize) {
    let (labels, busy) = (&grid.labels, &grid.busy);
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
    if grid.any_preempt {
        let _ = write!(key, " {PREEMPT}=preempted");
    }
    if any_kernel {
        let _ = write!(key, " {IN_KERNEL}=blocked in the kernel");
    }
    entries.push(key);
    wrap_into(out, &entries, width);

    let mut hidden: Vec<usize> = (0..labels.len())
        .filter(|&t| symbol[t].is_none() && busy[t] > 0)
        .collect();
    if hidden.is_empty() {
        return;
    }
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
    wrap_into(out, &items, width);
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
