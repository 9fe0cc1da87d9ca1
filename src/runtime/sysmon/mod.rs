//! The monitor thread (Go's sysmon): the runtime's *policy* for workers that
//! hold on to one task, too long or in the kernel.
//!
//! One thread per runtime looks at every worker slot (regular and
//! compensating) on its own schedule and decides:
//!
//! * `quantum.rs`: a preemptible slice older than the quantum is signalled
//!   (the handler in `preempt/` decides whether the point is safe);
//! * `blocked.rs`: a slice whose thread has stopped computing and sleeps in
//!   the kernel for `blocking_threshold` is *blocked*: a std::sync futex
//!   wait is signalled (the handler switches it out, every mode), anything
//!   else is counted, traced, reported once per task and call site, and
//!   reported as a stall if hand-off cannot help;
//! * `handoff.rs`: while workers are blocked and queued work has nobody to
//!   run it, compensating threads are started, and retired once the
//!   blocked workers are back.
//!
//! The mechanisms it uses live in `preempt/` (signals, the thread probe, the
//! code map) and `runtime/compensate.rs` (the extra threads).
//!
//! Cost. Every wake-up of this thread costs tens of microseconds of CPU on
//! a VM (a timed futex wait), so it wakes only when something could be due:
//! the earliest quantum expiry, a re-send after a deferred signal, or the
//! next blocked check (one threshold after it last saw a slice start, which
//! is once per threshold while tasks run; what that costs is measured in
//! BENCHMARKS.md, "Measured decisions"). It never signals a slice that is
//! not due, and it sleeps without a timeout while every worker is asleep.

mod blocked;
mod handoff;
mod quantum;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::clock;
use crate::preempt::{Probe, signal_kick, signal_unblock};
use crate::runtime::Shared;

struct Control {
    stop: bool,
    kicked: bool,
}

/// The monitor's state across looks (not per worker).
#[derive(Default)]
struct Cues {
    /// `Shared::wakes` at the last look.
    wakes: u64,
    /// Woken tasks wait in the global queue: slices are due at `min_slice`.
    wake_pending: bool,
    /// How many running slices this look may still cut short for them.
    wake_budget: usize,
    /// The earliest wake-up-preemption look due (ticks; `u64::MAX`: none).
    /// Not rounded to the grid: it is what the woken task waits for.
    precise: u64,
}

pub(crate) struct Monitor {
    control: Arc<(Mutex<Control>, Condvar)>,
    sleeping: Arc<AtomicBool>,
    /// A wake-up notification is on its way (cleared by each look).
    woken: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The monitor's notes on one worker slot (not shared).
#[derive(Default)]
struct Watch {
    /// The slice these notes are about (`WorkerSlot::seq`; 0: none).
    seq: u64,
    /// When the monitor first saw that slice running (ticks).
    first_seen: u64,
    /// When the slice began, if the monitor knows: it is the slice that
    /// followed one this monitor preempted, and that preemption was taken
    /// at the signal (not deferred), so it began as the signal landed.
    began: Option<u64>,
    /// When the last signal for this slice was sent (ticks), and the
    /// slot's preemption and deferral counts then: how `observe` tells that
    /// the next slice began at once.
    sent_at: u64,
    sent_counts: (u64, u64),
    /// Whether it was signalled (then `retry_at` and `backoff` apply).
    signalled: bool,
    /// The signal was a wake-up preemption (re-sent on a short fuse).
    by_wake: bool,
    /// When to re-send if it is still running (ticks).
    retry_at: u64,
    /// Current re-send delay (ticks).
    backoff: u64,
    /// Last sample of the thread's CPU clock in this slice: (ticks, ns).
    cpu: Option<(u64, u64)>,
    /// The blocked-in-kernel episode of this slice, if one is open.
    episode: Option<blocked::Episode>,
    /// This slice was counted as an overrun (`quantum::report_overrun`).
    overrun: bool,
    /// This slice was reported as a stall nothing here can end
    /// (`blocked.rs`): signals to its thread would only cost it CPU.
    stalled: bool,
    /// The thread's CPU clock at the last re-send of a deferred signal:
    /// (ticks, ns), to tell a thread asleep in the kernel (`quantum::asleep`).
    retry_cpu: Option<(u64, u64)>,
}

/// What the monitor works with, fixed at start.
struct Policy {
    /// The quantum in ticks, if slices may be preempted.
    quantum: Option<u64>,
    /// `blocking_threshold` in ticks.
    threshold: u64,
    /// The monitor's own rhythm (ticks): the quantum if there is one, else
    /// the threshold. Blocked checks ride on it (see blocked.rs).
    period: u64,
    /// A blocked worker that hand-off cannot relieve is reported after this.
    stall_after: u64,
    /// Whether signals may be sent at all (the handler is installed).
    signals: bool,
    sig: i32,
    /// First re-send delay after a deferred signal.
    first_retry: u64,
    /// `Builder::min_slice` in ticks (wake-up preemption), if on.
    min_slice: Option<u64>,
}

/// Stall reports come this long after the blocked thread was last seen
/// computing, or two quanta (two blocking thresholds in a cooperative
/// runtime) if that is longer.
const STALL_MIN: Duration = Duration::from_millis(10);

impl Monitor {
    /// Start the monitor. It preempts when the runtime has a quantum and the
    /// executable supports it (`preemptive`), switches out tasks blocked in
    /// std::sync waits when `switch_waits` (the handler is installed and the
    /// code map can recognise those waits), and watches for blocked workers
    /// in every mode.
    pub(crate) fn start(
        shared: &Arc<Shared>,
        preemptive: bool,
        switch_waits: bool,
    ) -> Result<Option<Monitor>, crate::Error> {
        let quantum = shared.config.quantum.filter(|_| preemptive);
        let mut signals = preemptive || switch_waits;
        if signals {
            match crate::preempt::signal_install(shared.config.signal) {
                Ok(()) => {}
                Err(crate::Error::SignalInUse(sig)) if !preemptive => {
                    // A cooperative runtime never needed the signal before:
                    // keep working, without the sync-wait switch.
                    shared.config.say(
                        crate::DiagnosticKind::SignalInUse,
                        format!(
                            "kvant: signal {sig} already has a handler in this program, so tasks \
                             blocked in std::sync waits are not switched out (choose another \
                             with Builder::preempt_signal)"
                        ),
                    );
                    signals = false;
                }
                Err(e) => return Err(e),
            }
        }
        crate::preempt::register_fence();
        let threshold = clock::duration_to_ticks(shared.config.blocking_threshold).max(1);
        let stall = (2 * quantum.unwrap_or(shared.config.blocking_threshold)).max(STALL_MIN);
        let period = quantum.map_or(threshold, clock::duration_to_ticks);
        let policy = Policy {
            quantum: quantum.map(clock::duration_to_ticks),
            threshold,
            period,
            stall_after: clock::duration_to_ticks(stall),
            signals,
            sig: shared.config.signal,
            first_retry: clock::duration_to_ticks(Duration::from_micros(20)).max(period / 2),
            min_slice: shared
                .config
                .min_slice
                .filter(|_| quantum.is_some())
                .map(clock::duration_to_ticks),
        };
        let control = Arc::new((
            Mutex::new(Control {
                stop: false,
                kicked: false,
            }),
            Condvar::new(),
        ));
        let sleeping = Arc::new(AtomicBool::new(false));
        let woken = Arc::new(AtomicBool::new(false));
        let (c, s, sh, w) = (
            control.clone(),
            sleeping.clone(),
            shared.clone(),
            woken.clone(),
        );
        let thread = std::thread::Builder::new()
            .name(format!("{}-monitor", shared.config.name))
            .spawn(move || run(&sh, &policy, &c, &s, &w))?;
        Ok(Some(Monitor {
            control,
            sleeping,
            woken,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// A task was woken into the global queue while every worker is busy:
    /// look now (wake-up preemption).
    pub(crate) fn wake_up(&self) {
        // One notification per look, however many tasks a timer tick wakes.
        if !self.woken.swap(true, Ordering::AcqRel) {
            let (m, cv) = &*self.control;
            m.lock().kicked = true;
            cv.notify_one();
        }
    }

    /// A worker woke up from idle: the monitor may be parked waiting for work.
    #[inline]
    pub(crate) fn kick(&self) {
        if self.sleeping.load(Ordering::SeqCst) {
            let (m, cv) = &*self.control;
            m.lock().kicked = true;
            cv.notify_one();
        }
    }

    /// Stop and join the monitor. After this returns no signal is sent and
    /// no compensating thread is started.
    pub(crate) fn stop(&self) {
        {
            let (m, cv) = &*self.control;
            m.lock().stop = true;
            cv.notify_one();
        }
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

fn run(
    shared: &Arc<Shared>,
    policy: &Policy,
    control: &(Mutex<Control>, Condvar),
    sleeping: &AtomicBool,
    woken: &AtomicBool,
) {
    crate::clock::set_precise_timers();
    signal_unblock(policy.sig);
    // Wake-up times are rounded up to a grid so that several workers share
    // one wake-up.
    let grid = (policy.period / 8).max(1);
    let mut watches: Vec<Watch> = (0..shared.workers.len())
        .map(|_| Watch::default())
        .collect();
    let mut reports = blocked::Reports::default();
    let mut cues = Cues::default();
    let mut probe = Probe::default();
    let mut broken = false;
    let (lock, cv) = control;
    loop {
        woken.store(false, Ordering::Release);
        let now = clock::ticks();
        shared.coarse_ticks.store(now, Ordering::Relaxed);
        // A bug in the diagnostics must not end preemption for the rest of
        // the program: say so once and keep going.
        let pass = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pass(
                shared,
                policy,
                &mut watches,
                &mut reports,
                &mut probe,
                &mut cues,
                now,
            )
        }));
        let (next, any_running) = pass.unwrap_or_else(|_| {
            if !broken {
                broken = true;
                shared.config.say(
                    crate::DiagnosticKind::Internal,
                    "kvant internal error: the monitor's pass panicked (reported above)".into(),
                );
            }
            (now + policy.period, true)
        });
        let mut c = lock.lock();
        if c.stop {
            return;
        }
        if c.kicked && cues.wakes != shared.wakes.load(Ordering::Acquire) {
            // A wake-up arrived during the pass: look again at once.
            c.kicked = false;
            continue;
        }
        // Announce the intent to sleep before looking at the workers, so that
        // a worker waking up either sees the flag (and kicks) or is seen awake.
        sleeping.store(true, Ordering::SeqCst);
        let regular = shared.config.workers;
        if !any_running && shared.idle.sleeping() == regular && !c.kicked {
            // Everyone is asleep: wait for a worker to wake up.
            cv.wait_for(&mut c, Duration::from_millis(100));
            sleeping.store(false, Ordering::SeqCst);
        } else {
            sleeping.store(false, Ordering::SeqCst);
            let next = (next.div_ceil(grid) * grid).min(cues.precise);
            let wait = clock::ticks_to_ns(next.saturating_sub(clock::ticks()));
            if wait > 0 {
                cv.wait_until(&mut c, Instant::now() + Duration::from_nanos(wait));
            }
        }
        c.kicked = false;
    }
}

/// One look at every worker slot; returns when to look again and whether
/// any slot runs a slice.
fn pass(
    shared: &Arc<Shared>,
    policy: &Policy,
    watches: &mut [Watch],
    reports: &mut blocked::Reports,
    probe: &mut Probe,
    cues: &mut Cues,
    now: u64,
) -> (u64, bool) {
    let wakes = shared.wakes.load(Ordering::Acquire);
    if wakes != cues.wakes {
        cues.wakes = wakes;
        cues.wake_pending = true;
    }
    if shared.injector.is_empty() {
        cues.wake_pending = false;
    }
    // Wake-up preemption: how many running slices may still be cut short
    // for the woken tasks waiting in the global queue.
    cues.wake_budget = if cues.wake_pending {
        shared.injector.len()
    } else {
        0
    };
    cues.precise = u64::MAX;
    // Each rule says when it next needs a look; this bounds the sleep, so a
    // slice that starts meanwhile is seen within a quantum (or one and a
    // half thresholds, cooperatively, when blocked checks set the pace).
    let mut next = now
        + policy
            .quantum
            .unwrap_or(policy.threshold + policy.threshold / 2);
    let mut any_running = false;
    // Compensation slots never used run nothing.
    let watches = &mut watches[..shared.slots_in_use()];
    for (i, watch) in watches.iter_mut().enumerate() {
        let slot = &shared.workers[i].slot;
        let ended = if slot.task.load(Ordering::Acquire) == 0 {
            watch.leave()
        } else {
            watch.observe(slot, now)
        };
        if let Some((seq, ep)) = ended {
            blocked::close(shared, i, seq, ep, now);
        }
        if watch.seq == 0 {
            continue;
        }
        any_running = true;
        next = next.min(quantum::check(shared, i, watch, now, policy, probe, cues));
        next = next.min(blocked::check(
            shared, i, watch, now, policy, probe, reports,
        ));
    }
    handoff::balance(shared, watches, now, policy);
    blocked::report_exhaustion(shared, watches, now, policy, reports);
    (next, any_running)
}

impl Watch {
    /// The slot runs no slice. Returns the episode of the slice that
    /// ended, if one was open.
    fn leave(&mut self) -> Option<(u64, blocked::Episode)> {
        let ended = self.episode.take().map(|e| (self.seq, e));
        self.seq = 0;
        ended
    }

    /// Note the slice running now; a new one starts fresh notes, with a
    /// first CPU-clock sample. Returns the episode of the slice that ended,
    /// if one was open.
    fn observe(
        &mut self,
        slot: &crate::preempt::WorkerSlot,
        now: u64,
    ) -> Option<(u64, blocked::Episode)> {
        let seq = slot.seq.load(Ordering::Acquire);
        if seq == self.seq {
            return None;
        }
        let ended = self.episode.take().map(|e| (self.seq, e));
        // The slice right after one that took this monitor's signal (one
        // preemption more, no deferral since the send) began when the
        // signal landed: time it from there, not from this look, so the
        // monitor need not look in between (one look per preemption).
        let began = (self.signalled
            && self.seq != 0
            && seq == self.seq + 1
            && (slot.preemptions.get(), slot.deferrals.get())
                == (self.sent_counts.0 + 1, self.sent_counts.1))
            .then_some(self.sent_at);
        // For a task dump: how long the running task has had its worker.
        slot.began.store(began.unwrap_or(now), Ordering::Relaxed);
        slot.began_seq.store(seq, Ordering::Release);
        *self = Watch {
            seq,
            first_seen: now,
            began,
            cpu: crate::preempt::cpu_time(slot).map(|c| (now, c)),
            ..Watch::default()
        };
        ended
    }

    /// Ask the slot's handler to switch out slice `self.seq`; returns when
    /// to look again.
    fn send(&mut self, slot: &crate::preempt::WorkerSlot, now: u64, policy: &Policy) -> u64 {
        self.signalled = true;
        self.backoff = policy.first_retry;
        self.retry_at = now + self.backoff;
        self.sent_at = now;
        self.sent_counts = (slot.preemptions.get(), slot.deferrals.get());
        slot.target.store(self.seq, Ordering::Relaxed);
        if policy.signals {
            signal_kick(slot, policy.sig);
        }
        self.retry_at
    }
}
