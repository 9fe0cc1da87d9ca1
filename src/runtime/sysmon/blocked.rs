//! When a worker counts as blocked in the kernel, and what is said about it.
//!
//! A slice is *blocked* when, over at least `blocking_threshold`, its
//! thread's CPU clock advanced by less than an eighth of the wall time *and*
//! the kernel has the thread asleep (`S`/`D` in `/proc/self/task/TID/stat`).
//! The CPU clock alone would also flag a thread that is merely waiting for a
//! CPU (two busy test binaries on two cores); the kernel state tells the two
//! apart, and is read only when the clock is suspicious.
//!
//! An open *episode* then gets, on each look (every half threshold):
//!
//! 1. if the thread sits in a `FUTEX_WAIT` and other work waits for the
//!    worker, a signal: the handler switches the task out if the wait is a
//!    std::sync one (`preempt/README.md` §3.2); if the slice is still there
//!    half a threshold later, the wait was something else;
//! 2. otherwise it is ready for hand-off (`handoff.rs`) and, while other
//!    work waits, a warning on stderr, once per task and call site, naming
//!    the function it blocks in (from a copy of its stack and the code map);
//! 3. if tasks preempted on this thread wait for it (they can run nowhere
//!    else) and it sits in a futex wait, a request to lend the worker to a
//!    stand-in thread (`preempt/README.md` §3.5), which runs them until the
//!    wait is over; asked again, less and less often, until it is lent or
//!    the handler has turned the wait down twice;
//! 4. after `stall_after`, if pinned tasks still wait (a wait the worker
//!    cannot be lent from), a stall report naming them.
//!
//! The episode ends when the thread computes again or the slice ends; its
//! time goes to the worker's metrics, the task's `TaskStats` and the trace
//! (whoever of the monitor and the worker swaps `blocked_since` back to 0
//! accounts for it, so it is counted once).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Policy, Watch};
use crate::clock;
use crate::preempt::{InSyscall, KernelState, Probe, Site, blocked_site, signal_kick};
use crate::runtime::Shared;
use crate::task::TaskId;

/// One blocked-in-kernel episode of one slice.
pub(super) struct Episode {
    /// When the thread was last seen computing (ticks).
    since: u64,
    last_check: u64,
    last_cpu: u64,
    /// The task, if the monitor could look at it (`WorkerSlot::inspect`).
    task: Option<(TaskId, Option<Arc<str>>)>,
    /// Its stack's bounds `[lo, hi)`, to tell its frames from the runtime's
    /// in the blocked call's backtrace ((0, 0) if it could not be looked at).
    stack: (usize, usize),
    /// `blocked_since` was published, so the worker may close the episode.
    published: bool,
    /// What it is blocked in, at the last look.
    sys: Option<InSyscall>,
    /// Until when a sync-wait switch may still resolve it (ticks; 0: none tried).
    switch_until: u64,
    site: Option<Site>,
    warned: bool,
    stall_reported: bool,
    /// When the monitor last asked to lend the worker (ticks; 0: never),
    /// and how long it waits before it asks again (doubling).
    lend_at: u64,
    lend_gap: u64,
    /// Times the handler turned a lend down for this slice's wait.
    lend_declines: u8,
    /// A compensating thread was started on its account.
    pub(super) compensated: bool,
}

impl Episode {
    /// Blocked for a threshold and not about to be switched out: hand-off
    /// may start.
    pub(super) fn handoff_ready(&self, now: u64, policy: &Policy) -> bool {
        now >= self.since + policy.threshold && now >= self.switch_until
    }
}

/// What the monitor already said (once per task and call site; one
/// exhaustion report per stretch).
#[derive(Default)]
pub(super) struct Reports {
    warned: HashSet<(u64, String)>,
    /// (worker, slice) already reported as a stall: a slice whose thread
    /// wakes up now and then (signals) opens several episodes.
    stalled: HashSet<(usize, u64)>,
    exhausted_since: Option<u64>,
    exhausted_reported: bool,
}

/// Look at worker `i`'s slice for blocking; returns when to look again.
pub(super) fn check(
    shared: &Arc<Shared>,
    i: usize,
    watch: &mut Watch,
    now: u64,
    policy: &Policy,
    probe: &mut Probe,
    reports: &mut Reports,
) -> u64 {
    let slot = &shared.workers[i].slot;
    let t = policy.threshold;
    // A slice may be judged at any look a threshold after its last sample;
    // the monitor only *schedules* a look half a threshold later than that,
    // so that looks due anyway (a quantum, another worker) usually do it.
    let late = t + t / 2;
    if let Some(ep) = watch.episode.as_mut() {
        if now < ep.last_check + t / 2 {
            // Too soon to judge: over a short window one signal handled
            // (a few µs of CPU) would look like computing again and close
            // the episode (at a 50 µs quantum every look did).
            return act(shared, i, watch, now, policy, probe, reports);
        }
        let cpu = crate::preempt::cpu_time(slot);
        let computing = cpu.is_none_or(|c| {
            c.saturating_sub(ep.last_cpu) > clock::ticks_to_ns(now - ep.last_check) / 8
        });
        if computing {
            let ep = watch.episode.take().expect("episode is open");
            close(shared, i, watch.seq, ep, now);
            watch.cpu = cpu.map(|c| (now, c));
            return now + late;
        }
        ep.last_cpu = cpu.unwrap_or(ep.last_cpu);
        ep.last_check = now;
        return act(shared, i, watch, now, policy, probe, reports);
    }
    let Some((t0, c0)) = watch.cpu else {
        watch.cpu = crate::preempt::cpu_time(slot).map(|c| (now, c));
        return now + late;
    };
    if now < t0 + t {
        return t0 + late;
    }
    // Read the clock (a system call) only when a verdict is due.
    let Some(c) = crate::preempt::cpu_time(slot) else {
        return now + late;
    };
    let still = c.saturating_sub(c0) < clock::ticks_to_ns(now - t0) / 8;
    let tid = slot.tid.load(Ordering::Relaxed);
    if !still || probe.state(tid) != KernelState::Waiting {
        watch.cpu = Some((now, c));
        return now + late;
    }
    // Blocked since about the last sample: open an episode.
    let seq = watch.seq;
    let seen = slot.inspect(seq, |task| {
        slot.blocked_since.store(t0.max(1), Ordering::Relaxed);
        ((task.id, task.name.clone()), task.stack_bounds())
    });
    let (task, stack) = match seen {
        Some((task, stack)) => (Some(task), stack),
        None => (None, (0, 0)),
    };
    if task.is_none() && slot.seq.load(Ordering::Acquire) != seq {
        return now + late; // the slice just ended
    }
    shared.workers[i].counters.kernel_blocks.add(1);
    watch.episode = Some(Episode {
        since: t0,
        last_check: now,
        last_cpu: c,
        published: task.is_some(),
        task,
        stack,
        sys: None,
        switch_until: 0,
        site: None,
        warned: false,
        stall_reported: false,
        lend_at: 0,
        lend_gap: 0,
        lend_declines: 0,
        compensated: false,
    });
    act(shared, i, watch, now, policy, probe, reports)
}

/// The episode of slice `seq` is over (the thread computes again, or the
/// slice ended): account for it unless the worker already did.
pub(super) fn close(shared: &Shared, i: usize, seq: u64, ep: Episode, now: u64) {
    let slot = &shared.workers[i].slot;
    let since = if ep.published {
        // Only while the slice runs may the monitor touch its task; if it
        // ended, the worker accounted for the episode at the slice's end.
        slot.inspect(seq, |task| {
            let since = slot.blocked_since.swap(0, Ordering::Relaxed);
            if since != 0 {
                task.stats.kernel_ticks.add(now.saturating_sub(since));
            }
            since
        })
        .filter(|&s| s != 0)
    } else {
        Some(ep.since)
    };
    let Some(since) = since else { return };
    let w = &shared.workers[i];
    w.counters.kernel_ticks.add(now.saturating_sub(since));
    if let (Some(trace), Some((id, name))) = (&shared.trace, &ep.task) {
        trace.record_kernel(i, *id, name.clone(), since, now);
    }
}

fn act(
    shared: &Arc<Shared>,
    i: usize,
    watch: &mut Watch,
    now: u64,
    policy: &Policy,
    probe: &mut Probe,
    reports: &mut Reports,
) -> u64 {
    let slot = &shared.workers[i].slot;
    let next = now + (policy.threshold / 2).max(1);
    let others = shared.has_other_work(i);
    let sys = probe.syscall(slot.tid.load(Ordering::Relaxed));
    let seq = watch.seq;
    let ep = watch.episode.as_mut().expect("episode is open");
    ep.sys = sys.or(ep.sys);
    let futex = sys.is_some_and(|s| s.is_futex_wait());
    let preemptible = slot.preemptible.load(Ordering::Relaxed);
    let pinned = shared.workers[i].pinned_len.load(Ordering::Relaxed);
    if policy.signals && preemptible && pinned > 0 && !futex && !watch.signalled {
        // Tasks pinned here wait for this thread: switch the blocked task
        // out of its system call now rather than at its quantum (rule 6).
        super::quantum::allow_syscall_switch(shared, i, seq);
        watch.send(slot, now, policy);
    }
    let ep = watch.episode.as_mut().expect("episode is open");
    if policy.signals && futex && others && !preemptible {
        // A std::sync wait is switched out by the handler; a preemptible
        // slice gets the same from its quantum signal (quantum.rs).
        if ep.switch_until == 0 {
            ep.switch_until = now + policy.first_retry;
            watch.send(slot, now, policy);
        } else if now >= watch.retry_at {
            watch.backoff = (watch.backoff * 2).min(policy.threshold * 16);
            watch.retry_at = now + watch.backoff;
            signal_kick(slot, policy.sig);
        }
    }
    let ep = watch.episode.as_mut().expect("episode is open");
    if !ep.handoff_ready(now, policy) {
        return next.min(ep.switch_until.max(ep.since + policy.threshold));
    }
    // Tasks pinned to this thread wait for it, or the thread this worker
    // was lent from wants it back: lend the worker (`preempt/lend.rs`). The
    // handler does it if the thread sits in an untimed futex wait.
    // A stall report does not end the asking: under a CPU-starved host the
    // stand-in may start, or the signal land, only after it. What ends it
    // is the handler turning the wait down twice (once could be a thread
    // caught between two waits of one loop).
    let wanted_back = crate::preempt::group_wanted(slot);
    if slot
        .lend_declined
        .compare_exchange(seq, 0, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
    {
        ep.lend_declines += 1;
    }
    if policy.signals
        && futex
        && ep.lend_declines < 2
        && (pinned > 0 || wanted_back)
        && (ep.lend_at == 0 || now >= ep.lend_at + ep.lend_gap)
        && shared.standin_ready(i)
    {
        ep.lend_at = now;
        ep.lend_gap = if ep.lend_gap == 0 {
            policy.threshold * 4
        } else {
            (ep.lend_gap * 2).min(policy.stall_after.max(policy.threshold * 4))
        };
        // A timed wait began after the thread was last seen computing.
        let since = monotonic_ns().saturating_sub(clock::ticks_to_ns(now.saturating_sub(ep.since)));
        slot.lend_since.store(since, Ordering::Relaxed);
        slot.lend_target.store(seq, Ordering::Relaxed);
        signal_kick(slot, policy.sig);
    }
    if others && !ep.warned {
        ep.warned = true;
        warn(shared, i, seq, ep, now, reports);
    }
    if !ep.stall_reported
        && pinned > 0
        && now >= ep.since + policy.stall_after
        && (reports.stalled.contains(&(i, seq)) || report_stall(shared, i, seq, ep, now))
    {
        ep.stall_reported = true;
        reports.stalled.insert((i, seq));
        // No quantum can end it: no more preemption signals for this
        // slice (lend requests go on until the handler turns them down).
        watch.stalled = true;
    }
    next
}

/// `CLOCK_MONOTONIC` now, in ns (what a futex timeout is measured on).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Where the blocked thread waits, worked out once per episode.
fn site(ep: &mut Episode) -> &Site {
    if ep.site.is_none() {
        let (lo, hi) = ep.stack;
        ep.site = Some(match &ep.sys {
            Some(sys) => blocked_site(sys, lo, hi),
            None => Site::default(),
        });
    }
    ep.site.as_ref().expect("site was just set")
}

fn describe_task(task: &Option<(TaskId, Option<Arc<str>>)>) -> String {
    match task {
        Some((id, Some(name))) => format!("task {id} '{name}'"),
        Some((id, None)) => format!("task {id}"),
        None => "a task".to_string(),
    }
}

fn describe_worker(shared: &Shared, i: usize) -> String {
    if shared.compensation.is_compensating(i) {
        format!("compensating thread {}", i - shared.config.workers)
    } else {
        format!("worker {i}")
    }
}

fn describe_site(site: &Site) -> String {
    let chain = site
        .blocks_in
        .iter()
        .map(|f| format!("`{f}`"))
        .collect::<Vec<_>>()
        .join(" <- ");
    match (chain.is_empty(), &site.called_from) {
        (false, Some(c)) => format!(" in {chain}, called from `{c}`"),
        (false, None) => format!(" in {chain}"),
        (true, Some(c)) => format!(" in `{c}`"),
        (true, None) => String::new(),
    }
}

fn ms(ticks: u64) -> f64 {
    clock::ticks_to_ns(ticks) as f64 / 1e6
}

fn warn(shared: &Shared, i: usize, seq: u64, ep: &mut Episode, now: u64, reports: &mut Reports) {
    let site = site(ep).clone();
    let key_site = describe_site(&site);
    let id = ep.task.as_ref().map_or(0, |(id, _)| id.as_u64());
    if !reports.warned.insert((id, key_site)) {
        return;
    }
    let mut msg = format!(
        "kvant: {} has blocked {} in the kernel for {:.1} ms{}, while other tasks wait for it. \
         Tasks queued behind it are handed to other workers or to a compensating thread; tasks \
         preempted on this thread to a stand-in thread, if it waits in a futex wait it \
         can be lent from, or else they wait until it returns. Wait with kvant::time::sleep, \
         kvant::sync or kvant::channel instead, or run the call in kvant::spawn_blocking.",
        describe_task(&ep.task),
        describe_worker(shared, i),
        ms(now - ep.since),
        match describe_site(&site) {
            s if s.is_empty() => " (where is unknown: no symbol names to read)".to_string(),
            s => s,
        },
    );
    if shared.config.panic_on_blocking {
        file_report(shared, i, seq, ep, msg);
    } else {
        msg.push_str(" (said once per task and call site)");
        shared.config.say(crate::DiagnosticKind::BlockingCall, msg);
    }
}

/// `panic_on_blocking`: the task panics with `msg` when it can.
fn file_report(shared: &Shared, i: usize, seq: u64, ep: &Episode, msg: String) {
    let Some((id, _)) = &ep.task else { return };
    shared.blocking_reports.lock().insert(*id, msg);
    shared.workers[i].slot.inspect(seq, |task| {
        task.state.set_reported();
    });
}

/// Say that worker `i` is stalled; false (and nothing said) if its pinned
/// queue has emptied since the monitor counted it.
fn report_stall(shared: &Shared, i: usize, seq: u64, ep: &mut Episode, now: u64) -> bool {
    let pinned: Vec<String> = shared.workers[i]
        .pinned
        .lock()
        .iter()
        .map(|t| describe_task(&Some((t.id, t.name.clone()))))
        .collect();
    if pinned.is_empty() {
        return false;
    }
    let site = describe_site(site(ep));
    let mut list = pinned
        .iter()
        .take(8)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if pinned.len() > 8 {
        let _ = write!(list, " and {} more", pinned.len() - 8);
    }
    let who = describe_task(&ep.task);
    let msg = format!(
        "kvant: stall: {who} has blocked {} in the kernel for {:.0} ms{site}, and {} task(s) \
         preempted on that thread can run nowhere else until it returns: {list}. The \
         worker could not be lent to a stand-in thread (a wait outside libc's futex \
         call, such as a C library's own lock, or 8 stand-ins busy): if {who} waits for \
         one of them (a non-kvant lock held across a preemption), this lasts until the \
         wait times out, if ever: wait with kvant::sync or \
         kvant::channel, or keep the critical section inside preempt::disable().",
        describe_worker(shared, i),
        ms(now - ep.since),
        pinned.len(),
    );
    stall(shared, i, seq, ep, msg);
    true
}

/// Every worker slot that could run queued work is blocked, compensation
/// is at its limit, and work waits: report once per such stretch.
pub(super) fn report_exhaustion(
    shared: &Shared,
    watches: &[Watch],
    now: u64,
    policy: &Policy,
    reports: &mut Reports,
) {
    let comp = &shared.compensation;
    let regular = shared.config.workers;
    let all_blocked = (0..watches.len()).all(|i| {
        let running = shared.workers[i].slot.task.load(Ordering::Relaxed) != 0;
        let blocked = watches[i]
            .episode
            .as_ref()
            .is_some_and(|e| e.handoff_ready(now, policy));
        // Unused compensation slots do not count; regular workers always do.
        (i >= regular && !running) || blocked
    });
    let exhausted =
        all_blocked && comp.active() >= shared.config.max_compensation && shared.stealable_work();
    if !exhausted {
        reports.exhausted_since = None;
        reports.exhausted_reported = false;
        return;
    }
    let since = *reports.exhausted_since.get_or_insert(now);
    if reports.exhausted_reported || now < since + policy.stall_after {
        return;
    }
    reports.exhausted_reported = true;
    let blocked: Vec<String> = watches
        .iter()
        .enumerate()
        .filter_map(|(i, w)| {
            let ep = w.episode.as_ref()?;
            Some(format!(
                "{} on {}",
                describe_task(&ep.task),
                describe_worker(shared, i)
            ))
        })
        .collect();
    let msg = format!(
        "kvant: stall: every worker ({regular}) and every compensating thread allowed \
         (max_compensation = {}) is blocked in the kernel while tasks wait to run: {}. Raise \
         Builder::max_compensation, or wait with kvant::sync or kvant::channel instead.",
        shared.config.max_compensation,
        blocked.join(", "),
    );
    if shared.config.panic_on_blocking {
        *shared.stall.lock() = Some(msg.clone());
    }
    shared.config.say(crate::DiagnosticKind::Stall, msg);
}

fn stall(shared: &Shared, i: usize, seq: u64, ep: &Episode, msg: String) {
    if shared.config.panic_on_blocking {
        *shared.stall.lock() = Some(msg.clone());
        file_report(shared, i, seq, ep, msg.clone());
    }
    shared.config.say(crate::DiagnosticKind::Stall, msg);
}
