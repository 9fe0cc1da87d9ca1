//! What a context switch costs, measured live on this machine.
//!
//! ```text
//! cargo run --release --example switch_cost
//! ```
//!
//! Five ways to hand a CPU from one piece of work to another, cheapest
//! first: a green yield (kvant saves a few registers and jumps to the other
//! task's stack), a green park/unpark through a channel (plus the channel's
//! lock and the run queue), a preemption (a timer signal, the kernel's
//! signal frame, the safe-point check, then a green switch), an OS-thread
//! switch through a futex (two system calls and the kernel's scheduler),
//! and `sched_yield` between two threads sharing one CPU (the kernel's
//! switch alone).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kvant::channel::bounded;

fn per(d: Duration, n: u64) -> f64 {
    d.as_nanos() as f64 / n as f64
}

/// Two tasks on one worker yielding to each other: one switch per yield.
fn green_yield(n: u64) -> f64 {
    let rt = kvant::Runtime::builder()
        .workers(1)
        .quantum(None)
        .build()
        .unwrap();
    let t = Instant::now();
    let hs: Vec<_> = (0..2)
        .map(|_| {
            rt.spawn(move || {
                for _ in 0..n / 2 {
                    kvant::yield_now();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    per(t.elapsed(), n)
}

/// A message bounced between two tasks through rendezvous channels: each
/// hop parks the sender and wakes the receiver.
fn green_park(n: u64) -> f64 {
    let rt = kvant::Runtime::builder()
        .workers(1)
        .quantum(None)
        .build()
        .unwrap();
    let (atx, arx) = bounded::<u64>(0);
    let (btx, brx) = bounded::<u64>(0);
    let t = Instant::now();
    let echo = rt.spawn(move || {
        while let Ok(v) = arx.recv() {
            if btx.send(v).is_err() {
                break;
            }
        }
    });
    rt.block_on(move || {
        for i in 0..n / 2 {
            atx.send(i).unwrap();
            brx.recv().unwrap();
        }
    });
    echo.join().unwrap();
    per(t.elapsed(), n)
}

/// CPU time of the calling OS thread (user + kernel, signal handling
/// included).
fn thread_cpu() -> Duration {
    // SAFETY: clock_gettime writes one timespec.
    let ts = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
        ts
    };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Two CPU hogs on one worker with a 100 µs quantum against the same work
/// without one: the worker thread's extra CPU time (the thread's own clock,
/// so other processes do not count) divided by the preemptions. Best of 3.
fn preemption() -> Option<(f64, u64, u64)> {
    let work = |quantum: Option<Duration>| {
        let rt = kvant::Runtime::builder()
            .workers(1)
            .quantum(quantum)
            .build()
            .unwrap();
        let cpu = rt.block_on(|| {
            let c0 = thread_cpu();
            let hs: Vec<_> = (0..2u64)
                .map(|i| {
                    kvant::spawn(move || {
                        let mut x = i;
                        for k in 0..100_000_000u64 {
                            x = std::hint::black_box(x ^ k.rotate_left(7));
                        }
                        x
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            thread_cpu() - c0
        });
        let t = rt.metrics().total();
        (cpu, t.preemptions, t.signals)
    };
    let best = |q| (0..3).map(|_| work(q)).min_by_key(|r| r.0).unwrap();
    let (coop, _, _) = best(None);
    let (pre, n, signals) = best(Some(Duration::from_micros(100)));
    (n > 0).then(|| (per(pre.saturating_sub(coop), n), n, signals))
}

/// Two OS threads bouncing a token through std's Mutex + Condvar (futex
/// waits and wakes): one kernel switch per hop.
fn os_futex(n: u64) -> f64 {
    let state = Arc::new((std::sync::Mutex::new(0u64), std::sync::Condvar::new()));
    let s = state.clone();
    let t = Instant::now();
    let other = std::thread::spawn(move || {
        let (m, c) = &*s;
        let mut g = m.lock().unwrap();
        for i in 0..n / 2 {
            while *g != 2 * i + 1 {
                g = c.wait(g).unwrap();
            }
            *g += 1;
            c.notify_one();
        }
    });
    let (m, c) = &*state;
    let mut g = m.lock().unwrap();
    for i in 0..n / 2 {
        *g = 2 * i + 1;
        c.notify_one();
        while *g != 2 * i + 2 {
            g = c.wait(g).unwrap();
        }
    }
    drop(g);
    other.join().unwrap();
    per(t.elapsed(), n)
}

/// Two threads pinned to one CPU calling `sched_yield`: each call hands
/// the CPU to the other thread.
fn sched_yield(n: u64) -> f64 {
    fn pin(cpu: usize) {
        // SAFETY: a zeroed cpu_set_t with one CPU set, passed with its size.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = usize::try_from(unsafe { libc::sched_getcpu() }).unwrap_or(0);
    let go = Arc::new(AtomicBool::new(false));
    let t = Instant::now();
    let hs: Vec<_> = (0..2)
        .map(|_| {
            let go = go.clone();
            std::thread::spawn(move || {
                pin(cpu);
                while !go.load(Ordering::Acquire) {
                    std::thread::yield_now();
                }
                for _ in 0..n / 2 {
                    std::thread::yield_now();
                }
            })
        })
        .collect();
    go.store(true, Ordering::Release);
    let t0 = Instant::now();
    for h in hs {
        h.join().unwrap();
    }
    let _ = t;
    per(t0.elapsed(), n)
}

fn main() {
    let n = 2_000_000;
    println!("measuring (each row runs a fraction of a second)...\n");
    let y = green_yield(n);
    let p = green_park(n / 4);
    let pre = preemption();
    let f = os_futex(n / 20);
    let s = sched_yield(n / 4);
    println!("{:<46}{:>12}{:>12}", "switch", "ns each", "x yield");
    let row = |name: &str, v: f64| println!("{name:<46}{v:>12.0}{:>12.1}", v / y);
    row("green yield (kvant::yield_now, 1 worker)", y);
    row("green park/unpark through a channel", p);
    match pre {
        Some((v, count, signals)) => row(
            &format!("preemption ({count}, {signals} signals, 100 µs)"),
            v,
        ),
        None => println!(
            "{:<46}{:>12}",
            "preemption", "n/a (preemption unavailable here)"
        ),
    }
    row("OS threads through a futex (Mutex+Condvar)", f);
    row("sched_yield, two threads on one CPU", s);
    println!(
        "\nA green switch stays in user space: save the callee-saved registers, \
         swap stacks.\nParking adds the channel's lock and a run-queue round trip. \
         A preemption pays for a\nsignal: the kernel interrupts the task, writes \
         a frame of every register, runs the\nhandler, which checks the safe point \
         and switches; the cost per preemption is the\nworker thread's extra CPU \
         time against the same work unpreempted,\nso it includes the signals that found no safe point \
         and the caches the other hog evicted.\nAn OS-thread \
         switch enters the kernel twice and runs its scheduler; sched_yield is\nthat \
         switch without the futex. Spawning a task per request, or per item of work, \
         is cheap\nwith green threads for exactly this reason."
    );
}
