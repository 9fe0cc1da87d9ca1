//! Reading mangled Rust symbol names just far enough to apply the deny
//! rules of `symbols.rs`: the first path elements of a legacy (`_ZN`) name,
//! and the crate and first child of a v0 (`_R`) path, generic impls
//! included. Names it cannot read fall back to full demangling.

/// Legacy-mangling `$..$` escapes (besides `$uXX$` hex code points).
const LEGACY_ESCAPES: [(&str, char); 8] = [
    ("SP", '@'),
    ("BP", '*'),
    ("RF", '&'),
    ("LT", '<'),
    ("GT", '>'),
    ("LP", '('),
    ("RP", ')'),
    ("C", ','),
];

/// Legacy mangling: decode the first (at most two) path elements into `buf`.
pub(super) fn legacy_head(mut s: &str, buf: &mut String) -> Option<()> {
    buf.clear();
    for n in 0..2 {
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || buf.starts_with('<') {
            break;
        }
        let len: usize = s.get(..digits)?.parse().ok()?;
        let ident = s.get(digits..digits.checked_add(len)?)?;
        s = s.get(digits + len..)?;
        buf.push_str(if n > 0 { "::" } else { "" });
        let mut rest = ident
            .strip_prefix('_')
            .filter(|r| r.starts_with('$'))
            .unwrap_or(ident);
        while let Some(i) = rest.bytes().position(|b| b == b'$' || b == b'.') {
            buf.push_str(&rest[..i]);
            rest = &rest[i..];
            if let Some(r) = rest.strip_prefix('.') {
                let dots = r.starts_with('.');
                buf.push_str(if dots { "::" } else { "." });
                rest = if dots { &r[1..] } else { r };
                continue;
            }
            let Some((esc, after)) = rest[1..].split_once('$') else {
                break;
            };
            let hex = esc
                .strip_prefix('u')
                .filter(|h| h.bytes().all(|b| b"0123456789abcdef".contains(&b)));
            let c = LEGACY_ESCAPES
                .iter()
                .find(|e| e.0 == esc)
                .map(|e| e.1)
                .or_else(|| {
                    let c = char::from_u32(u32::from_str_radix(hex?, 16).ok()?)?;
                    (!c.is_control()).then_some(c)
                });
            let Some(c) = c else { break };
            buf.push(c);
            rest = after;
        }
        buf.push_str(rest);
    }
    Some(())
}

/// The deny rule for a path starting `krate::child` (`symbols::head_denied`;
/// a parameter so that the parser does not depend on the rules).
pub(super) type Rule = fn(&[u8], Option<&[u8]>) -> bool;

/// Leading path of a v0 path/type: crate and first child, or a decision.
#[derive(Clone, Copy)]
pub(super) enum Head<'a> {
    Path(&'a [u8], Option<&'a [u8]>),
    Done(bool),
}

impl Head<'_> {
    pub(super) fn denied(self, rule: Rule) -> bool {
        match self {
            Head::Path(krate, child) => rule(krate, child),
            Head::Done(denied) => denied,
        }
    }
}

/// Minimal v0 (`_R`) parser following `rustc_demangle`'s grammar. It only
/// extracts heads; parts that cannot affect them (generic arguments, impl
/// paths, consts, fn signatures) are skipped without following backrefs.
pub(super) struct V0<'a> {
    s: &'a [u8],
    pos: usize,
    depth: u32,
    skipping: bool,
    rule: Rule,
}

type Parsed<'a> = Option<Head<'a>>;
const NONE: Head<'static> = Head::Done(false);

impl<'a> V0<'a> {
    pub(super) fn new(mangled: &'a str, rule: Rule) -> Self {
        V0 {
            s: mangled.as_bytes(),
            pos: 0,
            depth: 0,
            skipping: false,
            rule,
        }
    }
    fn next(&mut self) -> Option<u8> {
        let b = *self.s.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }
    fn eat(&mut self, b: u8) -> bool {
        let hit = self.s.get(self.pos) == Some(&b);
        self.pos += usize::from(hit);
        hit
    }
    fn int62(&mut self) -> Option<usize> {
        let mut x = 0usize;
        if self.eat(b'_') {
            return Some(0);
        }
        loop {
            let d = match self.next()? {
                d @ b'0'..=b'9' => d - b'0',
                d @ b'a'..=b'z' => d - b'a' + 10,
                d @ b'A'..=b'Z' => d - b'A' + 36,
                b'_' => return x.checked_add(1),
                _ => return None,
            };
            x = x.checked_mul(62)?.checked_add(usize::from(d))?;
        }
    }
    fn opt_int62(&mut self, tag: u8) -> Option<usize> {
        if self.eat(tag) {
            self.int62()?.checked_add(1)
        } else {
            Some(0)
        }
    }
    fn ident(&mut self) -> Option<&'a [u8]> {
        self.eat(b'u');
        let (start, mut len) = (self.pos, 0usize);
        while let Some(&d @ b'0'..=b'9') = self.s.get(self.pos) {
            self.pos += 1;
            len = len.checked_mul(10)?.checked_add(usize::from(d - b'0'))?;
            if len == 0 {
                break;
            }
        }
        if self.pos == start {
            return None;
        }
        self.eat(b'_');
        let ident = self.s.get(self.pos..self.pos.checked_add(len)?)?;
        self.pos += len;
        Some(ident)
    }
    fn hex(&mut self) -> Parsed<'a> {
        while !self.eat(b'_') {
            self.next()
                .filter(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))?;
        }
        Some(NONE)
    }
    /// Runs `f` one level deeper (bounded), optionally in skipping mode.
    fn nest(&mut self, skip: bool, f: impl FnOnce(&mut Self) -> Parsed<'a>) -> Parsed<'a> {
        if self.depth >= 200 {
            return None;
        }
        let saved = self.skipping;
        (self.depth, self.skipping) = (self.depth + 1, saved || skip);
        let r = f(self);
        (self.depth, self.skipping) = (self.depth - 1, saved);
        r
    }
    fn skip_until_e(&mut self, f: fn(&mut Self) -> Parsed<'a>) -> Parsed<'a> {
        while !self.eat(b'E') {
            self.nest(true, f)?;
        }
        Some(NONE)
    }
    fn backref(&mut self, f: fn(&mut Self) -> Parsed<'a>) -> Parsed<'a> {
        let at = self.pos.checked_sub(1)?;
        let target = self.int62().filter(|&t| t < at)?;
        if self.skipping {
            return Some(NONE);
        }
        let saved = std::mem::replace(&mut self.pos, target);
        let r = self.nest(false, f);
        self.pos = saved;
        r
    }
    fn generic_arg(&mut self) -> Parsed<'a> {
        match self.next()? {
            b'L' => self.int62().map(|_| NONE),
            b'K' => self.konst(),
            _ => {
                self.pos -= 1;
                self.ty()
            }
        }
    }
    pub(super) fn path(&mut self) -> Parsed<'a> {
        self.nest(false, |p| match p.next()? {
            b'C' => Some(Head::Path(p.opt_int62(b's').and_then(|_| p.ident())?, None)),
            b'N' => {
                let ns = p.next().filter(u8::is_ascii_alphabetic)?;
                let inner = p.path()?;
                let id = p.opt_int62(b's').and_then(|_| p.ident())?;
                Some(match inner {
                    Head::Path(c, None) if ns.is_ascii_uppercase() => Head::Path(c, Some(b"{")),
                    Head::Path(c, None) if !id.is_empty() => Head::Path(c, Some(id)),
                    head => head,
                })
            }
            tag @ (b'M' | b'X' | b'Y') => {
                if tag != b'Y' {
                    p.opt_int62(b's')?;
                    p.nest(true, Self::path)?;
                }
                let self_ty = p.ty()?.denied(p.rule);
                Some(Head::Done(
                    self_ty | (tag != b'M' && p.path()?.denied(p.rule)),
                ))
            }
            b'I' => p
                .path()
                .filter(|_| p.skip_until_e(Self::generic_arg).is_some()),
            b'B' => p.backref(Self::path),
            _ => None,
        })
    }
    fn ty(&mut self) -> Parsed<'a> {
        self.eat(b'w');
        let tag = self.next()?;
        if b"bceuaslxnihtmyojfdzpv".contains(&tag) {
            return Some(NONE);
        }
        self.nest(false, |p| match tag {
            b'R' | b'Q' => p.opt_int62(b'L').and_then(|_| p.ty()),
            b'P' | b'O' | b'S' => p.ty(),
            b'A' => p.ty().filter(|_| p.konst().is_some()),
            b'T' => p.skip_until_e(Self::ty),
            b'F' => {
                p.opt_int62(b'G')?;
                p.eat(b'U');
                if p.eat(b'K') && !p.eat(b'C') {
                    p.ident()?;
                }
                p.skip_until_e(Self::ty)?;
                p.nest(true, Self::ty).map(|_| NONE)
            }
            b'D' => {
                let binder = p.opt_int62(b'G')?;
                let mut first = None;
                while !p.eat(b'E') {
                    let head = p.nest(first.is_some() || binder > 0, Self::path)?;
                    first = first.or(Some(head));
                    while p.eat(b'p') {
                        p.ident()?;
                        p.nest(true, Self::generic_arg)?;
                    }
                }
                if !p.eat(b'L') {
                    return None;
                }
                p.int62()?;
                Some(first.filter(|_| binder == 0).unwrap_or(NONE))
            }
            b'B' => p.backref(Self::ty),
            b'W' => None, // Pattern types: left to rustc_demangle.
            _ => {
                p.pos -= 1;
                p.path()
            }
        })
    }
    fn konst(&mut self) -> Parsed<'a> {
        self.nest(true, |p| match p.next()? {
            b'p' => Some(NONE),
            b'h' | b't' | b'm' | b'y' | b'o' | b'j' | b'b' | b'c' | b'e' => p.hex(),
            b'a' | b's' | b'l' | b'x' | b'n' | b'i' => {
                p.eat(b'n');
                p.hex()
            }
            b'R' if p.eat(b'e') => p.hex(),
            b'R' | b'Q' => p.konst(),
            b'A' | b'T' => p.skip_until_e(Self::konst),
            b'V' => {
                p.path()?;
                match p.next()? {
                    b'U' => Some(NONE),
                    b'T' => p.skip_until_e(Self::konst),
                    b'S' => p.skip_until_e(|p| {
                        p.opt_int62(b's')?;
                        p.ident()?;
                        p.konst()
                    }),
                    _ => None,
                }
            }
            b'B' => p.backref(Self::konst),
            _ => None,
        })
    }
}
