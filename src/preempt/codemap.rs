//! Code-address classification for the preemption signal handler.
//!
//! Tasks are preempted from a `SIGURG` handler that switches stacks. That is
//! only sound at a *safe point*: if the interrupted thread is inside the
//! allocator, holds a `std`/`parking_lot` lock, is formatting into a locked
//! `Stdout`, unwinding, or running kvant's own scheduler code, switching to
//! another task on the same OS thread can deadlock or corrupt state. The
//! handler therefore checks the interrupted PC *and* every return address
//! found by walking the frame-pointer chain up to the task's root frame: the
//! PC alone is not enough, because user code called back from e.g.
//! `core::fmt::write` while `Stdout`'s lock is held is itself "safe" code.
//!
//! Symbol names are only available at startup, so [`CodeMap::load`] reads the
//! symbol table of `/proc/self/exe` once (allocation allowed) and records two
//! immutable sorted tables of half-open address ranges: the main executable's
//! executable segments (anything outside them, e.g. libc or the vDSO, is
//! deferred) and the functions whose paths are on the deny list below. The
//! per-address queries ([`CodeMap::in_main_text`], [`CodeMap::is_denied`],
//! [`CodeMap::must_defer`]) run inside the signal handler, so they must be
//! async-signal-safe: they only binary-search immutable slices, with no
//! allocation, locks, syscalls or panicking indexing.
//!
//! Building must be cheap even in unoptimized test binaries, where
//! `rustc_demangle` costs ~10 µs per symbol. Deny decisions therefore come from
//! a small structural parser of legacy (`_ZN`) and v0 (`_R`) mangled names that
//! only extracts the leading path components (and the `Self`/trait paths of
//! `<T as Trait>` impls); unparseable names fall back to `rustc_demangle`.

use std::ffi::CStr;
use std::os::unix::fs::FileExt as _;
use std::sync::OnceLock;

use object::elf::{
    FileHeader64, SHN_UNDEF, SHT_DYNSYM, SHT_SYMTAB, STT_FUNC, STT_GNU_IFUNC, Sym64,
};
use object::read::elf::{FileHeader, SectionHeader, Sym};
use object::{Endianness, ReadCache, SectionIndex};

use super::symbols::symbol_denied;
#[cfg(test)]
use super::symbols::{DENY_EXACT, DENY_RAW_PREFIXES, path_denied};

/// Immutable map of the main executable's code, built once at startup.
pub(crate) struct CodeMap {
    /// Executable `PT_LOAD` segments of the main program, sorted, half-open.
    text: Box<[(usize, usize)]>,
    /// Denied function ranges: sorted, merged, disjoint, half-open.
    denied: Box<[(usize, usize)]>,
    /// Load bias of the main program (0 for non-PIE).
    bias: usize,
    has_symbols: bool,
}

static GLOBAL: OnceLock<CodeMap> = OnceLock::new();

/// True if sorted, disjoint, half-open `ranges` contain `addr`. Signal-safe.
#[inline]
fn ranges_contain(ranges: &[(usize, usize)], addr: usize) -> bool {
    let idx = ranges.partition_point(|&(start, _)| start <= addr);
    match idx.checked_sub(1).and_then(|i| ranges.get(i)) {
        Some(&(_, end)) => addr < end,
        None => false,
    }
}

/// Calls `f(link_address, size, raw_name)` for every defined function symbol
/// of the ELF file at `path` (`.symtab`, else `.dynsym`); false if none. Only
/// the headers and the symbol/string tables are read, never the debug info.
fn for_each_function(path: &str, mut f: impl FnMut(u64, u64, &str)) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    // `vec![0; n]` is a calloc; `ReadCache` would zero-fill byte by byte,
    // which dominates the build time of unoptimized binaries.
    let file_len = file.metadata().map_or(0, |m| m.len());
    let read = |(offset, len): (u64, u64)| {
        let mut buf = vec![0u8; usize::try_from(len).ok().filter(|_| len <= file_len)?];
        file.read_exact_at(&mut buf, offset).ok().map(|()| buf)
    };
    let cache = ReadCache::new(&file);
    let mut found = false;
    let _ = (|| -> Option<()> {
        let header = FileHeader64::<Endianness>::parse(&cache).ok()?;
        let endian = header.endian().ok()?;
        let sections = header.sections(endian, &cache).ok()?;
        for kind in [SHT_SYMTAB, SHT_DYNSYM] {
            let Some(table) = sections.iter().find(|s| s.sh_type(endian) == kind) else {
                continue;
            };
            let link = SectionIndex(table.sh_link(endian) as usize);
            let symbols = read(table.file_range(endian)?)?;
            let strings = read(sections.section(link).ok()?.file_range(endian)?)?;
            for sym in object::pod::slice_from_all_bytes::<Sym64<Endianness>>(&symbols).ok()? {
                let size = sym.st_size(endian);
                let func = matches!(sym.st_type(), STT_FUNC | STT_GNU_IFUNC);
                if !func || size == 0 || sym.st_shndx(endian) == SHN_UNDEF {
                    continue;
                }
                let name = strings.get(sym.st_name(endian) as usize..);
                let name = name.and_then(|n| CStr::from_bytes_until_nul(n).ok()?.to_str().ok());
                if let Some(name) = name {
                    found = true;
                    f(sym.st_value(endian), size, name);
                }
            }
            if found {
                break;
            }
        }
        Some(())
    })();
    found
}

/// Relocate a link-time symbol range by `bias`; `None` on overflow.
fn runtime_range(bias: usize, addr: u64, size: u64) -> Option<(usize, usize)> {
    let start = bias.checked_add(usize::try_from(addr).ok()?)?;
    Some((start, start.checked_add(usize::try_from(size).ok()?)?))
}

/// Load bias and executable `PT_LOAD` ranges of the main program.
fn main_program_text() -> (usize, Vec<(usize, usize)>) {
    unsafe extern "C" fn first_object(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the `&mut (usize, Vec<_>)` passed to `dl_iterate_phdr`
        // below, exclusively borrowed for that synchronous call; `info` is a
        // valid entry supplied by the loader for the duration of this callback.
        let ((bias, text), info) = unsafe { (&mut *data.cast::<(usize, Vec<_>)>(), &*info) };
        *bias = info.dlpi_addr as usize;
        let phdrs: &[libc::Elf64_Phdr] = match info.dlpi_phdr.is_null() {
            true => &[],
            // SAFETY: the loader guarantees `dlpi_phdr` points to `dlpi_phnum`
            // program headers that stay mapped while the object is loaded.
            false => unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) },
        };
        for ph in phdrs
            .iter()
            .filter(|ph| ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0)
        {
            text.extend(runtime_range(*bias, ph.p_vaddr, ph.p_memsz));
        }
        1 // glibc reports the main program first; stop after it.
    }
    let mut out: (usize, Vec<(usize, usize)>) = (0, Vec::new());
    // SAFETY: `first_object` has the required signature and only dereferences
    // `data` as the tuple we pass, which outlives the (synchronous) call.
    unsafe { libc::dl_iterate_phdr(Some(first_object), (&raw mut out).cast()) };
    out.1.sort_unstable();
    out
}

impl CodeMap {
    /// Build from the running executable. Never panics; on any failure returns
    /// a map with `has_symbols() == false` (text ranges are still valid).
    pub(crate) fn load() -> CodeMap {
        let (bias, text) = main_program_text();
        let (mut denied, mut buf) = (Vec::new(), String::new());
        let has_symbols = for_each_function("/proc/self/exe", |addr, size, name| {
            if symbol_denied(name, &mut buf) {
                denied.extend(runtime_range(bias, addr, size));
            }
        });
        denied.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(denied.len());
        for (start, end) in denied {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        CodeMap {
            text: text.into(),
            denied: merged.into(),
            bias,
            has_symbols,
        }
    }

    /// The process-wide instance, built on first call. Call it before the
    /// signal handler is installed; the handler itself should use [`CodeMap::get`].
    pub(crate) fn global() -> &'static CodeMap {
        GLOBAL.get_or_init(CodeMap::load)
    }

    /// The process-wide instance if already built. Async-signal-safe (one
    /// atomic load; never initializes).
    #[allow(dead_code)]
    #[inline]
    pub(crate) fn get() -> Option<&'static CodeMap> {
        GLOBAL.get()
    }

    /// True if `addr` is in an executable `PT_LOAD` segment of the main program.
    #[inline]
    pub(crate) fn in_main_text(&self, addr: usize) -> bool {
        ranges_contain(&self.text, addr)
    }

    /// True if `addr` is inside a denied (runtime/std/allocator) function.
    #[inline]
    pub(crate) fn is_denied(&self, addr: usize) -> bool {
        ranges_contain(&self.denied, addr)
    }

    /// `!in_main_text(addr) || is_denied(addr)`.
    #[inline]
    pub(crate) fn must_defer(&self, addr: usize) -> bool {
        !self.in_main_text(addr) || self.is_denied(addr)
    }

    /// Whether function symbols were found (if not, `is_denied` is always false).
    #[allow(dead_code)]
    #[inline]
    pub(crate) fn has_symbols(&self) -> bool {
        self.has_symbols
    }

    /// Number of merged denied ranges (diagnostics).
    #[allow(dead_code)]
    pub(crate) fn denied_ranges(&self) -> usize {
        self.denied.len()
    }

    /// Demangled name of the innermost function containing `addr`. NOT
    /// signal-safe: re-reads the symbol table on every call (names are not kept
    /// resident); for tests and diagnostics only.
    #[allow(dead_code)]
    pub(crate) fn symbol_name(&self, addr: usize) -> Option<String> {
        let mut best: Option<(u64, String)> = None;
        for_each_function("/proc/self/exe", |a, size, raw| {
            let hit = runtime_range(self.bias, a, size).is_some_and(|(s, e)| s <= addr && addr < e);
            if hit && best.as_ref().is_none_or(|b| size < b.0) {
                best = Some((size, format!("{:#}", rustc_demangle::demangle(raw))));
            }
        });
        best.map(|b| b.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn codemap_probe_fn(x: usize) -> usize {
        std::hint::black_box(x).wrapping_mul(31)
    }

    fn slow_denied(raw: &str) -> bool {
        let name = format!("{:#}", rustc_demangle::demangle(raw));
        DENY_EXACT.contains(&raw)
            || DENY_RAW_PREFIXES.iter().any(|p| raw.starts_with(p))
            || path_denied(&name, 0)
    }

    #[test]
    fn bias_and_text() {
        let map = CodeMap::global();
        assert!(map.has_symbols(), "test binaries are not stripped");
        let probe = codemap_probe_fn as fn(usize) -> usize as usize;
        let name = map.symbol_name(probe).expect("probe symbol");
        assert!(name.contains("codemap_probe_fn"), "{name}");
        let load = CodeMap::load as fn() -> CodeMap as usize;
        let name = map.symbol_name(load).expect("load symbol");
        assert!(name.contains("CodeMap") && name.contains("load"), "{name}");
        assert!(map.in_main_text(probe) && map.in_main_text(load));
        let malloc = libc::malloc as unsafe extern "C" fn(usize) -> *mut libc::c_void as usize;
        // Statically linked libc lives in main text, but is denied by name.
        let static_libc = cfg!(target_feature = "crt-static");
        assert_eq!(map.in_main_text(malloc), static_libc);
        assert!(map.must_defer(malloc));
    }

    #[test]
    fn denied_functions() {
        let map = CodeMap::global();
        assert!(map.denied_ranges() > 0);
        // A function pointer forces an out-of-line instance of the std fn.
        let stdout = std::io::stdout as fn() -> std::io::Stdout as usize;
        assert!(map.is_denied(stdout) && map.must_defer(stdout));
        // Negative case: some `core::` (non-fmt/alloc) function in main text.
        let mut allowed = None;
        for_each_function("/proc/self/exe", |a, size, raw| {
            let name = format!("{:#}", rustc_demangle::demangle(raw));
            if allowed.is_none() && name.starts_with("core::") && !slow_denied(raw) {
                allowed = runtime_range(map.bias, a, size);
            }
        });
        if let Some((start, end)) = allowed {
            // Identical-code-folded aliases of denied symbols may overlap it.
            assert!(map.in_main_text(start) && (start..end).any(|a| !map.is_denied(a)));
        }
    }

    #[test]
    fn fast_classifier_matches_rustc_demangle() {
        let (mut buf, mut mismatches, mut n) = (String::new(), Vec::new(), 0);
        for_each_function("/proc/self/exe", |_, _, raw| {
            n += 1;
            if symbol_denied(raw, &mut buf) != slow_denied(raw) && mismatches.len() < 5 {
                mismatches.push(raw.to_owned());
            }
        });
        assert!(n > 0 && mismatches.is_empty(), "{mismatches:?}");
    }

    #[test]
    fn deny_rules() {
        let yes = [
            "std::io::stdio::_print",
            "<std::io::stdio::Stdout as std::io::Write>::write_fmt",
            "<alloc::raw_vec::RawVec<T,A>>::grow_one",
            "<&mut std::io::stdio::StdoutLock as core::ops::Drop>::drop",
            "<&'a [std::fs::File] as user::T>::f",
            "<user::A as core::alloc::global::GlobalAlloc>::alloc",
            "<<std::io::Foo as user::T>::X as user::U>::f",
            "kvant::sched::run",
            "std::sys_common::x",
        ];
        let no = [
            "std::iox::f",
            "<alloc::vec::Vec<T> as core::ops::drop::Drop>::drop",
            "<user::Foo<std::io::Error> as user::Bar>::f",
            "core::slice::sort::stable::drift::sort",
            "kvantx::f",
            "user::main::{{closure}}",
        ];
        assert!(yes.iter().all(|n| path_denied(n, 0)) && !no.iter().any(|n| path_denied(n, 0)));
        let mut buf = String::new();
        for raw in [
            "malloc",
            "__rust_alloc",
            "__rdl_alloc",
            "_Unwind_Resume",
            "pthread_mutex_lock",
        ] {
            assert!(symbol_denied(raw, &mut buf), "{raw}");
        }
        assert!(!symbol_denied("mallocx", &mut buf) && !symbol_denied("memcpy", &mut buf));
    }

    #[test]
    fn range_lookup_edges() {
        let r = [(10, 20), (30, 40)];
        let hits: Vec<usize> = (0..50).filter(|&a| ranges_contain(&r, a)).collect();
        assert_eq!(hits, (10..20).chain(30..40).collect::<Vec<_>>());
        assert!(!ranges_contain(&[], 5) && !ranges_contain(&r, usize::MAX));
    }
}
