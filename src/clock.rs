//! A cheap monotonic clock for slice accounting.
//!
//! Every task switch stamps the start of a slice, so the clock sits on the
//! hottest path of the scheduler. `rdtsc` is cheaper than `Instant::now()`
//! (a vDSO `clock_gettime`, which reads it and converts) and is invariant
//! on every x86_64 CPU Linux reports with `constant_tsc`. We read raw ticks
//! on the hot path and convert to nanoseconds only where a human or a
//! comparison needs them.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Raw clock ticks (TSC cycles on x86_64, nanoseconds elsewhere).
#[inline]
pub(crate) fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: rdtsc has no memory effects and is available on every x86_64 CPU.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        epoch().elapsed().as_nanos() as u64
    }
}

struct Calibration {
    /// Nanoseconds per tick, as a 32.32 fixed-point number.
    ns_per_tick_fp: u64,
    ticks_per_us: u64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn calibration() -> &'static Calibration {
    static CAL: OnceLock<Calibration> = OnceLock::new();
    CAL.get_or_init(|| {
        if !cfg!(target_arch = "x86_64") {
            return Calibration {
                ns_per_tick_fp: 1 << 32,
                ticks_per_us: 1000,
            };
        }
        // Measure the tick rate against the OS clock over a few milliseconds;
        // a 0.1% error is irrelevant for quanta and statistics.
        let t0 = Instant::now();
        let c0 = ticks();
        while t0.elapsed() < Duration::from_millis(5) {
            std::hint::spin_loop();
        }
        let c1 = ticks();
        let ns = t0.elapsed().as_nanos() as u64;
        let cycles = (c1 - c0).max(1);
        Calibration {
            ns_per_tick_fp: (((ns as u128) << 32) / cycles as u128) as u64,
            ticks_per_us: (cycles * 1000 / ns.max(1)).max(1),
        }
    })
}

/// Run the calibration now (it spins ~5 ms) so no later caller pays for it.
pub(crate) fn init() {
    let _ = epoch();
    let _ = calibration();
}

/// Convert a tick difference to nanoseconds.
#[inline]
pub(crate) fn ticks_to_ns(t: u64) -> u64 {
    ((t as u128 * calibration().ns_per_tick_fp as u128) >> 32) as u64
}

/// Convert a duration to ticks.
pub(crate) fn duration_to_ticks(d: Duration) -> u64 {
    let us = d.as_nanos() as u64 / 1000;
    us.saturating_mul(calibration().ticks_per_us).max(1)
}

/// Ask the kernel for exact timer expiry on this thread (the default 50 µs
/// slack would be added to every timer and every quantum check).
pub(crate) fn set_precise_timers() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}
