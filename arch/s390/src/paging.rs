//! [`S390x`]: the [`Arch`] implementation for z/Architecture DAT.
//!
//! Owns the geometry (four 2048-entry region/segment levels over 256-entry
//! page tables), the entry encodings of [`crate::entry`] in portable terms,
//! and the primitives that change live entries. It calls no notifier:
//! [`mmu_notifier_core::pgtable`] wraps these primitives with the notifier
//! step, where no override here can skip it.

use core::sync::atomic::Ordering;

use mmu_notifier_core::{
    Arch, Entry, Error, Flushed, Leaf, Level, LevelGeometry, PendingFlush, PhysAddr, Prot, PteSlot,
    VirtAddr,
};

use crate::entry::{PageTableEntry as Pte, RegionTableEntry, SegmentTableEntry as Ste, TableType};
use crate::instr;

/// z/Architecture DAT with a region-first root: 64-bit virtual addresses,
/// 4 KiB pages, 1 MiB large segments (EDAT-1).
///
/// It holds nothing: where table memory lives is the
/// [`TableMemory`](mmu_notifier_core::TableMemory) implementation's
/// business, and IPTE/IDTE take the *real* address of the entry from the
/// slot (which the walker computed from the table's physical address).
///
/// On s390x the primitives execute privileged instructions (IPTE, IDTE,
/// RRBE, ISKE, CSP): supervisor state only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct S390x;

impl S390x {
    /// The region-first table (the root).
    pub const REGION_FIRST: Level<S390x> = Level::new(0);
    /// The region-second table.
    pub const REGION_SECOND: Level<S390x> = Level::new(1);
    /// The region-third table.
    pub const REGION_THIRD: Level<S390x> = Level::new(2);
    /// The segment table; its leaves are 1 MiB large pages (pass it to
    /// `AddressSpace::map_huge` only on machines with EDAT-1: without it
    /// the CPU ignores the FC bit and walks the frame as a page table).
    pub const SEGMENT: Level<S390x> = Level::new(3);
    /// The page table (4 KiB leaves).
    pub const PAGE: Level<S390x> = Level::new(4);

    /// The arch. Safe: IPTE, IDTE and CSP purge every CPU's TLB, so no
    /// promise about where address spaces run is needed.
    pub const fn new() -> Self {
        Self
    }

    /// Purges this CPU's TLB only (PTLB), e.g. after loading CR1 with a new
    /// ASCE. [`Arch::flush_tlb_all`] purges every CPU instead. On the host
    /// it does nothing.
    pub fn flush_tlb_local(&self) {
        instr::ptlb();
    }

    /// Sets the level's invalid bit in a live entry, purging every CPU's
    /// TLB entries formed from it (IPTE for a PTE, IDTE for a segment
    /// entry), then stores `new`. Returns the entry before the change, with
    /// the invalid bit as it was (IPTE/IDTE change no other bit, and no
    /// hardware writes s390 entries otherwise).
    ///
    /// # Safety
    /// 1. `slot` holds a valid leaf (the slot's own contract gives the
    ///    rest: its entry and real address, under the page-table lock);
    /// 2. nothing the running code needs is translated by it;
    /// 3. supervisor state on s390x.
    unsafe fn invalidate_and_store(&self, slot: &PteSlot<'_, Self>, new: u64) -> u64 {
        let word = slot.word();
        let before = word.load(Ordering::Acquire);
        let real = slot.entry_pa().0;
        let (invalid, valid) = if slot.level() == Self::PAGE {
            (Pte::INVALID.bits(), before & Pte::INVALID.bits() == 0)
        } else {
            (Ste::INVALID.bits(), before & Ste::INVALID.bits() == 0)
        };
        // Like Linux's `__ptep_ipte`: an entry already invalid cannot be in
        // any TLB, and IPTE of it would be wasted.
        if valid {
            if slot.level() == Self::PAGE {
                // SAFETY: 1. the slot's word is the PTE of `va` at real
                // address `real`, so its page table is at `real & !0x7ff`,
                // and the page-table lock is held (the slot's contract);
                // 2. and 3. are our conditions 2. and 3.
                unsafe { instr::ipte(word, real, slot.va().0) }
            } else {
                // SAFETY: as above, for the segment-table entry of `va`.
                unsafe { instr::idte_segment(word, real, slot.va().0) }
            }
        }
        let old = word.swap(new, Ordering::AcqRel);
        if valid {
            old & !invalid
        } else {
            old
        }
    }

    /// On s390x hardware, the frame's storage-key reference and change bits
    /// (over every 4 KiB block of a large leaf), as the level's software
    /// young/dirty bits. On the host, 0: the entry's own bits are the state.
    fn key_state(&self, level: Level<Self>, leaf_raw: u64) -> u64 {
        if !instr::HW {
            return 0;
        }
        let (frame, blocks, young, dirty) = if level == Self::PAGE {
            (
                Pte::from_raw(leaf_raw).frame().0,
                1,
                Pte::YOUNG.bits(),
                Pte::DIRTY.bits(),
            )
        } else {
            (
                Ste::from_raw(leaf_raw).frame().0,
                256,
                Ste::YOUNG.bits(),
                Ste::DIRTY.bits(),
            )
        };
        let mut key = 0;
        for b in 0..blocks {
            // SAFETY: the frame of a leaf this address space maps is
            // installed storage; supervisor state is the primitives' contract.
            key |= unsafe { instr::iske(frame + b * 4096) };
        }
        (if key & instr::KEY_R != 0 { young } else { 0 })
            | (if key & instr::KEY_C != 0 { dirty } else { 0 })
    }
}

/// [`S390x::PAGE`]'s index, for `match`.
const PAGE: usize = S390x::PAGE.index();
/// [`S390x::SEGMENT`]'s index, for `match`.
const SEGMENT: usize = S390x::SEGMENT.index();

const fn level(shift: u32, index_bits: u32, leaf: bool) -> LevelGeometry {
    LevelGeometry {
        shift,
        index_bits,
        table_bytes: 8 << index_bits,
        leaf,
    }
}

/// The permission bits of a PTE, from `prot`.
fn pte_prot(prot: Prot) -> u64 {
    let mut bits = Pte::READ.bits();
    bits |= if prot.writable() {
        Pte::WRITE.bits()
    } else {
        Pte::PROTECT.bits()
    };
    if prot.contains(Prot::EXEC) {
        bits |= Pte::SW_EXEC.bits();
    }
    if prot.contains(Prot::USER) {
        bits |= Pte::SW_USER.bits();
    }
    bits
}

const PTE_PROT_MASK: u64 = Pte::READ.bits()
    | Pte::WRITE.bits()
    | Pte::PROTECT.bits()
    | Pte::NOEXEC.bits()
    | Pte::SW_EXEC.bits()
    | Pte::SW_USER.bits();

/// The permission bits of a large segment entry, from `prot`.
fn ste_prot(prot: Prot) -> u64 {
    let mut bits = Ste::READ.bits();
    bits |= if prot.writable() {
        Ste::WRITE.bits()
    } else {
        Ste::PROTECT.bits()
    };
    if prot.contains(Prot::EXEC) {
        bits |= Ste::SW_EXEC.bits();
    }
    if prot.contains(Prot::USER) {
        bits |= Ste::SW_USER.bits();
    }
    bits
}

const STE_PROT_MASK: u64 = Ste::READ.bits()
    | Ste::WRITE.bits()
    | Ste::PROTECT.bits()
    | Ste::NOEXEC.bits()
    | Ste::SW_EXEC.bits()
    | Ste::SW_USER.bits();

/// The portable permissions of a leaf: writable is what the hardware
/// enforces (`!PROTECT`), so a downgrade is never skipped because a
/// software bit disagreed.
fn prot_of(raw: u64, protect: u64, exec: u64, noexec: u64, user: u64) -> Prot {
    let mut prot = Prot::READ;
    if raw & protect == 0 {
        prot = prot | Prot::WRITE;
    }
    if raw & exec != 0 && raw & noexec == 0 {
        prot = prot | Prot::EXEC;
    }
    if raw & user != 0 {
        prot = prot | Prot::USER;
    }
    prot
}

/// The table type of the tables at region level `level` (0, 1 or 2).
const fn region_type(level: Level<S390x>) -> TableType {
    match level.index() {
        0 => TableType::RegionFirst,
        1 => TableType::RegionSecond,
        _ => TableType::RegionThird,
    }
}

// SAFETY: the trait's numbered obligations hold:
// 1. LEVELS is the z/Architecture format for a region-first ASCE: VA bits
//    0-10, 11-21, 22-32 index 2048-entry region tables, 33-43 a 2048-entry
//    segment table, 44-51 a 256-entry page table, 52-63 the byte; encode/
//    decode round-trip (tested bit by bit and by proptest);
// 2. check_addr accepts every address, all of which a region-first table
//    translates, and PHYS_ADDR_BITS is 64: an entry holds any frame its
//    level's alignment allows;
// 3. every primitive has changed the entry before returning, and no s390
//    hardware writes PTEs besides IPTE/IDTE, which the primitive issues;
// 4. IPTE and IDTE purge every CPU's TLB as they invalidate, so
//    flush_tlb_page has nothing left to do; flush_tlb_all purges every CPU.
unsafe impl Arch for S390x {
    const NAME: &'static str = "s390x";

    const LEVELS: &'static [LevelGeometry] = &[
        level(53, 11, false), // region-first
        level(42, 11, false), // region-second
        level(31, 11, false), // region-third (2 GiB leaves need EDAT-2: unused)
        level(20, 11, true),  // segment: 1 MiB leaves with EDAT-1
        level(12, 8, true),   // page table: 256 × 4 KiB, 2 KiB per table
    ];

    const PHYS_ADDR_BITS: u32 = 64;

    fn invalid_entry(level: Level<Self>) -> u64 {
        if level == Self::PAGE {
            Pte::EMPTY.raw()
        } else if level == Self::SEGMENT {
            Ste::EMPTY.raw()
        } else {
            RegionTableEntry::invalid(region_type(level)).raw()
        }
    }

    /// Accepts every address: with a region-first table all 64 bits are
    /// translated, and s390x has no canonical form (no sign-extension rule
    /// as on x86-64).
    fn check_addr(_va: VirtAddr) -> Result<(), Error> {
        Ok(())
    }

    /// Decodes a word. Words the CPU would reject with a
    /// translation-specification exception (a region or segment entry whose
    /// TT field does not match its table, a PTE with IBM bit 52 set) decode
    /// as [`Entry::Invalid`]: they translate nothing, and the walker must
    /// never follow them.
    fn decode(level: Level<Self>, raw: u64) -> Entry {
        match level.index() {
            PAGE => {
                if raw & (Pte::INVALID.bits() | Pte::RESERVED_52) != 0 {
                    return Entry::Invalid;
                }
                Entry::Leaf(Leaf {
                    frame: Pte::from_raw(raw).frame(),
                    prot: prot_of(
                        raw,
                        Pte::PROTECT.bits(),
                        Pte::SW_EXEC.bits(),
                        Pte::NOEXEC.bits(),
                        Pte::SW_USER.bits(),
                    ),
                    young: raw & Pte::YOUNG.bits() != 0,
                    dirty: raw & Pte::DIRTY.bits() != 0,
                    cow: raw & Pte::SW_COW.bits() != 0,
                })
            }
            SEGMENT => {
                let ste = Ste::from_raw(raw);
                if ste.is_invalid() || raw & Ste::TT_MASK != 0 {
                    Entry::Invalid
                } else if ste.is_large() {
                    Entry::Leaf(Leaf {
                        frame: ste.frame(),
                        prot: prot_of(
                            raw,
                            Ste::PROTECT.bits(),
                            Ste::SW_EXEC.bits(),
                            Ste::NOEXEC.bits(),
                            Ste::SW_USER.bits(),
                        ),
                        young: raw & Ste::YOUNG.bits() != 0,
                        dirty: raw & Ste::DIRTY.bits() != 0,
                        cow: raw & Ste::SW_COW.bits() != 0,
                    })
                } else {
                    Entry::Table(ste.origin())
                }
            }
            _ => {
                let rte = RegionTableEntry::from_raw(raw);
                if rte.is_invalid() || rte.table_type() != region_type(level) {
                    Entry::Invalid
                } else {
                    Entry::Table(rte.origin())
                }
            }
        }
    }

    /// A region entry (full-length next table) or a segment entry pointing
    /// to a page table. Called for the last level (which has no tables), it
    /// returns that level's empty entry.
    fn encode_table(level: Level<Self>, table: PhysAddr) -> u64 {
        match level.index() {
            PAGE => {
                debug_assert!(false, "page-table entries cannot point to tables");
                Pte::EMPTY.raw()
            }
            SEGMENT => {
                debug_assert!(table.is_aligned(2048), "page tables are 2 KiB aligned");
                Ste::table(table).raw()
            }
            _ => {
                debug_assert!(
                    table.is_aligned(4096),
                    "region and segment tables are 4 KiB aligned"
                );
                RegionTableEntry::table(region_type(level), table).raw()
            }
        }
    }

    /// A PTE (`frame | PRESENT | READ | WRITE or PROTECT [| SW_EXEC]
    /// [| SW_USER]`) or a large segment entry (`frame | LARGE | READ | WRITE
    /// or PROTECT ...`). Called for a region level (no leaves there), it
    /// returns that level's empty entry.
    fn encode_leaf(level: Level<Self>, frame: PhysAddr, prot: Prot) -> u64 {
        match level.index() {
            PAGE => {
                debug_assert!(frame.is_aligned(4096));
                (frame.0 & Pte::FRAME_MASK) | Pte::PRESENT.bits() | pte_prot(prot)
            }
            SEGMENT => {
                debug_assert!(frame.is_aligned(1 << 20));
                (frame.0 & Ste::FRAME_MASK) | Ste::LARGE.bits() | ste_prot(prot)
            }
            _ => {
                debug_assert!(
                    false,
                    "region entries cannot be leaves here (EDAT-2 unused)"
                );
                Self::invalid_entry(level)
            }
        }
    }

    fn leaf_with_prot(level: Level<Self>, raw: u64, prot: Prot) -> u64 {
        if level == Self::PAGE {
            (raw & !PTE_PROT_MASK) | pte_prot(prot)
        } else {
            (raw & !STE_PROT_MASK) | ste_prot(prot)
        }
    }

    /// Sets or clears the software copy-on-write bit (IBM bit 62 of a PTE,
    /// 56 of a large segment entry), nothing else.
    fn leaf_with_cow(level: Level<Self>, raw: u64, cow: bool) -> u64 {
        let bit = if level == Self::PAGE {
            Pte::SW_COW.bits()
        } else {
            Ste::SW_COW.bits()
        };
        if cow {
            raw | bit
        } else {
            raw & !bit
        }
    }

    /// A plain store: the entry is invalid, so no TLB can hold it and the
    /// architecture lets it be written directly.
    unsafe fn set_pte_at(&self, slot: &PteSlot<'_, Self>, raw: u64) {
        slot.word().store(raw, Ordering::Release);
    }

    /// IPTE (IDTE for a large segment) first, then the store of `new`: the
    /// architecture forbids changing a valid entry a CPU may be using other
    /// than through these. A CPU touching the page in between takes a
    /// translation exception, and its fault handler finds `new` once it gets
    /// the page-table lock. The returned [`PendingFlush`]'s `flush` is a
    /// no-op: the purge already happened.
    unsafe fn ptep_modify(&self, slot: &PteSlot<'_, Self>, new: u64) -> PendingFlush<'_, Self> {
        // SAFETY: 1. the slot holds a valid leaf (our condition 1.); 2. the
        // entry comes back at once with the same frame, and the running
        // code does not fetch through a user mapping in between; 3.
        // supervisor state is the primitives' standing requirement on s390x.
        let old = unsafe { self.invalidate_and_store(slot, new) };
        PendingFlush::new(self, slot.va(), slot.level(), old)
    }

    /// Linux's `ptep_invalidate`: IPTE (IDTE for a large segment), then the
    /// empty entry is stored. On s390x hardware the old word returned
    /// carries the frame's storage-key reference and change bits as its
    /// young/dirty bits (a conservative dirty: this crate never resets the
    /// change bit; setting keys when frames are handed out belongs to the
    /// frame allocator).
    unsafe fn ptep_get_and_clear(&self, slot: &PteSlot<'_, Self>) -> PendingFlush<'_, Self> {
        let level = slot.level();
        // SAFETY: 1. and 2. are our conditions 1. and 2.; 3. as in
        // `ptep_modify`.
        let mut old = unsafe { self.invalidate_and_store(slot, Self::invalid_entry(level)) };
        if matches!(Self::decode(level, old), Entry::Leaf(_)) {
            old |= self.key_state(level, old);
        }
        PendingFlush::new(self, slot.va(), level, old)
    }

    /// Storage keys (the 2008 Linux design): RRBE on the frame (every 4 KiB
    /// block of a large leaf), true if any reference bit was set. This is
    /// per *frame*, not per mapping: an access through another mapping, or
    /// by the kernel or a channel program, also counts.
    ///
    /// Host: tests and clears the entry's software young bit instead (no
    /// storage keys there), with an atomic AND, so tests can mark a page
    /// accessed by setting that bit.
    unsafe fn ptep_test_and_clear_young(&self, slot: &PteSlot<'_, Self>) -> bool {
        let level = slot.level();
        let young_bit = if level == Self::PAGE {
            Pte::YOUNG.bits()
        } else {
            Ste::YOUNG.bits()
        };
        if !instr::HW {
            return slot.word().fetch_and(!young_bit, Ordering::AcqRel) & young_bit != 0;
        }
        let Entry::Leaf(leaf) = Self::decode(level, slot.read()) else {
            return false;
        };
        let blocks = if level == Self::PAGE { 1 } else { 256 };
        let mut young = false;
        for b in 0..blocks {
            // SAFETY: the frame of a valid leaf (caller) is installed
            // storage; supervisor state is the primitives' contract. Not
            // short-circuited: every block's bit must be reset.
            young |= unsafe { instr::rrbe(leaf.frame.0 + b * 4096) };
        }
        young
    }

    /// Nothing: every primitive that removes or downgrades a translation
    /// here (IPTE, IDTE) purged it from every CPU already, which the trait's
    /// obligation 4 allows.
    fn flush_tlb_page(&self, _va: VirtAddr, _level: Level<Self>) {}

    /// COMPARE AND SWAP AND PURGE: purges the TLBs of **all** CPUs,
    /// including cached region and segment entries, so tables can be freed
    /// afterwards even if other CPUs once ran this address space. (PTLB,
    /// [`S390x::flush_tlb_local`], would purge only the calling CPU; Linux
    /// later used IDTE by ASCE for a single address space.)
    fn flush_tlb_all(&self) {
        instr::purge_all_cpus();
    }

    /// IPTE clears and purges in one instruction, so this is
    /// [`ptep_get_and_clear`](Arch::ptep_get_and_clear) with the flush
    /// obligation discharged, not followed by a second flush (Linux's
    /// `__HAVE_ARCH_PTEP_CLEAR_FLUSH` on s390). The notifier step is not
    /// here and is not lost: `mmu_notifier_core::ptep_clear_flush_notify`
    /// wraps this call.
    unsafe fn ptep_clear_flush(&self, slot: &PteSlot<'_, Self>) -> Flushed {
        // SAFETY: 1. and 2. are this method's own contract.
        let pending = unsafe { self.ptep_get_and_clear(slot) };
        // SAFETY: ptep_get_and_clear invalidated the entry with IPTE (IDTE
        // for a large segment), which purged every CPU's TLB entries for it
        // before returning. (In the deliberately broken `no-flush` test
        // build this is false on purpose: that build must fail its suite.)
        unsafe { pending.assume_flushed() }
    }

    /// No TLB purge: the reference bit lives in the storage key and is set
    /// by every access to the frame, whether its translation came from the
    /// TLB or from a table walk (table walks themselves do not set it), so
    /// after RRBE the next access sets it again without a flush. (On x86 the
    /// A bit is set only when a translation is loaded into the TLB, which is
    /// why the generic version flushes.) The notifiers' `age_page` is OR-ed
    /// in by `mmu_notifier_core::ptep_clear_flush_young_notify`, outside
    /// this override: the 2008 patch lost aging on s390 exactly because its
    /// override replaced the generic code that called the notifier.
    unsafe fn ptep_clear_flush_young(&self, slot: &PteSlot<'_, Self>) -> bool {
        // SAFETY: this method's own contract (a valid leaf).
        unsafe { self.ptep_test_and_clear_young(slot) }
    }
}
