//! libc's thin system-call wrappers, and how to step out of them.
//!
//! A task blocked in `read`, `clock_nanosleep`, `accept`... holds its worker
//! thread in the kernel. If tasks preempted on that thread wait for it (they
//! can run on no other), the signal handler may switch the blocked task out
//! right there (`safepoint.rs`, rule 6). It needs to know, from inside the
//! handler, that the interrupted PC is at the `syscall` instruction of one
//! of these wrappers, and who called the wrapper. libc is built without
//! frame pointers, so the return address is found with libc's own call
//! frame information (`.eh_frame`, what its unwinder uses), evaluated here,
//! once, into a table of "at this PC the caller's return address is at
//! `rsp + n`" rows that the handler searches without allocating.
//!
//! The wrappers keep nothing across the call but registers and their own
//! stack slots (all in the signal frame and on the task's stack), and glibc's
//! cancellation type, which only `pthread_cancel` reads (kvant never cancels
//! its threads). Where a wrapper uses `rbp` itself, the CFI says where it
//! saved the caller's, which the frame-pointer walk above the wrapper starts
//! from; rows whose `rbp` rule is anything else are left out.

use std::ffi::CStr;
use std::mem::MaybeUninit;

use gimli::{
    BaseAddresses, CfaRule, EhFrame, LittleEndian, RegisterRule, UnwindContext, UnwindSection,
    X86_64,
};

/// Wrappers whose blocking calls a task may be switched out of. Not
/// `syscall()` (futex: rule 5 decides those, parkers excluded), not poll,
/// epoll or select (event loops keep their own state around them).
const WRAPPERS: &[&CStr] = &[
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

/// From `pc_lo` to `pc_hi` (exclusive), the return address of the function
/// containing the PC is at `rsp + ra_off`, and the caller's `rbp` is saved
/// at `rsp + rbp_off` (or still in `rbp` if `None`).
#[derive(Clone, Copy, Debug)]
struct Row {
    pc_lo: usize,
    pc_hi: usize,
    ra_off: usize,
    rbp_off: Option<usize>,
}

/// How to step out of one wrapper frame (see [`Wrappers::frame`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Frame {
    /// The return address is at `rsp + ra_off`.
    pub ra_off: usize,
    /// The caller's `rbp` is saved at `rsp + rbp_off`, if the wrapper saved it.
    pub rbp_off: Option<usize>,
}

/// The wrappers found in this process: their code ranges, their `syscall`
/// instructions and their unwind rows, all sorted by address.
#[derive(Default)]
pub(crate) struct Wrappers {
    funcs: Box<[(usize, usize)]>,
    syscalls: Box<[usize]>,
    rows: Box<[Row]>,
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
        let mut w = Wrappers::default();
        let mut funcs = Vec::new();
        let mut syscalls = Vec::new();
        let mut rows = Vec::new();
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
            let eh = EhFrame::new(&data, LittleEndian);
            let bases = BaseAddresses::default().set_eh_frame(addr);
            let mine: Vec<(usize, usize)> = found
                .iter()
                .filter(|f| f.2 == path && f.3 == base)
                .map(|f| (f.0, f.1))
                .collect();
            // One pass over the FDEs for all the wrappers (a lookup per
            // wrapper would scan the whole section each time).
            let fdes = fdes_for(&eh, &bases, base, &mine);
            for (&(start, end), fde) in mine.iter().zip(fdes) {
                let Some(fde) = fde else { continue };
                let before = rows.len();
                if !unwind_rows(&eh, &bases, &fde, base, start, end, &mut rows) {
                    rows.truncate(before);
                    continue;
                }
                funcs.push((start, end));
                syscalls.extend(find_syscalls(start, end));
            }
        }
        funcs.sort_unstable();
        syscalls.sort_unstable();
        rows.sort_unstable_by_key(|r| r.pc_lo);
        w.funcs = funcs.into();
        w.syscalls = syscalls.into();
        w.rows = rows.into();
        w
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

    /// Where the return address and the caller's `rbp` of the wrapper frame
    /// at `pc` are, as offsets from that frame's `rsp`. Signal-safe.
    #[inline]
    pub(crate) fn frame(&self, pc: usize) -> Option<Frame> {
        let i = self.rows.partition_point(|r| r.pc_lo <= pc);
        let r = self.rows.get(i.checked_sub(1)?)?;
        (pc < r.pc_hi).then_some(Frame {
            ra_off: r.ra_off,
            rbp_off: r.rbp_off,
        })
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

/// Append the unwind rows of the function at `[start, end)` (loaded at
/// `base`); false if its CFI is not the plain `CFA = rsp + n` kind.
type Section<'a> = EhFrame<gimli::EndianSlice<'a, LittleEndian>>;
type Fde<'a> = gimli::FrameDescriptionEntry<gimli::EndianSlice<'a, LittleEndian>>;

/// The FDE covering the start of each function in `funcs` (loaded at
/// `base`), from one walk over the section.
fn fdes_for<'a>(
    eh: &Section<'a>,
    bases: &BaseAddresses,
    base: usize,
    funcs: &[(usize, usize)],
) -> Vec<Option<Fde<'a>>> {
    let mut out: Vec<Option<Fde<'a>>> = vec![None; funcs.len()];
    let mut entries = eh.entries(bases);
    while let Ok(Some(entry)) = entries.next() {
        let gimli::CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let Ok(fde) = partial.parse(EhFrame::cie_from_offset) else {
            continue;
        };
        for (&(start, _), slot) in funcs.iter().zip(out.iter_mut()) {
            if slot.is_none() && fde.contains((start - base) as u64) {
                *slot = Some(fde.clone());
            }
        }
    }
    out
}

fn unwind_rows(
    eh: &Section<'_>,
    bases: &BaseAddresses,
    fde: &Fde<'_>,
    base: usize,
    start: usize,
    end: usize,
    out: &mut Vec<Row>,
) -> bool {
    let mut ctx = UnwindContext::new();
    let Ok(mut table) = fde.rows(eh, bases, &mut ctx) else {
        return false;
    };
    let mut any = false;
    while let Ok(Some(row)) = table.next_row() {
        let CfaRule::RegisterAndOffset { register, offset } = *row.cfa() else {
            return false;
        };
        if register != X86_64::RSP || offset < 8 {
            return false;
        }
        // `rbp` either untouched or saved at a known slot below the CFA
        // (glibc's cancellable paths keep their cancel state in `ebp`).
        let rbp_off = match row.register(X86_64::RBP) {
            None | Some(RegisterRule::Undefined | RegisterRule::SameValue) => Some(None),
            Some(RegisterRule::Offset(n)) if n < 0 && offset + n >= 0 => {
                Some(Some((offset + n) as usize))
            }
            Some(_) => None,
        };
        let lo = (row.start_address() as usize).wrapping_add(base).max(start);
        let hi = (row.end_address() as usize).wrapping_add(base).min(end);
        if let Some(rbp_off) = rbp_off
            && lo < hi
        {
            out.push(Row {
                pc_lo: lo,
                pc_hi: hi,
                // The return address sits just below the CFA.
                ra_off: offset as usize - 8,
                rbp_off,
            });
            any = true;
        }
    }
    any
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
