//! Program checks: the handler, and the probes that let a test take a DAT
//! exception and look at it instead of dying.
//!
//! A probe is one load or store between two points that the handler knows:
//! before the access the probe stores the address of its fix-up label in
//! the lowcore ([`lowcore::PROBE_FIXUP`]); a program check while that is
//! non-zero records the interruption code, ILC and TEID in the lowcore,
//! clears the fix-up and resumes the old PSW *at the fix-up* with all
//! registers restored. Resuming at the fix-up (not at the old PSW address)
//! makes the difference between nullifying exceptions (translation: the
//! PSW points at the access) and suppressing/terminating ones (protection:
//! the PSW points after it) irrelevant.
//!
//! Any program check outside a probe, and any probe fault whose code is not
//! a DAT or addressing exception, is fatal: one diagnostic line, then a
//! failing exit.
//!
//! All state is in the lowcore (per CPU through prefixing). Owns the
//! program new PSW's target and the lowcore software area.

use crate::lowcore;

/// Program-interruption codes a probe may return.
pub mod code {
    /// Protection (DAT protection: a store to a page or segment with the
    /// protect bit, or key-controlled protection).
    pub const PROTECTION: u16 = 0x04;
    /// Addressing: the real address is outside configured memory.
    pub const ADDRESSING: u16 = 0x05;
    /// Segment translation: the segment-table entry is invalid.
    pub const SEGMENT_TRANSLATION: u16 = 0x10;
    /// Page translation: the page-table entry is invalid.
    pub const PAGE_TRANSLATION: u16 = 0x11;
    /// Translation specification: a malformed table entry.
    pub const TRANSLATION_SPECIFICATION: u16 = 0x12;
    /// ASCE type: the address exceeds what the ASCE's table type covers.
    pub const ASCE_TYPE: u16 = 0x38;
    /// Region-first translation: the region-first-table entry is invalid
    /// (or outside the table length).
    pub const REGION_FIRST_TRANSLATION: u16 = 0x39;
    /// Region-second translation.
    pub const REGION_SECOND_TRANSLATION: u16 = 0x3a;
    /// Region-third translation.
    pub const REGION_THIRD_TRANSLATION: u16 = 0x3b;
}

/// A program interruption taken by a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Program-interruption code (see [`code`]).
    pub code: u16,
    /// For translation and protection exceptions: the failing address from
    /// the TEID, which holds it at page granularity (low 12 bits zero).
    /// For an addressing exception (no TEID): the probed address, rounded
    /// down to its page.
    pub addr: u64,
}

/// Everything the handler recorded about the last probe fault on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultRecord {
    /// Program-interruption code, as stored (PER and transaction bits included).
    pub code: u16,
    /// Length of the faulting instruction in bytes (ILC * 2).
    pub ilc: u8,
    /// The raw translation-exception identification.
    pub teid: u64,
}

/// What the handler recorded for the most recent probe fault on this CPU.
pub fn last_fault() -> FaultRecord {
    FaultRecord {
        code: lowcore::read_u16(lowcore::PROBE_CODE),
        ilc: lowcore::read_u8(lowcore::PROBE_ILC),
        teid: lowcore::read_u64(lowcore::PROBE_TEID),
    }
}

// The handler, entered with DAT off (program new PSW) and r0-r15 as at the
// interruption. It runs on no stack while deciding, because a probe may
// have been interrupted anywhere; the fatal path switches to its own stack.
core::arch::global_asm!(
    ".section .text.harness_pgm,\"ax\",@progbits",
    ".balign 8",
    ".globl __harness_pgm_entry",
    "__harness_pgm_entry:",
    "    stmg %r0,%r15,{save}",
    "    lg %r1,{fixup}",
    "    ltgr %r1,%r1",
    "    jz 0f",
    // Inside a probe: one fault per probe, so clear the fix-up first.
    "    mvghi {fixup},0",
    "    llgh %r2,{pgm_code}",
    "    sth %r2,{probe_code}",
    "    llgc %r2,{pgm_ilc}",
    "    stc %r2,{probe_ilc}",
    "    lg %r2,{teid}",
    "    stg %r2,{probe_teid}",
    // Resume at the fix-up, with the interrupted PSW's mask (DAT, key...).
    "    stg %r1,{old_psw}+8",
    "    lmg %r0,%r15,{save}",
    "    lpswe {old_psw}",
    "0:",
    // This CPU's own fatal stack (lowcore, so per CPU through prefixing).
    "    lg %r15,{fatal_stack}",
    "    aghi %r15,-160",
    "    lghi %r0,0",
    "    stg %r0,0(%r15)",
    "    brasl %r14,{fatal}",
    "    j 0b",
    save = const lowcore::SAVE_AREA,
    fixup = const lowcore::PROBE_FIXUP,
    pgm_code = const lowcore::PGM_CODE,
    pgm_ilc = const lowcore::PGM_ILC,
    teid = const lowcore::TEID,
    probe_code = const lowcore::PROBE_CODE,
    probe_ilc = const lowcore::PROBE_ILC,
    probe_teid = const lowcore::PROBE_TEID,
    old_psw = const lowcore::PGM_OLD_PSW,
    fatal_stack = const lowcore::FATAL_STACK_TOP,
    fatal = sym pgm_fatal,
);

extern "C" {
    /// The handler above; only its address is used (program new PSW).
    fn __harness_pgm_entry();
}

/// Address of the program-check handler, for the program new PSW.
pub(crate) fn handler_address() -> u64 {
    __harness_pgm_entry as *const () as usize as u64
}

/// A program check nobody expected: report it and fail the run.
extern "C" fn pgm_fatal() -> ! {
    // A program check in here must not loop back: make the next one a
    // plain failing wait (its address shows 0x1d0, the program new PSW).
    let psw = qemu_exit_s390x::S390x::wait_psw(0x1d0);
    // SAFETY: replacing the program new PSW with a disabled wait; every
    // later program check then stops the machine, which is what we want
    // while reporting a fatal one.
    unsafe {
        lowcore::write_u64(lowcore::PROGRAM_NEW_PSW, psw.mask);
        lowcore::write_u64(lowcore::PROGRAM_NEW_PSW + 8, psw.addr);
    }
    let code = lowcore::read_u16(lowcore::PGM_CODE);
    crate::fatal(
        format_args!(
            "unexpected program check: code {:#06x} ilc {} teid {:#018x} old PSW {:#018x} {:#018x} r14 {:#x} r15 {:#x}",
            code,
            lowcore::read_u8(lowcore::PGM_ILC),
            lowcore::read_u64(lowcore::TEID),
            lowcore::read_u64(lowcore::PGM_OLD_PSW),
            lowcore::read_u64(lowcore::PGM_OLD_PSW + 8),
            lowcore::read_u64(lowcore::SAVE_AREA + 14 * 8),
            lowcore::read_u64(lowcore::SAVE_AREA + 15 * 8),
        ),
        u32::from(code),
    )
}

/// Turns the handler's record into a [`Fault`], or ends the run if the
/// code is not one a probe may take.
fn fault(va: u64) -> Fault {
    let rec = last_fault();
    let base = rec.code & 0x7f; // without the PER (0x80) bit
    let addr = match base {
        code::PROTECTION
        | code::SEGMENT_TRANSLATION
        | code::PAGE_TRANSLATION
        | code::ASCE_TYPE
        | code::REGION_FIRST_TRANSLATION
        | code::REGION_SECOND_TRANSLATION
        | code::REGION_THIRD_TRANSLATION => rec.teid & !0xfff,
        code::ADDRESSING | code::TRANSLATION_SPECIFICATION => va & !0xfff,
        _ => crate::fatal(
            format_args!(
                "probe of {va:#x}: program check {:#06x} (ilc {}, teid {:#x}) is not a DAT exception",
                rec.code, rec.ilc, rec.teid
            ),
            u32::from(rec.code),
        ),
    };
    Fault { code: base, addr }
}

/// Reads the doubleword at virtual address `va` in the current primary
/// space; a program interruption (translation, protection, addressing)
/// comes back as a [`Fault`] instead of ending the run.
///
/// Never inlined: the call ends a TCG translation block, so a global IPTE
/// issued before it is already in effect (see [`crate::dat::ipte`]).
///
/// # Errors
///
/// The [`Fault`] the access took.
#[inline(never)]
pub fn probe_read(va: u64) -> Result<u64, Fault> {
    let value: u64;
    let ok: u64;
    // SAFETY: the only memory this touches outside the lowcore software
    // area is the 8 bytes at `va`, read through DAT: either the read
    // succeeds (reading memory the test mapped there; no Rust object is
    // reached through the test window) or it faults, and the handler
    // resumes at label 1 with every register restored, where `ok` is still
    // 0. LARL/STG arm the fix-up, the final STG disarms it (the handler has
    // already cleared it after a fault).
    unsafe {
        core::arch::asm!(
            "larl {t},1f",
            "stg {t},{fixup}",
            "lghi {ok},0",
            "lg {value},0({va})",
            "lghi {ok},1",
            "1:",
            "lghi {t},0",
            "stg {t},{fixup}",
            t = out(reg) _,
            ok = out(reg) ok,
            value = out(reg) value,
            va = in(reg_addr) va,
            fixup = const lowcore::PROBE_FIXUP,
            options(nostack),
        )
    };
    if ok == 1 {
        Ok(value)
    } else {
        Err(fault(va))
    }
}

/// Stores `value` to the doubleword at virtual address `va` in the current
/// primary space; a program interruption comes back as a [`Fault`].
///
/// Only for the test window: it holds no Rust objects, so a store there
/// cannot break one, whereas a store below it (the identity map) could.
///
/// # Errors
///
/// The [`Fault`] the access took.
///
/// # Panics
///
/// If `va` is below [`TEST_WINDOW`](crate::dat::TEST_WINDOW).
#[inline(never)]
pub fn probe_write(va: u64, value: u64) -> Result<(), Fault> {
    assert!(
        va >= crate::dat::TEST_WINDOW,
        "probe_write({va:#x}): below the test window, it would write kernel memory"
    );
    let ok: u64;
    // SAFETY: as in `probe_read`, for a store of 8 bytes at `va` in the
    // test window (checked above), where no Rust object lives.
    unsafe {
        core::arch::asm!(
            "larl {t},1f",
            "stg {t},{fixup}",
            "lghi {ok},0",
            "stg {value},0({va})",
            "lghi {ok},1",
            "1:",
            "lghi {t},0",
            "stg {t},{fixup}",
            t = out(reg) _,
            ok = out(reg) ok,
            value = in(reg) value,
            va = in(reg_addr) va,
            fixup = const lowcore::PROBE_FIXUP,
            options(nostack),
        )
    };
    if ok == 1 {
        Ok(())
    } else {
        Err(fault(va))
    }
}
