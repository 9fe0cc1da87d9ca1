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
    /// The slice we signalled (0: none yet).
    target: u64,
    /// When to re-send if it is still running (ticks).
    retry_at: u64,
    /// Current re-send delay (ticks).
    backoff: u64,
}

impl Monitor {
    /// Install the signal handler and start the monitor, if the runtime has a quantum.
    pub(crate) fn start(shared: &Arc<Shared>) -> Result<Option<Monitor>, crate::Error> {
        let Some(quantum) = shared.config.quantum else {
            return Ok(None);
        };
        signal::install(shared.config.signal)?;
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
            .spawn(move || run(&sh, quantum, &c, &s))?;
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
    quantum: Duration,
    control: &(Mutex<Control>, Condvar),
    sleeping: &AtomicBool,
) {
    super::set_precise_timers();
    signal::unblock(shared.config.signal);
    let sig = shared.config.signal;
    let q = clock::duration_to_ticks(quantum);
    // Every monitor wake-up and every signal costs tens of µs of CPU on a VM
    // (measured: ~20 µs per timed wake-up, ~25 µs per pthread_kill round
    // trip), so the monitor wakes as rarely as the quantum allows: the first
    // re-check after a signal is half a quantum later (by then a successful
    // preemption has started a new slice anyway), and wake-up times are
    // rounded up to a grid of q/8 so several workers share one wake-up.
    let first_retry = clock::duration_to_ticks(Duration::from_micros(20)).max(q / 2);
    let grid = (q / 8).max(1);
    let mut seen = vec![Seen::default(); shared.workers.len()];
    let mut warned = false;
    let (lock, cv) = control;
    loop {
        let now = clock::ticks();
        let mut next = now + q;
        let mut any_running = false;
        for (i, (w, seen)) in shared.workers.iter().zip(seen.iter_mut()).enumerate() {
            let slot = &w.slot;
            let start = slot.slice_start.load(Ordering::Acquire);
            if start == 0 {
                continue;
            }
            any_running = true;
            if start != seen.target {
                let due = start + q;
                if now >= due && !shared.has_other_work(i) {
                    // Alone on its worker: let it run, look again soon.
                    next = next.min(now + q / 4);
                } else if now >= due {
                    seen.target = start;
                    seen.backoff = first_retry;
                    seen.retry_at = now + seen.backoff;
                    slot.target.store(start, Ordering::Relaxed);
                    signal::kick(slot, sig);
                    next = next.min(seen.retry_at);
                } else {
                    next = next.min(due);
                }
            } else if now >= seen.retry_at {
                // Still the same slice: the last signal was deferred.
                seen.backoff = (seen.backoff * 2).min(q);
                seen.retry_at = now + seen.backoff;
                signal::kick(slot, sig);
                next = next.min(seen.retry_at);
            } else {
                next = next.min(seen.retry_at);
            }
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
