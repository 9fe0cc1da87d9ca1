//! Stepping out of a frame of the executable's own code with its unwind
//! tables, from inside the signal handler.
//!
//! The safe-point walk (`safepoint.rs`) must see every frame between the
//! interrupted instruction and the task's root. Frame pointers cannot be
//! trusted for that: Rust's default build has none, and a function built
//! without them leaves whatever it likes in `rbp`. `.eh_frame` can: it is in
//! every Rust executable on x86_64 Linux (panics unwind with it), and LLVM
//! emits it precisely for every instruction ("asynchronous" unwind tables),
//! prologues and epilogues included.
//!
//! The handler may not allocate or evaluate a CFI program, so the rows are
//! evaluated once, at start-up, into a sorted table: "from this PC on, the
//! frame's CFA is `rsp + n` (or `rbp + n`), the return address is at
//! `CFA - 8`, and the caller's `rbp` is saved at `CFA + m` (or untouched)".
//! Only functions the code map does not deny get rows (denied code ends the
//! walk anyway), so the table stays small. A row whose rules are anything
//! else (a CFA from another register or an expression, a return address
//! not at `CFA - 8`) is kept as a hole: the walk defers there.

use gimli::{
    BaseAddresses, CfaRule, EhFrame, LittleEndian, RegisterRule, UnwindContext, UnwindSection,
    X86_64,
};

/// How the CFA of a row is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Base {
    /// No usable rule here (a gap between functions, or rules we do not
    /// evaluate): the walk defers.
    Hole,
    Rsp,
    Rbp,
}

/// One row, valid from `pc` up to the next row's `pc`.
#[derive(Clone, Copy, Debug)]
struct Row {
    pc: usize,
    cfa_off: i32,
    /// Where the caller's `rbp` is saved, relative to the CFA; `None`: the
    /// function has not touched `rbp` (it still holds the caller's).
    rbp_off: Option<i16>,
    base: Base,
    /// The first row of a function (of its FDE).
    first: bool,
}

/// The registers the walk tracks, for one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Regs {
    pub pc: usize,
    pub sp: usize,
    pub fp: usize,
}

/// What one step out of a frame found: the caller's registers, and where
/// the return address was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Step {
    /// The caller's `pc` is the return address; `sp` is the frame's CFA.
    pub caller: Regs,
    /// Address of the return-address slot (`CFA - 8`).
    pub slot: usize,
}

/// Unwind rows of the executable's preemptible code, sorted by address.
#[derive(Default)]
pub(crate) struct UnwindTable {
    rows: Box<[Row]>,
    fdes: usize,
}

impl UnwindTable {
    /// Evaluate the FDEs of `eh_frame` (its contents and link-time address)
    /// whose function starts at an address `want` accepts. `bias` relocates
    /// link-time addresses.
    pub(crate) fn build(
        eh_frame: &[u8],
        eh_addr: u64,
        bias: usize,
        want: impl Fn(usize) -> bool,
    ) -> UnwindTable {
        let eh = EhFrame::new(eh_frame, LittleEndian);
        let bases = BaseAddresses::default().set_eh_frame(eh_addr);
        let mut ctx = UnwindContext::new();
        let mut rows: Vec<Row> = Vec::new();
        let mut fdes = 0;
        let mut entries = eh.entries(&bases);
        while let Ok(Some(entry)) = entries.next() {
            let gimli::CieOrFde::Fde(partial) = entry else {
                continue;
            };
            let Ok(fde) = partial.parse(EhFrame::cie_from_offset) else {
                continue;
            };
            let start = (fde.initial_address() as usize).wrapping_add(bias);
            let end = start.wrapping_add(fde.len() as usize);
            if fde.len() == 0 || !want(start) {
                continue;
            }
            let Ok(mut table) = fde.rows(&eh, &bases, &mut ctx) else {
                continue;
            };
            fdes += 1;
            let at = rows.len();
            while let Ok(Some(row)) = table.next_row() {
                let pc = (row.start_address() as usize).wrapping_add(bias);
                rows.push(evaluate(pc, row));
            }
            if let Some(r) = rows.get_mut(at) {
                r.first = true;
            }
            // Past the function: nothing, unless another FDE starts here.
            rows.push(Row {
                pc: end,
                cfa_off: 0,
                rbp_off: None,
                base: Base::Hole,
                first: false,
            });
        }
        // FDEs come in section order, not address order. At equal addresses
        // a function's first row must win over the previous one's end.
        rows.sort_by_key(|r| (r.pc, r.base != Base::Hole));
        rows.dedup_by(|later, earlier| {
            // `dedup_by` passes (later, earlier): keep the last of a run of
            // equal addresses, which sorts after the holes.
            if later.pc == earlier.pc {
                *earlier = *later;
                true
            } else {
                false
            }
        });
        UnwindTable {
            rows: rows.into(),
            fdes,
        }
    }

    /// Step out of the frame whose registers are `at`: compute its CFA,
    /// read the return address and the caller's `rbp`. `None` if the PC
    /// has no usable row or a slot falls outside `[at.sp, hi)`.
    /// Signal-safe: a binary search and at most two reads, each bounded.
    ///
    /// # Safety
    /// `[at.sp, hi)` must be readable memory (the task's stack, or a test's
    /// buffer).
    #[inline]
    pub(crate) unsafe fn step(&self, at: Regs, hi: usize) -> Option<Step> {
        self.step_with(at, hi, |addr| {
            // SAFETY: `step_with` reads only words inside `[at.sp, hi)`,
            // which our caller vouches for.
            Some(unsafe { (addr as *const usize).read_volatile() })
        })
    }

    /// [`step`](Self::step), reading the stack words it needs (each inside
    /// `[at.sp, hi)`) with `read`: a copy of another thread's stack, for
    /// diagnostics. A row based on `rbp` when `at.fp` is 0 (unknown) is
    /// not followed.
    #[inline]
    pub(crate) fn step_with(
        &self,
        at: Regs,
        hi: usize,
        read: impl Fn(usize) -> Option<usize>,
    ) -> Option<Step> {
        let i = self
            .rows
            .partition_point(|r| r.pc <= at.pc)
            .checked_sub(1)?;
        let row = self.rows.get(i)?;
        let base = match row.base {
            Base::Hole => return None,
            Base::Rsp => at.sp,
            Base::Rbp if at.fp == 0 => return None,
            Base::Rbp => at.fp,
        };
        let cfa = base.checked_add_signed(row.cfa_off as isize)?;
        // The CFA is above the frame's own stack pointer (a call pushed the
        // return address below it), and the slots read lie inside the stack.
        let slot = cfa.checked_sub(8)?;
        if slot < at.sp || cfa > hi || !cfa.is_multiple_of(8) {
            return None;
        }
        let ra = read(slot)?;
        let fp = match row.rbp_off {
            None => at.fp,
            Some(off) => {
                let saved = cfa.checked_add_signed(off as isize)?;
                if saved < at.sp || saved.checked_add(8)? > hi {
                    return None;
                }
                read(saved)?
            }
        };
        Some(Step {
            caller: Regs {
                pc: ra,
                sp: cfa,
                fp,
            },
            slot,
        })
    }

    /// Whether `a <= b` lie in one function: usable rows all the way from
    /// `a` to `b`, none of them (after `a`'s) the first of a function.
    pub(crate) fn same_function(&self, a: usize, b: usize) -> bool {
        let lo = self.rows.partition_point(|r| r.pc <= a);
        let hi = self.rows.partition_point(|r| r.pc <= b);
        lo > 0
            && lo <= hi
            && self.rows[lo - 1..hi].iter().all(|r| r.base != Base::Hole)
            && self.rows[lo..hi].iter().all(|r| !r.first)
    }

    /// Whether `pc` has a usable row.
    pub(crate) fn covers(&self, pc: usize) -> bool {
        let i = self.rows.partition_point(|r| r.pc <= pc);
        i.checked_sub(1)
            .and_then(|i| self.rows.get(i))
            .is_some_and(|r| r.base != Base::Hole)
    }

    /// Some PC whose row is the frame-pointer kind (`CFA = rbp + 16`, the
    /// caller's `rbp` at `CFA - 16`) and that `ok` accepts (tests build
    /// synthetic stacks with it).
    #[cfg(test)]
    pub(crate) fn frame_pointer_pc(&self, ok: impl Fn(usize) -> bool) -> Option<usize> {
        self.rows.windows(2).find_map(|w| {
            let (r, next) = (w[0], w[1]);
            let fp = r.base == Base::Rbp && r.cfa_off == 16 && r.rbp_off == Some(-16);
            (fp && next.pc > r.pc + 2 && ok(r.pc)).then_some(r.pc)
        })
    }

    /// FDEs evaluated (diagnostics).
    pub(crate) fn fdes(&self) -> usize {
        self.fdes
    }

    /// Rows kept (diagnostics).
    pub(crate) fn rows(&self) -> usize {
        self.rows.len()
    }
}

/// One evaluated CFI row in the table's form (a hole if its rules are not
/// the plain register-plus-offset kind).
fn evaluate(pc: usize, row: &gimli::UnwindTableRow<usize>) -> Row {
    let hole = Row {
        pc,
        cfa_off: 0,
        rbp_off: None,
        base: Base::Hole,
        first: false,
    };
    let CfaRule::RegisterAndOffset { register, offset } = *row.cfa() else {
        return hole;
    };
    let base = match register {
        X86_64::RSP => Base::Rsp,
        X86_64::RBP => Base::Rbp,
        _ => return hole,
    };
    let Ok(cfa_off) = i32::try_from(offset) else {
        return hole;
    };
    // The return address: on x86_64 always the slot just below the CFA,
    // which the walk assumes; a row that says otherwise is not walked.
    if row.register(X86_64::RA) != Some(RegisterRule::Offset(-8)) {
        return hole;
    }
    let rbp_off = match row.register(X86_64::RBP) {
        None | Some(RegisterRule::Undefined | RegisterRule::SameValue) => None,
        Some(RegisterRule::Offset(n)) => match i16::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => return hole,
        },
        _ => return hole,
    };
    Row {
        pc,
        cfa_off,
        rbp_off,
        base,
        first: false,
    }
}
