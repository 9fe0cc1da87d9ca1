//! libc's thin system-call wrappers, and how to step out of them.
//!
//! A task blocked in `read`, `clock_nanosleep`, `accept`... holds its worker
//! thread in the kernel. If tasks preempted on that thread wait for it (they
//! can run on no other), the signal handler may switch the blocked task out
//! right there (`safepoint.rs`, rule 6). It needs to know, from inside the
//! handler, that the interrupted PC is at the `syscall` instruction of one
//! of these wrappers, and who called the wrapper. libc is built without
//! frame pointers, so the return address is found with libc's own call
//! frame information (`.eh_frame`, what its unwinder uses), evaluated once
//! into the same kind of table the safe-point walk uses for the executable
//! (`unwind.rs`), which the handler searches without allocating.
//!
//! The wrappers keep nothing across the call but registers and their own
//! stack slots (all in the signal frame and on the task's stack), and glibc's
//! cancellation type, which only `pthread_cancel` reads (kvant never cancels
//! its threads). Where a wrapper uses `rbp` itself, the CFI says where it
//! saved the caller's, which the walk above the wrapper starts from.

use std::ffi::CStr;
use std::mem::MaybeUninit;

use super::unwind::{Regs, Step, UnwindTable};

/// Wrappers whose blocking calls a task may be switched out of. Not
/// `syscall()` (futex: rule 5 decides those, parkers excluded), not epoll or
/// select (event loops keep their own state around them). `poll` is here for
/// std's `Command::output`, which polls its child's two pipes: like every
/// wrapper, only with callers that are the task's own code or std's thin
/// front ends (rule 6), and a `poll` returns `EINTR` at any handled signal
/// anyway (`SA_RESTART` does not restart it), a quantum's included.
const WRAPPERS: &[&CStr] = &[
    c"poll",
    c"read",
    c"write",
    c"readv",
    c"writev",
    c"pread64",
    c"pwrite64",
    c"recv",
    c"recvfrom",
    c"recvmsg",
    c"send",
    c"sendto",
    c"sendmsg",
    c"accept",
    c"accept4",
    c"connect",
    c"nanosleep",
    c"clock_nanosleep",
    c"waitpid",
    c"wait4",
    c"waitid",
];

/// glibc's `dladdr1` flag for "the symbol table entry" (dlfcn.h).
const RTLD_DL_SYMENT: libc::c_int = 1;

/// The wrappers found in this process: their code ranges, their `syscall`
/// instructions and their unwind rows, all sorted by address.
#[derive(Default)]
pub(crate) struct Wrappers {
    funcs: Box<[(usize, usize)]>,
    syscalls: Box<[usize]>,
    /// Unwind rows of the wrappers, one table per object they live in
    /// (usually just libc.so.6).
    unwind: Vec<UnwindTable>,
}

impl Wrappers {
    /// Find the wrappers and evaluate their unwind information. Never
    /// panics; on any failure the table is empty (rule 6 never applies).
    pub(crate) fn load() -> Wrappers {
        let mut found: Vec<(usize, usize, String, usize)> = Vec::new();
        for name in WRAPPERS {
            if let Some(f) = lookup(name)
                && !found.iter().any(|g| g.0 == f.0)
            {
                found.push(f);
            }
        }
        let mut funcs = Vec::new();
        let mut syscalls = Vec::new();
        let mut unwind = Vec::new();
        // Usually all in one object (libc.so.6): read its .eh_frame once.
        let mut objects: Vec<(String, usize)> = found.iter().map(|f| (f.2.clone(), f.3)).collect();
        objects.dedup();
        for (path, base) in objects {
            let Some(elf) = super::codemap::Elf::open(&path) else {
                continue;
            };
            let Some((data, addr)) = elf.section_with_addr(".eh_frame") else {
                continue;
            };
            let mine: Vec<(usize, usize)> = found
                .iter()
                .filter(|f| f.2 == path && f.3 == base)
                .map(|f| (f.0, f.1))
                .collect();
            let table = UnwindTable::build(&data, addr, base, |start| {
                mine.iter().any(|&(s, e)| s <= start && start < e)
            });
            for &(start, end) in &mine {
                if table.covers(start) {
                    funcs.push((start, end));
                    syscalls.extend(find_syscalls(start, end));
                }
            }
            unwind.push(table);
        }
        funcs.sort_unstable();
        syscalls.sort_unstable();
        Wrappers {
            funcs: funcs.into(),
            syscalls: syscalls.into(),
            unwind,
        }
    }

    /// Whether `pc` is inside one of the wrappers. Signal-safe.
    #[inline]
    pub(crate) fn contains(&self, pc: usize) -> bool {
        let i = self.funcs.partition_point(|f| f.0 <= pc);
        i > 0 && pc < self.funcs[i - 1].1
    }

    /// Whether `insn` is the address of a wrapper's `syscall` instruction.
    /// Signal-safe.
    #[inline]
    pub(crate) fn is_syscall(&self, insn: usize) -> bool {
        self.syscalls.binary_search(&insn).is_ok()
    }

    /// Step out of the wrapper frame whose registers are `at` (see
    /// [`UnwindTable::step`]). Signal-safe.
    ///
    /// # Safety
    /// `[at.sp, hi)` must be readable memory (the task's stack).
    #[inline]
    pub(crate) unsafe fn step(&self, at: Regs, hi: usize) -> Option<Step> {
        // SAFETY: our caller's promise, passed on.
        self.unwind.iter().find_map(|t| unsafe { t.step(at, hi) })
    }

    /// Whether the wrappers' unwind rows cover `pc` (tests).
    #[cfg(test)]
    pub(crate) fn covers(&self, pc: usize) -> bool {
        self.unwind.iter().any(|t| t.covers(pc))
    }

    /// Number of wrappers found (diagnostics, tests).
    pub(crate) fn len(&self) -> usize {
        self.funcs.len()
    }
}

/// `name`'s code range, object path and load base, from the dynamic linker.
fn lookup(name: &CStr) -> Option<(usize, usize, String, usize)> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads.
    let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    if f.is_null() {
        return None;
    }
    let mut info = MaybeUninit::<libc::Dl_info>::zeroed();
    let mut sym: *mut libc::c_void = std::ptr::null_mut();
    // SAFETY: `f` is a symbol address; dladdr1 fills `info` and points `sym`
    // at the object's own Elf64_Sym (which stays mapped while it is loaded).
    let ok = unsafe { libc::dladdr1(f, info.as_mut_ptr(), &mut sym, RTLD_DL_SYMENT) };
    if ok == 0 || sym.is_null() {
        return None;
    }
    // SAFETY: dladdr1 succeeded, so `info` is initialised and `sym` valid.
    let (info, sym) = unsafe { (info.assume_init(), &*(sym as *const libc::Elf64_Sym)) };
    if info.dli_fname.is_null() || sym.st_size == 0 {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated path owned by the loader.
    let path = unsafe { CStr::from_ptr(info.dli_fname) }.to_str().ok()?;
    let start = f as usize;
    Some((
        start,
        start + sym.st_size as usize,
        path.to_owned(),
        info.dli_fbase as usize,
    ))
}

/// Addresses of the `syscall` instructions (`0f 05`) in `[start, end)`.
fn find_syscalls(start: usize, end: usize) -> Vec<usize> {
    // SAFETY: `[start, end)` is a function of a loaded object, in mapped,
    // readable text (its size comes from the object's own symbol).
    let code = unsafe { std::slice::from_raw_parts(start as *const u8, end - start) };
    code.windows(2)
        .enumerate()
        .filter(|(_, b)| *b == [0x0f, 0x05])
        .map(|(i, _)| start + i)
        .collect()
}
