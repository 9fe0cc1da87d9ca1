//! Which function names are unsafe to preempt (the deny list), and what
//! kind of wait a blocking function is. The names are read from mangled
//! symbols by `mangled.rs` without demangling in full.
//!
//! Split from `codemap.rs` (which maps addresses to these decisions): the
//! rules here are pure string logic, run once per symbol at startup, never
//! in the signal handler.

use std::fmt::Write as _;

use super::mangled::{V0, legacy_head};

/// Denied paths as (crate, modules): functions under `crate::module` (or
/// anywhere in `crate` when `modules` is empty) are unsafe to preempt.
/// `core::alloc` catches user `GlobalAlloc` impls via their trait path.
/// `kvant` is the whole runtime: the caller stops the frame walk at the task's
/// root frame, so task-entry frames are never looked up.
#[rustfmt::skip]
pub(super) const DENY_PATHS: &[(&str, &[&str])] = &[
    ("std", &["io", "sync", "thread", "alloc", "panicking", "panic", "sys", "sys_common", "fmt",
              "rt", "backtrace", "backtrace_rs", "env", "fs", "net", "process", "os", "time"]),
    ("core", &["fmt", "alloc"]),
    ("alloc", &["fmt", "alloc", "raw_vec"]),
    ("parking_lot", &[]), ("parking_lot_core", &[]), ("lock_api", &[]), ("crossbeam_epoch", &[]),
    ("crossbeam_deque", &[]), ("crossbeam_utils", &[]), ("corosensei", &[]), ("kvant", &[]),
    // rustc's own shims (`__rust_alloc`, `__rdl_*`, `rust_begin_unwind`) live in this crate.
    ("__rustc", &[]),
];
/// Raw (non-Rust) symbol names denied exactly.
#[rustfmt::skip]
pub(super) const DENY_EXACT: &[&str] = &[
    "malloc", "free", "calloc", "realloc", "memalign", "posix_memalign", "aligned_alloc",
    "rust_begin_unwind", "rust_panic",
];
/// Raw name prefixes: allocator shims, static libc pieces, unwinder, C++ ABI.
#[rustfmt::skip]
pub(super) const DENY_RAW_PREFIXES: &[&str] = &[
    "__rust_", "__rdl_", "__rg_", "__libc", "pthread_", "__pthread", "_dl_", "__GI_",
    "_Unwind_", "__cxa_",
];

/// What the safe-point check may do where an address's code is on the stack.
/// Ordered: where ranges overlap (inlined code, folded aliases) the greater
/// class wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Class {
    /// Rust code outside the deny list: the user's.
    User,
    /// std's thin front ends of blocking system calls (`thread::sleep`,
    /// `File`/`UnixStream`/`TcpStream` reads and writes, `read_exact`,
    /// `Child::wait`): they hold nothing while the call blocks. Never
    /// preempted, but allowed above a blocked call (rule 6).
    BlockingApi,
    /// std::sync's blocking front ends (`Mutex::lock`, `Condvar::wait`,
    /// `LazyLock::force`, `Barrier::wait`...): never preempted, but allowed
    /// above a contended futex wait (a sync-wait switch point).
    SyncApi,
    /// std::sys::sync's futex-based mutex, rwlock, condvar and once: their
    /// waits are the switch points (`safepoint.rs`, rule 5).
    SyncWait,
    /// Never switch with this code on the stack: std io/thread/alloc/...,
    /// lock_api/parking_lot, kvant, and everything that is not Rust.
    Denied,
}

/// std::sys::sync waits whose futex word is shared state, not a thread's own
/// (the thread parker, `thread_parking`, is deliberately absent), and the
/// futex wait itself should it ever stay out of line.
const SYNC_WAIT: &[&str] = &[
    "std::sys::sync::mutex::futex::",
    "std::sys::sync::rwlock::futex::",
    "std::sys::sync::condvar::futex::",
    "std::sys::sync::once::futex::",
    "std::sys::pal::unix::futex::futex_wait",
    "std::sys::pal::linux::futex::futex_wait",
    "std::sys::futex::futex_wait",
];
/// Their std::sync front ends. Not mpsc/mpmc (they park the thread) nor
/// `ReentrantLock` (owned by a thread id).
const SYNC_API: &[&str] = &[
    "std::sync::poison::",
    "std::sync::nonpoison::",
    "std::sync::once::",
    "std::sync::once_lock::",
    "std::sync::lazy_lock::",
    "std::sync::barrier::",
];

/// std functions that only wrap a blocking system call, holding no lock and
/// no thread-owned state across it. Deliberately absent: anything under
/// `std::io::stdio` (stdout's lock), `BufReader`/`BufWriter`/`LineWriter`
/// (their buffer is borrowed across the call, which is fine, but they sit
/// under stdio's locks), mpsc and the thread parker.
const BLOCKING_API: &[&str] = &[
    "std::thread::sleep",
    "std::thread::functions::sleep",
    "std::sys::pal::unix::thread::Thread::sleep",
    "std::sys::thread::unix::sleep",
    "std::sys::fd::unix::FileDesc::",
    "std::sys::pal::unix::fd::FileDesc::",
    "std::sys::fs::unix::File::",
    "std::sys::pal::unix::fs::File::",
    "std::sys::net::",
    "std::sys::pal::unix::net::Socket::",
    "std::sys::process::unix::unix::Process::wait",
    "std::sys::pal::unix::process::process_inner::Process::wait",
    "std::sys::pal::unix::pipe::AnonPipe::",
    "std::sys::anonymous_pipe::",
    "std::process::Child",
    "std::process::Command::output",
    "std::process::Command::status",
    "std::sys::process::unix::common::read_output",
    "std::fs::File::",
    "std::fs::File as std::io::",
    "std::os::unix::net::",
    "std::net::tcp::",
    "std::net::udp::",
    "std::io::pipe::",
    "std::io::default_read_exact",
    "std::io::default_read_to_end",
    "std::io::default_read_to_string",
    "std::io::default_read_buf",
    "std::io::append_to_string",
    "std::io::read_until",
    "std::io::Read::",
    "std::io::Write::",
    "std::io::BufRead::",
    "std::io::Lines<",
    "std::io::Split<",
    "std::io::Bytes<",
    "std::io::Take<",
    "std::io::Chain<",
    // Buffers over a stream: they borrow their buffer across the call and
    // hold nothing of the thread's. Over stdin or stdout they sit under
    // `std::io::stdio`'s frames, which stay denied, and so does the stack.
    "std::io::buffered::",
    // `io::copy` between streams: a stack buffer, or the kernel's own copy
    // (Linux), whose fallback is the stack buffer's read and write.
    "std::io::copy::",
    "std::sys::kernel_copy::",
    "std::sys::pal::unix::kernel_copy::",
    // Formatting into a stream (`writeln!` on a `TcpStream`): core's
    // formatting keeps no per-thread state. (The rest of core and alloc is
    // not denied in the first place, so `lines().map(..).collect()` sits
    // above such calls as user code does; their allocator paths stay
    // denied.)
    "core::fmt::",
];
/// Fragments of the identifiers of every function [`BLOCKING_API`] can
/// match (`read` covers `read_exact`, `default_read_to_end`...): only std
/// and core symbols containing one are demangled to find out.
#[rustfmt::skip]
const BLOCKING_IDENTS: &[&str] = &[
    "sleep", "read", "write", "recv", "send", "accept", "connect", "wait", "peek", "output",
    "status", "append", "Lines", "Split", "Bytes", "Take", "Chain", "buffered", "copy", "3fmt",
    "core..fmt",
];

/// Whose code a function is, for the per-crate preemption allow list
/// (`codemap.rs`). std, core and alloc are governed by the deny rules above
/// (one known crate family, shipped with the toolchain); every other crate's
/// code is preempted only once that crate is allowed: the program's own
/// crates (named by the closures it spawns) and the ones a builder adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// std, core, alloc (and their private helpers): the class decides.
    Std,
    /// Code of this crate (a crate name as paths spell it).
    Crate(String),
    /// Rust code whose crate the name does not show: never preempted.
    Unknown,
}

/// The crates whose code paths spell as std's family.
const STD_CRATES: &[&str] = &["std", "core", "alloc", "proc_macro", "test", "std_detect"];

/// Primitive types, whose impls (`<u64 as core::iter::Sum>::sum`) are std's.
const PRIMITIVES: &[&str] = &[
    "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize", "f16",
    "f32", "f64", "f128", "bool", "char", "str",
];

/// Whose code the function with the demangled (`{:#}`) path `path` is.
///
/// A plain path is its first element's crate. An impl `<Self as Trait>`
/// is the trait's crate unless that is std's family (`<my::T as
/// core::fmt::Debug>` is `my`'s code, `<my::T as rand::Rng>::random` is
/// rand's blanket impl), else the self type's; `<Self>` is the self
/// type's. References, slices and pointers are looked through; anything
/// else (tuples, function pointers, closures of unknown origin) is
/// [`Owner::Unknown`].
pub(crate) fn owner(path: &str) -> Owner {
    owner_at(path, 0)
}

fn owner_at(path: &str, depth: u32) -> Owner {
    if depth > 16 {
        return Owner::Unknown;
    }
    let path = strip_refs(path);
    if path.starts_with(['(', '!']) || path.starts_with("fn(") || path.starts_with("unsafe fn(") {
        // Tuples, the never type and function pointers: std's impls.
        return Owner::Std;
    }
    let Some(inner) = path.strip_prefix('<') else {
        let end = path
            .bytes()
            .position(|b| !(b.is_ascii_alphanumeric() || b == b'_'))
            .unwrap_or(path.len());
        let krate = &path[..end];
        let ident = !krate.is_empty()
            && krate != "_"
            && krate
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !krate.as_bytes()[0].is_ascii_digit();
        return match krate {
            _ if !ident => Owner::Unknown,
            // A bare name inside an impl (`<T as core::convert::TryInto<U>>`)
            // is a generic parameter: legacy mangling prints paths in full,
            // so this is the trait's crate's blanket impl, std's here.
            _ if depth > 0 && krate.len() == path.len() => Owner::Std,
            k if STD_CRATES.contains(&k) || PRIMITIVES.contains(&k) => Owner::Std,
            k => Owner::Crate(k.to_owned()),
        };
    };
    let (self_ty, tr) = split_impl(inner);
    if !tr.is_empty() {
        match owner_at(tr, depth + 1) {
            Owner::Std => {}
            other => return other,
        }
    }
    owner_at(self_ty, depth + 1)
}

/// Looks through `&`, `[`, `*const `, `*mut `, `mut `, `dyn ` and lifetimes.
fn strip_refs(mut path: &str) -> &str {
    loop {
        let stripped = match path.as_bytes().first() {
            Some(b'&' | b'[') => &path[1..],
            Some(b'\'') => path.split_once(' ').map_or("", |(_, rest)| rest),
            Some(b'*' | b'm' | b'd') => ["*const ", "*mut ", "mut ", "dyn "]
                .iter()
                .find_map(|p| path.strip_prefix(p))
                .unwrap_or(path),
            _ => path,
        };
        if stripped.len() == path.len() {
            return path;
        }
        path = stripped;
    }
}

/// `Self as Trait>...` (after the `<`) into `(Self, Trait)`; the trait is
/// empty for an inherent `<Self>`.
fn split_impl(inner: &str) -> (&str, &str) {
    let (mut level, mut split, mut end) = (0u32, None, inner.len());
    for (i, b) in inner.bytes().enumerate() {
        match b {
            b'<' | b'(' | b'[' => level += 1,
            b'>' if i > 0 && inner.as_bytes()[i - 1] == b'-' => {} // `fn() -> T`
            b'>' if level == 0 => {
                end = i;
                break;
            }
            b'>' | b')' | b']' => level = level.saturating_sub(1),
            b' ' if level == 0 && split.is_none() && inner[i..].starts_with(" as ") => {
                split = Some(i)
            }
            _ => {}
        }
    }
    match split {
        Some(i) => (&inner[..i], &inner[i + 4..end]),
        None => (&inner[..end], ""),
    }
}

/// [`classify`] and the function's [`Owner`] (which only matters for
/// [`Class::User`] code: denied code is never preempted, whoever owns it).
pub(super) fn classify_owned(raw: &str, buf: &mut String) -> (Class, Owner) {
    let class = classify(raw, buf);
    if class != Class::User {
        return (class, Owner::Std);
    }
    // `classify` left the decoded head of a legacy name in `buf` (the first
    // two path elements, or the whole `<Self as Trait>`); anything else is
    // demangled in full.
    let legacy = raw.starts_with("_ZN") && !buf.is_empty();
    if !legacy {
        buf.clear();
        let _ = write!(buf, "{:#}", rustc_demangle::demangle(raw));
    }
    (class, owner(buf))
}

/// Class of one function symbol (or DWARF linkage name) from its raw name.
/// Anything that is not a mangled Rust name (C, C++, assembly, a
/// `#[no_mangle]` function) is [`Class::Denied`]: kvant cannot know what
/// thread-owned state foreign code keeps (a C allocator's thread cache).
pub(super) fn classify(raw: &str, buf: &mut String) -> Class {
    if !is_rust_symbol(raw) {
        return Class::Denied;
    }
    if !symbol_denied(raw, buf) {
        return Class::User;
    }
    // Every sync path below contains the identifier `sync`, mangled `4sync`
    // in both schemes, and every blocking one an identifier of
    // BLOCKING_IDENTS: skip the full demangling for the rest of std.
    let sync = raw.contains("4sync");
    // `3std`/`4core` as path elements; `$LT$std..` where a crate's legacy
    // mangling spells an impl of std's generic code it instantiated.
    let std_or_core = raw.contains("std") || raw.contains("core");
    if sync || (std_or_core && BLOCKING_IDENTS.iter().any(|i| raw.contains(i))) {
        buf.clear();
        let _ = write!(buf, "{:#}", rustc_demangle::demangle(raw));
        if let Some(class) = sync.then(|| sync_class(buf)).flatten() {
            return class;
        }
        if blocking_api(buf) {
            return Class::BlockingApi;
        }
    }
    Class::Denied
}

/// Whether a demangled path is one of std's thin blocking front ends.
///
/// [`BLOCKING_API`] is spelled as paths: the two manglings write impls
/// differently, so the path is read as one first. v0 (std's own mangling
/// now) writes an inherent method `<std::net::udp::UdpSocket>::recv` and a
/// reference's impl `<&std::fs::File as std::io::Read>::read`; legacy
/// writes `std::net::udp::UdpSocket::recv`. (A `<Type>::` spelling missing
/// from the list once denied `TcpStream::read`, whose code the linker had
/// folded with `UdpSocket::recv`: a client blocked in it on a worker whose
/// server task was pinned there was never switched out, a deadlock.)
pub(super) fn blocking_api(path: &str) -> bool {
    let path = strip_refs(path.strip_prefix('<').unwrap_or(path));
    let inherent = path
        .split_once(">::")
        .filter(|(ty, _)| !ty.contains(" as "))
        .map(|(ty, rest)| format!("{ty}::{rest}"));
    let path = inherent.as_deref().unwrap_or(path);
    // Impls for a primitive or a generic parameter: core formatting its own
    // types (`<u64 as core::fmt::Display>::fmt`), and std's forwarding impls
    // and `io::copy`'s as a crate instantiating them spells them in legacy
    // mangling (`<&mut R as std::io::Read>::read_buf`,
    // `<W as std::io::copy::BufferedWriterSpec>::copy_from`); `R`'s own
    // code is a frame of its own, classed by its own name.
    const FORWARDING: &[&str] = &["core::fmt::", "std::io::"];
    let forwarding = path
        .split_once(" as ")
        .is_some_and(|(ty, tr)| !ty.contains("::") && FORWARDING.iter().any(|t| tr.starts_with(t)));
    forwarding || BLOCKING_API.iter().any(|p| path.starts_with(p))
}

/// [`Class`] of a demangled path denied by [`path_denied`].
pub(super) fn sync_class(path: &str) -> Option<Class> {
    let path = path.trim_start_matches(['<', '&']);
    if SYNC_WAIT.iter().any(|p| path.starts_with(p)) {
        Some(Class::SyncWait)
    } else if SYNC_API.iter().any(|p| path.starts_with(p)) {
        Some(Class::SyncApi)
    } else {
        None
    }
}

/// Class of a demangled path.
#[cfg(test)]
pub(super) fn classify_path(path: &str) -> Class {
    if !path_denied(path, 0) {
        Class::User
    } else if blocking_api(path) {
        Class::BlockingApi
    } else {
        sync_class(path).unwrap_or(Class::Denied)
    }
}

/// Whether `raw` is a Rust-mangled name: v0 (`_R...`) or legacy
/// (`_ZN...17h<16 hex digits>E`), optionally with an LLVM suffix (`.llvm.N`).
pub(super) fn is_rust_symbol(raw: &str) -> bool {
    if raw.starts_with("_R") {
        return true;
    }
    let Some(rest) = raw.strip_prefix("_ZN") else {
        return false;
    };
    // Path elements may contain `.` (`..` for `::`), so look for the hash
    // right before the end or before any `.` that starts a suffix.
    let b = rest.as_bytes();
    (0..=b.len()).any(|n| {
        (n == b.len() || b[n] == b'.')
            && n > 20
            && b[n - 1] == b'E'
            && &b[n - 20..n - 17] == b"17h"
            && b[n - 17..n - 1].iter().all(u8::is_ascii_hexdigit)
    })
}

/// Deny rule for a demangled (`{:#}`) path, looking through `&`, `*const`,
/// `[`, `dyn` and into `<Self as Trait>` / `<Self>` (either side denies).
pub(super) fn path_denied(path: &str, depth: u32) -> bool {
    let path = strip_refs(path);
    let Some(inner) = path.strip_prefix('<') else {
        let end = |s: &str| {
            s.bytes()
                .position(|b| b == b':' || b == b'<')
                .unwrap_or(s.len())
        };
        let krate = &path[..end(path)];
        let rest = path[krate.len()..].strip_prefix("::").unwrap_or("");
        return head_denied(krate.as_bytes(), Some(&rest.as_bytes()[..end(rest)]));
    };
    let (self_ty, tr) = split_impl(inner);
    depth < 16 && (path_denied(self_ty, depth + 1) || path_denied(tr, depth + 1))
}

/// Deny decision for one symbol from its raw (mangled) name.
pub(super) fn symbol_denied(raw: &str, buf: &mut String) -> bool {
    let fast = match (raw.strip_prefix("_ZN"), raw.strip_prefix("_R")) {
        (Some(legacy), _) => legacy_head(legacy, buf).map(|()| path_denied(buf, 0)),
        (_, Some(v0)) => V0::new(v0, head_denied)
            .path()
            .map(|h| h.denied(head_denied)),
        _ => {
            return DENY_EXACT.contains(&raw)
                || DENY_RAW_PREFIXES.iter().any(|p| raw.starts_with(p))
                || path_denied(raw, 0);
        }
    };
    fast.unwrap_or_else(|| {
        buf.clear();
        let _ = write!(buf, "{:#}", rustc_demangle::demangle(raw));
        path_denied(buf, 0)
    })
}

/// Whether every function of crate `krate` is denied.
pub(super) fn crate_denied(krate: &[u8]) -> bool {
    DENY_PATHS
        .iter()
        .any(|(c, m)| m.is_empty() && c.as_bytes() == krate)
}

/// Deny rule for a path starting `krate::child` (see [`DENY_PATHS`]).
pub(super) fn head_denied(krate: &[u8], child: Option<&[u8]>) -> bool {
    match DENY_PATHS.iter().find(|(c, _)| c.as_bytes() == krate) {
        Some((_, [])) => true,
        Some((_, modules)) => child.is_some_and(|m| modules.iter().any(|x| x.as_bytes() == m)),
        None => false,
    }
}
