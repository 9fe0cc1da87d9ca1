//! The monitor thread: decides when a worker has held one task too long.
//!
//! Like Go's sysmon, one thread per runtime looks at every worker's current
//! slice (`slice_start`, stamped by the worker at each switch) and signals a
//! worker whose slice is older than the quantum. It sleeps until the earliest
//! moment a running slice could expire, so a runtime of tasks that yield often
//! costs about one monitor wake-up per quantum, and a preemption costs one
//! signal. Workers pay nothing per switch beyond the clock read.
//!
//! Why not one POSIX timer per worker (`SIGEV_THREAD_ID`)? Re-arming it at
//! every switch is a syscall on the hottest path; a periodic timer would
//! signal busy workers even when their tasks yield on their own. The monitor
//! signals only when a preemption is due, and idle workers (no slice) never.
//!
//! A task alone on its worker (nothing queued there or globally) is not
//! preempted at all: it would just be resumed, and a signal costs ~1 µs and
//! turns a non-restartable syscall (socket timeouts, `epoll_wait`) into EINTR.
//!
//! A deferred signal (unsafe point) leaves the slice unchanged, so the monitor
//! re-sends after a delay (half a quantum) that doubles with each deferral of
//! the same slice (bounded by the quantum), which keeps a task that sits in a long
//! syscall from being interrupted thousands of times a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::signal;
use crate::clock;
use crate::runtime::Shared;

struct Control {
    stop: bool,
    kicked: bool,
}

pub(crate) struct Monitor {
    control: Arc<(Mutex<Control>, Condvar)>,
    sleeping: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Per-worker bookkeeping of the monitor (not shared).
#[derive(Clone, Copy, Default)]
struct Seen {
    /// The slice these notes are about (`WorkerSlot::seq`; 0: none).
    seq: u64,
    /// When the monitor first saw that slice running (ticks).
    first_seen: u64,
    /// Whether it was signalled (then `retry_at` and `backoff` apply).
    signalled: bool,
    /// When to re-send if it is still running (ticks).
    retry_at: u64,
    /// Current re-send delay (ticks).
    backoff: u64,
    /// Last sample of the worker's CPU clock during this slice: (ticks, ns).
    cpu: Option<(u64, u64)>,
}

/// What the monitor works with, fixed at start.
struct Policy {
    /// The quantum in ticks, if slices may be preempted.
    quantum: Option<u64>,
    /// A slice that has run this long without its worker's CPU clock moving
    /// is blocked in the kernel (ticks).
    blocked_after: u64,
    /// Whether signals may be sent at all (the handler is installed).
    signals: bool,
    sig: i32,
}

impl Monitor {
    /// Start the monitor. It preempts when the runtime has a quantum and the
    /// executable supports it (`preemptive`), and in every mode switches out
    /// tasks blocked in std::sync waits when `switch_waits` (the handler is
    /// installed and the code map can recognise those waits).
    pub(crate) fn start(
        shared: &Arc<Shared>,
        preemptive: bool,
        switch_waits: bool,
    ) -> Result<Option<Monitor>, crate::Error> {
        let quantum = shared.config.quantum.filter(|_| preemptive);
        let mut signals = preemptive || switch_waits;
        if signals {
            match signal::install(shared.config.signal) {
                Ok(()) => {}
                Err(crate::Error::SignalInUse(sig)) if !preemptive => {
                    // A cooperative runtime never needed the signal before:
                    // keep working, without the sync-wait switch.
                    eprintln!(
                        "kvant: signal {sig} already has a handler in this program, so tasks \
                         blocked in std::sync waits are not switched out (choose another with \
                         Builder::preempt_signal)"
                    );
                    signals = false;
                }
                Err(e) => return Err(e),
            }
        }
        let policy = Policy {
            quantum: quantum.map(clock::duration_to_ticks),
            blocked_after: clock::duration_to_ticks(shared.config.blocking_threshold).max(1),
            signals,
            sig: shared.config.signal,
        };
        let control = Arc::new((
            Mutex::new(Control {
                stop: false,
                kicked: false,
            }),
            Condvar::new(),
        ));
        let sleeping = Arc::new(AtomicBool::new(false));
        let (c, s, sh) = (control.clone(), sleeping.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name(format!("{}-monitor", shared.config.name))
            .spawn(move || run(&sh, &policy, &c, &s))?;
        Ok(Some(Monitor {
            control,
            sleeping,
            thread: Mutex::new(Some(thread)),
        }))
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

    /// Stop and join the monitor. After this returns no signal is sent.
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
    shared: &Shared,
    policy: &Policy,
    control: &(Mutex<Control>, Condvar),
    sleeping: &AtomicBool,
) {
    super::set_precise_timers();
    signal::unblock(policy.sig);
    // Every monitor wake-up and every signal costs tens of µs of CPU on a VM
    // (measured: ~20 µs per timed wake-up, ~25 µs per pthread_kill round
    // trip), so the monitor wakes as rarely as the quantum allows: the first
    // re-check after a signal is half a quantum later (by then a successful
    // preemption has started a new slice anyway), and wake-up times are
    // rounded up to a grid of q/8 so several workers share one wake-up.
    let period = policy.quantum.unwrap_or(policy.blocked_after);
    let first_retry = clock::duration_to_ticks(Duration::from_micros(20)).max(period / 2);
    let grid = (period / 8).max(1);
    let mut seen = vec![Seen::default(); shared.workers.len()];
    let mut warned = false;
    let mut probe = SyscallProbe::default();
    let (lock, cv) = control;
    loop {
        let now = clock::ticks();
        let mut next = now + period;
        let mut any_running = false;
        for (i, (w, seen)) in shared.workers.iter().zip(seen.iter_mut()).enumerate() {
            let slot = &w.slot;
            if slot.task.load(Ordering::Acquire) == 0 {
                seen.seq = 0;
                continue;
            }
            any_running = true;
            let seq = slot.seq.load(Ordering::Acquire);
            if seq != seen.seq {
                *seen = Seen {
                    seq,
                    first_seen: now,
                    ..Seen::default()
                };
            }
            let due = match (policy.quantum, slot.slice_start.load(Ordering::Relaxed)) {
                // A preemptible slice: due a quantum after it started.
                (Some(q), start) if start != 0 => Some(start + q),
                // Anything else is looked at only when it seems blocked.
                _ => None,
            };
            let wake = if seen.signalled {
                if now < seen.retry_at {
                    seen.retry_at
                } else {
                    // Still the same slice: the last signal was deferred.
                    let cap = if due.is_some() { period } else { period * 16 };
                    seen.backoff = (seen.backoff * 2).min(cap);
                    seen.retry_at = now + seen.backoff;
                    if due.is_some() || blocked(slot, seen, now, policy) {
                        signal::kick(slot, policy.sig);
                    }
                    seen.retry_at
                }
            } else if let Some(due) = due {
                if now < due {
                    due
                } else if !shared.has_other_work(i) {
                    // Alone on its worker: let it run, look again soon.
                    now + period / 4
                } else {
                    send(slot, seen, now, first_retry, policy)
                }
            } else if !policy.signals {
                now + period
            } else if now < seen.first_seen + policy.blocked_after {
                seen.first_seen + policy.blocked_after
            } else if !blocked(slot, seen, now, policy) || !shared.has_other_work(i) {
                now + policy.blocked_after
            } else if probe.waiting_on_futex(slot.tid.load(Ordering::Relaxed)) {
                send(slot, seen, now, first_retry, policy)
            } else {
                // Blocked elsewhere in the kernel: a signal could only turn
                // a non-restartable call into EINTR.
                now + policy.blocked_after
            };
            next = next.min(wake);
        }
        if !warned {
            warned = warn_if_no_frame_pointers(shared);
        }
        let mut c = lock.lock();
        if c.stop {
            return;
        }
        // Announce the intent to sleep before looking at the workers, so that
        // a worker waking up either sees the flag (and kicks) or is seen awake.
        sleeping.store(true, Ordering::SeqCst);
        if !any_running && shared.idle.sleeping() == shared.workers.len() && !c.kicked {
            // Everyone is asleep: wait for a worker to wake up.
            cv.wait_for(&mut c, Duration::from_millis(100));
            sleeping.store(false, Ordering::SeqCst);
        } else {
            sleeping.store(false, Ordering::SeqCst);
            let next = next.div_ceil(grid) * grid;
            let wait = clock::ticks_to_ns(next.saturating_sub(clock::ticks()));
            if wait > 0 {
                cv.wait_until(&mut c, Instant::now() + Duration::from_nanos(wait));
            }
        }
        c.kicked = false;
    }
}

/// Ask the worker's handler to switch out slice `seen.seq`; returns when to
/// look again.
fn send(
    slot: &super::WorkerSlot,
    seen: &mut Seen,
    now: u64,
    first_retry: u64,
    policy: &Policy,
) -> u64 {
    seen.signalled = true;
    seen.backoff = first_retry;
    seen.retry_at = now + seen.backoff;
    slot.target.store(seen.seq, Ordering::Relaxed);
    if policy.signals {
        signal::kick(slot, policy.sig);
    }
    seen.retry_at
}

/// Whether the worker's CPU clock has stood (nearly) still since the last
/// sample of this slice, at least `blocked_after` ago: its thread is waiting
/// in the kernel, not computing. The first call of a slice only samples.
fn blocked(slot: &super::WorkerSlot, seen: &mut Seen, now: u64, policy: &Policy) -> bool {
    let clock = slot.cpu_clock.load(Ordering::Relaxed);
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock` is the worker's CPU clock id (or 0, CLOCK_REALTIME,
    // harmless); `ts` is a valid out pointer.
    if clock == 0 || unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return false;
    }
    let cpu = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    let verdict = seen.cpu.is_some_and(|(t0, c0)| {
        let wall = clock::ticks_to_ns(now.saturating_sub(t0));
        now >= t0 + policy.blocked_after / 2 && cpu.saturating_sub(c0) < wall / 8
    });
    if !verdict {
        seen.cpu = Some((now, cpu));
    }
    verdict
}

/// Reads what a thread is blocked in from `/proc/self/task/TID/syscall`.
#[derive(Default)]
struct SyscallProbe {
    path: String,
    buf: Vec<u8>,
}

impl SyscallProbe {
    /// Whether thread `tid` sits in a `FUTEX_WAIT`; true if the kernel does
    /// not say (the handler re-checks everything anyway).
    fn waiting_on_futex(&mut self, tid: i32) -> bool {
        use std::fmt::Write as _;
        use std::io::Read as _;
        self.path.clear();
        let _ = write!(self.path, "/proc/self/task/{tid}/syscall");
        self.buf.clear();
        let read = std::fs::File::open(&self.path).and_then(|mut f| f.read_to_end(&mut self.buf));
        if tid == 0 || read.is_err() {
            return true;
        }
        let text = String::from_utf8_lossy(&self.buf);
        let mut fields = text.split_ascii_whitespace();
        let nr = fields.next().and_then(|f| f.parse::<i64>().ok());
        let op = fields
            .nth(1)
            .and_then(|f| i64::from_str_radix(f.trim_start_matches("0x"), 16).ok());
        match (nr, op) {
            (Some(nr), Some(op)) if nr == libc::SYS_futex => {
                let cmd = op as i32 & !(libc::FUTEX_PRIVATE_FLAG | libc::FUTEX_CLOCK_REALTIME);
                cmd == libc::FUTEX_WAIT || cmd == libc::FUTEX_WAIT_BITSET
            }
            (Some(_), _) => false,
            // "running" (not in a syscall right now) or unparsable.
            _ => !text.starts_with("running"),
        }
    }
}

/// Code built without frame pointers leaves garbage in `rbp`, so the safe-
/// point walk fails and every preemption is deferred: the runtime silently
/// degrades to cooperative. Say so once, with the fix.
fn warn_if_no_frame_pointers(shared: &Shared) -> bool {
    let (broken, preempted) = shared.workers.iter().fold((0, 0), |(b, p), w| {
        (b + w.slot.broken_chains.get(), p + w.slot.preemptions.get())
    });
    if broken < 200 || broken < 20 * preempted {
        return false;
    }
    eprintln!(
        "kvant: {broken} preemptions were deferred because the interrupted code has no \
         frame-pointer chain ({preempted} succeeded); build with \
         RUSTFLAGS=\"-C force-frame-pointers=yes\" (see the README) or tasks will not be preempted"
    );
    true
}
