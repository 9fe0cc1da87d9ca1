//! Inlined code the symbol table cannot show: DWARF inline records.
//!
//! A function inlined into another leaves no symbol of its own. std's
//! generics (`LocalKey::with`, `Mutex::lock`) land in user functions in every
//! build, and under LTO so does std's non-generic code (`println!`'s stdout
//! lock). The symbol table then calls that code "user code" and a preemption
//! could stop a task while it holds a thread's stdout borrow.
//!
//! DWARF keeps what the symbols lose: every inlined call is a
//! `DW_TAG_inlined_subroutine` with the address ranges it occupies and a
//! `DW_AT_abstract_origin` naming the inlined function. `debug =
//! "line-tables-only"` is enough, and rustc keeps these records for std's
//! code even under fat LTO. We read them once at start-up (gimli over the
//! executable's own sections) and hand every inlined range whose origin is
//! not user code to the code map, which marks it with that class.
//!
//! One pass over the DIEs of the units that can hold inlined std code
//! outside std's own functions: every unit but std's, core's and alloc's
//! (whose inline records lie inside their own symbols, denied already).
//! Origins are resolved lazily, by reading just the origin DIE (which may sit
//! in another unit under LTO), and cached: a binary has tens of thousands of
//! functions but far fewer distinct inlined ones.

use std::collections::HashMap;

use gimli::{AttributeValue, DebugInfoOffset, EndianSlice, LittleEndian, SectionId, Unit};

use super::symbols::{Class, Owner, classify_owned, crate_denied};

type Slice<'a> = EndianSlice<'a, LittleEndian>;

/// Counts of what the DWARF held, for diagnostics and the benchmark.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct InlineStats {
    /// Compilation units read.
    pub units: usize,
    /// Inlined-call records seen.
    pub inlined: usize,
    /// Ranges handed to the code map (inlined non-user code).
    pub ranges: usize,
}

/// Read the inline records of the DWARF in `section` (a loader of the
/// executable's sections by name) and call `push(start, end, class, owner)`
/// with link-time addresses for every range of inlined code that is not
/// user code of std's family: denied code, and any crate's code (whose crate
/// must be allowed where it runs). `None` if
/// the executable has no `.debug_info` (or it cannot be parsed).
pub(crate) fn read(
    section: &dyn Fn(&str) -> Option<Vec<u8>>,
    mut push: impl FnMut(u64, u64, Class, &Owner),
) -> Option<InlineStats> {
    let info = section(".debug_info")?;
    let mut owned: HashMap<SectionId, Vec<u8>> = HashMap::new();
    owned.insert(SectionId::DebugInfo, info);
    let ids = [
        SectionId::DebugAbbrev,
        // `Unit::new` reads the line program's header.
        SectionId::DebugLine,
        SectionId::DebugStr,
        SectionId::DebugLineStr,
        SectionId::DebugStrOffsets,
        SectionId::DebugRanges,
        SectionId::DebugRngLists,
        SectionId::DebugAddr,
    ];
    for id in ids {
        if let Some(data) = section(id.name()) {
            owned.insert(id, data);
        }
    }
    let dwarf = gimli::Dwarf::load(|id| -> Result<Slice<'_>, ()> {
        let data = owned.get(&id).map_or(&[][..], Vec::as_slice);
        Ok(EndianSlice::new(data, LittleEndian))
    })
    .ok()?;
    let mut headers = Vec::new();
    let mut iter = dwarf.units();
    while let Ok(Some(header)) = iter.next() {
        headers.push((header.offset().0, header));
    }
    let mut origins = Origins {
        dwarf: &dwarf,
        headers: &headers,
        units: HashMap::new(),
        classes: HashMap::new(),
        buf: String::new(),
    };
    let mut stats = InlineStats::default();
    let mut ranges = Vec::new();
    for &(_, header) in &headers {
        let Ok(unit) = dwarf.unit(header) else {
            continue;
        };
        if is_std_unit(&unit) {
            continue;
        }
        stats.units += 1;
        // Built on first need: which source file each address of this unit
        // came from, for inlined code whose origin has no linkage name.
        let mut lines: Option<Lines> = None;
        let mut entries = unit.entries();
        let mut next = entries.next_dfs();
        while let Ok(Some(entry)) = next {
            if entry.tag() == gimli::DW_TAG_namespace && entry.depth() == 1 {
                // A crate whose every function is denied (kvant itself,
                // parking_lot...): nothing inlined there changes a class.
                let name = entry.attr_value(gimli::DW_AT_name);
                let name = name.and_then(|v| dwarf.attr_string(&unit, v).ok());
                if name.is_some_and(|n| crate_denied(n.slice())) {
                    next = entries.next_sibling();
                    continue;
                }
            }
            if entry.tag() != gimli::DW_TAG_inlined_subroutine {
                next = entries.next_dfs();
                continue;
            }
            stats.inlined += 1;
            let Some(origin) = entry
                .attr_value(gimli::DW_AT_abstract_origin)
                .and_then(|v| global_offset(&unit, v))
            else {
                next = entries.next_dfs();
                continue;
            };
            let (class, owner) = origins.class(origin);
            if class == Class::User && owner == Owner::Std {
                next = entries.next_dfs();
                continue;
            }
            ranges.clear();
            if let Ok(mut iter) = dwarf.die_ranges(&unit, entry) {
                while let Ok(Some(r)) = iter.next() {
                    if r.begin < r.end {
                        ranges.push((r.begin, r.end));
                    }
                }
            }
            for &(begin, end) in &ranges {
                stats.ranges += 1;
                if owner == Owner::Unknown {
                    // Line-tables-only DWARF names generic instances and
                    // closures without a path (`take<T>`, `{closure#0}`):
                    // whose code it is, the line table says, by the source
                    // file the inlined instructions came from.
                    let lines = lines.get_or_insert_with(|| Lines::read(&dwarf, &unit));
                    let owner = lines.owner_at(begin);
                    if owner != Owner::Std {
                        push(begin, end, class, &owner);
                    }
                    continue;
                }
                push(begin, end, class, &owner);
            }
            next = entries.next_dfs();
        }
    }
    Some(stats)
}

/// Which source file each address of one unit's code came from, and whose
/// code that file is.
struct Lines {
    /// (address, owner index) at every change of file, sorted.
    rows: Vec<(u64, usize)>,
    owners: Vec<Owner>,
}

impl Lines {
    fn read(dwarf: &gimli::Dwarf<Slice<'_>>, unit: &Unit<Slice<'_>>) -> Lines {
        let mut lines = Lines {
            rows: Vec::new(),
            owners: Vec::new(),
        };
        let unit_crate = unit
            .name
            .and_then(|n| std::str::from_utf8(n.slice()).ok())
            .and_then(unit_crate_name)
            .map_or(Owner::Unknown, |c| Owner::Crate(c.to_owned()));
        let Some(program) = unit.line_program.clone() else {
            return lines;
        };
        let mut by_file: HashMap<u64, usize> = HashMap::new();
        let mut rows = program.rows();
        while let Ok(Some((header, row))) = rows.next_row() {
            let file = row.file_index();
            let idx = match by_file.get(&file) {
                Some(&i) => i,
                None => {
                    let path = file_path(dwarf, unit, header, file);
                    lines
                        .owners
                        .push(path.map_or(Owner::Unknown, |p| owner_of_file(&p, &unit_crate)));
                    by_file.insert(file, lines.owners.len() - 1);
                    lines.owners.len() - 1
                }
            };
            if lines.rows.last().is_none_or(|&(_, i)| i != idx) || row.end_sequence() {
                lines.rows.push((row.address(), idx));
            }
        }
        lines.rows.sort_by_key(|r| r.0);
        lines
    }

    fn owner_at(&self, addr: u64) -> Owner {
        let i = self.rows.partition_point(|r| r.0 <= addr);
        i.checked_sub(1)
            .and_then(|i| self.owners.get(self.rows[i].1))
            .cloned()
            .unwrap_or(Owner::Unknown)
    }
}

/// The full path of file `file` of a line program.
fn file_path(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    unit: &Unit<Slice<'_>>,
    header: &gimli::LineProgramHeader<Slice<'_>>,
    file: u64,
) -> Option<String> {
    let entry = header.file(file)?;
    let name = dwarf.attr_string(unit, entry.path_name()).ok()?;
    let mut path = String::new();
    if let Some(dir) = entry.directory(header) {
        let dir = dwarf.attr_string(unit, dir).ok()?;
        path.push_str(&String::from_utf8_lossy(dir.slice()));
        path.push('/');
    }
    path.push_str(&String::from_utf8_lossy(name.slice()));
    Some(path)
}

/// The crate a unit was compiled for, from rustc's unit name
/// (`src/main.rs/@/my_app.3fa9c2-cgu.0`).
fn unit_crate_name(name: &str) -> Option<&str> {
    let after = name.rsplit_once("/@/")?.1;
    Some(after.split('.').next().unwrap_or(after))
}

/// Whose code a source file is: std's (`/rustc/<commit>/library/`), a
/// registry crate's (`.cargo/registry/src/<index>/<name>-<version>/`), or
/// the unit's own crate (the program's sources, path dependencies). A git
/// checkout names no crate: unknown, so never preempted.
fn owner_of_file(path: &str, unit_crate: &Owner) -> Owner {
    if path.contains("/rustc/") && path.contains("/library/") {
        return Owner::Std;
    }
    if let Some((_, rest)) = path.split_once("/registry/src/") {
        let Some(dir) = rest.split('/').nth(1) else {
            return Owner::Unknown;
        };
        // `<name>-<version>`: the version starts after the last `-` that
        // is followed by a digit.
        let name = dir
            .char_indices()
            .filter(|&(i, c)| c == '-' && dir[i + 1..].starts_with(|d: char| d.is_ascii_digit()))
            .map(|(i, _)| &dir[..i])
            .next_back()
            .unwrap_or(dir);
        return super::symbols::owner(&name.replace('-', "_"));
    }
    if path.contains("/git/checkouts/") {
        return Owner::Unknown;
    }
    unit_crate.clone()
}

/// Units of std's own crates (built by rustc's CI: their name is a path under
/// `library/`, their directory `/rustc/<commit>`).
fn is_std_unit(unit: &Unit<Slice<'_>>) -> bool {
    let name = unit.name.map_or(&[][..], |n| n.slice());
    let dir = unit.comp_dir.map_or(&[][..], |d| d.slice());
    let name = name.strip_prefix(dir).unwrap_or(name);
    let name = name.strip_prefix(b"/").unwrap_or(name);
    dir.starts_with(b"/rustc/")
        && [&b"library/std/"[..], b"library/core/", b"library/alloc/"]
            .iter()
            .any(|p| name.starts_with(p))
}

/// Lazily resolved classes of inlined functions, by `.debug_info` offset.
struct Origins<'d, 'a> {
    dwarf: &'d gimli::Dwarf<Slice<'a>>,
    /// Every unit header, sorted by offset.
    headers: &'d [(usize, gimli::UnitHeader<Slice<'a>>)],
    units: HashMap<usize, Option<Unit<Slice<'a>>>>,
    classes: HashMap<usize, (Class, Owner)>,
    buf: String,
}

impl Origins<'_, '_> {
    fn class(&mut self, at: usize) -> (Class, Owner) {
        if let Some(c) = self.classes.get(&at) {
            return c.clone();
        }
        // An origin whose name cannot be found is code of no known crate.
        let c = self.lookup(at, 0).unwrap_or((Class::User, Owner::Unknown));
        self.classes.insert(at, c.clone());
        c
    }

    /// Class of the subprogram DIE at `at`: from its linkage name, else from
    /// the DIE it refers to (`DW_AT_specification`, `DW_AT_abstract_origin`).
    fn lookup(&mut self, at: usize, depth: u32) -> Option<(Class, Owner)> {
        let idx = self
            .headers
            .partition_point(|(o, _)| *o <= at)
            .checked_sub(1)?;
        let (base, header) = self.headers[idx];
        let dwarf = self.dwarf;
        let unit = self
            .units
            .entry(base)
            .or_insert_with(|| dwarf.unit(header).ok())
            .as_ref()?;
        let local = gimli::DebugInfoOffset(at).to_unit_offset(&unit.header)?;
        let entry = unit.entry(local).ok()?;
        if let Some(v) = entry.attr_value(gimli::DW_AT_linkage_name) {
            let raw = dwarf.attr_string(unit, v).ok()?;
            let raw = std::str::from_utf8(raw.slice()).ok()?;
            return Some(classify_owned(raw, &mut self.buf));
        }
        let next = [gimli::DW_AT_specification, gimli::DW_AT_abstract_origin]
            .into_iter()
            .find_map(|a| global_offset(unit, entry.attr_value(a)?));
        match next {
            Some(next) if depth < 4 => self.lookup(next, depth + 1),
            _ => None,
        }
    }
}
/// A DIE reference as an offset into `.debug_info`.
fn global_offset(unit: &Unit<Slice<'_>>, v: AttributeValue<Slice<'_>>) -> Option<usize> {
    match v {
        AttributeValue::UnitRef(r) => r.to_debug_info_offset(&unit.header).map(|o| o.0),
        AttributeValue::DebugInfoRef(DebugInfoOffset(o)) => Some(o),
        _ => None,
    }
}
