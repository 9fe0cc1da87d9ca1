//! Code-address classification for the preemption signal handler.
//!
//! The handler may switch a task out only at a *safe point* (see
//! `safepoint.rs`): it looks at the interrupted PC and every return address
//! on the task's stack and asks this map what code each one is in. The answer
//! is a [`Class`]: the user's Rust code, std::sync's blocking front ends,
//! std::sys::sync's futex waits, or denied.
//!
//! The map is an *allow list*. [`CodeMap::load`] reads the main executable's
//! symbol table once at start-up (allocation allowed) and classifies every
//! function symbol by its mangled name (`symbols.rs`): Rust functions outside
//! the deny list are user code; denied paths (std io/thread/alloc/..., kvant,
//! lock_api...) and everything that is not Rust (statically linked C and C++
//! such as mimalloc, jemalloc or sqlite, `#[no_mangle]` shims) are denied.
//! Any address no symbol covers (libc and other shared objects, the vDSO,
//! code without a symbol) is denied too. When the executable has DWARF,
//! inlined calls to non-user code (`inlined.rs`) are laid over their callers,
//! so std code inlined into a user function is still std.
//!
//! Queries ([`CodeMap::class`]) run inside the signal handler, so they only
//! binary-search one immutable slice: no allocation, locks, syscalls or
//! panicking indexing.
//!
//! Building must be cheap even in unoptimized test binaries, where
//! `rustc_demangle` is slow for the number of symbols a binary has:
//! `symbols.rs` decides most names with a small parser of the mangled form.

use std::collections::HashMap;
use std::ffi::CStr;
use std::os::unix::fs::FileExt as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use object::elf::{FileHeader64, SHN_UNDEF, SHT_SYMTAB, STT_FUNC, STT_GNU_IFUNC, Sym64};
use object::read::elf::{FileHeader, SectionHeader, Sym};
use object::{Endianness, ReadCache, SectionIndex};

use super::inlined::{self, InlineStats};
use super::symbols::{Class, Owner, classify_owned, crate_denied};
use super::unwind::UnwindTable;

/// Crate id of code with no crate to allow: std's family (the class
/// decides) or no Rust code at all.
const NO_CRATE: u16 = 0;
/// Crate id of code whose crate is unknown, or that mixes more crates than
/// a segment records: never preempted.
const NEVER: u16 = u16::MAX;
/// Crates a segment records: a function's own and up to three whose code
/// is inlined into it, nested (serde_json's serializer inlining serde's
/// and itoa's code into a caller's loop).
const CRATES: usize = 4;

/// What the executable lets the safe-point check see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Coverage {
    /// No symbol table (`strip`): no sound decision is possible.
    NoSymbols,
    /// Symbols only, and std's code was inlined across crates (LTO): the
    /// symbols no longer show where std's code runs.
    StdInlinedUnseen,
    /// Symbols only, std linked as its own functions (no LTO): the symbol
    /// rules see every non-generic std frame.
    Symbols,
    /// Symbols and DWARF inline records: inlined std code is seen too.
    LineTables,
}

/// One classified address range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seg {
    start: usize,
    end: usize,
    class: Class,
    /// The crates whose code this is: the function's own and those of other
    /// crates' code inlined into it ([`NO_CRATE`] for none; [`NEVER`] in
    /// every slot for more than [`CRATES`]). Preemptible only if all are
    /// allowed.
    krate: [u16; CRATES],
}

/// Immutable map of the main executable's code, built once at startup.
pub(crate) struct CodeMap {
    /// Sorted, disjoint, half-open; an address in none of them is
    /// [`Class::Denied`] (another object, code without a symbol).
    segs: Box<[Seg]>,
    /// Load bias of the main program (0 for non-PIE).
    bias: usize,
    /// Address of the `syscall` instruction inside libc's `syscall()`, the one
    /// std's futex waits go through (0 if not found).
    syscall_insn: usize,
    /// libc's thin syscall wrappers and how to unwind them (rule 6).
    wrappers: super::wrappers::Wrappers,
    coverage: Coverage,
    /// What reading the DWARF found (`None`: no `.debug_info`).
    inline_stats: Option<InlineStats>,
    build_time: Duration,
    /// Crate names by id (index 0 is [`NO_CRATE`]) and ids by name.
    crate_names: Box<[String]>,
    crate_ids: HashMap<String, u16>,
    /// One bit per crate id: allowed to be preempted (set at spawn and by
    /// the builder, read by the handler).
    allowed: Box<[AtomicU64]>,
    /// Code ranges of `run_user`, whose call of the user's closure is the
    /// root every safe-point walk must reach.
    roots: Box<[(usize, usize)]>,
    /// Unwind rows of the code that is not denied.
    unwind: UnwindTable,
    /// Bytes of static TLS below the thread pointer (`loaded_objects`).
    static_tls: usize,
}

static GLOBAL: OnceLock<CodeMap> = OnceLock::new();

/// What the thread control block above the thread pointer takes, at most
/// (glibc's `struct pthread` is about 2.3 KiB).
pub(crate) const TCB_SIZE: usize = 4096;

/// The demangled path of the task's root function.
const ROOT_PATH: &str = "kvant::task::current::run_user";

/// Reads parts of the ELF file at `path`: function symbols and sections.
pub(super) struct Elf {
    file: std::fs::File,
    len: u64,
}

impl Elf {
    pub(super) fn open(path: &str) -> Option<Elf> {
        let file = std::fs::File::open(path).ok()?;
        let len = file.metadata().ok()?.len();
        Some(Elf { file, len })
    }

    /// `len` bytes at `offset`. `vec![0; n]` is a calloc; `ReadCache` would
    /// zero-fill byte by byte, which dominates unoptimized builds.
    fn read(&self, (offset, len): (u64, u64)) -> Option<Vec<u8>> {
        let fits = offset.checked_add(len).is_some_and(|end| end <= self.len);
        let n = usize::try_from(len).ok().filter(|_| fits)?;
        let mut buf = vec![0u8; n];
        self.file.read_exact_at(&mut buf, offset).ok().map(|()| buf)
    }

    /// The contents of the section called `name`.
    fn section(&self, name: &str) -> Option<Vec<u8>> {
        self.section_with_addr(name).map(|(data, _)| data)
    }

    /// The contents of the section called `name` and its link-time address.
    pub(super) fn section_with_addr(&self, name: &str) -> Option<(Vec<u8>, u64)> {
        let cache = ReadCache::new(&self.file);
        let header = FileHeader64::<Endianness>::parse(&cache).ok()?;
        let endian = header.endian().ok()?;
        let sections = header.sections(endian, &cache).ok()?;
        let (_, s) = sections.section_by_name(endian, name.as_bytes())?;
        Some((self.read(s.file_range(endian)?)?, s.sh_addr(endian)))
    }

    /// Calls `f(link_address, size, raw_name)` for every defined function
    /// symbol of `.symtab`; false if there is none (stripped).
    fn for_each_function(&self, mut f: impl FnMut(u64, u64, &str)) -> bool {
        let cache = ReadCache::new(&self.file);
        let mut found = false;
        let _ = (|| -> Option<()> {
            let header = FileHeader64::<Endianness>::parse(&cache).ok()?;
            let endian = header.endian().ok()?;
            let sections = header.sections(endian, &cache).ok()?;
            let table = sections.iter().find(|s| s.sh_type(endian) == SHT_SYMTAB)?;
            let link = SectionIndex(table.sh_link(endian) as usize);
            let symbols = self.read(table.file_range(endian)?)?;
            let strings = self.read(sections.section(link).ok()?.file_range(endian)?)?;
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
            Some(())
        })();
        found
    }
}

/// Relocate a link-time symbol range by `bias`; `None` on overflow.
fn runtime_range(bias: usize, addr: u64, size: u64) -> Option<(usize, usize)> {
    let start = bias.checked_add(usize::try_from(addr).ok()?)?;
    Some((start, start.checked_add(usize::try_from(size).ok()?)?))
}

/// What the loader has mapped now.
#[derive(Default)]
struct Loaded {
    /// Load bias of the main program (`None` until the loader reports it).
    bias: Option<usize>,
    /// The executable segments of every other object (libc, the vDSO...).
    others: Vec<(usize, usize)>,
    /// Bytes of static TLS below the thread pointer: the `PT_TLS` segments
    /// of every object loaded now, each padded to its alignment.
    tls: usize,
}

/// The main program's load bias, the other objects' code, and the static
/// TLS size (plus the surplus glibc reserves for libraries loaded later:
/// 1664 bytes by default; 4 KiB here), in one pass over the loader's list.
fn loaded_objects() -> (usize, Vec<(usize, usize)>, usize) {
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the `&mut Loaded` passed to `dl_iterate_phdr`
        // below, exclusively borrowed for that synchronous call; `info` is a
        // valid entry supplied by the loader for the duration of this
        // callback.
        let (out, info) = unsafe { (&mut *data.cast::<Loaded>(), &*info) };
        let phdrs: &[libc::Elf64_Phdr] = match info.dlpi_phdr.is_null() {
            true => &[],
            // SAFETY: the loader guarantees `dlpi_phdr` points to `dlpi_phnum`
            // program headers that stay mapped while the object is loaded.
            false => unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) },
        };
        for ph in phdrs.iter().filter(|ph| ph.p_type == libc::PT_TLS) {
            let align = (ph.p_align as usize).max(1);
            out.tls += (ph.p_memsz as usize).next_multiple_of(align) + align;
        }
        let Some(_) = out.bias else {
            // glibc reports the main program first.
            out.bias = Some(info.dlpi_addr as usize);
            return 0;
        };
        for ph in phdrs
            .iter()
            .filter(|ph| ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0)
        {
            out.others.extend(runtime_range(
                info.dlpi_addr as usize,
                ph.p_vaddr,
                ph.p_memsz,
            ));
        }
        0
    }
    let mut out = Loaded::default();
    // SAFETY: `each` has the required signature and only dereferences `data`
    // as the `Loaded` we pass, which outlives the (synchronous) call.
    unsafe { libc::dl_iterate_phdr(Some(each), (&raw mut out).cast()) };
    (out.bias.unwrap_or(0), out.others, out.tls + 4096)
}

/// Where libc's `syscall()` executes its `syscall` instruction. std's futex
/// waits call `syscall(SYS_futex, ..)`; a wait interrupted by a signal shows
/// this address as its PC (the kernel rewinds a restartable call onto it).
fn find_syscall_insn() -> usize {
    let f = libc::syscall as unsafe extern "C" fn(libc::c_long, ...) -> libc::c_long as usize;
    // glibc's x86_64 `syscall()` shuffles six argument registers first (25
    // bytes; 29 with `endbr64`): the instruction is near the start.
    for off in 0..64 {
        // SAFETY: `f` is the entry of libc's `syscall()` in mapped, readable
        // text. The scan stops at its first `ret` (byte 33 in glibc 2.36) and
        // never passes 65 bytes, all inside libc's text mapping, which holds
        // far more code after this function.
        let b = unsafe { std::ptr::read_volatile((f + off) as *const [u8; 2]) };
        if b == [0x0f, 0x05] {
            return f + off;
        }
        if b[0] == 0xc3 {
            break; // `ret` before any `syscall`: not the shape we know
        }
    }
    0
}

/// A std function that LTO inlines into its caller while a normal build
/// calls it out of line: if these std symbols are missing from the symbol
/// table, std's code was inlined across crates. Never called; it only has to
/// exist and reference them.
#[inline(never)]
fn lto_canary() {
    let _ = std::hint::black_box(std::process::id());
    std::thread::yield_now();
}

/// Raw-name fragments of the canary's callees and their demangled paths.
const CANARIES: [(&str, &str); 2] = [
    ("7process2id", "std::process::id"),
    ("9yield_now", "std::thread::functions::yield_now"),
];

/// Where a range came from: a function symbol (or another object's text),
/// or a DWARF record of code inlined into such a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Symbol,
    Inlined,
}

/// One classified range before the sweep: `(start, end, class, source, crate)`.
type Range = (usize, usize, Class, Source, u16);

/// Sweep possibly overlapping ranges into disjoint segments. Each point gets
/// the greatest class of the symbols covering it; where that is user code,
/// inlined non-user code covering it raises it. Inline records never change
/// the class of a function that is not user code: std's own futex wait has
/// std's errno inlined into it and stays a sync wait. Each point's crates are
/// those of every user-class range covering it (its function's, and any
/// other crate's code inlined there): all of them must be allowed.
fn sweep(ranges: Vec<Range>) -> Vec<Seg> {
    let mut events: Vec<(usize, bool, Class, Source, u16)> = Vec::with_capacity(ranges.len() * 2);
    for (s, e, c, src, k) in ranges {
        if s < e {
            events.push((s, true, c, src, k));
            events.push((e, false, c, src, k));
        }
    }
    events.sort_unstable_by_key(|&(at, ..)| at);
    let mut open: Vec<(Class, Source, u16)> = Vec::new();
    let mut out: Vec<Seg> = Vec::new();
    let mut i = 0;
    while i < events.len() {
        let at = events[i].0;
        while i < events.len() && events[i].0 == at {
            let (_, start, c, src, k) = events[i];
            if start {
                open.push((c, src, k));
            } else if let Some(j) = open.iter().rposition(|&o| o == (c, src, k)) {
                open.swap_remove(j);
            }
            i += 1;
        }
        let Some(next) = events.get(i).map(|e| e.0) else {
            break;
        };
        let top = |want: Source| open.iter().filter(|o| o.1 == want).map(|o| o.0).max();
        let class = match top(Source::Symbol) {
            None => continue,
            Some(Class::User) => top(Source::Inlined).unwrap_or(Class::User),
            Some(c) => c,
        };
        let mut krate = [NO_CRATE; CRATES];
        for &(c, _, k) in &open {
            if c != Class::User || k == NO_CRATE || krate.contains(&k) {
                continue;
            }
            match krate.iter_mut().find(|x| **x == NO_CRATE) {
                Some(x) => *x = k,
                None => krate = [NEVER; CRATES],
            }
        }
        match out.last_mut() {
            Some(last) if last.end == at && last.class == class && last.krate == krate => {
                last.end = next
            }
            _ => out.push(Seg {
                start: at,
                end: next,
                class,
                krate,
            }),
        }
    }
    out
}

/// Interns crate names into ids (0 and `u16::MAX` are reserved).
struct Crates {
    names: Vec<String>,
    ids: HashMap<String, u16>,
}

impl Crates {
    fn new() -> Crates {
        Crates {
            names: vec![String::new()],
            ids: HashMap::new(),
        }
    }

    fn id(&mut self, owner: &Owner) -> u16 {
        match owner {
            Owner::Std => NO_CRATE,
            Owner::Unknown => NEVER,
            Owner::Crate(name) => {
                if let Some(&id) = self.ids.get(name) {
                    return id;
                }
                let Ok(id) = u16::try_from(self.names.len()) else {
                    return NEVER;
                };
                if id == NEVER {
                    return NEVER;
                }
                self.names.push(name.clone());
                self.ids.insert(name.clone(), id);
                id
            }
        }
    }
}

impl CodeMap {
    /// Build from the running executable. Never panics; on any failure the
    /// map denies everything and says why through [`CodeMap::coverage`].
    pub(crate) fn load() -> CodeMap {
        Self::load_from("/proc/self/exe")
    }

    fn load_from(path: &str) -> CodeMap {
        let t0 = Instant::now();
        if std::hint::black_box(false) {
            lto_canary();
        }
        let (bias, others, static_tls) = loaded_objects();
        let mut ranges: Vec<Range> = others
            .into_iter()
            .map(|(s, e)| (s, e, Class::Denied, Source::Symbol, NO_CRATE))
            .collect();
        let mut canaries = [false; CANARIES.len()];
        let mut buf = String::new();
        let mut crates = Crates::new();
        let mut roots = Vec::new();
        let elf = Elf::open(path);
        let has_symbols = elf.as_ref().is_some_and(|elf| {
            elf.for_each_function(|addr, size, name| {
                if let Some((start, end)) = runtime_range(bias, addr, size) {
                    let (class, owner) = classify_owned(name, &mut buf);
                    ranges.push((start, end, class, Source::Symbol, crates.id(&owner)));
                    if name.contains("8run_user") && name.contains("5kvant") {
                        buf.clear();
                        use std::fmt::Write as _;
                        let _ = write!(buf, "{:#}", rustc_demangle::demangle(name));
                        if buf.starts_with(ROOT_PATH) {
                            roots.push((start, end));
                        }
                    }
                }
                for (seen, (frag, path)) in canaries.iter_mut().zip(CANARIES) {
                    if !*seen && name.contains(frag) {
                        buf.clear();
                        use std::fmt::Write as _;
                        let _ = write!(buf, "{:#}", rustc_demangle::demangle(name));
                        *seen = buf == path;
                    }
                }
            })
        });
        let inline_stats = elf.as_ref().filter(|_| has_symbols).and_then(|elf| {
            inlined::read(&|name| elf.section(name), |s, e, class, owner| {
                if let Some((start, end)) = runtime_range(bias, s, e.saturating_sub(s)) {
                    ranges.push((start, end, class, Source::Inlined, crates.id(owner)));
                }
            })
        });
        let coverage = match (has_symbols, inline_stats) {
            (false, _) => Coverage::NoSymbols,
            (true, Some(_)) => Coverage::LineTables,
            (true, None) if canaries.iter().all(|&c| c) => Coverage::Symbols,
            (true, None) => Coverage::StdInlinedUnseen,
        };
        let segs: Box<[Seg]> = sweep(ranges).into();
        roots.sort_unstable();
        let mut map = CodeMap {
            segs,
            bias,
            syscall_insn: find_syscall_insn(),
            wrappers: super::wrappers::Wrappers::load(),
            coverage,
            inline_stats,
            build_time: Duration::ZERO,
            allowed: (0..crates.names.len().div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            crate_names: crates.names.into(),
            crate_ids: crates.ids,
            roots: roots.into(),
            unwind: UnwindTable::default(),
            static_tls,
        };
        if let Some((data, addr)) = elf.as_ref().and_then(|e| e.section_with_addr(".eh_frame")) {
            map.unwind =
                UnwindTable::build(&data, addr, bias, |start| map.class(start) != Class::Denied);
        }
        map.build_time = t0.elapsed();
        map
    }

    /// The process-wide instance, if it was built.
    pub(crate) fn get() -> Option<&'static CodeMap> {
        GLOBAL.get()
    }

    /// The process-wide instance, built on first call. Call it before the
    /// signal handler is installed (it allocates).
    pub(crate) fn global() -> &'static CodeMap {
        GLOBAL.get_or_init(CodeMap::load)
    }

    /// Class of the code at `addr`; anything unknown is denied.
    #[inline]
    pub(crate) fn class(&self, addr: usize) -> Class {
        self.seg(addr).map_or(Class::Denied, |s| s.class)
    }

    /// Class of `addr` as the handler must treat it now: user code of a
    /// crate that is not allowed (yet) is denied. Signal-safe.
    #[inline]
    pub(crate) fn class_now(&self, addr: usize) -> Class {
        match self.seg(addr) {
            None => Class::Denied,
            Some(s) if s.class == Class::User && !self.crates_allowed(s.krate) => Class::Denied,
            Some(s) => s.class,
        }
    }

    /// Class of `addr` if it is in code the map knows: a function of the
    /// executable or the text of another object loaded at start-up.
    #[inline]
    pub(crate) fn known(&self, addr: usize) -> Option<Class> {
        self.seg(addr).map(|s| s.class)
    }

    /// The segment containing `addr`. Signal-safe: a binary search of an
    /// immutable slice, no allocation, no locks, no panicking index.
    #[inline]
    fn seg(&self, addr: usize) -> Option<&Seg> {
        let idx = self.segs.partition_point(|s| s.start <= addr);
        idx.checked_sub(1)
            .and_then(|i| self.segs.get(i))
            .filter(|s| addr < s.end)
    }

    /// Whether every crate of a segment is allowed. Signal-safe.
    #[inline]
    fn crates_allowed(&self, krate: [u16; CRATES]) -> bool {
        krate.iter().all(|&k| self.allowed_one(k))
    }

    /// Whether crate id `k` is allowed. Signal-safe.
    #[inline]
    fn allowed_one(&self, k: u16) -> bool {
        match k {
            NO_CRATE => true,
            NEVER => false,
            k => self
                .allowed
                .get(usize::from(k) / 64)
                .is_some_and(|w| w.load(Ordering::Relaxed) & (1 << (k % 64)) != 0),
        }
    }

    /// Let the code of crate `name` be preempted. False if the executable
    /// has no code of that crate, or if it is one kvant never preempts
    /// (itself, the locks and queues it is built on).
    pub(crate) fn allow_crate(&self, name: &str) -> bool {
        if crate_denied(name.as_bytes()) {
            return false;
        }
        let Some(&k) = self.crate_ids.get(name) else {
            return false;
        };
        if let Some(w) = self.allowed.get(usize::from(k) / 64) {
            w.fetch_or(1 << (k % 64), Ordering::Relaxed);
        }
        true
    }

    /// Whether crate `name`'s code may be preempted now.
    pub(crate) fn crate_allowed(&self, name: &str) -> bool {
        self.crate_ids
            .get(name)
            .is_some_and(|&k| self.allowed_one(k))
    }

    /// The crates of the code at `addr` that are not allowed (diagnostics).
    pub(crate) fn crates_denied_at(&self, addr: usize) -> Vec<&str> {
        let Some(s) = self.seg(addr) else {
            return Vec::new();
        };
        s.krate
            .iter()
            .filter(|&&k| k != NO_CRATE && !self.allowed_one(k))
            .map(|&k| match self.crate_names.get(usize::from(k)) {
                Some(n) => n.as_str(),
                None => "(unknown crate)",
            })
            .fold(Vec::new(), |mut v, n| {
                if !v.contains(&n) {
                    v.push(n);
                }
                v
            })
    }

    /// Whether `ret` is a return address into `run_user`, the task's root
    /// frame. Signal-safe.
    #[inline]
    pub(crate) fn is_root(&self, ret: usize) -> bool {
        let i = self.roots.partition_point(|r| r.0 <= ret);
        i > 0 && ret <= self.roots[i - 1].1
    }

    /// Bytes of static thread-local storage below each thread's pointer.
    #[inline]
    pub(crate) fn static_tls_size(&self) -> usize {
        self.static_tls
    }

    /// The unwind rows of the code that is not denied.
    #[inline]
    pub(crate) fn unwind(&self) -> &UnwindTable {
        &self.unwind
    }

    /// Unwind rows of every function of the executable, denied code
    /// included: for diagnostics outside the handler (where a blocked task
    /// waits), built on first use. NOT signal-safe.
    pub(crate) fn full_unwind(&self) -> &UnwindTable {
        static FULL: OnceLock<UnwindTable> = OnceLock::new();
        FULL.get_or_init(|| {
            Elf::open("/proc/self/exe")
                .and_then(|e| e.section_with_addr(".eh_frame"))
                .map(|(data, addr)| UnwindTable::build(&data, addr, self.bias, |_| true))
                .unwrap_or_default()
        })
    }

    /// Where libc's `syscall()` traps into the kernel (0: unknown).
    #[inline]
    pub(crate) fn syscall_insn(&self) -> usize {
        self.syscall_insn
    }

    /// Some address of class `class` (tests build synthetic stacks with it).
    #[cfg(test)]
    pub(crate) fn address_of(&self, class: Class) -> Option<usize> {
        self.segs.iter().find(|s| s.class == class).map(|s| s.start)
    }

    /// The start of some `run_user` (tests build synthetic stacks with it).
    #[cfg(test)]
    pub(crate) fn root_address(&self) -> Option<usize> {
        self.roots.first().map(|r| r.0)
    }

    /// libc's syscall wrappers (rule 6).
    #[inline]
    pub(crate) fn wrappers(&self) -> &super::wrappers::Wrappers {
        &self.wrappers
    }

    /// What the executable lets the check see.
    pub(crate) fn coverage(&self) -> Coverage {
        self.coverage
    }

    /// Time spent building the map (reading symbols and DWARF).
    pub(crate) fn build_time(&self) -> Duration {
        self.build_time
    }

    /// Number of classified segments.
    pub(crate) fn segments(&self) -> usize {
        self.segs.len()
    }

    /// Load bias of the main program (runtime address minus link address).
    pub(crate) fn bias(&self) -> usize {
        self.bias
    }

    /// What the DWARF inline records held, if the executable has DWARF.
    pub(crate) fn inline_stats(&self) -> Option<InlineStats> {
        self.inline_stats
    }

    /// Demangled name of the innermost function symbol containing `addr`.
    #[cfg(test)]
    pub(crate) fn symbol_name(&self, addr: usize) -> Option<String> {
        self.symbol_names(&[addr]).pop().flatten()
    }

    /// Demangled names of the innermost function symbols containing each of
    /// `addrs`, in one pass over the symbol table.
    /// NOT signal-safe: re-reads the symbol table (names are not kept
    /// resident); for diagnostics only.
    pub(crate) fn symbol_names(&self, addrs: &[usize]) -> Vec<Option<String>> {
        let mut best: Vec<Option<(u64, String)>> = vec![None; addrs.len()];
        if addrs.is_empty() {
            return Vec::new();
        }
        if let Some(elf) = Elf::open("/proc/self/exe") {
            elf.for_each_function(|a, size, raw| {
                let Some((s, e)) = runtime_range(self.bias, a, size) else {
                    return;
                };
                for (addr, b) in addrs.iter().zip(best.iter_mut()) {
                    if s <= *addr && *addr < e && b.as_ref().is_none_or(|b| size < b.0) {
                        *b = Some((size, format!("{:#}", rustc_demangle::demangle(raw))));
                    }
                }
            });
        }
        best.into_iter().map(|b| b.map(|b| b.1)).collect()
    }
}

#[cfg(test)]
#[path = "codemap_tests.rs"]
mod tests;
