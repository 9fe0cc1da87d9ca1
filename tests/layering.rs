//! The module layering, checked from the source: every `crate::` path points
//! down the stack below. There is no upward edge: the task core reaches its
//! scheduler through `task::schedule::Schedule`, which the runtime
//! implements. Since every edge between two modules points down, no import
//! circle can span two folders. A helper added in the wrong module fails
//! here with the file and the path, instead of growing an import circle
//! nobody notices.
//!
//! One kind of statement is not an edge: a `pub use crate::...` in a
//! folder's `mod.rs` that names a public item from above gives that item
//! its public path (`kvant::task::Builder` is made in `spawning/`), as
//! tokio's `task` module re-exports its runtime's handles. The folder's code
//! cannot use such an item (the check below sees every other path), so it
//! depends on nothing above it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Modules from the bottom up: a module may use any module of a lower rank.
const LAYERS: &[(&str, u32)] = &[
    ("clock", 0),
    ("diagnostic", 0),
    ("error", 0),
    ("loom", 0),
    ("metrics", 1),
    ("task", 2),
    ("preempt", 3),
    ("time", 4),
    ("dump", 4),
    ("trace", 4),
    ("sync", 5),
    ("channel", 6),
    ("runtime", 7),
    ("spawning", 8),
];

fn rank(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|&(_, r)| r)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments and without its unit tests.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// `code` without its `pub use crate::...;` statements (public paths for
/// items made elsewhere), and those statements.
fn split_reexports(code: &str) -> (String, Vec<String>) {
    let mut rest = String::new();
    let mut reexports = Vec::new();
    let mut text = code;
    while let Some(i) = text.find("pub use crate::") {
        let end = i + text[i..].find(';').expect("a use statement ends");
        rest.push_str(&text[..i]);
        reexports.push(text[i..end].to_string());
        text = &text[end + 1..];
    }
    rest.push_str(text);
    (rest, reexports)
}

/// The first path segment after every `crate::`, including those inside a
/// `use crate::{a::x, b::y}` group.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let item = item.trim();
                let id = ident_at(item);
                if !id.is_empty() {
                    out.push(id.to_string());
                }
            }
        } else {
            out.push(ident_at(rest).to_string());
        }
    }
    out
}

/// What each name re-exported at the crate root really is (`crate::Runtime`
/// is `runtime`), read from `lib.rs`'s `pub use` lines.
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let code = code(lib);
    for stmt in code.split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let module = ident_at(rest).to_string();
        let names = match rest.find('{') {
            Some(i) => rest[i + 1..].trim_end_matches('}').to_string(),
            None => rest.rsplit("::").next().unwrap().to_string(),
        };
        for name in names.split(',') {
            let name = name.trim();
            let name = name.rsplit(" as ").next().unwrap().trim();
            let name = name.rsplit("::").next().unwrap();
            if !name.is_empty() {
                map.insert(name.to_string(), module.clone());
            }
        }
    }
    map
}

#[test]
fn every_import_points_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let reexports = root_reexports(&fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    let mut reexported = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel.iter().next().unwrap().to_str().unwrap();
        let from = first.trim_end_matches(".rs");
        // lib.rs is the root; unit-test files may use anything.
        if from == "lib" || file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let from_rank = rank(from).unwrap_or_else(|| {
            panic!("src/{from} is not in LAYERS: give the new module its place in the stack")
        });
        let text = code(&fs::read_to_string(file).unwrap());
        // Only a folder's mod.rs gives public paths; elsewhere a `pub use`
        // is code like any other.
        let body = if file.file_name().is_some_and(|n| n == "mod.rs") {
            let (body, reexports) = split_reexports(&text);
            reexported.extend(reexports);
            body
        } else {
            text
        };
        for seg in crate_paths(&body) {
            let to = reexports.get(&seg).map(String::as_str).unwrap_or(&seg);
            if to == from || to == "self" || to.is_empty() {
                continue;
            }
            // Macros exported at the root (`crate::select!`) and items of
            // lib.rs itself have no module to rank.
            let Some(to_rank) = rank(to) else { continue };
            if to_rank < from_rank {
                continue;
            }
            wrong.push(format!(
                "src/{}: crate::{seg} ({from} -> {to})",
                rel.display()
            ));
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "imports that point up the layers (move the helper to the lower module, \
         or reach the upper one through a trait it implements, as the task core \
         reaches its scheduler):\n  {}",
        wrong.join("\n  ")
    );
    // The re-exports are what `kvant::task` shows of the spawning façades.
    assert!(
        reexported.iter().any(|r| r.contains("crate::spawning::")),
        "the checker no longer sees task/mod.rs's public re-exports: {reexported:?}"
    );
}

#[test]
fn the_checker_sees_grouped_and_reexported_paths() {
    let paths =
        crate_paths("use crate::{task::Header, metrics::Counter};\nlet x = crate::Runtime::new();");
    assert_eq!(paths, ["task", "metrics", "Runtime"]);
    let map =
        root_reexports("pub use runtime::{\n    Builder, Runtime,\n};\npub use error::Error;\n");
    assert_eq!(map["Runtime"], "runtime");
    assert_eq!(map["Error"], "error");
    let (body, reexports) =
        split_reexports("pub use crate::spawning::{join, scope};\nlet s = crate::runtime::x();");
    assert_eq!(reexports, ["pub use crate::spawning::{join, scope}"]);
    assert_eq!(crate_paths(&body), ["runtime"]);
}
