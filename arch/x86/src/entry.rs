//! The x86-64 paging-entry format: one flag per architectural bit, and the
//! address field.
//!
//! The same 64-bit layout serves every level (PML5/PML4, PDPT, PD, PT);
//! only bit 7 changes meaning (PS above the last level, PAT on a 4 KiB
//! leaf), and on a 2 MiB or 1 GiB leaf bit 12 is PAT rather than an
//! address bit. Bits without a flag here (protection keys 59..=62,
//! software bits 52..=58, the large-page PAT bit 12) are kept by
//! [`PteFlags::from_bits_retain`], so reading a hardware word never loses
//! them.

use core::fmt;

use bitflags::bitflags;

/// The address field of a paging entry: physical-address bits 12..=51 (the
/// architectural maximum MAXPHYADDR of 52). A table pointer or 4 KiB frame
/// uses all of it; a 2 MiB leaf only bits 21..=51 (bit 12 is its PAT bit),
/// a 1 GiB leaf bits 30..=51.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// The flag bits of an x86-64 paging entry (any level).
///
/// A `#[repr(transparent)]` newtype over the raw word so that it can derive
/// traits (`defmt::Format`) that `bitflags!` cannot. Build it from a
/// hardware word with [`from_bits_retain`](Self::from_bits_retain): the
/// address field and any bit without a name are kept as they are.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(transparent)]
pub struct PteFlags(u64);

bitflags! {
    impl PteFlags: u64 {
        /// P, bit 0: the entry translates (or points to a table); clear, the
        /// hardware ignores every other bit and an access faults.
        const PRESENT = 1 << 0;
        /// R/W, bit 1: writes allowed (with CR0.WP, also for supervisor code).
        const WRITABLE = 1 << 1;
        /// U/S, bit 2: user-mode (CPL 3) accesses allowed.
        const USER = 1 << 2;
        /// PWT, bit 3: write-through caching (a PAT index bit).
        const WRITE_THROUGH = 1 << 3;
        /// PCD, bit 4: caching disabled (a PAT index bit).
        const CACHE_DISABLE = 1 << 4;
        /// A, bit 5: set by the hardware walker when the entry is used for
        /// a translation (the "young" bit); cleared only by software.
        const ACCESSED = 1 << 5;
        /// D, bit 6 (leaves only): set by the hardware on the first write
        /// through this translation; cleared only by software.
        const DIRTY = 1 << 6;
        /// Bit 7 has two meanings. In a PDPTE or PDE it is PS: the entry is
        /// a leaf mapping a 1 GiB or 2 MiB page instead of pointing to a
        /// table. In a 4 KiB leaf (PTE) it is the PAT index bit. It is
        /// reserved in a PML4E/PML5E.
        const HUGE_PAGE = 1 << 7;
        /// G, bit 8 (leaves only, with CR4.PGE): the translation survives a
        /// CR3 reload. This crate never sets it: user mappings must be
        /// purged by an address-space switch.
        const GLOBAL = 1 << 8;
        /// Bit 9, ignored by the hardware, free for the kernel; this crate
        /// neither sets nor reads it and keeps it across protection changes
        /// (Linux: `_PAGE_SPECIAL`).
        const SOFTWARE_9 = 1 << 9;
        /// Bit 10, ignored by the hardware, free for the kernel; this crate
        /// neither sets nor reads it and keeps it across protection changes
        /// (Linux: `_PAGE_UFFD_WP`).
        const SOFTWARE_10 = 1 << 10;
        /// Bit 11, ignored by the hardware, free for the kernel; this crate
        /// neither sets nor reads it and keeps it across protection changes
        /// (Linux: `_PAGE_SOFT_DIRTY`).
        const SOFTWARE_11 = 1 << 11;
        /// XD/NX, bit 63: instruction fetches fault. Reserved (the walk
        /// faults) unless EFER.NXE is set: a kernel using this crate must
        /// set EFER.NXE.
        const NO_EXECUTE = 1 << 63;
    }
}

impl PteFlags {
    /// The address field of the word (bits 12..=51, unmasked by page size).
    pub const fn addr_bits(self) -> u64 {
        self.0 & ADDR_MASK
    }
}

impl fmt::Debug for PteFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PteFlags(")?;
        if self.is_empty() {
            f.write_str("0x0")?;
        } else {
            bitflags::parser::to_writer(self, &mut *f)?;
        }
        f.write_str(")")
    }
}
