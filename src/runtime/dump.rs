//! Taking a task dump (`Runtime::dump`) and printing one when a signal
//! arrives (`Builder::dump_on_signal`).
//!
//! Where the tasks are found: a task running on a worker through the
//! worker's slot (read under the slot's hold, as the monitor reads it, so
//! the task cannot be freed meanwhile); every task that ever switched out
//! in the task table (`registry.rs`), each held by an `Arc` while it is
//! read; tasks spawned and never started are only counted (they have no
//! stack and sit in run queues, which cannot be listed without taking
//! their tasks out). Nothing here stops a worker or changes a task's
//! state: a dump of a deadlocked program is taken the same way as of a
//! busy one.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Shared;
use crate::clock;
use crate::dump::{DumpedTask, Status, TaskDump};
use crate::preempt::backtrace;
use crate::task::coroutine::Switch;
use crate::task::note;
use crate::task::state::Phase;
use crate::task::{Task, TaskId};

/// Take a dump of `shared`'s tasks.
pub(crate) fn collect(shared: &Shared) -> TaskDump {
    let now = clock::ticks();

    let mut stacks = Vec::new();
    let mut listed = Vec::new();
    let mut on_worker: HashSet<TaskId> = HashSet::new();
    for (i, w) in shared.workers.iter().enumerate() {
        if let Some((t, stack)) = running_on(shared, i, &w.slot) {
            on_worker.insert(t.id);
            listed.push(t);
            stacks.push(stack);
        }
    }

    for t in shared.tasks.snapshot() {
        if on_worker.contains(&t.id) {
            continue;
        }
        let phase = t.phase();
        // The slice count before the notes: `stack_of` tells from it whether
        // the task ran while its notes and stack were copied.
        let slices = t.stats.slices.get();
        let notes = notes_of(&t);
        let status = match phase {
            Phase::Done => continue,
            Phase::Idle => Status::Parked(notes.waiting_on()),
            Phase::Queued => Status::Runnable,
            Phase::Running => match notes.last_switch() {
                Switch::Preempted => Status::Preempted,
                Switch::SyncWait => Status::SwitchedFromWait,
                Switch::Yield | Switch::Park => Status::Runnable,
            },
        };
        stacks.push(stack_of(&t, notes, slices));
        let stats = t.stats.snapshot();
        listed.push(DumpedTask {
            id: t.id,
            name: t.name.as_deref().map(String::from),
            status,
            // Switched out since its stamp; a woken one is queued since
            // its wake-up, which is not stamped.
            since: if phase == Phase::Queued {
                None
            } else {
                elapsed(now, notes.switched_since())
            },
            cpu_time: shared.timing.then_some(stats.run_time),
            slices: stats.slices,
            preemptions: stats.preemptions,
            stack: Vec::new(),
        });
    }
    for (t, mut frames) in listed.iter_mut().zip(backtrace::symbolize(&stacks)) {
        // The capture of the switch point itself says nothing.
        frames.retain(|f| f.function.as_deref() != Some("kvant::task::note::here"));
        t.stack = frames;
    }
    let mut tasks = listed;
    tasks.sort_by_key(|t| t.id);
    let not_started = shared.live().saturating_sub(tasks.len());
    TaskDump {
        tasks,
        not_started,
        workers: shared.config.workers,
    }
}

/// Runtimes that print a dump when their signal arrives.
static WATCHING: std::sync::Mutex<Vec<(i32, std::sync::Weak<Shared>)>> =
    std::sync::Mutex::new(Vec::new());

/// Print `shared`'s dump each time `sig` arrives (`Builder::dump_on_signal`).
pub(crate) fn watch(shared: &Arc<Shared>, sig: i32) -> Result<(), crate::Error> {
    #[cfg(target_os = "linux")]
    crate::preempt::dumpsig::watch(sig, on_signal)?;
    #[cfg(not(target_os = "linux"))]
    let _ = sig;
    let mut list = WATCHING.lock().unwrap_or_else(|e| e.into_inner());
    list.retain(|(_, w)| w.strong_count() > 0);
    list.push((sig, Arc::downgrade(shared)));
    Ok(())
}

/// On the `kvant-dump` thread: `sig` arrived.
#[cfg(target_os = "linux")]
fn on_signal(sig: i32) {
    let runtimes: Vec<Arc<Shared>> = WATCHING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(s, _)| *s == sig)
        .filter_map(|(_, w)| w.upgrade())
        .collect();
    for shared in runtimes {
        let text = collect(&shared).to_string();
        shared.config.say(crate::DiagnosticKind::TaskDump, text);
    }
}

/// The task running on worker slot `i`, if any, and its stack if it is
/// blocked in the kernel (where the thread waits, from the system call's
/// stack pointer; a computing task's stack moves too fast to copy).
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn running_on(
    shared: &Shared,
    i: usize,
    slot: &crate::preempt::WorkerSlot,
) -> Option<(DumpedTask, Vec<usize>)> {
    let seq = slot.seq.load(Ordering::Acquire);
    if seq == 0 || slot.task.load(Ordering::Acquire) == 0 {
        return None;
    }
    let blocked = slot.blocked_since.load(Ordering::Relaxed);
    let began = if slot.began_seq.load(Ordering::Acquire) == seq {
        slot.began.load(Ordering::Relaxed)
    } else {
        0 // not seen by the monitor yet: it began within one pass
    };
    let now = clock::ticks();
    let (task, (lo, hi)) = slot.inspect(seq, |h| {
        let stats = h.stats.snapshot();
        let task = DumpedTask {
            id: h.id,
            name: h.name.as_deref().map(String::from),
            status: if blocked != 0 {
                Status::BlockedInKernel { worker: i }
            } else {
                Status::Running { worker: i }
            },
            since: elapsed(now, if blocked != 0 { blocked } else { began }),
            cpu_time: shared.timing.then_some(stats.run_time),
            slices: stats.slices,
            preemptions: stats.preemptions,
            stack: Vec::new(),
        };
        (task, h.stack_bounds())
    })?;
    let stack = if blocked != 0 {
        let sys = crate::preempt::Probe::default().syscall(slot.tid.load(Ordering::Relaxed));
        sys.map_or_else(Vec::new, |sys| crate::preempt::blocked_stack(&sys, lo, hi))
    } else {
        Vec::new()
    };
    Some((task, stack))
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn running_on(
    _: &Shared,
    _: usize,
    _: &crate::preempt::WorkerSlot,
) -> Option<(DumpedTask, Vec<usize>)> {
    None
}

/// Time from clock stamp `then` (0: none) to `now`.
fn elapsed(now: u64, then: u64) -> Option<Duration> {
    (then != 0).then(|| Duration::from_nanos(clock::ticks_to_ns(now.saturating_sub(then))))
}

/// A copy of `t`'s notes from the top of its stack (empty if it has none).
fn notes_of(t: &Task) -> note::Copy {
    backtrace::copy_words::<{ note::NOTES_WORDS }>(t.stack_bounds().1)
        .map(note::Copy::from_words)
        .unwrap_or_default()
}

/// The code addresses on a switched-out task's stack, from `notes`,
/// copied when its slice count was `before`. Walked again, from fresh
/// notes, if the task ran meanwhile (its slice count moved): a torn copy
/// gives a short stack, never a wrong one for long.
fn stack_of(t: &Arc<Task>, mut notes: note::Copy, mut before: u64) -> Vec<usize> {
    let mut best = Vec::new();
    for _ in 0..2 {
        let Some((pc, sp, fp)) = notes.switch_point() else {
            return Vec::new();
        };
        let (_, hi) = t.stack_bounds();
        let pcs = backtrace::walk(pc, sp, fp, hi);
        let still = t.stats.slices.get() == before && t.phase() != Phase::Done;
        if still {
            return pcs;
        }
        best = pcs;
        before = t.stats.slices.get();
        notes = notes_of(t);
    }
    best
}
