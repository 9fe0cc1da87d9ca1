//! The floor of timer preemption on this machine: the same CPU-bound work on
//! plain OS threads, each with a per-thread POSIX timer (`timer_create` +
//! `SIGEV_THREAD_ID`) firing at the quantum into an empty handler. No runtime
//! can preempt with a timer signal for less CPU than that; kvant's monitor is
//! compared with it as a ratio. A second timer measures the thread's own CPU
//! clock (`CLOCK_THREAD_CPUTIME_ID`), which the kernel fires on its tick
//! (4 ms at HZ=250) whatever interval is asked: nearly free, but coarse.

use std::time::Duration;

use super::util::{self, burn};

/// The signal the floor timers use (kvant uses SIGURG; nothing else runs).
fn floor_signal() -> i32 {
    libc::SIGRTMIN() + 5
}

extern "C" fn empty(_: libc::c_int) {}

fn install() {
    // SAFETY: an empty handler with SA_RESTART, installed before any timer.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = empty as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(floor_signal(), &sa, std::ptr::null_mut());
    }
}

/// Run `work` on this thread with a per-thread timer on `clock` firing
/// every `interval` (no timer if `None`).
fn with_timer(clock: libc::clockid_t, interval: Option<Duration>, work: impl FnOnce()) {
    let Some(iv) = interval else {
        work();
        return;
    };
    // SAFETY: plain timer syscalls on this thread's own timer; the sigevent
    // is zeroed and then filled as SIGEV_THREAD_ID requires.
    unsafe {
        let mut sev: libc::sigevent = std::mem::zeroed();
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_signo = floor_signal();
        sev.sigev_notify_thread_id = libc::gettid();
        let mut timer: libc::timer_t = std::ptr::null_mut();
        if libc::timer_create(clock, &mut sev, &mut timer) != 0 {
            work();
            return;
        }
        let ts = libc::timespec {
            tv_sec: iv.as_secs() as libc::time_t,
            tv_nsec: iv.subsec_nanos() as libc::c_long,
        };
        let spec = libc::itimerspec {
            it_interval: ts,
            it_value: ts,
        };
        libc::timer_settime(timer, 0, &spec, std::ptr::null_mut());
        work();
        libc::timer_delete(timer);
    }
}

/// CPU time of `hogs` x `iters` of work on `threads` OS threads, each with a
/// timer on `clock` at `interval`.
fn run_once(
    threads: usize,
    hogs: usize,
    iters: u64,
    clock: libc::clockid_t,
    interval: Option<Duration>,
) -> Duration {
    let cpu0 = util::process_cpu_time();
    let per_thread = hogs.div_ceil(threads);
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                with_timer(clock, interval, || {
                    for _ in 0..per_thread {
                        std::hint::black_box(burn(iters));
                    }
                })
            })
        })
        .collect();
    for h in hs {
        h.join().expect("floor thread");
    }
    util::process_cpu_time().saturating_sub(cpu0)
}

/// One floor measurement: CPU time of the work with no timer, with a
/// per-thread `CLOCK_MONOTONIC` timer and with a per-thread
/// `CLOCK_THREAD_CPUTIME_ID` timer at `interval`, run back to back.
pub struct FloorRun {
    pub none: Duration,
    pub mono: Duration,
    pub thread_cpu: Duration,
}

pub fn measure(threads: usize, hogs: usize, iters: u64, interval: Duration) -> FloorRun {
    install();
    FloorRun {
        none: run_once(threads, hogs, iters, libc::CLOCK_MONOTONIC, None),
        mono: run_once(threads, hogs, iters, libc::CLOCK_MONOTONIC, Some(interval)),
        thread_cpu: run_once(
            threads,
            hogs,
            iters,
            libc::CLOCK_THREAD_CPUTIME_ID,
            Some(interval),
        ),
    }
}
