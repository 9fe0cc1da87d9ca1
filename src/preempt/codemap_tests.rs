//! Unit tests of the code map and the deny rules it applies (split from
//! `codemap.rs`).

use super::*;
use crate::preempt::symbols::{
    DENY_EXACT, DENY_RAW_PREFIXES, classify, owner, path_denied, symbol_denied,
};

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
fn classes_of_known_functions() {
    let map = CodeMap::global();
    assert_ne!(
        map.coverage(),
        Coverage::NoSymbols,
        "test binaries are not stripped"
    );
    let probe = codemap_probe_fn as fn(usize) -> usize as usize;
    let name = map.symbol_name(probe).expect("probe symbol");
    assert!(name.contains("codemap_probe_fn"), "{name}");
    assert_eq!(map.class(probe), Class::Denied, "kvant itself");
    // Some `core::` (non-fmt/alloc) function is user code.
    let mut user = None;
    Elf::open("/proc/self/exe")
        .unwrap()
        .for_each_function(|a, size, raw| {
            let name = format!("{:#}", rustc_demangle::demangle(raw));
            if user.is_none() && name.starts_with("core::slice::") && !slow_denied(raw) {
                user = runtime_range(map.bias, a, size);
            }
        });
    let (start, end) = user.expect("a core::slice function");
    // Identical-code-folded aliases of denied symbols may overlap it.
    assert!((start..end).any(|a| map.class(a) == Class::User));
    // libc lives in another object: no symbol of ours covers it.
    let malloc = libc::malloc as unsafe extern "C" fn(usize) -> *mut libc::c_void as usize;
    assert_eq!(map.class(malloc), Class::Denied);
    let stdout = std::io::stdout as fn() -> std::io::Stdout as usize;
    assert_eq!(map.class(stdout), Class::Denied);
    assert_eq!(map.class(0), Class::Denied);
    assert_eq!(map.class(usize::MAX), Class::Denied);
}

#[test]
fn std_futex_waits_are_sync_wait() {
    let map = CodeMap::global();
    let mut found = Vec::new();
    Elf::open("/proc/self/exe")
        .unwrap()
        .for_each_function(|a, size, raw| {
            let name = format!("{:#}", rustc_demangle::demangle(raw));
            if name.contains("std::sys::sync::mutex::futex::Mutex>::lock_contended") {
                found.push(runtime_range(map.bias, a, size).unwrap());
            }
        });
    assert!(
        !found.is_empty(),
        "std's contended lock is linked into every test binary"
    );
    for (start, _) in found {
        assert_eq!(map.class(start), Class::SyncWait);
    }
}

#[test]
fn syscall_instruction_found() {
    let map = CodeMap::global();
    let f = libc::syscall as unsafe extern "C" fn(libc::c_long, ...) -> libc::c_long as usize;
    let insn = map.syscall_insn();
    assert!(insn > f && insn < f + 64, "{insn:#x} vs {f:#x}");
    // SAFETY: `insn` was found inside libc's mapped text.
    assert_eq!(unsafe { *(insn as *const [u8; 2]) }, [0x0f, 0x05]);
}

#[test]
fn test_binaries_have_line_tables() {
    let map = CodeMap::global();
    if !cfg!(debug_assertions) {
        // `cargo test --release`: the release profile has no DWARF, and
        // std is not inlined across crates without LTO.
        assert_eq!(map.coverage(), Coverage::Symbols);
        return;
    }
    assert_eq!(map.coverage(), Coverage::LineTables);
    let stats = map.inline_stats().unwrap();
    assert!(stats.units > 0, "{stats:?}");
}

#[test]
fn fast_classifier_matches_rustc_demangle() {
    let (mut buf, mut mismatches, mut n) = (String::new(), Vec::new(), 0);
    Elf::open("/proc/self/exe")
        .unwrap()
        .for_each_function(|_, _, raw| {
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
        "__rustc::__rust_alloc",
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
        "mi_malloc",
        "je_malloc",
        "sqlite3_step",
        "_ZN7mystuff3fooEv", // C++: no Rust hash
        "__rust_alloc",
        "_RNvCsfLfy6EI15iL_7___rustc12___rust_alloc",
    ] {
        assert_eq!(classify(raw, &mut buf), Class::Denied, "{raw}");
    }
    let user = "_ZN4user4main17h0123456789abcdefE";
    assert_eq!(classify(user, &mut buf), Class::User);
    assert_eq!(
        classify(&format!("{user}.llvm.1234"), &mut buf),
        Class::User
    );
    let closure = "_ZN4user4main28_$u7b$$u7b$closure$u7d$$u7d$17h0123456789abcdefE";
    assert_eq!(classify(closure, &mut buf), Class::User);
    // std's generic code as a crate instantiating it names it (legacy
    // mangling): a thin front end all the same.
    let lines = "_ZN82_$LT$std..io..Lines$LT$B$GT$$u20$as$u20$core..iter..traits..iterator..Iterator$GT$4next17h0123456789abcdefE";
    assert_eq!(classify(lines, &mut buf), Class::BlockingApi);
    let dotted = "_ZN4core3ptr13drop_in_place$LT$std..rt..X$GT$17h0123456789abcdefE";
    assert!(crate::preempt::symbols::is_rust_symbol(dotted));
}

#[test]
fn sync_classes() {
    use crate::preempt::symbols::classify_path;
    assert_eq!(
        classify_path("<std::sys::sync::mutex::futex::Mutex>::lock_contended"),
        Class::SyncWait
    );
    assert_eq!(
        classify_path("<std::sys::sync::once::futex::Once>::call"),
        Class::SyncWait
    );
    assert_eq!(
        classify_path("<std::sync::poison::mutex::Mutex<u64>>::lock"),
        Class::SyncApi
    );
    assert_eq!(
        classify_path("<std::sync::lazy_lock::LazyLock<T, F>>::force"),
        Class::SyncApi
    );
    for denied in [
        "<std::sys::sync::thread_parking::futex::Parker>::park",
        "<std::sync::mpmc::list::Channel<T>>::recv",
        "<std::sync::reentrant_lock::ReentrantLock<T>>::lock",
        "std::io::stdio::_print",
    ] {
        assert_eq!(classify_path(denied), Class::Denied, "{denied}");
    }
}

#[test]
fn sweep_overlaps() {
    use Class::*;
    use Source::*;
    let segs = sweep(vec![
        (10, 100, User, Symbol, 0),
        (20, 30, SyncWait, Inlined, 0),
        (25, 40, Denied, Inlined, 0),
        (100, 110, User, Symbol, 0),
        // std's own code with std code inlined: the symbol's class holds.
        (200, 300, SyncWait, Symbol, 0),
        (250, 260, Denied, Inlined, 0),
        // Inline records without a symbol are not code we know.
        (400, 410, User, Inlined, 0),
        // A crate's function with another crate's code inlined, and a third
        // inside that: each point carries every crate that covers it.
        (500, 600, User, Symbol, 1),
        (520, 560, User, Inlined, 2),
        (530, 540, User, Inlined, 3),
        // Five crates nested: more than a segment records, never preemptible.
        (700, 800, User, Symbol, 1),
        (710, 790, User, Inlined, 2),
        (720, 780, User, Inlined, 3),
        (730, 770, User, Inlined, 4),
        (740, 760, User, Inlined, 5),
    ]);
    let got: Vec<_> = segs.iter().map(|s| (s.start, s.end, s.class)).collect();
    assert_eq!(
        got,
        vec![
            (10, 20, User),
            (20, 25, SyncWait),
            (25, 40, Denied),
            (40, 110, User),
            (200, 300, SyncWait),
            (500, 520, User),
            (520, 530, User),
            (530, 540, User),
            (540, 560, User),
            (560, 600, User),
            (700, 710, User),
            (710, 720, User),
            (720, 730, User),
            (730, 740, User),
            (740, 760, User),
            (760, 770, User),
            (770, 780, User),
            (780, 790, User),
            (790, 800, User),
        ]
    );
    let sorted: Vec<[u16; CRATES]> = segs[5..]
        .iter()
        .map(|s| {
            let mut k = s.krate;
            k.sort_unstable();
            k
        })
        .collect();
    let never = [NEVER; CRATES];
    assert_eq!(
        sorted,
        [
            [0, 0, 0, 1],
            [0, 0, 1, 2],
            [0, 1, 2, 3],
            [0, 0, 1, 2],
            [0, 0, 0, 1],
            [0, 0, 0, 1],
            [0, 0, 1, 2],
            [0, 1, 2, 3],
            [1, 2, 3, 4],
            never,
            [1, 2, 3, 4],
            [0, 1, 2, 3],
            [0, 0, 1, 2],
            [0, 0, 0, 1],
        ]
    );
    let map = CodeMap {
        segs: segs.into(),
        bias: 0,
        syscall_insn: 0,
        wrappers: Default::default(),
        coverage: Coverage::LineTables,
        inline_stats: None,
        build_time: Duration::ZERO,
        crate_names: ["", "a", "b", "c", "d", "e"].map(String::from).into(),
        crate_ids: [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)]
            .map(|(n, i)| (n.to_owned(), i))
            .into(),
        allowed: vec![AtomicU64::new(0)].into(),
        roots: Box::new([]),
        unwind: UnwindTable::default(),
        static_tls: 0,
    };
    let classes: Vec<_> = [0, 10, 19, 20, 24, 25, 39, 40, 109, 110]
        .map(|a| map.class(a))
        .into();
    assert_eq!(
        classes,
        [
            Denied, User, User, SyncWait, SyncWait, Denied, Denied, User, User, Denied
        ]
    );
    // Crates are preemptible only once allowed, and only where every crate
    // covering the point is.
    assert_eq!(map.class_now(510), Denied);
    assert!(map.allow_crate("a"));
    assert_eq!(map.class_now(510), User);
    assert_eq!(map.class_now(525), Denied);
    assert!(map.allow_crate("b"));
    assert_eq!(map.class_now(525), User);
    assert_eq!(map.class_now(535), Denied);
    assert!(map.allow_crate("c"));
    assert_eq!(map.class_now(535), User);
    assert!(map.allow_crate("d") && map.allow_crate("e"));
    assert_eq!(map.class_now(735), User);
    assert_eq!(map.class_now(750), Denied);
    assert!(!map.allow_crate("nope"));
    assert_eq!(map.crates_denied_at(750), ["(unknown crate)"]);
}

#[test]
fn owners_of_paths() {
    let c = |n: &str| Owner::Crate(n.to_owned());
    assert_eq!(owner("my_app::main::{{closure}}"), c("my_app"));
    assert_eq!(owner("<my_app::T as core::fmt::Debug>::fmt"), c("my_app"));
    assert_eq!(owner("<my_app::T as rand::Rng>::random"), c("rand"));
    assert_eq!(
        owner("<alloc::vec::Vec<my_app::T> as my_app::Tr>::f"),
        c("my_app")
    );
    assert_eq!(
        owner("<&mut serde_json::Value as core::fmt::Display>::fmt"),
        c("serde_json")
    );
    assert_eq!(owner("core::iter::adapters::map::map_fold"), Owner::Std);
    assert_eq!(owner("<alloc::vec::Vec<T>>::push"), Owner::Std);
    assert_eq!(owner("<(A, B) as core::clone::Clone>::clone"), Owner::Std);
    assert_eq!(owner("<_ as core::clone::Clone>::clone"), Owner::Unknown);
    assert_eq!(
        owner("<T as core::convert::TryInto<U>>::try_into"),
        Owner::Std
    );
    assert_eq!(owner("<T as rand::Rng>::random"), c("rand"));
    assert_eq!(
        owner("<u64 as core::iter::traits::accum::Sum>::sum"),
        Owner::Std
    );
    assert_eq!(owner("<[u8] as core::fmt::Debug>::fmt"), Owner::Std);
    // What `type_name` gives for closures and functions.
    assert_eq!(owner("preempt::hog::{{closure}}"), c("preempt"));
    assert_eq!(owner("storm::burn"), c("storm"));
}

#[test]
fn std_blocking_front_ends_are_their_own_class() {
    use super::super::symbols::classify_path;
    for p in [
        "std::thread::functions::sleep",
        "std::sys::fd::unix::FileDesc::read",
        "<std::fs::File as std::io::Read>::read",
        "<&std::os::unix::net::stream::UnixStream as std::io::Read>::read",
        "std::io::default_read_exact",
        // v0 spellings of inherent methods and of impls for references.
        "<std::net::udp::UdpSocket>::recv",
        "<std::net::tcp::TcpStream as std::io::Read>::read",
        "<&std::net::tcp::TcpStream as std::io::Write>::write",
        "<std::process::Child>::wait",
        "<std::process::Command>::output",
        "std::sys::process::unix::common::read_output",
        "<std::sys::fd::unix::FileDesc>::read",
        "<std::sys::net::connection::socket::unix::Socket>::recv_with_flags",
        "<&std::fs::File as std::io::Read>::read",
        // Line-based reading and formatted writing over a stream.
        "std::io::append_to_string",
        "<&mut std::net::tcp::TcpStream as std::io::Read>::read_buf",
        "<&mut R as std::io::Read>::read_buf",
        "std::io::copy::stack_buffer_copy",
        "std::io::copy::copy",
        "<W as std::io::copy::BufferedWriterSpec>::copy_from",
        "<std::process::ChildStdout as std::io::Read>::read_buf",
        "<std::io::Bytes<R> as core::iter::traits::iterator::Iterator>::next",
        "<std::io::Take<T> as std::io::Read>::read",
        "<std::io::Chain<T,U> as std::io::Read>::read",
        "<std::io::Lines<B> as core::iter::traits::iterator::Iterator>::next",
        "<std::io::buffered::bufreader::BufReader<R> as std::io::BufRead>::fill_buf",
        "<std::io::buffered::bufwriter::BufWriter<W>>::flush_buf",
        "std::io::Write::write_fmt",
        "core::fmt::write",
        "<u64 as core::fmt::Display>::fmt",
        "<core::fmt::Formatter>::pad_integral",
    ] {
        assert_eq!(classify_path(p), Class::BlockingApi, "{p}");
    }
    // Collecting from a blocking iterator: allowed above the call, as user
    // code (core and alloc outside their formatting and allocator paths).
    for p in [
        "<alloc::vec::Vec<T> as alloc::vec::spec_from_iter_nested::SpecFromIterNested<T,I>>::from_iter",
        "<core::iter::adapters::map::Map<I,F> as core::iter::traits::iterator::Iterator>::next",
        "<I as core::iter::traits::iterator::Iterator>::collect",
        "core::iter::traits::iterator::Iterator::collect",
    ] {
        let c = classify_path(p);
        assert!(matches!(c, Class::User | Class::BlockingApi), "{p}: {c:?}");
    }
    // The allocator's paths are not front ends, blocked call or not.
    for p in [
        "<A as core::alloc::global::GlobalAlloc>::realloc",
        "alloc::alloc::exchange_malloc",
        "alloc::raw_vec::finish_grow",
    ] {
        assert_eq!(classify_path(p), Class::Denied, "{p}");
    }
    for p in [
        "<std::io::stdio::StdoutLock as std::io::Write>::write_all",
        "std::sync::mpmc::list::Channel<T>::recv",
        "<std::io::stdio::StdinRaw as std::io::Read>::read",
        "<std::path::Display as core::fmt::Display>::fmt",
        "std::thread::park",
        "<std::io::stdio::Stdin>::read_line",
        "<std::sync::mpmc::Receiver<T>>::recv",
        "<std::process::Command>::spawn",
        "std::sys::process::unix::unix::Command::do_exec",
    ] {
        assert_eq!(classify_path(p), Class::Denied, "{p}");
    }
}

#[test]
fn libc_wrappers_unwind_from_their_syscall_instructions() {
    let w = super::super::wrappers::Wrappers::load();
    assert!(w.len() >= 10, "found only {} wrappers", w.len());
    // SAFETY: dlsym only reads its NUL-terminated argument.
    let read = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"read".as_ptr()) } as usize;
    assert!(w.contains(read));
    let insn = (read..read + 256)
        .find(|&a| w.is_syscall(a))
        .expect("a syscall instruction in read()");
    assert!(w.covers(insn));
    assert!(w.covers(insn + 2));
    assert!(!w.contains(std::thread::sleep as fn(Duration) as usize));
}
