//! Optional slice recording (`Builder::trace(true)`): see the scheduler.
//!
//! Every time a worker resumes a task, the task runs until it yields, blocks,
//! is preempted or finishes: one *slice*. With tracing on, the worker appends
//! each slice to its own bounded ring buffer right after the switch. Only that
//! worker writes its buffer, so its mutex is uncontended except while a
//! snapshot copies it; the cost is a lock, a clock-free copy of four words and
//! an `Arc` clone of the name, and nothing at all when tracing is off.
//!
//! A [`Trace`] is a snapshot converted to time since the runtime started. It
//! renders as an ASCII timeline for a terminal ([`Trace::ascii_timeline`]),
//! an SVG picture for a browser or a README ([`Trace::write_svg`]), or
//! as a Chrome trace for Perfetto / `chrome://tracing`
//! ([`Trace::write_chrome_json`]).

mod ascii;
#[cfg(feature = "chrome-trace")]
mod chrome;
mod record;
mod svg;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

#[cfg(test)]
use record::RawSlice;
pub(crate) use record::TraceBuffers;

use crate::task::TaskId;

/// Why a slice ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SliceEnd {
    /// The task called `yield_now`.
    Yield,
    /// The quantum expired and the task was preempted.
    Preempted,
    /// The task blocked (sleep, join, lock, channel) until something wakes it.
    Blocked,
    /// The task returned (or panicked): its last slice.
    Done,
    /// Not a slice of its own: an interval *inside* one of the task's
    /// slices during which it held its worker's thread blocked in the
    /// kernel (`std::thread::sleep`, `std::sync::mpsc`, a blocking read...),
    /// as the monitor saw it. Drawn as `~` in the timeline.
    InKernel,
}

impl SliceEnd {
    /// A lower-case word for the reason (`"yield"`, `"preempted"`,
    /// `"blocked"`, `"done"`, `"in-kernel"`).
    pub fn as_str(self) -> &'static str {
        match self {
            SliceEnd::Yield => "yield",
            SliceEnd::Preempted => "preempted",
            SliceEnd::Blocked => "blocked",
            SliceEnd::Done => "done",
            SliceEnd::InKernel => "in-kernel",
        }
    }
}

impl fmt::Display for SliceEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One uninterrupted run of a task on a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slice {
    /// Index of the worker that ran it.
    pub worker: usize,
    /// The task.
    pub task: TaskId,
    /// The task's name, if it was spawned with one.
    pub name: Option<Arc<str>>,
    /// When the worker resumed the task, since the runtime started.
    pub start: Duration,
    /// When the task switched out, since the runtime started.
    pub end: Duration,
    /// Why it switched out.
    pub end_reason: SliceEnd,
}

impl Slice {
    /// `end - start`.
    pub fn duration(&self) -> Duration {
        self.end - self.start
    }

    /// The task's name, or its id (`#7`) if it has none: the label traces show.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => n.to_string(),
            None => self.task.to_string(),
        }
    }
}

/// What one task did in a trace, from [`Trace::tasks`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSummary {
    /// The task.
    pub task: TaskId,
    /// Its name, if any.
    pub name: Option<Arc<str>>,
    /// Slices recorded.
    pub slices: u64,
    /// Total time over those slices.
    pub run_time: Duration,
    /// Slices ended by preemption.
    pub preempted: u64,
    /// Slices ended by `yield_now`.
    pub yields: u64,
    /// Slices ended by blocking.
    pub blocked: u64,
    /// Time inside its slices spent blocked in the kernel (included in
    /// `run_time`; see [`SliceEnd::InKernel`]).
    pub blocked_in_kernel: Duration,
    /// Whether its last slice (`Done`) is in the trace.
    pub done: bool,
    /// Start of its first recorded slice.
    pub first_start: Duration,
    /// End of its last recorded slice.
    pub last_end: Duration,
}

/// Recorded slices of every worker, from [`Runtime::trace`](crate::Runtime::trace).
///
/// ```
/// let rt = kvant::Runtime::builder().workers(1).trace(true).build().unwrap();
/// rt.spawn(|| kvant::yield_now()).join().unwrap();
/// // The worker records a slice right after it ends, which can be a moment
/// // after `join` returned: wait for the task's last slice to show up.
/// let trace = loop {
///     let t = rt.trace().unwrap();
///     if t.slices().len() == 2 {
///         break t; // yield, then done
///     }
///     std::thread::yield_now();
/// };
/// println!("{}", trace.ascii_timeline(80));
/// # #[cfg(feature = "chrome-trace")] {
/// let json: String = trace.to_chrome_json(); // open in https://ui.perfetto.dev
/// assert!(json.contains("traceEvents"));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Trace {
    /// Sorted by start time (then worker).
    slices: Vec<Slice>,
    workers: usize,
    /// Lanes from this index on are compensating threads.
    regular: usize,
    dropped: u64,
    /// The time range the trace covers (and the timeline renders).
    from: Duration,
    to: Duration,
    /// Each task's rank in the whole snapshot (named tasks by name, then by
    /// first slice); windows share it, so a task keeps its letter and colour
    /// in every view.
    order: Arc<HashMap<TaskId, usize>>,
}

impl Trace {
    fn new(mut slices: Vec<Slice>, workers: usize, regular: usize, dropped: u64) -> Trace {
        slices.sort_by_key(|s| (s.start, s.worker));
        let from = slices.iter().map(|s| s.start).min().unwrap_or_default();
        let to = slices.iter().map(|s| s.end).max().unwrap_or_default();
        // Named tasks by name, then the rest by first slice: two runs of
        // the same program give `hog-1` the same letter and colour.
        let mut first: Vec<(TaskId, Option<Arc<str>>)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for s in &slices {
            if seen.insert(s.task) {
                first.push((s.task, s.name.clone()));
            }
        }
        let mut keyed: Vec<(bool, Option<Arc<str>>, usize, TaskId)> = first
            .into_iter()
            .enumerate()
            .map(|(i, (id, name))| (name.is_none(), name, i, id))
            .collect();
        keyed.sort();
        let order: HashMap<TaskId, usize> = keyed
            .into_iter()
            .enumerate()
            .map(|(rank, (_, _, _, id))| (id, rank))
            .collect();
        Trace {
            slices,
            workers,
            regular,
            dropped,
            from,
            to,
            order: Arc::new(order),
        }
    }

    /// The task's rank by first slice in the snapshot this trace (or the
    /// trace it is a window of) was taken from: the key of its stable
    /// letter and colour.
    pub(crate) fn rank(&self, task: TaskId) -> usize {
        self.order.get(&task).copied().unwrap_or(usize::MAX)
    }

    /// Tasks in the whole snapshot (not just this window).
    pub(crate) fn ranked(&self) -> usize {
        self.order.len()
    }

    /// Every recorded slice, sorted by start time.
    pub fn slices(&self) -> &[Slice] {
        &self.slices
    }

    /// Slices that were recorded but dropped because a worker's buffer was
    /// full (the oldest go first; the buffer keeps the most recent 65536
    /// slices per worker).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Timeline rows: the runtime's workers, then the compensation slots
    /// used (`Slice::worker` counts on past the workers for those).
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Whether row `lane` is a compensating thread's (see
    /// `Builder::max_compensation`) rather than a worker's.
    pub fn is_compensating(&self, lane: usize) -> bool {
        lane >= self.regular
    }

    /// The short row label: `w0`, `w1`, ... for workers, `c0`, ... for
    /// compensation slots.
    pub fn lane_label(&self, lane: usize) -> String {
        if self.is_compensating(lane) {
            format!("c{}", lane - self.regular)
        } else {
            format!("w{lane}")
        }
    }

    /// The time range covered: from the first slice's start to the last
    /// slice's end, or the range given to [`Trace::window`].
    pub fn span(&self) -> (Duration, Duration) {
        (self.from, self.to)
    }

    /// The part of the trace between `from` and `to` (times since the
    /// runtime started): the slices that overlap it, unclipped, and a span of
    /// exactly `from..to`, so that the timeline zooms in on that range.
    pub fn window(&self, from: Duration, to: Duration) -> Trace {
        let to = to.max(from);
        Trace {
            slices: self
                .slices
                .iter()
                .filter(|s| s.start < to && (s.end > from || s.start >= from))
                .cloned()
                .collect(),
            workers: self.workers,
            regular: self.regular,
            dropped: self.dropped,
            from,
            to,
            order: self.order.clone(),
        }
    }

    /// Per-task totals, ordered by each task's first slice.
    pub fn tasks(&self) -> Vec<TaskSummary> {
        let mut index: HashMap<TaskId, usize> = HashMap::new();
        let mut out: Vec<TaskSummary> = Vec::new();
        for s in &self.slices {
            let in_kernel = s.end_reason == SliceEnd::InKernel;
            let i = *index.entry(s.task).or_insert_with(|| {
                out.push(TaskSummary {
                    task: s.task,
                    name: s.name.clone(),
                    slices: 0,
                    run_time: Duration::ZERO,
                    preempted: 0,
                    yields: 0,
                    blocked: 0,
                    blocked_in_kernel: Duration::ZERO,
                    done: false,
                    first_start: s.start,
                    last_end: s.end,
                });
                out.len() - 1
            });
            let t = &mut out[i];
            if in_kernel {
                t.blocked_in_kernel += s.duration();
                continue;
            }
            t.slices += 1;
            t.run_time += s.duration();
            t.last_end = t.last_end.max(s.end);
            match s.end_reason {
                SliceEnd::Yield => t.yields += 1,
                SliceEnd::Preempted => t.preempted += 1,
                SliceEnd::Blocked => t.blocked += 1,
                SliceEnd::Done => t.done = true,
                SliceEnd::InKernel => {}
            }
        }
        out
    }

    /// The trace in Chrome's trace event format: one track per worker, one
    /// complete (`"X"`) event per slice. Open it in <https://ui.perfetto.dev>
    /// or `chrome://tracing`.
    #[cfg(feature = "chrome-trace")]
    pub fn to_chrome_json(&self) -> String {
        chrome::to_value(self).to_string()
    }

    /// Write [`Trace::to_chrome_json`] to `path`.
    #[cfg(feature = "chrome-trace")]
    pub fn write_chrome_json(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
        serde_json::to_writer(&mut w, &chrome::to_value(self))?;
        w.flush()
    }

    /// The trace as an SVG picture (see [`Trace::write_svg`]).
    pub fn to_svg(&self, title: &str) -> String {
        svg::render(self, title)
    }

    /// Write the trace as an SVG picture to `path`: one lane per worker,
    /// a stable colour per task (the same in every [`window`](Self::window)
    /// of this trace, and in the legend), red marks where slices were
    /// preempted, time blocked in the kernel hatched, idle time blank, a
    /// time axis, and a hover title on every shape (task, slice length, why
    /// it ended). Opens in any browser; readable for a second of trace and
    /// zoomed to a few milliseconds.
    pub fn write_svg(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        let title = path
            .as_ref()
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        std::fs::write(path, self.to_svg(&title))
    }

    /// A text picture of the trace, at most `width` columns wide: one row
    /// per worker, one character per time bucket naming the task that ran
    /// most of that bucket (`.` = idle), a row of `^` under buckets that
    /// contain a preemption, a time axis and a legend.
    pub fn ascii_timeline(&self, width: usize) -> String {
        ascii::render(self, width)
    }
}

#[cfg(test)]
mod tests;
