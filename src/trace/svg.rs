//! The trace as an SVG picture: one lane per worker, one rectangle per run
//! of slices, a stable colour per task, preemption marks, time blocked in
//! the kernel hatched, idle time left blank, and a hover title on every
//! shape (task, length, why it ended). No dependency: the markup is written
//! by hand.
//!
//! Each pixel column of a lane shows the task that ran most of it, as the
//! ASCII timeline does per character: a 1 s picture at a 100 µs quantum
//! would otherwise hold tens of thousands of shapes. Zoomed in, slices are
//! drawn to the pixel. A shape's title says how many slices it stands for.

use std::fmt::Write;
use std::time::Duration;

use super::{SliceEnd, Trace};

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 46.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 30.0;
const LANE: f64 = 26.0;
const GAP: f64 = 10.0;
const LEGEND_ROW: f64 = 18.0;
/// Tasks listed in the legend at most (the rest are counted).
const LEGEND_MAX: usize = 24;

/// The fill colour of the task ranked `rank` in its snapshot: hues spread
/// by the golden angle, so neighbours in rank differ clearly.
pub(super) fn colour(rank: usize) -> String {
    if rank == usize::MAX {
        return "#888888".into();
    }
    let hue = (rank as f64 * 137.507_764) % 360.0;
    let light = [52.0, 40.0, 64.0][(rank / 3) % 3];
    format!("hsl({hue:.0},62%,{light:.0}%)")
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn fmt_dur(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        "0".into()
    } else if ns >= 1_000_000_000 {
        format!("{:.2} s", d.as_secs_f64())
    } else if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.1} µs", ns as f64 / 1e3)
    }
}

/// A step for axis ticks: 1, 2 or 5 times a power of ten, about `span / 8`.
fn tick_step(span_ns: f64) -> f64 {
    let raw = span_ns / 8.0;
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * p)
}

/// One task's time in one pixel column of one lane.
#[derive(Clone)]
struct Cell {
    rank: usize,
    ns: f64,
}

/// One shape: neighbouring columns in which one task ran most of the time.
struct Run {
    lane: usize,
    rank: usize,
    start_col: usize,
    end_col: usize,
    /// Slices that ended inside the shape, and how the last of them did
    /// (filled in after the shapes are known).
    slices: usize,
    last_end: SliceEnd,
    /// Nanoseconds the task ran inside the shape: its columns' time, then,
    /// once a slice ends inside it, exactly those slices' time.
    busy: f64,
}

pub(super) fn render(trace: &Trace, title: &str) -> String {
    let (from, to) = trace.span();
    let lanes = trace.workers().max(1);
    let span_ns = (to.saturating_sub(from)).as_nanos().max(1) as f64;
    let plot = WIDTH - LEFT - RIGHT;
    let x_of = |t: Duration| LEFT + (t.saturating_sub(from).as_nanos() as f64 / span_ns) * plot;
    let x_of = |t: Duration| x_of(t.clamp(from, to));
    let px_ns = span_ns / plot;
    let lane_y = |l: usize| TOP + l as f64 * (LANE + GAP);

    // Per lane and pixel column: time per task. A column shows the task
    // that ran most of it (idle if the lane was idle most of it), and
    // neighbouring columns of one task become one shape. Zoomed in, slices
    // span many columns and are drawn to the pixel; zoomed out, a 1 s view
    // stays a few thousand shapes however many slices it holds.
    let cols = plot.floor().max(1.0) as usize;
    let col_ns = span_ns / cols as f64;
    let from_ns = from.as_nanos() as f64;
    let mut grid: Vec<Vec<Vec<Cell>>> = vec![vec![Vec::new(); cols]; lanes];
    let mut labels: std::collections::HashMap<usize, String> = Default::default();
    let mut kernel: Vec<(usize, Duration, Duration, String)> = Vec::new();
    let mut marks: Vec<(usize, Duration, String)> = Vec::new();
    for s in trace.slices() {
        let lane = s.worker.min(lanes - 1);
        if s.end_reason == SliceEnd::InKernel {
            kernel.push((lane, s.start, s.end, s.label()));
            continue;
        }
        if s.end_reason == SliceEnd::Preempted && s.end >= from && s.end <= to {
            marks.push((lane, s.end, s.label()));
        }
        let rank = trace.rank(s.task);
        labels.entry(rank).or_insert_with(|| s.label());
        let a = (s.start.as_nanos() as f64 - from_ns).max(0.0);
        let b = (s.end.as_nanos() as f64 - from_ns).min(span_ns);
        if b <= a {
            continue;
        }
        let (c0, c1) = (
            ((a / col_ns) as usize).min(cols - 1),
            (((b - 1e-9) / col_ns) as usize).min(cols - 1),
        );
        for (c, cell) in grid[lane].iter_mut().enumerate().take(c1 + 1).skip(c0) {
            let lo = (c as f64 * col_ns).max(a);
            let hi = ((c + 1) as f64 * col_ns).min(b);
            if hi <= lo {
                continue;
            }
            let i = match cell.iter().position(|x| x.rank == rank) {
                Some(i) => i,
                None => {
                    cell.push(Cell { rank, ns: 0.0 });
                    cell.len() - 1
                }
            };
            cell[i].ns += hi - lo;
        }
    }
    let mut runs: Vec<Run> = Vec::new();
    for (lane, row) in grid.iter().enumerate() {
        let mut open: Option<Run> = None;
        for (c, cell) in row.iter().enumerate() {
            let used: f64 = cell.iter().map(|x| x.ns).sum();
            let best = cell
                .iter()
                .max_by(|x, y| x.ns.total_cmp(&y.ns))
                .filter(|x| x.ns >= col_ns - used);
            match (best, open.as_mut()) {
                (Some(x), Some(r)) if r.rank == x.rank && r.end_col == c => {
                    r.end_col = c + 1;
                    r.busy += x.ns;
                }
                (best, _) => {
                    runs.extend(open.take());
                    open = best.map(|x| Run {
                        lane,
                        rank: x.rank,
                        start_col: c,
                        end_col: c + 1,
                        slices: 0,
                        last_end: SliceEnd::Done, // read only once slices > 0
                        busy: x.ns,
                    });
                }
            }
        }
        runs.extend(open);
    }
    // Which shape each slice ended in: its task's shape on its lane that
    // covers the end (or ends right before it, when the last column went to
    // the task that ran next), so the titles count every visible slice.
    let mut by_key: std::collections::HashMap<(usize, usize), Vec<usize>> = Default::default();
    for (i, r) in runs.iter().enumerate() {
        by_key.entry((r.lane, r.rank)).or_default().push(i);
    }
    for s in trace.slices() {
        if s.end_reason == SliceEnd::InKernel {
            continue;
        }
        let lane = s.worker.min(lanes - 1);
        let Some(list) = by_key.get(&(lane, trace.rank(s.task))) else {
            continue;
        };
        let b = (s.end.as_nanos() as f64 - from_ns).clamp(0.0, span_ns);
        let c = (((b - 1e-9).max(0.0) / col_ns) as usize).min(cols - 1);
        let hit = list
            .iter()
            .copied()
            .find(|&i| runs[i].start_col <= c && c <= runs[i].end_col);
        if let Some(i) = hit {
            let r = &mut runs[i];
            if r.slices == 0 {
                r.busy = 0.0; // from the slices from now on, exactly
            }
            r.slices += 1;
            r.last_end = s.end_reason;
            let a = (s.start.as_nanos() as f64 - from_ns).clamp(0.0, span_ns);
            r.busy += b - a;
        }
    }
    let label_of = |rank: usize| labels.get(&rank).cloned().unwrap_or_default();

    // Legend: tasks in rank order.
    let mut legend: Vec<(usize, String)> = labels.iter().map(|(k, l)| (*k, l.clone())).collect();
    legend.sort_by_key(|(k, _)| *k);
    let shown = legend.len().min(LEGEND_MAX);
    let per_row = 4;
    let legend_rows = shown.div_ceil(per_row) + usize::from(legend.len() > shown);
    let lanes_bottom = lane_y(lanes) - GAP;
    let height = lanes_bottom + 34.0 + legend_rows as f64 * LEGEND_ROW + 8.0;

    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:.0}" height="{height:.0}" viewBox="0 0 {WIDTH:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(o, "<title>{}</title>", esc(title));
    o.push_str(
        r##"<defs><pattern id="kernel" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#ffffff" fill-opacity="0.35"/><line x1="0" y1="0" x2="0" y2="6" stroke="#222222" stroke-width="2.5"/></pattern></defs>
"##,
    );
    let _ = writeln!(
        o,
        r##"<rect x="0" y="0" width="{WIDTH:.0}" height="{height:.0}" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        o,
        r##"<text x="{LEFT:.0}" y="12" font-weight="bold">{}</text>"##,
        esc(title)
    );

    // Time axis: ticks and grid lines.
    let step = tick_step(span_ns);
    o.push_str("<g class=\"axis\" fill=\"#444444\" stroke=\"#dddddd\">\n");
    let first = (from.as_nanos() as f64 / step).ceil() * step;
    let mut t = first;
    while t <= to.as_nanos() as f64 + 0.5 {
        let x = x_of(Duration::from_nanos(t as u64));
        let _ = writeln!(
            o,
            r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{lanes_bottom:.1}"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" stroke="none">{}</text>"#,
            TOP - 4.0,
            TOP - 8.0,
            fmt_dur(Duration::from_nanos(t as u64))
        );
        t += step;
    }
    o.push_str("</g>\n");

    // Lanes (their background is idle time).
    for l in 0..lanes {
        let y = lane_y(l);
        let _ = writeln!(
            o,
            r##"<g class="lane" data-lane="{l}"><rect x="{LEFT:.1}" y="{y:.1}" width="{plot:.1}" height="{LANE:.1}" fill="#f3f3f3"><title>{} (idle where blank)</title></rect><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text></g>"##,
            trace.lane_label(l),
            LEFT - 6.0,
            y + LANE / 2.0 + 4.0,
            trace.lane_label(l)
        );
    }

    // Slices.
    o.push_str("<g class=\"slices\">\n");
    let col_w = plot / cols as f64;
    for r in &runs {
        let x0 = LEFT + r.start_col as f64 * col_w;
        let w = (r.end_col - r.start_col) as f64 * col_w;
        let y = lane_y(r.lane);
        let busy = Duration::from_nanos(r.busy as u64);
        let label = label_of(r.rank);
        let what = match r.slices {
            0 => format!("{label}: ran {} here (its slice goes on)", fmt_dur(busy)),
            1 => format!(
                "{label}: ran {}, the slice ended: {}",
                fmt_dur(busy),
                r.last_end.as_str()
            ),
            n => format!(
                "{label}: ran {} in {n} slices, the last ended: {}",
                fmt_dur(busy),
                r.last_end.as_str()
            ),
        };
        let _ = writeln!(
            o,
            r#"<rect class="slice" data-task-rank="{}" data-slices="{}" x="{x0:.2}" y="{:.1}" width="{w:.2}" height="{:.1}" fill="{}"><title>{}</title></rect>"#,
            r.rank,
            r.slices,
            y + 1.0,
            LANE - 2.0,
            colour(r.rank),
            esc(&what)
        );
    }
    o.push_str("</g>\n");

    // Blocked in the kernel: hatched over the slice it happened in.
    if !kernel.is_empty() {
        o.push_str("<g class=\"kernel\">\n");
        for (lane, a, b, label) in &kernel {
            let (x0, x1) = (x_of(*a), x_of(*b));
            let _ = writeln!(
                o,
                r#"<rect class="in-kernel" x="{x0:.2}" y="{:.1}" width="{:.2}" height="{:.1}" fill="url(#kernel)"><title>{}: blocked in the kernel for {}</title></rect>"#,
                lane_y(*lane) + 1.0,
                (x1 - x0).max(0.6),
                LANE - 2.0,
                esc(label),
                fmt_dur(b.saturating_sub(*a))
            );
        }
        o.push_str("</g>\n");
    }

    // Preemption marks: a small red triangle above the lane where a
    // preempted slice ended; marks closer than 3 px merge into one, whose
    // title counts them.
    o.push_str("<g class=\"preemptions\" fill=\"#d62728\">\n");
    marks.sort_by_key(|(lane, at, _)| (*lane, *at));
    let mut i = 0;
    while i < marks.len() {
        let (lane, at, label) = &marks[i];
        let x = x_of(*at);
        let mut j = i + 1;
        while j < marks.len() && marks[j].0 == *lane && x_of(marks[j].1) - x < 3.0 {
            j += 1;
        }
        let y = lane_y(*lane);
        let what = if j - i == 1 {
            format!("{} preempted at {}", esc(label), fmt_dur(*at))
        } else {
            format!("{} preemptions from {}", j - i, fmt_dur(*at))
        };
        let _ = writeln!(
            o,
            r#"<path class="preempt" data-count="{}" d="M{:.1},{:.1}h6l-3,5z"><title>{what}</title></path>"#,
            j - i,
            x - 3.0,
            y - 5.0,
        );
        i = j;
    }
    o.push_str("</g>\n");

    // Legend.
    let ly = lanes_bottom + 24.0;
    let _ = writeln!(
        o,
        r##"<g class="legend"><text x="{LEFT:.0}" y="{:.1}" fill="#444444">▼ preempted · ▨ blocked in the kernel · light grey: idle · 1 px = {}</text>"##,
        ly - 6.0,
        fmt_dur(Duration::from_nanos(px_ns as u64))
    );
    let entry_w = plot / per_row as f64;
    for (i, (rank, label)) in legend.iter().take(shown).enumerate() {
        let (cx, cy) = (
            LEFT + (i % per_row) as f64 * entry_w,
            ly + (i / per_row) as f64 * LEGEND_ROW,
        );
        let _ = writeln!(
            o,
            r#"<rect x="{cx:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            cy + 2.0,
            colour(*rank),
            cx + 16.0,
            cy + 12.0,
            esc(label)
        );
    }
    if legend.len() > shown {
        let _ = writeln!(
            o,
            r#"<text x="{LEFT:.0}" y="{:.1}">… and {} more tasks</text>"#,
            ly + (shown.div_ceil(per_row)) as f64 * LEGEND_ROW + 12.0,
            legend.len() - shown
        );
    }
    o.push_str("</g>\n</svg>\n");
    o
}
