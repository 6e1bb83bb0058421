//! Dynamic address translation: the kernel's identity map, address-space
//! switching, and the TLB instructions tests need.
//!
//! The kernel's map is a region-first table whose entry 0 leads, through
//! one region-second, one region-third and one segment table, to page
//! tables identity-mapping `0..IDENTITY_MAP_END` with 4 KiB pages (QEMU has
//! no EDAT under TCG, so no 1 MiB segments). Everything else (region-first
//! entries 1..2047, i.e. from [`TEST_WINDOW`] up) belongs to the tests:
//! [`activate`] shares entry 0 with any root the tests build.
//!
//! Owns the kernel's tables; must not touch the test window.

use crate::frame::alloc_aligned;

/// First virtual address the tests own: region-first entry 1.
pub const TEST_WINDOW: u64 = 1 << 53;
/// End of the identity map (and of the frame pool). 128 MiB is QEMU's
/// default RAM size; the runner gives the guest 256 MiB.
pub const IDENTITY_MAP_END: u64 = 128 << 20;

/// Entries of a region or segment table (16 KiB, 4 KiB-aligned).
pub const TABLE_ENTRIES: usize = 2048;
/// Bytes of a region or segment table.
pub const TABLE_SIZE: u64 = 2048 * 8;
/// Alignment of a region or segment table.
pub const TABLE_ALIGN: u64 = 4096;
/// Entries of a page table (2 KiB, 2 KiB-aligned).
pub const PT_ENTRIES: usize = 256;
/// Bytes of a page table.
pub const PT_SIZE: u64 = 256 * 8;
/// Alignment of a page table.
pub const PT_ALIGN: u64 = 2048;

/// Region- and segment-table entry: invalid (bit 58).
pub const TABLE_INVALID: u64 = 0x20;
/// Region-table entry: table length 3, the next-lower table is full-size.
pub const TABLE_LENGTH_FULL: u64 = 0x3;
/// Segment-table entry: segment protection (bit 54).
pub const SEGMENT_PROTECT: u64 = 0x200;
/// Page-table entry: invalid (bit 53).
pub const PTE_INVALID: u64 = 0x400;
/// Page-table entry: page protection (bit 54).
pub const PTE_PROTECT: u64 = 0x200;
/// ASCE designation type "region-first table" (bits 60-61) and table
/// length 3.
pub const ASCE_REGION_FIRST: u64 = 0x0c | 0x3;

/// The four levels of DAT tables above the page tables. The discriminant is
/// the table-type (TT) field an entry of that table carries in bits 60-61.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Region-first table: VA bits 0-10 (`va >> 53`).
    RegionFirst = 3,
    /// Region-second table: VA bits 11-21 (`va >> 42`).
    RegionSecond = 2,
    /// Region-third table: VA bits 22-32 (`va >> 31`).
    RegionThird = 1,
    /// Segment table: VA bits 33-43 (`va >> 20`), 1 MiB each.
    Segment = 0,
}

impl Level {
    /// The index of `va` in a table of this level.
    pub const fn index(self, va: u64) -> usize {
        let shift = match self {
            Level::RegionFirst => 53,
            Level::RegionSecond => 42,
            Level::RegionThird => 31,
            Level::Segment => 20,
        };
        ((va >> shift) & 0x7ff) as usize
    }

    /// The table-type bits of an entry of a table of this level.
    pub const fn tt(self) -> u64 {
        (self as u64) << 2
    }

    /// An invalid entry for a table of this level. Region tables must be
    /// filled with these, not zero: a zero region entry is a *valid* entry
    /// pointing at address 0.
    pub const fn invalid_entry(self) -> u64 {
        TABLE_INVALID | self.tt()
    }

    /// A valid entry of a table of this level pointing at the next-lower
    /// table at `next` (a 16 KiB region/segment table for region levels, a
    /// 2 KiB page table for [`Level::Segment`]).
    pub const fn entry(self, next: u64) -> u64 {
        match self {
            Level::Segment => next & !0x7ff,
            _ => (next & !0xfff) | self.tt() | TABLE_LENGTH_FULL,
        }
    }
}

/// The index of `va` in a page table (`va >> 12`, 8 bits).
pub const fn pt_index(va: u64) -> usize {
    ((va >> 12) & 0xff) as usize
}

/// Allocates a region or segment table of `level` with every entry invalid.
///
/// Returns `None` when the frame pool is exhausted.
pub fn alloc_table(level: Level) -> Option<u64> {
    let pa = alloc_aligned(TABLE_SIZE, TABLE_ALIGN)?;
    let table = pa as *mut u64;
    for i in 0..TABLE_ENTRIES {
        // SAFETY: `pa` is a fresh, identity-mapped 16 KiB block from the
        // pool; `i < 2048` keeps the store inside it.
        unsafe { table.add(i).write_volatile(level.invalid_entry()) };
    }
    Some(pa)
}

/// Allocates a page table with every entry invalid.
///
/// Returns `None` when the frame pool is exhausted.
pub fn alloc_page_table() -> Option<u64> {
    let pa = alloc_aligned(PT_SIZE, PT_ALIGN)?;
    let table = pa as *mut u64;
    for i in 0..PT_ENTRIES {
        // SAFETY: a fresh, identity-mapped 2 KiB block; `i < 256`.
        unsafe { table.add(i).write_volatile(PTE_INVALID) };
    }
    Some(pa)
}

/// The kernel's region-first table, set once by [`init`].
static KERNEL_ROOT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Physical address of the kernel's region-first table: activate it to get
/// back to a space where only the identity map exists.
pub fn kernel_root() -> u64 {
    KERNEL_ROOT.load(core::sync::atomic::Ordering::Relaxed)
}

/// Builds the identity map and turns DAT on. Called once by the boot code,
/// with DAT off.
pub(crate) fn init() {
    let oom = "frame pool exhausted while building the identity map";
    let rf = alloc_table(Level::RegionFirst).expect(oom);
    let rs = alloc_table(Level::RegionSecond).expect(oom);
    let rt = alloc_table(Level::RegionThird).expect(oom);
    let st = alloc_table(Level::Segment).expect(oom);
    let set = |table: u64, index: usize, value: u64| {
        // SAFETY: every `table` here is one of the tables just allocated
        // (identity mapped, not yet in use by DAT) and `index` < its length.
        unsafe { (table as *mut u64).add(index).write_volatile(value) }
    };
    set(rf, 0, Level::RegionFirst.entry(rs));
    set(rs, 0, Level::RegionSecond.entry(rt));
    set(rt, 0, Level::RegionThird.entry(st));
    for segment in 0..(IDENTITY_MAP_END >> 20) {
        let pt = alloc_page_table().expect(oom);
        for page in 0..PT_ENTRIES as u64 {
            set(pt, page as usize, (segment << 20) | (page << 12));
        }
        set(st, segment as usize, Level::Segment.entry(pt));
    }
    KERNEL_ROOT.store(rf, core::sync::atomic::Ordering::Relaxed);
    // SAFETY: `rf` is a complete region-first table whose entry 0 maps all
    // memory the kernel uses (image, stacks, lowcore, frame pool) to itself,
    // so the switch changes no address the kernel uses.
    unsafe { activate(rf) };
    // STOSM stores the old system mask (one byte) at its operand address.
    let mut old_mask = 0u8;
    // SAFETY: with CR1 holding the identity map, turning DAT on (PSW bit 5,
    // STOSM 0x04) keeps every address meaning the same memory.
    unsafe {
        core::arch::asm!("stosm 0({p}),0x04", p = in(reg_addr) &mut old_mask as *mut u8, options(nostack))
    };
}

/// Makes `root_pa` the primary address space (CR1) and purges this CPU's TLB.
///
/// Before loading, copies the kernel's region-first entry 0 (the identity
/// map) into `root_pa`'s entry 0, so the kernel keeps running; the test
/// window (entries 1..2047) is whatever the caller put there.
///
/// # Safety
///
/// 1. `root_pa` is a 16 KiB, 4 KiB-aligned region-first table whose
///    entries 1..2047 are valid DAT entries (invalid ones included: filled
///    from [`alloc_table`], never plain zeroes) describing tables that stay
///    alive, unchanged except through this crate's TLB rules, for as long as
///    the table is active;
/// 2. no Rust reference points into the test window of the previously
///    active space (its mappings disappear).
pub unsafe fn activate(root_pa: u64) {
    let kernel = kernel_root();
    if root_pa != kernel {
        // SAFETY: both are region-first tables (caller's contract 1 and
        // `init`), identity mapped; entry 0 is the kernel's by convention.
        unsafe { (root_pa as *mut u64).write_volatile((kernel as *const u64).read_volatile()) };
    }
    let asce = (root_pa & !0xfff) | ASCE_REGION_FIRST;
    // SAFETY: LCTLG loads CR1 from `asce` on the stack (8 bytes, aligned);
    // the new space maps the kernel identically (entry 0), so execution
    // continues; PTLB then drops translations of the old space, which is
    // what makes the test window of `root_pa` the only one visible.
    unsafe {
        core::arch::asm!(
            "lctlg %c1,%c1,0({asce})",
            "ptlb",
            asce = in(reg_addr) &asce as *const u64,
            options(nostack, readonly),
        )
    };
}

/// The current primary ASCE (CR1).
pub fn primary_asce() -> u64 {
    let mut asce = 0u64;
    // SAFETY: STCTG stores CR1 into `asce`; no other effect.
    unsafe {
        core::arch::asm!("stctg %c1,%c1,0({p})", p = in(reg_addr) &mut asce as *mut u64, options(nostack))
    };
    asce
}

/// INVALIDATE PAGE TABLE ENTRY: sets the invalid bit of the PTE mapping
/// `va` and purges every TLB entry for it, on this CPU only (`local`, the
/// M4 local-clearing option) or on all CPUs.
///
/// `pte_addr` may be the page-table origin or the address of the PTE
/// itself: IPTE takes the page-table origin from R1 bits 0-52 and ignores
/// the low 11 bits, and indexes it with `va`'s page index (R2 bits 44-51).
///
/// Never inlined: under TCG a *global* IPTE takes effect for the issuing
/// CPU only at the end of the translation block, and returning from a call
/// ends it, so the first access after this function sees the invalidation.
///
/// # Safety
///
/// 1. `pte_addr` lies in a page table (2 KiB-aligned, identity mapped)
///    that stays alive during the call, and IPTE writes its entry for `va`;
/// 2. nothing relies on the mapping of `va` (no Rust reference into it);
/// 3. `local` only when no other CPU can hold a TLB entry for `va` in this
///    space (not attached anywhere else), else those CPUs keep stale entries.
#[inline(never)]
pub unsafe fn ipte(pte_addr: u64, va: u64, local: bool) {
    // SAFETY: R1 = page-table origin, R2 = virtual address, R3 = 0 (no
    // range); the caller guarantees the table and the absence of users of
    // the mapping. IPTE writes the PTE (not a Rust object) and the TLB.
    unsafe {
        if local {
            core::arch::asm!("ipte {pto},{va},%r0,1", pto = in(reg) pte_addr, va = in(reg) va, options(nostack))
        } else {
            core::arch::asm!("ipte {pto},{va}", pto = in(reg) pte_addr, va = in(reg) va, options(nostack))
        }
    }
}

/// PURGE TLB: drops every translation in this CPU's TLB.
///
/// Safe: purging only costs a refill from the tables in memory; it cannot
/// make any access reach different memory than the tables say.
#[inline(never)]
pub fn ptlb() {
    // SAFETY: PTLB only affects the TLB of this CPU (see above).
    unsafe { core::arch::asm!("ptlb", options(nostack, nomem)) };
}

/// LOAD REAL ADDRESS: translates `va` in the current primary space as the
/// CPU would, or `None` if translation fails (any DAT exception condition,
/// reported by LRAG as a condition code instead of an interruption).
pub fn lra(va: u64) -> Option<u64> {
    let real: u64;
    let cc: u64;
    // SAFETY: LRAG translates without accessing the operand; it reads DAT
    // tables only. IPM/SRLG extract the condition code.
    unsafe {
        core::arch::asm!(
            "lrag {real},0({va})",
            "ipm {cc}",
            "srlg {cc},{cc},28",
            real = out(reg) real,
            va = in(reg_addr) va,
            cc = out(reg) cc,
            options(nostack, readonly),
        )
    };
    (cc & 3 == 0).then_some(real)
}
