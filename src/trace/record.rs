//! The recorder: one bounded ring of raw slices per worker, written by that
//! worker right after each switch, and the snapshot that turns the rings
//! into a [`Trace`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::{Slice, SliceEnd, Trace};
use crate::task::coroutine::{Ran, Switch};
use crate::task::{Task, TaskId};

/// Slices kept per worker; older ones are dropped (and counted) first, so a
/// long run keeps its most recent history in bounded memory (~3 MiB/worker).
pub(crate) const SLICES_PER_WORKER: usize = 1 << 16;

/// One slice as recorded, in raw clock ticks.
#[derive(Clone)]
pub(super) struct RawSlice {
    pub(super) task: TaskId,
    pub(super) name: Option<Arc<str>>,
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) end_reason: SliceEnd,
}

#[derive(Default)]
struct Ring {
    slices: VecDeque<RawSlice>,
    dropped: u64,
}

/// One worker's buffer, on its own cache lines so that workers recording at
/// the same time do not bounce a shared line.
#[repr(align(128))]
#[derive(Default)]
struct WorkerRing(Mutex<Ring>);

/// Per-worker slice buffers.
pub(crate) struct TraceBuffers {
    /// The regular workers' rings, then the compensation slots'.
    rings: Box<[WorkerRing]>,
    regular: usize,
    capacity: usize,
}

impl TraceBuffers {
    /// Rings for `workers` regular workers and `spare` compensation slots.
    pub(crate) fn new(workers: usize, spare: usize) -> Self {
        Self::with_capacity(workers, spare, SLICES_PER_WORKER)
    }

    pub(super) fn with_capacity(workers: usize, spare: usize, capacity: usize) -> Self {
        TraceBuffers {
            rings: (0..workers + spare)
                .map(|_| WorkerRing::default())
                .collect(),
            regular: workers,
            capacity: capacity.max(1),
        }
    }

    /// Record a slice of `task` that worker `worker` ran from `start` to `end` (ticks).
    pub(crate) fn record(&self, worker: usize, task: &Task, start: u64, end: u64, ran: &Ran) {
        let end_reason = match ran {
            Ran::Switched(Switch::Yield) => SliceEnd::Yield,
            Ran::Switched(Switch::Preempted) => SliceEnd::Preempted,
            Ran::Switched(Switch::Park | Switch::SyncWait) => SliceEnd::Blocked,
            Ran::Finished(_) => SliceEnd::Done,
        };
        self.push(
            worker,
            RawSlice {
                task: task.id,
                name: task.name.clone(),
                start,
                end,
                end_reason,
            },
        );
    }

    /// Record that `task`, running on `worker`, held the thread blocked in
    /// the kernel from `start` to `end` (ticks): inside one of its slices.
    pub(crate) fn record_kernel(
        &self,
        worker: usize,
        task: TaskId,
        name: Option<Arc<str>>,
        start: u64,
        end: u64,
    ) {
        self.push(
            worker,
            RawSlice {
                task,
                name,
                start,
                end,
                end_reason: SliceEnd::InKernel,
            },
        );
    }

    pub(super) fn push(&self, worker: usize, slice: RawSlice) {
        let Some(ring) = self.rings.get(worker) else {
            return;
        };
        let mut ring = ring.0.lock();
        if ring.slices.len() >= self.capacity {
            ring.slices.pop_front();
            ring.dropped += 1;
        }
        ring.slices.push_back(slice);
    }

    pub(crate) fn snapshot(&self, epoch: u64) -> Trace {
        self.snapshot_at(epoch, crate::clock::ticks_to_ns)
    }

    /// Copy every ring, converting ticks to time since `epoch` with `to_ns`.
    pub(super) fn snapshot_at(&self, epoch: u64, to_ns: impl Fn(u64) -> u64) -> Trace {
        // A TSC read on another core may be a hair earlier than the epoch:
        // clamp instead of letting the subtraction wrap to centuries.
        let since = |t: u64| {
            let d = t.wrapping_sub(epoch);
            Duration::from_nanos(if (d as i64) < 0 { 0 } else { to_ns(d) })
        };
        let mut slices = Vec::new();
        let mut dropped = 0;
        for (worker, ring) in self.rings.iter().enumerate() {
            let ring = ring.0.lock();
            dropped += ring.dropped;
            slices.extend(ring.slices.iter().map(|s| {
                let start = since(s.start);
                Slice {
                    worker,
                    task: s.task,
                    name: s.name.clone(),
                    start,
                    end: since(s.end).max(start),
                    end_reason: s.end_reason,
                }
            }));
        }
        // Compensation lanes show only up to the last one used.
        let lanes = slices
            .iter()
            .map(|s| s.worker + 1)
            .max()
            .unwrap_or(0)
            .max(self.regular);
        Trace::new(slices, lanes, self.regular, dropped)
    }
}
