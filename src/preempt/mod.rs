//! Quantum preemption: a monitor thread watches how long each worker has been
//! running its current task and, past the quantum, sends the worker a signal
//! whose handler switches the task out right where it was interrupted.
//!
//! This module is the *mechanism*; *when* to preempt, and when a worker
//! counts as blocked, is the monitor's policy in `runtime/sysmon` (Go keeps
//! sysmon in proc.go and the mechanism in preempt.go). Files: `signal.rs` is
//! the handler that does the switch, `safepoint.rs` decides *whether* the
//! interrupted point is safe, `codemap.rs` maps addresses to classes of
//! code, `symbols.rs` classifies functions by name (reading mangled names
//! with `mangled.rs`), `inlined.rs` reads the DWARF records of inlined code,
//! `slot.rs` is what the worker, monitor and handler share, `cputimer.rs` is
//! the optional quantum on a worker's own CPU clock, `cpu.rs` pins workers to
//! CPUs, `fence.rs` lets the monitor look at a running task,
//! `probe.rs` reads what the kernel says about a worker thread,
//! `disable.rs` lets a task forbid preemption for a while, and
//! `overflow.rs` turns a task's stack overflow into a failed task instead
//! of a dead process.
//! The design and its trade-offs are written up in `src/preempt/README.md`.
//!
//! Only Linux on x86_64 has the machinery (ucontext layout, frame-pointer
//! walk, `rdtsc`). Everywhere else kvant builds cooperative-only: the builder
//! defaults to `quantum(None)` and rejects `quantum(Some(_))` with
//! [`Error::PreemptionUnsupported`](crate::Error::PreemptionUnsupported).

#[cfg(not(unix))]
compile_error!(
    "kvant needs a Unix target (mmap'd task stacks); Linux x86_64 is the tested platform"
);

pub(crate) mod backtrace;
mod cpu;
mod disable;
mod slot;

pub(crate) use cpu::{allowed_cpus, pin_to_cpu};

/// What the kernel's signal frame takes on a task's stack, rounded up: about
/// 3.5 KiB with AVX-512 state. The one size the stack headroom rules derive
/// from: the handler's [`safepoint::ROOM`], the lost-signal window in
/// `overflow.rs`, and [`MIN_STACK_SIZE`](crate::MIN_STACK_SIZE).
pub(crate) const SIGNAL_FRAME: usize = 4 * 1024;

pub use disable::{DisableGuard, disable, is_disabled};
pub(crate) use disable::{NoPreempt, no_preempt};
pub(crate) use slot::WorkerSlot;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod codemap;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod cputimer;
#[cfg(target_os = "linux")]
pub(crate) mod dumpsig;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod fence;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod inlined;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod lend;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod mangled;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod overflow;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod probe;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod safepoint;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod signal;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod symbols;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod unwind;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod wrappers;

// The mechanism the monitor (`runtime/sysmon`, the policy) works with.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub(crate) use fence::register as register_fence;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub(crate) use lend::{
    Identity, lock as group_lock, pass as group_pass, ring as ring_standins,
    try_lock as group_try_lock, unlock as group_unlock, wait_bell, wanted as group_wanted,
};
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub(crate) use probe::{
    InSyscall, KernelState, Probe, Site, blocked_site, blocked_stack, cpu_time,
};
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub(crate) use signal::{
    install as signal_install, kick as signal_kick, unblock as signal_unblock,
};

/// How a runtime switches its tasks, from [`Runtime::preemption_mode`](crate::Runtime::preemption_mode).
///
/// Whatever the mode, a task blocked in a contended std::sync wait
/// (`Mutex::lock`, `RwLock`, `Condvar::wait`, `Once`/`LazyLock`, `Barrier`)
/// while other tasks wait for its worker is switched out there (a
/// *sync-wait switch*), except in [`PreemptionMode::Unavailable`] and on
/// targets without preemption. See the crate's safety notes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PreemptionMode {
    /// No quantum was asked for: tasks switch only at switch points.
    Cooperative,
    /// Preemptive with safe points from the symbol table alone. No longer
    /// chosen: code inlined into the program's functions is invisible
    /// without line tables, so such a build runs with
    /// [`Unavailable::NoLineTables`] instead.
    #[deprecated(
        note = "never chosen: without line tables a build runs as `Unavailable(NoLineTables)`"
    )]
    Symbols,
    /// Preemptive, with safe points from the symbol table and the DWARF
    /// inline records: code inlined from std is seen where it runs.
    LineTables,
    /// A quantum was asked for, but this executable does not let kvant
    /// decide soundly where a task may be preempted, so it runs
    /// cooperatively (said once on stderr, with the fix).
    Unavailable(Unavailable),
}

/// Why preemption is [`PreemptionMode::Unavailable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unavailable {
    /// The executable has no symbol table (`strip = true`).
    Stripped,
    /// std's code was inlined into the executable's functions (LTO) and there
    /// are no line tables to show where.
    StdInlinedWithoutLineTables,
    /// The executable has symbols but no line tables (Rust's default release
    /// profile): generic code inlined from std and other crates into the
    /// program's functions (a thread-local's `with`, a RNG's step) is
    /// invisible, so no point in them can be shown safe.
    NoLineTables,
}

impl PreemptionMode {
    /// Whether tasks are preempted when their quantum expires.
    #[allow(deprecated)] // `Symbols` is never chosen, but stays preemptive
    pub fn is_preemptive(self) -> bool {
        matches!(self, PreemptionMode::Symbols | PreemptionMode::LineTables)
    }
}

/// The mode a runtime asking for `quantum` gets in this executable, and
/// whether sync-wait switches are possible. Builds the code map (once per
/// process) on targets with preemption.
pub(crate) fn decide_mode(quantum: Option<std::time::Duration>) -> (PreemptionMode, bool) {
    crate::task::owned::discover();
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        use codemap::{CodeMap, Coverage};
        let coverage = CodeMap::global().coverage();
        let unavailable = match coverage {
            Coverage::NoSymbols => Some(Unavailable::Stripped),
            Coverage::StdInlinedUnseen => Some(Unavailable::StdInlinedWithoutLineTables),
            Coverage::Symbols => Some(Unavailable::NoLineTables),
            Coverage::LineTables => None,
        };
        let mode = match (quantum, unavailable) {
            (None, _) => PreemptionMode::Cooperative,
            (Some(_), Some(why)) => PreemptionMode::Unavailable(why),
            (Some(_), None) => PreemptionMode::LineTables,
        };
        (mode, unavailable.is_none())
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        let _ = quantum;
        (PreemptionMode::Cooperative, false)
    }
}

/// Why a quantum is not honoured, and the fix: once per process (`None`
/// after the first call).
pub(crate) fn unavailable_message(why: Unavailable) -> Option<String> {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    let (what, fix) = match why {
        Unavailable::Stripped => (
            "this executable has no symbol table (it was stripped)",
            "strip = false, debug = \"line-tables-only\"",
        ),
        Unavailable::StdInlinedWithoutLineTables => (
            "LTO inlined std's code into this executable and it has no line tables to show where",
            "debug = \"line-tables-only\"",
        ),
        Unavailable::NoLineTables => (
            "this executable has no line tables, so code inlined from std and other crates \
             into your functions cannot be told from yours",
            "debug = \"line-tables-only\"",
        ),
    };
    Some(format!(
        "kvant: preemption is off and tasks run cooperatively: {what}. \
         Add to the Cargo profile that builds it ([profile.release] in Cargo.toml \
         for `cargo build --release`): {fix}"
    ))
}

/// What the safe-point code map was built from, for diagnostics and
/// benchmarks. `None` on targets without preemption.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct CodeMapInfo {
    /// Time it took to build (once per process, at the first runtime start).
    pub build_time: std::time::Duration,
    /// Classified address segments the signal handler searches.
    pub segments: usize,
    /// DWARF compilation units read (0 without line tables).
    pub dwarf_units: usize,
    /// Inlined-call records seen in the DWARF.
    pub inlined_records: usize,
    /// Address ranges of inlined non-user code laid over their callers.
    pub inlined_ranges: usize,
    /// libc's thin system-call wrappers found, whose blocking calls a
    /// preemptible task may be switched out of (0: none, e.g. static musl).
    pub syscall_wrappers: usize,
    /// Functions whose unwind tables (`.eh_frame`) were evaluated for the
    /// safe-point walk: every one the code map does not deny.
    pub unwind_functions: usize,
    /// Unwind rows the handler searches.
    pub unwind_rows: usize,
}

/// Build (if not yet built) and describe the process's code map.
pub fn code_map_info() -> Option<CodeMapInfo> {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        let map = codemap::CodeMap::global();
        let stats = map.inline_stats().unwrap_or_default();
        Some(CodeMapInfo {
            build_time: map.build_time(),
            segments: map.segments(),
            dwarf_units: stats.units,
            inlined_records: stats.inlined,
            inlined_ranges: stats.ranges,
            syscall_wrappers: map.wrappers().len(),
            unwind_functions: map.unwind().fdes(),
            unwind_rows: map.unwind().rows(),
        })
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    None
}

/// Let the crate that wrote the closure type `F` be preempted: a task's code
/// is preemptible by default where it is the program's own (the crate a
/// spawned closure was written in, read from `type_name::<F>()`), never in
/// another crate's unless [`Builder::preempt_crate`](crate::Builder::preempt_crate)
/// allows it. Cheap after the first call with the same type name.
#[inline]
pub(crate) fn allow_spawner<F>() {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static LAST: AtomicUsize = AtomicUsize::new(0);
        let name = std::any::type_name::<F>();
        if LAST.load(Ordering::Relaxed) != name.as_ptr() as usize {
            allow_spawner_slow(name, &LAST);
        }
    }
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[cold]
#[inline(never)]
fn allow_spawner_slow(name: &'static str, last: &std::sync::atomic::AtomicUsize) {
    let Some(map) = codemap::CodeMap::get() else {
        return; // no runtime built yet: nothing can be preempted anyway
    };
    if let symbols::Owner::Crate(k) = symbols::owner(name) {
        map.allow_crate(&k);
    }
    last.store(name.as_ptr() as usize, std::sync::atomic::Ordering::Relaxed);
}

/// Allow crate `name`'s code to be preempted (the builder's list).
pub(crate) fn allow_crate(name: &str) -> Result<(), crate::Error> {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        let map = codemap::CodeMap::global();
        if symbols::crate_denied(name.as_bytes()) {
            return Err(crate::Error::CrateNotPreemptible {
                name: name.to_owned(),
                why: "kvant never preempts its own code or the locks and queues it is built on",
            });
        }
        if !map.allow_crate(name) {
            return Err(crate::Error::CrateNotPreemptible {
                name: name.to_owned(),
                why: "this executable has no code of a crate by that name (spell it as paths do: \
                      `my_crate`, not `my-crate`)",
            });
        }
    }
    let _ = name;
    Ok(())
}

/// How many safe-point checks ended how, process-wide: `(verdict, count)`
/// (diagnostics of why tasks are not preempted).
#[doc(hidden)]
pub fn safe_point_verdicts() -> Vec<(&'static str, u64)> {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        let names = [
            "safe",
            "sync-wait",
            "syscall-wait",
            "not-on-task-stack",
            "pc-unsafe",
            "frame-unsafe",
            "broken-chain",
        ];
        names
            .iter()
            .zip(&signal::VERDICTS)
            .map(|(n, c)| (*n, c.load(std::sync::atomic::Ordering::Relaxed)))
            .collect()
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    Vec::new()
}

/// What the code at `addr` is, for a diagnostic: the function's name, and
/// the crates there whose code is not allowed to be preempted. Not
/// signal-safe (it reads the symbol table).
pub(crate) fn describe_code(addr: usize) -> (Option<String>, Vec<String>) {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        let map = codemap::CodeMap::global();
        let name = map.symbol_names(&[addr]).pop().flatten();
        let crates = map
            .crates_denied_at(addr)
            .into_iter()
            .map(String::from)
            .collect();
        (name, crates)
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        let _ = addr;
        (None, Vec::new())
    }
}

/// Whether the code of crate `name` may be preempted now (tests, docs).
pub fn crate_is_preemptible(name: &str) -> bool {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        codemap::CodeMap::get().is_some_and(|m| m.crate_allowed(name))
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        let _ = name;
        false
    }
}

/// Whether this target supports quantum preemption (Linux on x86_64).
pub const SUPPORTED: bool = cfg!(all(target_os = "linux", target_arch = "x86_64"));

/// The default preemption signal: `SIGURG`, as in Go. It is ignored by
/// default, carries no meaning for ordinary programs, and is not used by
/// debuggers or sanitizers.
pub(crate) const DEFAULT_SIGNAL: i32 = libc::SIGURG;

/// Check that `sig` can serve as the preemption signal.
pub(crate) fn validate_signal(sig: i32) -> Result<(), crate::Error> {
    let reserved = [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        libc::SIGTRAP,
        libc::SIGABRT,
        libc::SIGCHLD,
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGPIPE,
    ];
    #[cfg(target_os = "linux")]
    let max = libc::SIGRTMAX();
    #[cfg(not(target_os = "linux"))]
    let max = 31;
    if sig <= 0 || sig > max || reserved.contains(&sig) {
        return Err(crate::Error::InvalidSignal(sig));
    }
    Ok(())
}

/// Process-wide signal setup every runtime needs (the stack-overflow handler).
pub(crate) fn init_process() {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    overflow::install();
}

/// Make the calling worker thread preemptible through `slot`. With
/// `cpu_quantum`, the thread also times its own slices on its CPU clock
/// (`cputimer.rs`): `(signal, quantum)`. Returns false if that timer could
/// not be armed (the monitor then times this worker's quantum).
pub(crate) fn enter_worker(
    slot: &WorkerSlot,
    cpu_quantum: Option<(i32, std::time::Duration)>,
) -> bool {
    slot.bind_thread();
    crate::task::owned::enter_thread();
    slot.owner_id.store(
        crate::task::owned::thread_id(),
        std::sync::atomic::Ordering::Relaxed,
    );
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        signal::enter_worker(slot);
        if let Some((sig, q)) = cpu_quantum {
            return cputimer::arm(slot, sig, q);
        }
    }
    let _ = cpu_quantum;
    true
}

/// Elsewhere nothing preempts, so nothing is pinned and nothing is lent.
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
mod lend_off {
    use super::WorkerSlot;

    #[derive(Clone, Copy, Debug, Default)]
    pub(crate) struct Identity;

    impl Identity {
        pub(crate) fn of_slot(_: &WorkerSlot) -> Identity {
            Identity
        }
        pub(crate) fn install(&self, _: &WorkerSlot) {}
    }

    pub(crate) fn group_lock(_: &WorkerSlot) {}
    pub(crate) fn group_pass(_: &WorkerSlot) {}
    pub(crate) fn group_unlock(_: &WorkerSlot) {}
    pub(crate) fn group_wanted(_: &WorkerSlot) -> bool {
        false
    }
}
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
pub(crate) use lend_off::{Identity, group_lock, group_pass, group_unlock, group_wanted};

/// This thread stands in for the worker of `slot` while its own thread is
/// lent out (`lend.rs`); returns the thread's identity, which it installs
/// in the slot whenever it takes the worker.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub(crate) fn enter_standin(slot: &WorkerSlot) -> Identity {
    crate::task::owned::enter_thread();
    signal::enter_standin(slot);
    Identity::of_this_thread()
}

/// The stand-in thread is exiting.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub(crate) fn exit_standin() {
    signal::exit_worker();
}

/// The worker thread is exiting: no signal may use its slot any more.
pub(crate) fn exit_worker(slot: &WorkerSlot) {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        cputimer::disarm(slot);
        signal::exit_worker();
    }
    let _ = slot;
}
