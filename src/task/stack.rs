//! Guard-paged task stacks and the pool that recycles them.
//!
//! A stack is one `mmap` of `PROT_NONE` address space whose lowest page stays
//! inaccessible: a task that runs off the end faults on the guard page instead
//! of scribbling over a neighbour. Mapping and unmapping cost two syscalls and
//! a TLB shootdown each, so finished tasks hand their stack back to a pool and
//! the steady state makes no syscalls at all. A stack is only touched where the
//! task actually used it, so a large default costs address space, not memory.

use std::io;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

use corosensei::stack::StackPointer;
use parking_lot::Mutex;

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

/// One task stack: `[guard page][usable bytes ...]`, growing down from `top`.
pub(crate) struct Stack {
    /// Start of the mapping (the guard page).
    map: usize,
    /// Length of the whole mapping, guard included.
    len: usize,
}

impl Stack {
    /// Map a stack with at least `size` usable bytes.
    pub(crate) fn new(size: usize) -> io::Result<Stack> {
        let page = page_size();
        let usable = size.div_ceil(page) * page;
        let len = usable + page;
        // SAFETY: an anonymous private mapping at an address of the kernel's
        // choosing aliases no existing Rust object.
        let map = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Stack {
            map: map as usize,
            len,
        };
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
            return Err(io::Error::last_os_error()); // `stack` unmaps on drop
        }
        Ok(stack)
    }

    /// Highest address (exclusive): where the stack starts growing down.
    pub(crate) fn top(&self) -> usize {
        self.map + self.len
    }

    /// Lowest usable address (just above the guard page).
    pub(crate) fn bottom(&self) -> usize {
        self.map + page_size()
    }

    /// Usable bytes.
    pub(crate) fn size(&self) -> usize {
        self.len - page_size()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: `map..map+len` is the mapping this Stack owns; no coroutine
        // runs on it any more (a Stack is only dropped once its coroutine has
        // finished or was deliberately leaked together with its stack).
        unsafe { libc::munmap(self.map as *mut libc::c_void, self.len) };
    }
}

// SAFETY: `base()` is the page-aligned top of the mapping (16-byte aligned) and
// `limit()` its bottom including the guard page, as corosensei requires; the
// mapping has a guard page and at least MIN_STACK_SIZE usable bytes.
unsafe impl corosensei::stack::Stack for Stack {
    fn base(&self) -> StackPointer {
        StackPointer::new(self.top()).expect("stack top is never null")
    }

    fn limit(&self) -> StackPointer {
        StackPointer::new(self.map).expect("stack mapping is never null")
    }
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
}

impl StackPool {
    pub(crate) fn new(size: usize, cap: usize) -> Self {
        StackPool {
            size,
            cap,
            free: Mutex::new(Vec::new()),
            mapped: AtomicUsize::new(0),
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

    /// Map a fresh stack of `size` bytes.
    pub(crate) fn map(&self, size: usize) -> io::Result<Stack> {
        let s = Stack::new(size)?;
        self.mapped.fetch_add(1, Ordering::Relaxed);
        Ok(s)
    }

    /// Give stacks back (a worker's cache overflowing).
    pub(crate) fn give(&self, stacks: impl Iterator<Item = Stack>) {
        let mut free = self.free.lock();
        for s in stacks {
            if s.size() == self.size && free.len() < self.cap {
                free.push(s);
            } else {
                self.unmap(s);
            }
        }
    }

    /// Unmap a stack for good.
    pub(crate) fn unmap(&self, s: Stack) {
        self.mapped.fetch_sub(1, Ordering::Relaxed);
        drop(s);
    }

    /// Forget a stack that must never be reused or unmapped (a leaked
    /// preempted task, or one that overflowed into its guard page).
    pub(crate) fn leak(&self, s: Stack) {
        std::mem::forget(s);
    }
}

/// `bytes` rounded up to whole pages (what a stack of that size really gets).
pub(crate) fn round_to_pages(bytes: usize) -> usize {
    bytes.next_multiple_of(page_size())
}
