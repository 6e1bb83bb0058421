//! The s390x instructions the arch layer issues, and their host stand-ins.
//!
//! Owns every `asm!` of the crate. Each instruction has two bodies:
//! - on s390x (`cfg(all(target_arch = "s390x", not(test), not(miri)))`,
//!   spelt [`HW`]), the instruction itself, which needs supervisor state;
//! - elsewhere (host `cargo test`, Miri on any target), a stand-in with the
//!   same effect on *memory*, so the logic above it runs unchanged: the
//!   IPTE/IDTE stand-in sets the entry's invalid bit, the TLB purges do
//!   nothing (there is no TLB), and the storage-key stand-ins report "no
//!   key state" so the software bits in the entry carry the accessed state.
//!
//! With `--cfg mmu_notifier_broken="no-flush"` (a deliberately broken test
//! build) the invalidations are plain stores of the invalid bit on s390x
//! too: no TLB is purged, so the QEMU suite can prove that a missing
//! invalidation is caught (QEMU keeps the stale TLB entry).

use core::sync::atomic::{AtomicU64, Ordering};

/// Whether the real instructions are compiled in.
pub(crate) const HW: bool = cfg!(all(target_arch = "s390x", not(test), not(miri)));

/// Whether invalidations purge TLBs (false only in the broken test build).
const PURGE: bool = HW && !cfg!(mmu_notifier_broken = "no-flush");

/// INVALIDATE PAGE TABLE ENTRY: sets the invalid bit (IBM 53) of `pte` and
/// purges every TLB entry formed from it, on all CPUs.
///
/// `pte_real` is the real address of `pte`. IPTE takes the page-table
/// origin from R1 bits 0–52 (so the low 11 bits of a PTE address, its
/// offset in the 2 KiB table, are cleared) and the page index from bits
/// 44–51 of R2 = `va`.
///
/// Never inlined: under QEMU TCG a global IPTE takes effect for the issuing
/// CPU at the end of the translation block, and the return ends it.
///
/// # Safety
/// 1. `pte` is the entry for `va` of a page table whose real address is
///    `pte_real & !0x7ff`, and the caller may change that entry;
/// 2. nothing the running code needs is translated by it;
/// 3. supervisor state on s390x.
#[inline(never)]
pub(crate) unsafe fn ipte(pte: &AtomicU64, pte_real: u64, va: u64) {
    if PURGE {
        #[cfg(all(target_arch = "s390x", not(test), not(miri)))]
        // SAFETY: R1 = page-table origin (real), R2 = the virtual address;
        // by the caller's contract 1 the entry IPTE writes is `pte`, which
        // is an atomic word (a hardware write to it is no data race), and
        // by 2 no running code loses its translation; 3: supervisor state.
        unsafe {
            core::arch::asm!(
                "ipte {pto},{va}",
                pto = in(reg_addr) pte_real & !0x7ff,
                va = in(reg_addr) va,
                options(nostack),
            );
        }
    } else {
        let _ = (pte_real, va);
        pte.fetch_or(
            crate::entry::PageTableEntry::INVALID.bits(),
            Ordering::AcqRel,
        );
    }
}

/// INVALIDATE DAT TABLE ENTRY, invalidation-and-clearing form, for one
/// segment-table entry: sets its invalid bit (IBM 58) and purges every TLB
/// entry formed from it (a large segment's translations included) on all
/// CPUs. The path for 1 MiB leaves (EDAT-1): **untested on QEMU**, whose
/// TCG CPU has no EDAT, so large segment entries exist there only in host
/// tests.
///
/// `ste_real` is the real address of `ste`; R1 is the segment-table origin
/// (`ste_real` minus the entry's index × 8, designation type 00 in the low
/// bits), R2 is `va` rounded down to its segment (bit 52 zero: invalidate;
/// bits 53–63 zero: one entry), R3 = 0 (no ASCE-based clearing).
///
/// # Safety
/// As [`ipte`], for a segment-table entry and its table.
#[inline(never)]
pub(crate) unsafe fn idte_segment(ste: &AtomicU64, ste_real: u64, va: u64) {
    if PURGE {
        #[cfg(all(target_arch = "s390x", not(test), not(miri)))]
        // SAFETY: the operands are the segment-table origin and the
        // segment's address as described above; IDTE writes only the
        // designated entry, `ste` (atomic), which the caller may change,
        // and purges TLBs; supervisor state per the contract.
        unsafe {
            let sto = ste_real - ((va >> 20) & 0x7ff) * 8;
            core::arch::asm!(
                ".insn rrf,0xb98e0000,{sto},{va},0,0",
                sto = in(reg_addr) sto,
                va = in(reg_addr) va & !0xf_ffff,
                options(nostack),
            );
        }
    } else {
        let _ = (ste_real, va);
        ste.fetch_or(
            crate::entry::SegmentTableEntry::INVALID.bits(),
            Ordering::AcqRel,
        );
    }
}

/// RESET REFERENCE BIT EXTENDED on the 4 KiB frame at real address `frame`:
/// whether its reference bit was set (condition code 2 or 3), which RRBE
/// then clears. Host: always `false` (no storage keys).
///
/// # Safety
/// `frame` is a real address of installed storage (else an addressing
/// exception); supervisor state on s390x.
pub(crate) unsafe fn rrbe(frame: u64) -> bool {
    #[cfg(all(target_arch = "s390x", not(test), not(miri)))]
    {
        let cc: u64;
        // SAFETY: RRBE changes only the storage key of the frame (the
        // reference bit), no memory and no register but the condition code,
        // which IPM/SRLG extract; the caller's contract covers addressing
        // and privilege.
        unsafe {
            core::arch::asm!(
                "rrbe %r0,{frame}",
                "ipm {cc}",
                "srlg {cc},{cc},28",
                frame = in(reg_addr) frame,
                cc = out(reg) cc,
                options(nostack),
            );
        }
        cc & 2 != 0
    }
    #[cfg(not(all(target_arch = "s390x", not(test), not(miri))))]
    {
        let _ = frame;
        false
    }
}

/// Storage-key reference bit (in the key byte ISKE returns).
pub(crate) const KEY_R: u8 = 0x04;
/// Storage-key change bit.
pub(crate) const KEY_C: u8 = 0x02;

/// INSERT STORAGE KEY EXTENDED: the key of the 4 KiB frame at real address
/// `frame` (ACC, F, [`KEY_R`], [`KEY_C`]). Host: 0 (no storage keys).
///
/// # Safety
/// As [`rrbe`].
pub(crate) unsafe fn iske(frame: u64) -> u8 {
    #[cfg(all(target_arch = "s390x", not(test), not(miri)))]
    {
        let key: u64;
        // SAFETY: ISKE only reads the frame's storage key into a register;
        // the caller's contract covers addressing and privilege.
        unsafe {
            core::arch::asm!(
                "iske {key},{frame}",
                key = out(reg) key,
                frame = in(reg_addr) frame,
                options(nostack, nomem, preserves_flags),
            );
        }
        key as u8
    }
    #[cfg(not(all(target_arch = "s390x", not(test), not(miri))))]
    {
        let _ = frame;
        0
    }
}

/// PURGE TLB: drops every translation in *this* CPU's TLB (not the other
/// CPUs'). Host: nothing. Safe: in problem state the CPU raises a
/// privileged-operation exception, which the kernel handles; purging a TLB
/// never breaks memory safety.
pub(crate) fn ptlb() {
    #[cfg(all(target_arch = "s390x", not(test), not(miri)))]
    // SAFETY: PTLB only empties this CPU's TLB; the tables in memory, which
    // refill it, are unchanged. Privilege is the caller's contract.
    unsafe {
        core::arch::asm!("ptlb", options(nostack, nomem, preserves_flags));
    }
}

/// COMPARE AND SWAP AND PURGE with the purge-TLB bit: drops every
/// translation (and cached region/segment entry) from the TLBs of **all**
/// CPUs of the configuration, as Linux's `__tlb_flush_global` did in 2008.
/// The compare-and-swap itself is on a local word that holds 0 and is
/// swapped with 0, so it always succeeds (a failed compare would not purge).
/// Host: nothing. Safe, as [`ptlb`].
pub(crate) fn purge_all_cpus() {
    #[cfg(all(target_arch = "s390x", not(test), not(miri)))]
    {
        let mut word: u32 = 0;
        // SAFETY: CSP compares `word` (4-byte aligned, on our stack, 0) with
        // the low half of r2 (0), stores the low half of r3 (0) into it and,
        // since R2 bit 63 is set, purges the TLB of every CPU. It writes only
        // `word` and the condition code; privilege is the caller's contract.
        unsafe {
            core::arch::asm!(
                "csp %r2,{addr}",
                addr = in(reg_addr) (&mut word as *mut u32 as u64) | 1,
                inout("r2") 0u64 => _,
                in("r3") 0u64,
                options(nostack),
            );
        }
    }
}
