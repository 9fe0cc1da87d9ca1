//! When a preemptible slice has had its quantum.
//!
//! No clock is read on the switch path: a slice is timed from when the
//! monitor first saw its number (`WorkerSlot::seq`), which is at most one
//! look after it started; the monitor looks at least once a quantum while
//! slices run. So a slice is due half a quantum after it was first seen:
//! it has run between half and one and a half quanta. One case is known
//! exactly: the slice right after one the monitor preempted (the slot
//! counted that preemption and no deferral since the signal) began as the
//! signal landed, and is due a quantum after the signal. That is the case
//! between hogs, so the monitor looks once per preemption there, a
//! quantum after each signal: looking half a quantum after it too (to
//! retry a deferred signal sooner) doubled its wake-ups, each a timed
//! wake-up of the monitor's thread, and was most of kvant's preemption
//! cost above the timer floor (measured: BENCHMARKS.md, "Measured
//! decisions"). A deferred signal is re-sent at that look. A due slice is
//! signalled unless it is alone (nothing queued here or anywhere it could
//! take work from: it would just be resumed, and the signal would cost CPU
//! and could turn a non-restartable syscall into `EINTR` for nothing).
//!
//! Wake-up preemption: while a task woken from outside the workers waits in
//! the global queue and no worker is free, a slice is due `min_slice` after
//! it was first seen instead (one slice per waiting task).
//!
//! With `Builder::cpu_clock_quantum`, each worker's own CPU-clock timer
//! times its quantum (`preempt/cputimer.rs`, the same rule by slice number)
//! and the monitor keeps only wake-up preemption.
//!
//! A deferred signal (unsafe point) leaves the slice unchanged, so the
//! monitor re-sends it at its next look (a quantum after the first signal)
//! and then once a quantum: a task that sits in a long syscall is not
//! interrupted thousands of times a second.

use std::sync::atomic::Ordering;

use super::{Cues, Policy, Watch};
use crate::preempt::{KernelState, Probe, signal_kick};
use crate::runtime::Shared;

/// Signal worker `i` if its slice is due; returns when to look again
/// (`u64::MAX`: never, for this rule).
pub(super) fn check(
    shared: &Shared,
    i: usize,
    watch: &mut Watch,
    now: u64,
    policy: &Policy,
    probe: &mut Probe,
    cues: &mut Cues,
) -> u64 {
    let slot = &shared.workers[i].slot;
    let Some(q) = policy.quantum else {
        return u64::MAX;
    };
    if !slot.preemptible.load(Ordering::Relaxed) {
        return u64::MAX;
    }
    // A slice whose start is known is due a quantum after it; otherwise
    // half a quantum after it was first seen (it started up to a look earlier).
    let quantum_due = watch.began.map_or(watch.first_seen + q / 2, |b| b + q);
    let mut due = quantum_due;
    if let Some(min) = policy.min_slice
        && cues.wake_budget > 0
        && !watch.signalled
    {
        // Wake-up preemption: a woken task waits in the global queue and
        // every worker is busy. A slice that has had `min_slice` gives way
        // now (workers take the global queue first at a switch, so the
        // woken task runs next); a younger one at `min_slice`.
        let wake_due = watch.first_seen + min;
        if now >= wake_due {
            cues.wake_budget -= 1;
            allow_syscall_switch(shared, i, watch.seq);
            watch.send(slot, now, policy);
            // A deferred wake-up preemption is retried soon (a hog is
            // rarely inside std or libc for long), not after half a quantum.
            watch.by_wake = true;
            watch.backoff = min;
            watch.retry_at = now + min;
            cues.precise = cues.precise.min(watch.retry_at);
            return watch.retry_at;
        }
        cues.precise = cues.precise.min(wake_due);
        due = due.min(wake_due);
    }
    if slot.cpu_timed.load(Ordering::Relaxed)
        && watch.episode.is_none()
        && !(watch.signalled && watch.by_wake)
    {
        // The worker's own CPU-clock timer times its quantum
        // (`Builder::cpu_clock_quantum`); only wake-ups are the monitor's.
        // Not while the thread sits in the kernel (an open episode): its CPU
        // clock stands still there, so a task blocked in a std::sync wait
        // would never be switched out for the holder preempted beside it.
        return if due < quantum_due { due } else { u64::MAX };
    }
    if watch.signalled {
        if !watch.by_wake && now < due {
            // A sync-wait signal (blocked.rs re-sends those itself).
            return due;
        }
        if watch.stalled {
            // Reported as a stall nothing here can end: signals would only
            // cost the blocked thread CPU.
            return u64::MAX;
        }
        if now >= watch.retry_at {
            // Still the same slice: the last signal was deferred.
            if !watch.overrun && now.saturating_sub(watch.first_seen) >= overrun_after(q) {
                watch.overrun = true;
                report_overrun(&shared.config, slot, watch.seq);
            }
            // Once a quantum, unless the thread sleeps in the kernel where
            // no signal is taken (a parking_lot or other thread-parking wait):
            // then once a blocking threshold, so that the signals alone do
            // not keep its CPU clock running and hide the block from
            // blocked.rs (at a short quantum, thousands a second).
            let cap = if watch.backoff >= q && asleep(slot, watch, now, probe) {
                q.max(policy.threshold)
            } else {
                q
            };
            watch.backoff = (watch.backoff * 2).min(cap);
            watch.retry_at = now + watch.backoff;
            allow_syscall_switch(shared, i, watch.seq);
            signal_kick(slot, policy.sig);
        }
        if watch.by_wake {
            cues.precise = cues.precise.min(watch.retry_at);
        }
        return watch.retry_at;
    }
    if now < due {
        due
    } else if !shared.has_other_work(i) {
        // Alone on its worker: let it run, look again soon.
        now + q / 4
    } else {
        // A task blocked in a system call may be switched out there too
        // (rule 6), but only for tasks pinned to this thread: movable work
        // is better handed to another thread (blocked.rs, handoff.rs) than
        // pinned here by running it in the blocked task's place.
        allow_syscall_switch(shared, i, watch.seq);
        watch.send(slot, now, policy);
        // The slice that follows is due a quantum from now (it starts as
        // the signal lands): the next look is then, and it also re-sends a
        // signal that was deferred. Looking in between, as a deferral
        // retry would, doubled the monitor's wake-ups between hogs, each a
        // costly timed wake-up (measured: BENCHMARKS.md, "Measured
        // decisions").
        now + q
    }
}

/// Let the handler switch slice `seq` out of a blocked system call if tasks
/// pinned to worker `i` wait for its thread (they can run nowhere else).
pub(super) fn allow_syscall_switch(shared: &Shared, i: usize, seq: u64) {
    let pinned = shared.workers[i].pinned_len.load(Ordering::Relaxed) > 0;
    let slot = &shared.workers[i].slot;
    slot.syscall_target
        .store(if pinned { seq } else { 0 }, Ordering::Relaxed);
}

/// Whether the deferred slice's thread sleeps in the kernel: its CPU clock
/// advanced by less than a quarter of the wall time since the last re-send
/// (a cheap clock read; at a short quantum the signals alone keep a
/// sleeping thread's CPU clock moving), and the kernel says so (a procfs
/// read, only then).
fn asleep(
    slot: &crate::preempt::WorkerSlot,
    watch: &mut Watch,
    now: u64,
    probe: &mut Probe,
) -> bool {
    let Some(cpu) = crate::preempt::cpu_time(slot) else {
        return false;
    };
    let last = watch.retry_cpu.replace((now, cpu));
    let still = last.is_some_and(|(t, c)| {
        cpu.saturating_sub(c) < crate::clock::ticks_to_ns(now.saturating_sub(t)) / 4
    });
    still && probe.state(slot.tid.load(Ordering::Relaxed)) == KernelState::Waiting
}

/// How long past its start a slice whose signals keep being deferred counts
/// as an overrun: 8 quanta, and at least 20 ms (ticks).
fn overrun_after(q: u64) -> u64 {
    (8 * q).max(crate::clock::duration_to_ticks(
        std::time::Duration::from_millis(20),
    ))
}

/// A slice ran far past its quantum in code kvant will not preempt: count it,
/// and say once per place what the code is and how to allow it.
fn report_overrun(config: &crate::runtime::Config, slot: &crate::preempt::WorkerSlot, seq: u64) {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    const MAX_REPORTS: usize = 16;
    slot.overruns.add(1);
    let at = slot.deferred_at.load(Ordering::Relaxed);
    if at == 0 {
        return;
    }
    let Some((id, name)) = slot.inspect(seq, |t| (t.id, t.name.clone())) else {
        return;
    };
    let (function, crates) = crate::preempt::describe_code(at);
    let function = function.unwrap_or_else(|| format!("code at {at:#x} (no symbol)"));
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let seen = seen.get_or_insert_with(HashSet::new);
    if seen.len() > MAX_REPORTS || !seen.insert(function.clone()) {
        return;
    }
    let task = match name {
        Some(n) => format!("task {id} '{n}'"),
        None => format!("task {id}"),
    };
    let fix = match crates.first() {
        Some(c) if c.starts_with('(') => "its crate cannot be told (or more crates' code is \
                                          inlined there than kvant tracks), so kvant never \
                                          preempts there"
            .to_owned(),
        Some(c) => format!(
            "crate `{c}` is not preempted by default; if it keeps no per-thread state, \
             allow it with Builder::preempt_crate(\"{c}\")"
        ),
        None => "kvant never preempts there (std's I/O, locks, allocator or thread-locals, \
                 runtime code, C code, or a thread that is unwinding)"
            .to_owned(),
    };
    config.say(
        crate::DiagnosticKind::Overrun,
        format!("kvant: {task} ran past its quantum in `{function}`: {fix}"),
    );
    if seen.len() == MAX_REPORTS {
        config.say(
            crate::DiagnosticKind::Overrun,
            "kvant: (further overrun reports suppressed; see Metrics::overruns)".into(),
        );
        seen.insert(String::new());
    }
}
