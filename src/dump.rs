//! A task dump: every live task of a runtime, what it is doing, for how
//! long, and where, from [`Runtime::dump`](crate::Runtime::dump) or, when
//! a signal arrives, from [`Builder::dump_on_signal`](crate::Builder::dump_on_signal).
//! Its `Display` reads like Go's goroutine dump.
//!
//! A dump is a snapshot taken while the tasks go on running: a task may
//! change state while it is read, and then shows its state from a moment
//! earlier (or a short stack). Stacks are shown for tasks switched out
//! (parked, preempted, switched out of a wait), walked from where they
//! switched; a task that yielded is listed without one (it runs again
//! within a round of its queue, and noting where would slow every yield).
//! A task computing on a worker shows only as "running", as Go's dump does
//! for a goroutine on another thread; one blocked in the kernel shows the
//! stack it blocks on, found by scanning up from the system call's stack
//! pointer (where the unwind tables cannot step, the scan goes on, so a
//! stale return address may show as a frame). Names, files and lines come
//! from the executable's debug info: a release build with
//! `debug = "line-tables-only"` (what the README recommends) has them all;
//! without it, function names come from the symbol table.

use std::fmt;
use std::time::Duration;

pub use crate::preempt::backtrace::Frame;
use crate::task::TaskId;
pub use crate::task::WaitingOn;

/// Every live task of a runtime at one moment.
#[derive(Clone, Debug)]
pub struct TaskDump {
    pub(crate) tasks: Vec<DumpedTask>,
    pub(crate) not_started: usize,
    pub(crate) workers: usize,
}

impl TaskDump {
    /// The tasks that have run, in id order.
    pub fn tasks(&self) -> &[DumpedTask] {
        &self.tasks
    }

    /// Tasks spawned that no worker has started yet (queued, no stack):
    /// counted, not listed.
    pub fn not_started(&self) -> usize {
        self.not_started
    }

    /// The task with this id, if listed.
    pub fn task(&self, id: TaskId) -> Option<&DumpedTask> {
        self.tasks.iter().find(|t| t.id == id)
    }
}

/// One task in a [`TaskDump`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DumpedTask {
    /// Its id.
    pub id: TaskId,
    /// Its name, if it was given one.
    pub name: Option<String>,
    /// What it is doing.
    pub status: Status,
    /// How long it has been in its status: running (this slice), blocked
    /// in the kernel, or switched out (parked, preempted, yielded). Read
    /// from the clock the monitor publishes at each pass, so it may be
    /// short by a pass (a few ms). `None` for a woken task waiting in a
    /// queue (its wake-up is not timed).
    pub since: Option<Duration>,
    /// Time it ran on a worker, if the runtime times slices
    /// ([`Builder::task_timing`](crate::Builder::task_timing)).
    pub cpu_time: Option<Duration>,
    /// Slices it ran (times a worker resumed it).
    pub slices: u64,
    /// Slices that ended at its quantum.
    pub preemptions: u64,
    /// Its stack, innermost first: from where it switched out, or where it
    /// blocks in the kernel (empty for a task computing on a worker, one
    /// that yielded, or one never started).
    pub stack: Vec<Frame>,
}

/// What a dumped task is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Running on worker `worker` (a compensating thread counts after the
    /// regular workers).
    Running {
        /// The worker.
        worker: usize,
    },
    /// Running on `worker`, whose thread the task holds blocked in the
    /// kernel (a `std::thread::sleep`, blocking I/O, a std lock...).
    BlockedInKernel {
        /// The worker.
        worker: usize,
    },
    /// Switched out at its quantum, queued to run again.
    Preempted,
    /// Switched out by the runtime out of a std::sync wait or a system
    /// call it was blocked in; queued to resume it.
    SwitchedFromWait,
    /// Queued to run (it yielded, or it was woken).
    Runnable,
    /// Parked until something wakes it.
    Parked(WaitingOn),
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Running { worker } => write!(f, "running on worker {worker}"),
            Status::BlockedInKernel { worker } => {
                write!(f, "blocked in the kernel on worker {worker}")
            }
            Status::Preempted => write!(f, "preempted"),
            Status::SwitchedFromWait => write!(f, "switched out of a blocking wait"),
            Status::Runnable => write!(f, "runnable"),
            Status::Parked(on) => write!(f, "parked: {on}"),
        }
    }
}

impl fmt::Display for WaitingOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitingOn::Unknown => write!(f, "waiting"),
            WaitingOn::Sleep => write!(f, "sleep"),
            WaitingOn::Join(id) => write!(f, "join of task {id}"),
            WaitingOn::JoinSet => write!(f, "JoinSet's next result"),
            WaitingOn::Mutex(a) => write!(f, "Mutex lock {a:#x}"),
            WaitingOn::RwLock(a) => write!(f, "RwLock lock {a:#x}"),
            WaitingOn::Condvar(a) => write!(f, "Condvar wait {a:#x}"),
            WaitingOn::Semaphore(a) => write!(f, "Semaphore acquire {a:#x}"),
            WaitingOn::Barrier(a) => write!(f, "Barrier wait {a:#x}"),
            WaitingOn::WaitGroup(a) => write!(f, "WaitGroup wait {a:#x}"),
            WaitingOn::Send(a) => write!(f, "channel send {a:#x}"),
            WaitingOn::Recv(a) => write!(f, "channel receive {a:#x}"),
            WaitingOn::Select => write!(f, "select"),
            WaitingOn::Future => write!(f, "future"),
            WaitingOn::Tasks => write!(f, "wait for tasks"),
        }
    }
}

/// `1.2s`, `35ms`, `80µs`.
fn short(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.1}s", d.as_secs_f64())
    } else if d >= Duration::from_millis(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}µs", d.as_micros())
    }
}

impl fmt::Display for DumpedTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {}", self.id)?;
        if let Some(name) = &self.name {
            write!(f, " \"{name}\"")?;
        }
        write!(f, " [{}", self.status)?;
        if let Some(since) = self.since {
            write!(f, ", {}", short(since))?;
        }
        write!(f, "; {} slices", self.slices)?;
        if self.preemptions > 0 {
            write!(f, ", {} preempted", self.preemptions)?;
        }
        if let Some(cpu) = self.cpu_time {
            write!(f, ", ran {}", short(cpu))?;
        }
        writeln!(f, "]:")?;
        if self.stack.is_empty() {
            let why = match self.status {
                Status::Running { .. } | Status::BlockedInKernel { .. } => {
                    "task running on its worker; stack unavailable"
                }
                _ => "stack unavailable",
            };
            writeln!(f, "    {why}")?;
        }
        for frame in &self.stack {
            writeln!(f, "    {frame}")?;
        }
        Ok(())
    }
}

impl fmt::Display for TaskDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kvant task dump: {} tasks on {} workers",
            self.tasks.len() + self.not_started,
            self.workers
        )?;
        if self.not_started > 0 {
            write!(f, " ({} not started yet, not listed)", self.not_started)?;
        }
        writeln!(f)?;
        for t in &self.tasks {
            writeln!(f)?;
            write!(f, "{t}")?;
        }
        Ok(())
    }
}
