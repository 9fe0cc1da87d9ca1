//! Unit tests: ring buffers, time conversion, rendering and JSON shape, on
//! synthetic slices (ticks = nanoseconds) so every expectation is exact.

use std::sync::Arc;
use std::time::Duration;

use super::*;

const MS: u64 = 1_000_000;

/// `n` real task ids, from the public API only (so these tests do not depend
/// on how the task module mints ids).
fn ids(n: usize) -> Vec<TaskId> {
    let rt = crate::Runtime::builder().workers(1).build().unwrap();
    (0..n).map(|_| rt.spawn(|| ()).id()).collect()
}

struct Builder {
    bufs: TraceBuffers,
    ids: Vec<TaskId>,
}

impl Builder {
    fn new(workers: usize, tasks: usize) -> Self {
        Builder {
            bufs: TraceBuffers::with_capacity(workers, 0, 1 << 16),
            ids: ids(tasks),
        }
    }

    /// Task `t` (named `t<t>`) ran on `worker` from `a` to `b` ms.
    fn slice(&self, worker: usize, t: usize, a: u64, b: u64, end: SliceEnd) -> &Self {
        self.bufs.push(
            worker,
            RawSlice {
                task: self.ids[t],
                name: Some(Arc::from(format!("t{t}"))),
                start: a * MS,
                end: b * MS,
                end_reason: end,
            },
        );
        self
    }

    fn trace(&self) -> Trace {
        self.bufs.snapshot_at(0, |t| t)
    }
}

/// The cell row of worker `w` (between the `|`s).
fn row(picture: &str, w: usize) -> String {
    let prefix = format!("w{w} ");
    let line = picture
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no row for worker {w} in\n{picture}"));
    line.split('|').nth(1).unwrap().to_string()
}

#[test]
fn ring_drops_oldest_and_counts() {
    let bufs = TraceBuffers::with_capacity(2, 0, 3);
    let id = ids(1)[0];
    for i in 0..5u64 {
        bufs.push(
            0,
            RawSlice {
                task: id,
                name: None,
                start: i * 10,
                end: i * 10 + 5,
                end_reason: SliceEnd::Yield,
            },
        );
    }
    let stray = RawSlice {
        task: id,
        name: None,
        start: 0,
        end: 1,
        end_reason: SliceEnd::Yield,
    };
    bufs.push(7, stray); // out of range: ignored
    let t = bufs.snapshot_at(0, |t| t);
    assert_eq!(t.dropped(), 2);
    let starts: Vec<u64> = t
        .slices()
        .iter()
        .map(|s| s.start.as_nanos() as u64)
        .collect();
    assert_eq!(starts, [20, 30, 40]);
    assert_eq!(t.workers(), 2);
    assert_eq!(t.slices()[0].label(), id.to_string());
}

#[test]
fn snapshot_converts_and_clamps_before_epoch() {
    let bufs = TraceBuffers::with_capacity(1, 0, 8);
    let id = ids(1)[0];
    let raw = |start, end| RawSlice {
        task: id,
        name: None,
        start,
        end,
        end_reason: SliceEnd::Done,
    };
    bufs.push(0, raw(995, 1010)); // starts 5 ticks before the epoch
    bufs.push(0, raw(1100, 1300));
    let t = bufs.snapshot_at(1000, |d| d * 2);
    assert_eq!(t.slices()[0].start, Duration::ZERO);
    assert_eq!(t.slices()[0].end, Duration::from_nanos(20));
    assert_eq!(t.slices()[1].start, Duration::from_nanos(200));
    assert_eq!(t.slices()[1].duration(), Duration::from_nanos(400));
    assert_eq!(t.span(), (Duration::ZERO, Duration::from_nanos(600)));
}

#[test]
fn monopoly_is_a_solid_run_round_robin_interleaves() {
    let b = Builder::new(2, 3);
    // Worker 0: t0 for 50 ms then t1 for 50 ms (cooperative monopoly).
    b.slice(0, 0, 0, 50, SliceEnd::Done)
        .slice(0, 1, 50, 100, SliceEnd::Done);
    // Worker 1: t1 and t2 alternate every 10 ms, preempted each time, then idle.
    for k in 0..5 {
        let t = if k % 2 == 0 { 1 } else { 2 };
        b.slice(1, t, k * 10, k * 10 + 10, SliceEnd::Preempted);
    }
    let pic = b.trace().ascii_timeline(3 + 2 + 20); // 20 columns of 5 ms
    assert_eq!(row(&pic, 0), "AAAAAAAAAABBBBBBBBBB", "{pic}");
    assert_eq!(row(&pic, 1), "BBCCBBCCBB..........", "{pic}");
    // The preemption row under worker 1 marks each preemption's column.
    let lines: Vec<&str> = pic.lines().collect();
    let w1 = lines.iter().position(|l| l.starts_with("w1 ")).unwrap();
    assert_eq!(lines[w1 + 1], "     ^ ^ ^ ^ ^", "{pic}");
    assert!(
        lines[w1 - 1].trim().is_empty(),
        "no preemption on worker 0:\n{pic}"
    );
    assert!(pic.contains("A=t0 50.0ms"), "{pic}");
    assert!(pic.contains("B=t1 80.0ms"), "{pic}");
    assert!(pic.contains("C=t2 20.0ms"), "{pic}");
    assert!(pic.contains(".=idle ^=preempted"), "{pic}");
    let wide = b.trace().ascii_timeline(3 + 2 + 40);
    assert!(
        wide.lines().next().unwrap().contains("1 column = 2.5ms"),
        "{wide}"
    );
}

#[test]
fn short_tasks_are_listed_not_drawn() {
    let b = Builder::new(1, 2);
    b.slice(0, 0, 0, 100, SliceEnd::Done);
    b.slice(0, 1, 100, 100, SliceEnd::Blocked); // zero-length
    b.bufs.push(
        0,
        RawSlice {
            task: b.ids[1],
            name: Some(Arc::from("t1")),
            start: 100 * MS,
            end: 100 * MS + 40_000,
            end_reason: SliceEnd::Done,
        },
    );
    let pic = b.trace().ascii_timeline(40);
    assert!(!pic.contains("^"), "{pic}");
    assert!(
        pic.contains("1 task never dominates a column (40us in all):"),
        "{pic}"
    );
    assert!(pic.contains("t1 40us"), "{pic}");
}

#[test]
fn lines_fit_the_width() {
    let b = Builder::new(12, 80);
    // Every worker busy all the time: each task dominates some columns.
    for t in 0..80u64 {
        let (w, k) = (t as usize % 12, t / 12);
        b.slice(w, t as usize, k * 30, k * 30 + 30, SliceEnd::Yield);
    }
    for width in [40, 80, 100] {
        let pic = b.trace().ascii_timeline(width);
        for l in pic.lines() {
            assert!(l.len() <= width, "line longer than {width}: {l:?}\n{pic}");
        }
        assert!(pic.lines().any(|l| l.starts_with("w11 |")), "{pic}");
    }
    // 80 tasks dominate columns but only 62 have symbols.
    let pic = b.trace().ascii_timeline(300);
    assert!(pic.contains("*=t"), "{pic}");
}

#[test]
fn empty_trace_renders() {
    let t = TraceBuffers::with_capacity(2, 0, 4).snapshot_at(0, |t| t);
    assert!(t.ascii_timeline(80).contains("empty trace"));
    #[cfg(feature = "chrome-trace")]
    let v: serde_json::Value = serde_json::from_str(&t.to_chrome_json()).unwrap();
    #[cfg(feature = "chrome-trace")]
    assert_eq!(v["traceEvents"].as_array().unwrap().len(), 1 + 2 * 2);
}

#[test]
fn window_zooms() {
    let b = Builder::new(1, 2);
    for k in 0..10 {
        b.slice(
            0,
            (k % 2) as usize,
            k * 10,
            k * 10 + 10,
            SliceEnd::Preempted,
        );
    }
    let t = b.trace();
    let w = t.window(Duration::from_millis(25), Duration::from_millis(45));
    assert_eq!(
        w.span(),
        (Duration::from_millis(25), Duration::from_millis(45))
    );
    let starts: Vec<_> = w.slices().iter().map(|s| s.start.as_millis()).collect();
    assert_eq!(starts, [20, 30, 40]);
    // Clipped to the window in the picture: 5 ms of A, 10 of B, 5 of A.
    assert_eq!(
        row(&w.ascii_timeline(3 + 2 + 20), 0),
        "AAAAABBBBBBBBBBAAAAA"
    );
}

#[test]
fn task_summaries() {
    let b = Builder::new(2, 2);
    b.slice(0, 0, 0, 10, SliceEnd::Preempted)
        .slice(1, 1, 0, 5, SliceEnd::Yield)
        .slice(1, 0, 10, 12, SliceEnd::Blocked)
        .slice(0, 0, 20, 21, SliceEnd::Done);
    let s = b.trace().tasks();
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].task, b.ids[0]);
    assert_eq!(
        (s[0].slices, s[0].preempted, s[0].blocked, s[0].done),
        (3, 1, 1, true)
    );
    assert_eq!(s[0].run_time, Duration::from_millis(13));
    assert_eq!(s[0].last_end, Duration::from_millis(21));
    assert_eq!((s[1].yields, s[1].done), (1, false));
}

#[test]
#[cfg(feature = "chrome-trace")]
fn chrome_json_shape() {
    let b = Builder::new(2, 2);
    b.slice(0, 0, 1, 3, SliceEnd::Preempted)
        .slice(1, 1, 2, 4, SliceEnd::Done);
    b.bufs.push(
        1,
        RawSlice {
            task: b.ids[1],
            name: None,
            start: 5 * MS + 500,
            end: 6 * MS,
            end_reason: SliceEnd::Yield,
        },
    );
    let v: serde_json::Value = serde_json::from_str(&b.trace().to_chrome_json()).unwrap();
    let events = v["traceEvents"].as_array().unwrap();
    let meta: Vec<_> = events.iter().filter(|e| e["ph"] == "M").collect();
    assert_eq!(meta.len(), 1 + 2 * 2);
    assert!(
        meta.iter().any(|e| e["name"] == "thread_name"
            && e["tid"] == 1
            && e["args"]["name"] == "worker 1")
    );
    let x: Vec<_> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(x.len(), 3);
    assert_eq!(x[0]["name"], "t0");
    assert_eq!(x[0]["ts"], 1000.0);
    assert_eq!(x[0]["dur"], 2000.0);
    assert_eq!(
        (x[0]["pid"].as_u64(), x[0]["tid"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(x[0]["args"]["end"], "preempted");
    assert_eq!(x[0]["args"]["task"].as_u64(), Some(b.ids[0].as_u64()));
    assert_eq!(x[1]["args"]["end"], "done");
    assert_eq!(
        x[2]["name"],
        b.ids[1].to_string(),
        "unnamed task shows its id"
    );
    assert_eq!(x[2]["ts"], 5000.5);
    assert_eq!(v["otherData"]["dropped_slices"], 0);
}

#[test]
fn durations_format_short() {
    use super::ascii::fmt_dur;
    let d = Duration::from_nanos;
    assert_eq!(fmt_dur(d(0)), "0");
    assert_eq!(fmt_dur(d(1_500)), "1.5us");
    assert_eq!(fmt_dur(d(850_000)), "850us");
    assert_eq!(fmt_dur(d(12_500_000)), "12.5ms");
    assert_eq!(fmt_dur(d(1_213_400_000)), "1213ms");
    assert_eq!(fmt_dur(d(12_300_000_000)), "12.3s");
}

/// The document parsed by a real XML parser (roxmltree rejects what is not
/// well-formed: unbalanced tags, unquoted attributes, unknown entities).
/// Returns the elements with their attributes, in document order.
fn parse_xml(doc: &str) -> Vec<(String, HashMap<String, String>)> {
    let parsed = roxmltree::Document::parse(doc).unwrap_or_else(|e| panic!("not XML: {e}\n{doc}"));
    parsed
        .descendants()
        .filter(|n| n.is_element())
        .map(|n| {
            let attrs = n
                .attributes()
                .map(|a| (a.name().to_string(), a.value().to_string()))
                .collect();
            (n.tag_name().name().to_string(), attrs)
        })
        .collect()
}

#[test]
fn svg_is_xml_with_a_lane_per_worker_slices_and_marks() {
    let b = Builder::new(2, 3);
    // Slices many pixels wide, so each is exactly one shape.
    b.slice(0, 0, 0, 10, SliceEnd::Preempted)
        .slice(0, 1, 10, 20, SliceEnd::Preempted)
        .slice(0, 0, 20, 30, SliceEnd::Done)
        .slice(1, 2, 0, 15, SliceEnd::Blocked)
        .slice(1, 2, 25, 40, SliceEnd::Done);
    let t = b.trace();
    let svg = t.to_svg("test <&> trace");
    let tags = parse_xml(&svg);
    assert_eq!(tags[0].0, "svg");
    let lanes = tags
        .iter()
        .filter(|(n, a)| n == "g" && a.get("class").map(String::as_str) == Some("lane"))
        .count();
    assert_eq!(lanes, t.workers());
    let slices: Vec<_> = tags
        .iter()
        .filter(|(n, a)| n == "rect" && a.get("class").map(String::as_str) == Some("slice"))
        .collect();
    assert_eq!(slices.len(), 5, "one shape per slice:\n{svg}");
    let counted: usize = slices
        .iter()
        .map(|(_, a)| a["data-slices"].parse::<usize>().unwrap())
        .sum();
    assert_eq!(counted, t.slices().len());
    // Same task, same colour; the two tasks of lane 0 differ.
    let fill = |rank: usize| {
        slices
            .iter()
            .filter(|(_, a)| a["data-task-rank"] == rank.to_string())
            .map(|(_, a)| a["fill"].clone())
            .collect::<std::collections::HashSet<_>>()
    };
    assert_eq!(fill(0).len(), 1);
    assert_ne!(fill(0), fill(1));
    let marks = tags
        .iter()
        .filter(|(n, a)| n == "path" && a.get("class").map(String::as_str) == Some("preempt"))
        .count();
    assert_eq!(marks, 2, "one mark per preempted slice");
    assert!(
        svg.contains("t0: ran 10.00 ms, the slice ended: preempted"),
        "{svg}"
    );
    assert!(svg.contains("test &lt;&amp;&gt; trace"));
    // A window keeps colours: task 1's fill is the same zoomed in.
    let zoom = t
        .window(Duration::from_millis(10), Duration::from_millis(20))
        .to_svg("zoom");
    let z = parse_xml(&zoom);
    assert!(z.iter().any(|(n, a)| n == "rect"
        && a.get("data-task-rank") == Some(&"1".to_string())
        && fill(1).contains(&a["fill"])));
}
