//! Guard-paged task stacks and the pool that recycles them.
//!
//! A stack is `[guard page][usable bytes ...]`, growing down from its top: a
//! task that runs off the end faults on the guard page instead of
//! scribbling over a neighbour. Only the pages a task touches cost memory,
//! so a large default costs address space, not memory.
//!
//! # Where stacks come from
//!
//! Where the kernel has guard markers (`MADV_GUARD_INSTALL`, Linux 6.13),
//! stacks of the runtime's default size are carved from slabs: one
//! read-write mapping of [`SLAB_STACKS`] stacks, each with a guard marker
//! installed in the page table over its lowest page. A marker faults like a
//! `PROT_NONE` page but does not split the mapping, so a million stacks take
//! ~16k mappings (fewer where the kernel merges neighbouring slabs) instead
//! of two million: with one `mmap` plus an `mprotect`ed guard per stack,
//! Linux's default `vm.max_map_count` (65530) stopped a program at ~32k live
//! tasks. Stacks of other sizes get a mapping each, also with a marker (one
//! mapping). On older kernels every stack is a mapping plus an
//! `mprotect`ed guard page (two mappings), and running out of mappings is an
//! error that names the sysctl.
//!
//! # What is given back
//!
//! A stack handed back goes to the pool with its memory (the steady state
//! makes no system calls). Beyond the pool's cap, a stack of its own is
//! unmapped; a slab's stack gives its memory back (`MADV_DONTNEED`), and the
//! slab's address space is unmapped with its last stack. A stack a task
//! overflowed may still be pointed into by objects its discarded frames
//! registered elsewhere, so it is never reused: its memory is given back
//! and its whole range becomes a guard region (a stale access faults
//! instead of reaching another task's data); what stays is its address
//! range, and with it its slab's (address space only: no memory and no
//! mapping of its own).

use std::io;
use std::ptr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use corosensei::stack::StackPointer;
use parking_lot::Mutex;

/// Stacks carved from one slab.
pub(crate) const SLAB_STACKS: usize = 64;

/// `madvise` advice that installs guard markers (Linux 6.13, `uapi/asm-generic/mman-common.h`).
const MADV_GUARD_INSTALL: libc::c_int = 102;

fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    match PAGE.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: sysconf has no preconditions.
            let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            let p = if p > 0 { p as usize } else { 4096 };
            PAGE.store(p, Ordering::Relaxed);
            p
        }
        p => p,
    }
}

/// Turn `[addr, addr + len)`, inside a mapping of ours, into a guard region.
fn install_guard(addr: usize, len: usize) -> bool {
    // SAFETY: the range lies inside an anonymous mapping the caller owns;
    // a guard marker only makes accesses to it fault (no Rust object lives
    // there: it is a guard page or a stack nobody runs on any more).
    unsafe { libc::madvise(addr as *mut libc::c_void, len, MADV_GUARD_INSTALL) == 0 }
}

/// Whether this kernel has guard markers (asked once, on a scratch mapping).
/// `KVANT_STACK_GUARDS=mprotect` takes the older kernels' path instead
/// (tests of that path; a workaround should markers misbehave somewhere).
pub(crate) fn guard_markers() -> bool {
    static KNOWN: AtomicU8 = AtomicU8::new(0);
    match KNOWN.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let forced_off =
                std::env::var_os("KVANT_STACK_GUARDS").is_some_and(|v| v == "mprotect");
            let yes = !forced_off
                && map_rw(2 * page_size()).is_ok_and(|r| install_guard(r.map, page_size()));
            KNOWN.store(if yes { 1 } else { 2 }, Ordering::Relaxed);
            yes
        }
    }
}

/// An anonymous mapping this process owns; unmapped on drop.
struct Region {
    map: usize,
    len: usize,
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `map..map+len` is the mapping this Region owns, and no
        // stack in it is in use any more (each holds the Region alive).
        unsafe { libc::munmap(self.map as *mut libc::c_void, self.len) };
    }
}

/// Why mapping a stack failed, with the limit that is likely the cause.
fn map_error(e: io::Error, mappings_per_stack: usize) -> io::Error {
    if e.raw_os_error() != Some(libc::ENOMEM) {
        return e;
    }
    let limit = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    io::Error::new(
        e.kind(),
        format!(
            "{e}: each task stack takes {mappings_per_stack} of the {limit} mappings a process may \
             have (vm.max_map_count; raise it with `sysctl vm.max_map_count=...`, or run on \
             Linux 6.13+, where stacks share mappings)"
        ),
    )
}

/// Map `len` bytes of read-write, unreserved address space.
fn map_rw(len: usize) -> io::Result<Region> {
    map_anon(len, libc::PROT_READ | libc::PROT_WRITE)
}

/// Map `len` bytes of unreserved address space with protection `prot`.
fn map_anon(len: usize, prot: libc::c_int) -> io::Result<Region> {
    // SAFETY: an anonymous private mapping at an address of the kernel's
    // choosing aliases no existing Rust object.
    let map = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(Region {
        map: map as usize,
        len,
    })
}

/// The length of a stack with at least `size` usable bytes, guard page
/// included (also as `Stack::len` stores it).
fn stack_len(size: usize) -> io::Result<(usize, u32)> {
    let len = round_to_pages(size) + page_size();
    let len32 = u32::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    Ok((len, len32))
}

/// One task stack: `[guard page][usable bytes ...]`, growing down from `top`.
///
/// 16 bytes, moved by value into the coroutine at every task start: at 24
/// (an `Option<Arc<..>>` for the slab) the move split into loads and stores
/// of different widths and stalled store forwarding (measured:
/// BENCHMARKS.md, "Measured decisions").
pub(crate) struct Stack {
    /// Start of the stack (its guard page).
    map: usize,
    /// Length of the stack, guard included (at most 1 GiB and a page).
    len: u32,
    /// Index of the slab it was carved from in its pool's table, or
    /// [`OWN`]: the stack is a mapping of its own, unmapped on drop.
    slab: u32,
}

/// `Stack::slab` of a stack that is a mapping of its own.
const OWN: u32 = u32::MAX;

impl Stack {
    /// Map a stack of its own with at least `size` usable bytes.
    pub(crate) fn new(size: usize) -> io::Result<Stack> {
        let page = page_size();
        let (len, len32) = stack_len(size)?;
        let markers = guard_markers();
        // With markers: read-write, a marker on the guard page (one mapping).
        // Without: PROT_NONE, then all but the guard made read-write (two).
        let region = if markers {
            map_rw(len).map_err(|e| map_error(e, 1))?
        } else {
            map_anon(len, libc::PROT_NONE).map_err(|e| map_error(e, 2))?
        };
        let map = region.map;
        std::mem::forget(region); // the Stack owns the mapping now
        let stack = Stack {
            map,
            len: len32,
            slab: OWN,
        };
        if markers {
            if !install_guard(map, page) {
                return Err(io::Error::last_os_error()); // `stack` unmaps on drop
            }
            return Ok(stack);
        }
        let usable = len - page;
        // SAFETY: the range lies inside the mapping created above, which this
        // function exclusively owns; the first page stays PROT_NONE as the guard.
        let rc = unsafe {
            libc::mprotect(
                (stack.map + page) as *mut libc::c_void,
                usable,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        if rc != 0 {
            // `stack` unmaps on drop
            return Err(map_error(io::Error::last_os_error(), 2));
        }
        Ok(stack)
    }

    /// Highest usable address (exclusive): where the stack starts growing
    /// down. Above it, at the very top, the task's notes (`note.rs`).
    pub(crate) fn top(&self) -> usize {
        self.end() - super::note::NOTES_BYTES
    }

    /// Lowest usable address (just above the guard page).
    pub(crate) fn bottom(&self) -> usize {
        self.map + page_size()
    }

    /// Usable bytes.
    pub(crate) fn size(&self) -> usize {
        self.len as usize - page_size()
    }

    /// End of the stack's range (exclusive).
    fn end(&self) -> usize {
        self.map + self.len as usize
    }

    /// Give the memory of `[from, to)`, a range of stacks nobody runs on
    /// any more, back to the kernel (it reads as zeros if touched again).
    fn release_range(from: usize, to: usize) {
        // SAFETY: the range is whole stacks of one slab (or one stack of its
        // own), each given up by its owner: no coroutine runs on them and
        // no Rust object lives there.
        unsafe {
            libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_DONTNEED);
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // A slab's stack is accounted for by its pool (`release`), which
        // unmaps the slab with its last stack.
        if self.slab == OWN {
            // SAFETY: `map..map+len` is the mapping this Stack owns; no
            // coroutine runs on it any more (a Stack is only dropped once its
            // coroutine has finished or was deliberately leaked together with
            // its stack).
            unsafe { libc::munmap(self.map as *mut libc::c_void, self.len as usize) };
        }
    }
}

// SAFETY: `base()` is the page-aligned top of the stack (16-byte aligned) and
// `limit()` its bottom including the guard page, as corosensei requires; the
// stack has a guard page and at least MIN_STACK_SIZE usable bytes.
unsafe impl corosensei::stack::Stack for Stack {
    fn base(&self) -> StackPointer {
        StackPointer::new(self.top()).expect("stack top is never null")
    }

    fn limit(&self) -> StackPointer {
        StackPointer::new(self.map).expect("stack mapping is never null")
    }
}

/// One slab: a mapping stacks of the pool's size are carved from.
struct Slab {
    region: Region,
    /// Stacks carved from it and not yet released.
    live: usize,
}

/// A pool's slabs, and where the next stack is carved.
#[derive(Default)]
struct Slabs {
    /// Indexed by `Stack::slab`; `None` once unmapped (its index is reused).
    table: Vec<Option<Slab>>,
    unused: Vec<u32>,
    /// The slab being carved, and the index of its next stack.
    current: Option<(u32, usize)>,
}

/// Stacks of the runtime's default size, waiting for the next task.
///
/// Each worker keeps a small private cache (no lock on the hot path); this
/// shared pool absorbs the overflow, so a burst of tasks finishing on one
/// worker can feed spawns on another. Beyond `cap` stacks are unmapped so an
/// old burst does not pin memory forever.
pub(crate) struct StackPool {
    size: usize,
    cap: usize,
    free: Mutex<Vec<Stack>>,
    mapped: AtomicUsize,
    slabs: Mutex<Slabs>,
}

impl StackPool {
    pub(crate) fn new(size: usize, cap: usize) -> Self {
        StackPool {
            size,
            cap,
            free: Mutex::new(Vec::new()),
            mapped: AtomicUsize::new(0),
            slabs: Mutex::new(Slabs::default()),
        }
    }

    /// Usable size of every stack this pool hands out.
    pub(crate) fn stack_size(&self) -> usize {
        self.size
    }

    /// Stacks currently mapped by this runtime (in use or pooled).
    pub(crate) fn mapped(&self) -> usize {
        self.mapped.load(Ordering::Relaxed)
    }

    /// Take up to `n` pooled stacks into `out` (a worker refilling its cache).
    pub(crate) fn take_into(&self, out: &mut Vec<Stack>, n: usize) {
        let mut free = self.free.lock();
        let k = free.len().saturating_sub(n);
        out.extend(free.drain(k..));
    }

    /// A fresh stack of `size` bytes: carved from a slab if it is the
    /// pool's size and the kernel has guard markers, else mapped alone.
    pub(crate) fn map(&self, size: usize) -> io::Result<Stack> {
        let s = if size == self.size && guard_markers() {
            self.carve()?
        } else {
            Stack::new(size)?
        };
        self.mapped.fetch_add(1, Ordering::Relaxed);
        Ok(s)
    }

    /// The next stack of the current slab (a new slab when it is used up).
    fn carve(&self) -> io::Result<Stack> {
        let page = page_size();
        let (len, len32) = stack_len(self.size)?;
        let mut slabs = self.slabs.lock();
        let (index, next) = match slabs.current {
            Some((i, next)) if next < SLAB_STACKS => (i, next),
            _ => {
                let region = map_rw(len * SLAB_STACKS).map_err(|e| map_error(e, 1))?;
                let slab = Some(Slab { region, live: 0 });
                let i = match slabs.unused.pop() {
                    Some(i) => {
                        slabs.table[i as usize] = slab;
                        i
                    }
                    None => {
                        slabs.table.push(slab);
                        (slabs.table.len() - 1) as u32
                    }
                };
                (i, 0)
            }
        };
        slabs.current = Some((index, next + 1));
        let slab = slabs.table[index as usize]
            .as_mut()
            .expect("kvant internal error: the current slab is mapped");
        slab.live += 1;
        let map = slab.region.map + next * len;
        drop(slabs);
        if !install_guard(map, page) {
            return Err(io::Error::last_os_error());
        }
        Ok(Stack {
            map,
            len: len32,
            slab: index,
        })
    }

    /// Give stacks back (a worker's cache overflowing).
    pub(crate) fn give(&self, stacks: impl Iterator<Item = Stack>) {
        let mut beyond = Vec::new();
        {
            let mut free = self.free.lock();
            for s in stacks {
                if s.size() == self.size && free.len() < self.cap {
                    free.push(s);
                } else {
                    beyond.push(s);
                }
            }
        }
        self.release(beyond);
    }

    /// Unmap a stack for good.
    pub(crate) fn unmap(&self, s: Stack) {
        self.release(vec![s]);
    }

    /// Let go of `stacks` for good: a stack of its own is unmapped; a
    /// slab's stack gives its memory back, one `madvise` per run of
    /// neighbours (a burst of tasks ending in spawn order returns its
    /// stacks in runs, and each call is a TLB shootdown on every worker;
    /// measured: BENCHMARKS.md, "Measured decisions"), and its slab is
    /// unmapped with its last stack.
    fn release(&self, mut stacks: Vec<Stack>) {
        if stacks.is_empty() {
            return;
        }
        self.mapped.fetch_sub(stacks.len(), Ordering::Relaxed);
        // Slabs whose last stack this is: unmapped whole, below.
        let mut empty = Vec::new();
        {
            let mut slabs = self.slabs.lock();
            let current = slabs.current.map(|(i, _)| i);
            for s in stacks.iter().filter(|s| s.slab != OWN) {
                let entry = &mut slabs.table[s.slab as usize];
                let slab = entry
                    .as_mut()
                    .expect("kvant internal error: a stack of an unmapped slab");
                slab.live -= 1;
                if slab.live == 0 && Some(s.slab) != current {
                    empty.push(entry.take().expect("checked above").region);
                    slabs.unused.push(s.slab);
                }
            }
        }
        stacks.sort_unstable_by_key(|s| s.map);
        let gone = |s: &Stack| {
            empty
                .iter()
                .any(|r| r.map <= s.map && s.end() <= r.map + r.len)
        };
        let mut run: Option<(usize, usize)> = None;
        for s in stacks.iter().filter(|s| s.slab != OWN && !gone(s)) {
            run = match run {
                Some((from, to)) if to == s.map => Some((from, s.end())),
                Some((from, to)) => {
                    Stack::release_range(from, to);
                    Some((s.map, s.end()))
                }
                None => Some((s.map, s.end())),
            };
        }
        if let Some((from, to)) = run {
            Stack::release_range(from, to);
        }
        drop(stacks); // stacks of their own unmap here
        drop(empty); // and emptied slabs here
    }

    /// Retire a stack that must never be reused or unmapped (one a task
    /// overflowed: see the module docs): its memory is given back and its
    /// whole range becomes a guard region where the kernel has guard
    /// markers; its address range (and slab) stays reserved for good.
    pub(crate) fn leak(&self, s: Stack) {
        if guard_markers() {
            Stack::release_range(s.map, s.end());
            install_guard(s.map, s.len as usize);
        }
        // Never released: a slab's count keeps its slab mapped for good.
        std::mem::forget(s);
    }
}

impl Drop for StackPool {
    fn drop(&mut self) {
        let free = std::mem::take(&mut *self.free.lock());
        self.release(free);
        // The slab being carved, if nothing of it is in use. A slab with
        // stacks still out (a leaked task's, or a stuck worker's) stays.
        let slabs = std::mem::take(&mut *self.slabs.lock());
        for slab in slabs.table.into_iter().flatten() {
            if slab.live == 0 {
                drop(slab); // unmapped
            } else {
                std::mem::forget(slab); // stays mapped for good
            }
        }
    }
}

/// `bytes` rounded up to whole pages (what a stack of that size really gets).
pub(crate) fn round_to_pages(bytes: usize) -> usize {
    bytes.next_multiple_of(page_size())
}
