//! Optional slice recording (`Builder::trace(true)`).

use crate::runtime::Shared;
use crate::task::Task;
use crate::task::coroutine::Ran;

/// Per-worker slice buffers.
pub(crate) struct TraceBuffers {
    _workers: usize,
}

impl TraceBuffers {
    pub(crate) fn new(workers: usize) -> Self {
        TraceBuffers { _workers: workers }
    }

    pub(crate) fn record(&self, _worker: usize, _task: &Task, _start: u64, _end: u64, _ran: &Ran) {}

    pub(crate) fn snapshot(&self, _shared: &Shared) -> Trace {
        Trace {}
    }
}

/// Recorded slices of every worker.
#[derive(Clone, Debug)]
pub struct Trace {}
