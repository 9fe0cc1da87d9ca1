//! Stacks of tasks that are not running on the calling thread, for the
//! task dump: walked with the executable's unwind tables from where each
//! task switched out, and named with its debug info.
//!
//! The task's stack is copied first with `process_vm_readv`, which fails
//! cleanly (instead of faulting) if the task has meanwhile finished and its
//! stack was unmapped; a task that runs while it is copied yields a torn
//! copy, which the walk's bounds checks turn into a short stack, never a
//! fault. That is why this is for diagnostics only.

use std::fmt;

/// One frame of a dumped stack, innermost first. A function inlined into
/// another is a frame of its own (`inlined`), as in a debugger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The address: the task's `pc` for the innermost frame, a call site
    /// (return address minus one) for the others.
    pub addr: usize,
    /// The function's demangled name, if the executable names it.
    pub function: Option<String>,
    /// Source file and line, if the executable has line tables.
    pub file: Option<String>,
    /// Line in `file`.
    pub line: Option<u32>,
    /// Inlined into the frame below it in the list (same machine frame).
    pub inlined: bool,
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.function {
            Some(name) => write!(f, "{name}")?,
            None => write!(f, "{:#x}", self.addr)?,
        }
        if self.inlined {
            write!(f, " (inlined)")?;
        }
        if let Some(file) = &self.file {
            write!(f, "\n        {file}")?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
            }
        }
        Ok(())
    }
}

/// Most frames walked.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
const MAX_FRAMES: usize = 64;
/// Most bytes of a stack copied.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
const WINDOW: usize = 1 << 20;

/// The code addresses on the stack of a task that switched out at `pc`
/// with stack pointer `sp` and frame pointer `fp`, its stack ending at
/// `hi`: `pc` itself, then each caller's call site, up to the task's root.
pub(crate) fn walk(pc: usize, sp: usize, fp: usize, hi: usize) -> Vec<usize> {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        use super::codemap::CodeMap;
        use super::unwind::Regs;
        if sp == 0 || sp >= hi {
            return Vec::new();
        }
        let map = CodeMap::global();
        let Some(copy) = super::probe::StackCopy::take(sp, hi, WINDOW) else {
            return Vec::new();
        };
        let end = copy.base + copy.len();
        let word = |addr: usize| copy.word(addr);
        let unwind = map.full_unwind();
        let mut out = vec![pc];
        let mut regs = Regs { pc, sp, fp };
        while out.len() < MAX_FRAMES {
            let Some(step) = unwind.step_with(regs, end, word) else {
                break;
            };
            let ra = step.caller.pc;
            // The task's root (`run_user`): kvant's task entry above it.
            if map.known(ra.wrapping_sub(1)).is_none() || map.is_root(ra) {
                break;
            }
            out.push(ra - 1);
            regs = Regs {
                pc: ra - 1,
                ..step.caller
            };
        }
        out
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        let _ = (pc, sp, fp, hi);
        Vec::new()
    }
}

/// `N` words of this process's memory at `addr`, if it is mapped: a copy
/// taken by the kernel, which fails instead of faulting.
pub(crate) fn copy_words<const N: usize>(addr: usize) -> Option<[usize; N]> {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        if addr == 0 || !addr.is_multiple_of(8) {
            return None;
        }
        let copy = super::probe::StackCopy::take(addr, addr.checked_add(N * 8)?, N * 8)?;
        let mut out = [0usize; N];
        for (i, w) in out.iter_mut().enumerate() {
            *w = copy.word(addr + 8 * i)?;
        }
        Some(out)
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        let _ = addr;
        None
    }
}

/// Name each of `stacks`' addresses: the functions (inlined ones
/// included), files and lines the executable's DWARF gives, or the symbol
/// table's name where it has none. Reads the executable's debug info once
/// per call: slow, for a dump.
pub(crate) fn symbolize(stacks: &[Vec<usize>]) -> Vec<Vec<Frame>> {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        let map = super::codemap::CodeMap::global();
        let bias = map.bias();
        // Loaded once per process: parsing the debug info is most of a dump's
        // cost (units are parsed as addresses in them are first asked for).
        static LOADER: std::sync::Mutex<Option<Option<addr2line::Loader>>> =
            std::sync::Mutex::new(None);
        let mut cached = LOADER.lock().unwrap_or_else(|e| e.into_inner());
        let loader = cached.get_or_insert_with(|| addr2line::Loader::new("/proc/self/exe").ok());
        let all: Vec<usize> = stacks.iter().flatten().copied().collect();
        let symbols = map.symbol_names(&all);
        let mut symbols = symbols.into_iter();
        stacks
            .iter()
            .map(|stack| {
                let mut frames = Vec::new();
                for &addr in stack {
                    let symbol = symbols.next().flatten();
                    let before = frames.len();
                    if let Some(loader) = &loader {
                        dwarf_frames(loader, addr, bias, &mut frames);
                    }
                    if frames.len() == before {
                        frames.push(Frame {
                            addr,
                            function: symbol,
                            file: None,
                            line: None,
                            inlined: false,
                        });
                    }
                }
                frames
            })
            .collect()
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        stacks.iter().map(|_| Vec::new()).collect()
    }
}

/// The frames DWARF gives for `addr` (innermost, inlined, first).
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn dwarf_frames(loader: &addr2line::Loader, addr: usize, bias: usize, out: &mut Vec<Frame>) {
    let Some(probe) = addr.checked_sub(bias) else {
        return;
    };
    let Ok(mut iter) = loader.find_frames(probe as u64) else {
        return;
    };
    let start = out.len();
    while let Ok(Some(frame)) = iter.next() {
        let function = frame
            .function
            .as_ref()
            .and_then(|f| f.raw_name().ok())
            .map(|raw| format!("{:#}", rustc_demangle::demangle(&raw)));
        let (file, line) = match &frame.location {
            Some(l) => (l.file.map(String::from), l.line),
            None => (None, None),
        };
        out.push(Frame {
            addr,
            function,
            file,
            line,
            inlined: true,
        });
    }
    // The outermost of one address's frames is the machine frame.
    if out.len() > start
        && let Some(last) = out.last_mut()
    {
        last.inlined = false;
    }
    if out[start..].iter().all(|f| f.function.is_none()) {
        out.truncate(start);
    }
}
