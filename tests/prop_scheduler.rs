//! Property: any tree of tasks that spawn, yield, spin, join and detach
//! computes on the scheduler exactly what a sequential evaluation computes,
//! on 1 to 4 workers, cooperative or with any quantum, and every task runs
//! exactly once.
//!
//! Each node's value is a hash of its id, its own ops and its joined
//! children's values *in spawn order* (joins always take the oldest pending
//! child, and the rest are joined in order at the end), so the result does
//! not depend on scheduling, only on the tree. Every node also records its
//! value in a per-node slot, which checks detached children too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;

use kvant::{JoinHandle, Runtime};

/// Far beyond anything a passing case needs; only a hang reaches it.
const HANG: Duration = Duration::from_secs(30);

/// How a child task is spawned.
#[derive(Clone, Copy, Debug)]
enum How {
    /// `kvant::spawn`.
    Plain,
    /// `task::Builder` with a small stack and the given preemptibility.
    Builder { preemptible: bool },
}

/// One step of a task, as generated.
#[derive(Clone, Debug)]
enum Op {
    /// Spawn a child and keep its handle (joined later, in order).
    Spawn(How, Node),
    /// Spawn a child and drop its handle.
    Detach(Node),
    /// `yield_now`.
    Yield,
    /// Join the oldest child not yet joined (no-op if none).
    Join,
    /// Busy work: a loop of `n` iterations (long enough to be preempted at
    /// small quanta).
    Spin(u16),
}

/// A generated task: its ops.
#[derive(Clone, Debug)]
struct Node {
    ops: Vec<Op>,
}

/// A node with its preorder id, ready to run.
#[derive(Debug)]
struct Plan {
    id: usize,
    ops: Vec<Step>,
}

#[derive(Debug)]
enum Step {
    Spawn(How, Arc<Plan>),
    Detach(Arc<Plan>),
    Yield,
    Join,
    Spin(u16),
}

/// Number `node` and its descendants in preorder, starting at `*next`.
fn plan(node: &Node, next: &mut usize) -> Arc<Plan> {
    let id = *next;
    *next += 1;
    let ops = node
        .ops
        .iter()
        .map(|op| match op {
            Op::Spawn(how, child) => Step::Spawn(*how, plan(child, next)),
            Op::Detach(child) => Step::Detach(plan(child, next)),
            Op::Yield => Step::Yield,
            Op::Join => Step::Join,
            Op::Spin(n) => Step::Spin(*n),
        })
        .collect();
    Arc::new(Plan { id, ops })
}

fn mix(x: u64) -> u64 {
    // splitmix64 finaliser
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn spin(n: u16) -> u64 {
    let mut acc = 0u64;
    for i in 0..u64::from(n) * 4 {
        acc = std::hint::black_box(acc.wrapping_mul(31).wrapping_add(i));
    }
    acc
}

/// The sequential model: the value of `p`, recording every node's value.
fn model(p: &Plan, values: &mut [u64]) -> u64 {
    let mut v = mix(p.id as u64);
    let mut pending = std::collections::VecDeque::new();
    for step in &p.ops {
        match step {
            Step::Spawn(_, c) => pending.push_back(model(c, values)),
            Step::Detach(c) => {
                model(c, values);
            }
            Step::Yield => v = mix(v ^ 0x5955_4C44),
            Step::Join => {
                if let Some(cv) = pending.pop_front() {
                    v = mix(v ^ cv);
                }
            }
            Step::Spin(n) => v = mix(v.wrapping_add(spin(*n))),
        }
    }
    for cv in pending {
        v = mix(v ^ cv);
    }
    values[p.id] = v;
    v
}

/// What the tasks of one run share.
struct Record {
    runs: Vec<AtomicU32>,
    values: Vec<AtomicU64>,
    finished: AtomicUsize,
}

fn spawn_child(how: How, c: &Arc<Plan>, rec: &Arc<Record>) -> JoinHandle<u64> {
    let (c, rec) = (c.clone(), rec.clone());
    match how {
        How::Plain => kvant::spawn(move || run(&c, &rec)),
        How::Builder { preemptible } => kvant::task::Builder::new()
            .stack_size(64 * 1024)
            .preemptible(preemptible)
            .spawn(move || run(&c, &rec))
            .expect("spawn with a valid stack size inside a task"),
    }
}

/// The same evaluation as [`model`], as a tree of kvant tasks.
fn run(p: &Plan, rec: &Arc<Record>) -> u64 {
    rec.runs[p.id].fetch_add(1, Ordering::Relaxed);
    let mut v = mix(p.id as u64);
    let mut pending = std::collections::VecDeque::new();
    for step in &p.ops {
        match step {
            Step::Spawn(how, c) => pending.push_back(spawn_child(*how, c, rec)),
            Step::Detach(c) => drop(spawn_child(How::Plain, c, rec)),
            Step::Yield => {
                kvant::yield_now();
                v = mix(v ^ 0x5955_4C44);
            }
            Step::Join => {
                if let Some(h) = pending.pop_front() {
                    v = mix(v ^ h.join().expect("child task failed"));
                }
            }
            Step::Spin(n) => v = mix(v.wrapping_add(spin(*n))),
        }
    }
    for h in pending {
        v = mix(v ^ h.join().expect("child task failed"));
    }
    rec.values[p.id].store(v, Ordering::Relaxed);
    rec.finished.fetch_add(1, Ordering::Release);
    v
}

fn how() -> impl Strategy<Value = How> {
    prop_oneof![
        2 => Just(How::Plain),
        1 => any::<bool>().prop_map(|preemptible| How::Builder { preemptible }),
    ]
}

fn simple_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Yield),
        Just(Op::Join),
        (0u16..5000).prop_map(Op::Spin),
    ]
}

fn tree() -> impl Strategy<Value = Node> {
    let leaf = vec(simple_op(), 0..4).prop_map(|ops| Node { ops });
    // Up to 5 levels, aiming at trees of a few dozen tasks.
    leaf.prop_recursive(5, 128, 5, |inner| {
        vec(
            prop_oneof![
                4 => (how(), inner.clone()).prop_map(|(h, n)| Op::Spawn(h, n)),
                1 => inner.prop_map(Op::Detach),
                3 => simple_op(),
            ],
            1..8,
        )
        .prop_map(|ops| Node { ops })
    })
}

fn quantum() -> impl Strategy<Value = Option<Duration>> {
    prop_oneof![
        Just(None),
        Just(Some(Duration::from_micros(50))),
        Just(Some(Duration::from_millis(1))),
        Just(Some(Duration::from_millis(10))),
    ]
}

proptest! {
    // PROPTEST_CASES overrides the case count (e.g. for a longer soak).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        max_shrink_iters: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn scheduler_matches_sequential_model(
        root in tree(),
        workers in 1usize..=4,
        quantum in quantum(),
    ) {
        let mut nodes = 0;
        let root = plan(&root, &mut nodes);
        let mut expected = vec![0u64; nodes];
        let expected_root = model(&root, &mut expected);

        let rt = Runtime::builder().workers(workers).quantum(quantum).build().unwrap();
        let rec = Arc::new(Record {
            runs: (0..nodes).map(|_| AtomicU32::new(0)).collect(),
            values: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            finished: AtomicUsize::new(0),
        });
        let (r, rc) = (root.clone(), rec.clone());
        let h = rt.spawn(move || run(&r, &rc));
        let got = match h.join_timeout(HANG) {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(TestCaseError::fail(format!("root task failed: {e}"))),
            Err(_) => return Err(TestCaseError::fail(format!("hang: root not done in {HANG:?}"))),
        };
        prop_assert_eq!(got, expected_root);

        // Detached subtrees may still be running: wait for all, bounded.
        let deadline = Instant::now() + HANG;
        while rec.finished.load(Ordering::Acquire) < nodes {
            prop_assert!(
                Instant::now() < deadline,
                "only {} of {} tasks finished",
                rec.finished.load(Ordering::Acquire),
                nodes
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        for (id, want) in expected.iter().enumerate() {
            prop_assert_eq!(rec.runs[id].load(Ordering::Relaxed), 1, "node {} run count", id);
            prop_assert_eq!(rec.values[id].load(Ordering::Relaxed), *want, "node {} value", id);
        }
        let report = rt.shutdown_timeout(HANG);
        prop_assert!(report.all_finished, "{:?}", report);
        prop_assert_eq!(report.cancelled + report.leaked + report.stuck_workers, 0);
    }
}
