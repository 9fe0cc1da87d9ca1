//! Looking at another thread from outside: its CPU clock, what the kernel
//! says it is doing, and which functions are on its stack while it waits.
//!
//! This is the mechanism behind the monitor's "blocked in the kernel" rule
//! (the policy lives in `runtime/sysmon`). Nothing here sends a signal: a
//! signal would turn a non-restartable call (`poll`, a socket read with a
//! timeout) into `EINTR`, which is exactly the fallout Go 1.14 had. What the
//! kernel already publishes is enough: the thread CPU clock
//! (`pthread_getcpuclockid`), its scheduler state (`/proc/self/task/TID/stat`)
//! and, while it sits in a system call, that call's number, arguments, stack
//! pointer and program counter (`/proc/self/task/TID/syscall`).

use std::fmt::Write as _;
use std::io::Read as _;

use super::WorkerSlot;
use super::codemap::CodeMap;
use super::symbols::Class;
use super::unwind::Regs;

/// What a thread is doing according to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KernelState {
    /// Running or runnable: computing, or waiting for a CPU.
    Running,
    /// Asleep in the kernel (`S` or `D`): blocked.
    Waiting,
    /// The kernel did not say (no procfs, thread gone).
    Unknown,
}

/// The system call a thread is blocked in.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct InSyscall {
    pub nr: i64,
    /// The second argument (a futex's operation).
    pub arg2: u64,
    /// User stack pointer at the call.
    pub sp: usize,
}

impl InSyscall {
    /// Whether it is a `FUTEX_WAIT` (std::sync's waits and parkers use it).
    pub(crate) fn is_futex_wait(&self) -> bool {
        let cmd = self.arg2 as i32 & !(libc::FUTEX_PRIVATE_FLAG | libc::FUTEX_CLOCK_REALTIME);
        self.nr == libc::SYS_futex && (cmd == libc::FUTEX_WAIT || cmd == libc::FUTEX_WAIT_BITSET)
    }
}

/// Reusable buffers for reading procfs (the monitor owns one).
#[derive(Default)]
pub(crate) struct Probe {
    path: String,
    buf: Vec<u8>,
}

impl Probe {
    fn read(&mut self, tid: i32, file: &str) -> bool {
        self.path.clear();
        let _ = write!(self.path, "/proc/self/task/{tid}/{file}");
        self.buf.clear();
        tid != 0
            && std::fs::File::open(&self.path)
                .and_then(|mut f| f.read_to_end(&mut self.buf))
                .is_ok()
    }

    /// The scheduler state of thread `tid`.
    pub(crate) fn state(&mut self, tid: i32) -> KernelState {
        if !self.read(tid, "stat") {
            return KernelState::Unknown;
        }
        // "pid (comm) S ...": comm may hold spaces and parentheses.
        let Some(close) = self.buf.iter().rposition(|&b| b == b')') else {
            return KernelState::Unknown;
        };
        match self.buf.get(close + 2) {
            Some(b'R') => KernelState::Running,
            Some(b'S' | b'D') => KernelState::Waiting,
            _ => KernelState::Unknown,
        }
    }

    /// The system call thread `tid` is in, if it is in one.
    pub(crate) fn syscall(&mut self, tid: i32) -> Option<InSyscall> {
        if !self.read(tid, "syscall") {
            return None;
        }
        let text = std::str::from_utf8(&self.buf).ok()?;
        let mut f = text.split_ascii_whitespace();
        let nr = f.next()?.parse::<i64>().ok()?;
        let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
        let arg2 = hex(f.nth(1)?)?;
        // Then arguments 3 to 6, the stack pointer and the program counter.
        let sp = hex(f.nth(4)?)? as usize;
        Some(InSyscall { nr, arg2, sp })
    }
}

/// CPU time thread `slot` has used so far (ns), from its CPU clock.
pub(crate) fn cpu_time(slot: &WorkerSlot) -> Option<u64> {
    let clock = slot.cpu_clock.load(std::sync::atomic::Ordering::Relaxed);
    if clock == 0 {
        return None;
    }
    clock_ns(clock)
}

/// The time on `clock` in nanoseconds, or `None` if it cannot be read (a
/// stale CPU clock id of an exited thread). Async-signal-safe.
pub(super) fn clock_ns(clock: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out pointer; a bad clock id only makes the
    // call fail.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Where a blocked thread waits: the functions on its stack, innermost first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Site {
    /// The innermost named functions (std's, a crate's), innermost first,
    /// up to three: what it blocks in.
    pub blocks_in: Vec<String>,
    /// The innermost function of the user's own code, if different.
    pub called_from: Option<String>,
}

/// Most bytes of a blocked task's stack read to find its frames.
const STACK_WINDOW: usize = 256 << 10;
/// Most frames followed.
const MAX_FRAMES: usize = 48;

/// Find the functions on the stack of a thread blocked at `sys`, whose task
/// stack is `[lo, hi)`. The stack is copied with `process_vm_readv`, which
/// fails cleanly (instead of faulting) if the task has meanwhile finished
/// and its stack is gone; the frames found are then only as good as a
/// snapshot of memory the task was no longer using, which is why this is
/// for diagnostics only.
/// The return addresses on the stack of a thread blocked at `sys` (task
/// stack `[lo, hi)`): up to 8 raw words that point into the executable
/// below the first frame the unwind tables cover, then the chain walked
/// from that frame up to the task's root.
fn blocked_returns(sys: &InSyscall, lo: usize, hi: usize) -> Option<(Vec<usize>, Vec<usize>)> {
    let map = CodeMap::global();
    if sys.sp < lo || sys.sp >= hi {
        return None;
    }
    let copy = StackCopy::take(sys.sp, hi, STACK_WINDOW)?;
    let (base, len) = (copy.base, copy.len());
    let word = |addr: usize| copy.word(addr);
    // libc's wrapper keeps no frame record. The first return address into
    // the executable above the stack pointer is the return into whoever
    // called libc (further raw words may be stale: a scan cannot tell a
    // live return address from a dead one). From the first one the
    // executable's unwind tables cover, the frames above are stepped out
    // of with them (frame pointers are not needed, nor trusted).
    let unwind = map.full_unwind();
    let mut raw = Vec::new();
    let mut chain = Vec::new();
    let mut at = base;
    let mut at_root = false;
    while at + 8 <= base + len {
        let Some(ra) = word(at) else {
            break;
        };
        if map.known(ra.wrapping_sub(1)).is_some() && unwind.covers(ra.wrapping_sub(1)) {
            chain.push(ra);
            // `rbp` is unknown here: a frame whose CFA is `rbp`-based ends
            // the walk (rare without frame pointers).
            let mut regs = Regs {
                pc: ra.wrapping_sub(1),
                sp: at + 8,
                fp: 0,
            };
            while chain.len() < MAX_FRAMES {
                let mut step = unwind.step_with(regs, base + len, word);
                if step.is_none() && regs.fp == 0 {
                    // A frame-pointer frame (std is built with them) needs
                    // `rbp`, which the kernel did not say: take the first
                    // frame record above, [saved rbp][return address].
                    regs.fp = frame_record(regs.pc, regs.sp, base + len, &word, map).unwrap_or(0);
                    step = unwind.step_with(regs, base + len, word);
                }
                let Some(step) = step else {
                    break;
                };
                let ra = step.caller.pc;
                // The task's root (`run_user`): kvant's task entry above.
                if map.known(ra.wrapping_sub(1)).is_none() || map.is_root(ra) {
                    at_root = true;
                    break;
                }
                chain.push(ra);
                regs = Regs {
                    pc: ra.wrapping_sub(1),
                    ..step.caller
                };
            }
            if at_root || chain.len() >= MAX_FRAMES {
                break;
            }
            // A frame the tables could not step out of (a frame-pointer
            // frame whose record the scan missed): scan on from its stack
            // pointer for the next return address, as from the top.
            at = regs.sp.max(at + 8);
            continue;
        }
        if chain.is_empty() && raw.len() < 8 && ra != 0 && map.known(ra.wrapping_sub(1)).is_some() {
            raw.push(ra);
        }
        at += 8;
    }
    Some((raw, chain))
}

/// The call sites on the stack of a thread blocked at `sys` (task stack
/// `[lo, hi)`), innermost first: for a task dump.
pub(crate) fn blocked_stack(sys: &InSyscall, lo: usize, hi: usize) -> Vec<usize> {
    blocked_returns(sys, lo, hi).map_or_else(Vec::new, |(_, chain)| {
        chain.iter().map(|ra| ra.wrapping_sub(1)).collect()
    })
}

pub(crate) fn blocked_site(sys: &InSyscall, lo: usize, hi: usize) -> Site {
    let map = CodeMap::global();
    let Some((raw, chain)) = blocked_returns(sys, lo, hi) else {
        return Site::default();
    };
    let calls: Vec<usize> = raw
        .iter()
        .chain(&chain)
        .map(|ra| ra.wrapping_sub(1))
        .collect();
    let mut names = map.symbol_names(&calls);
    // Of the raw words, only the first one in a named function counts.
    let first_named = names[..raw.len()].iter().position(Option::is_some);
    for (k, n) in names[..raw.len()].iter_mut().enumerate() {
        if Some(k) != first_named {
            *n = None;
        }
    }
    let mut site = Site::default();
    for (pc, name) in calls.iter().zip(names) {
        let Some(name) = name.map(|n| readable(&n)) else {
            continue;
        };
        if map.known(*pc) == Some(Class::User) {
            site.called_from = Some(name);
            break;
        }
        if site.blocks_in.len() < 3 && !site.blocks_in.contains(&name) {
            site.blocks_in.push(name);
        }
    }
    site
}

/// The frame record of the frame-pointer function running at `pc` with its
/// stack at `sp`: the first at or above `sp` (below `hi`) whose second word
/// is a return address after a direct or GOT call into that function. Its first
/// word, the caller's `rbp`, proves nothing: a
/// caller built without frame pointers keeps anything there. A scan, for
/// diagnostics only.
fn frame_record(
    pc: usize,
    sp: usize,
    hi: usize,
    word: &impl Fn(usize) -> Option<usize>,
    map: &CodeMap,
) -> Option<usize> {
    let unwind = map.full_unwind();
    (sp..hi.saturating_sub(16).min(sp + 4096))
        .step_by(8)
        .find(|&r| {
            word(r + 8).is_some_and(|ra| {
                map.known(ra.wrapping_sub(1)).is_some() && calls_into(ra, pc, unwind)
            })
        })
}

/// Whether the call before return address `ra` entered the function at
/// `pc`: a direct `call rel32`, or a call through a GOT slot (`call
/// [rip + disp32]`, how Rust calls another crate's functions in a PIE), to
/// an address at or below `pc` in the same function. (Other indirect calls
/// prove nothing: any stale return address after one would pass.)
fn calls_into(ra: usize, pc: usize, unwind: &super::unwind::UnwindTable) -> bool {
    let Some(at) = ra.checked_sub(6) else {
        return false;
    };
    let mut code = [0u8; 6];
    if !read_own_memory(at, &mut code) {
        return false;
    }
    let rel = |b: &[u8]| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as isize;
    let target = if code[1] == 0xe8 {
        ra.wrapping_add_signed(rel(&code[2..]))
    } else if code[..2] == [0xff, 0x15] {
        let mut slot = [0u8; 8];
        if !read_own_memory(ra.wrapping_add_signed(rel(&code[2..])), &mut slot) {
            return false;
        }
        usize::from_ne_bytes(slot)
    } else {
        return false;
    };
    target <= pc && unwind.same_function(target, pc)
}

/// A user closure called through `Box<dyn FnOnce>` is usually inlined into
/// the vtable shim, whose legacy-mangled name says only `FnOnce::call_once`.
fn readable(name: &str) -> String {
    if name.starts_with("core::ops::function::") {
        "the task's closure".to_string()
    } else {
        name.to_string()
    }
}

/// Copy `buf.len()` bytes at `addr` of this process; false if any of it is
/// not mapped.
/// A copy of the top of a stack: `[base, base + len)` from the stack
/// pointer up, taken by the kernel (`read_own_memory`).
pub(super) struct StackCopy {
    pub base: usize,
    mem: Vec<u8>,
}

impl StackCopy {
    /// Copy the stack from `sp` up to `hi`, at most `window` bytes.
    pub(super) fn take(sp: usize, hi: usize, window: usize) -> Option<StackCopy> {
        let base = sp & !7;
        let len = hi.checked_sub(base)?.min(window) & !7;
        let mut mem = vec![0u8; len];
        read_own_memory(base, &mut mem).then_some(StackCopy { base, mem })
    }

    pub(super) fn len(&self) -> usize {
        self.mem.len()
    }

    /// The word at `addr`, if the copy holds it.
    pub(super) fn word(&self, addr: usize) -> Option<usize> {
        let off = addr.checked_sub(self.base)?;
        let b = self.mem.get(off..off.checked_add(8)?)?;
        Some(usize::from_ne_bytes(b.try_into().ok()?))
    }
}

pub(super) fn read_own_memory(addr: usize, buf: &mut [u8]) -> bool {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which
    // we own; the remote range is only read, by the kernel, which reports
    // unmapped memory as an error instead of faulting.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    n == buf.len() as isize
}
