//! [`X86_64`]: 4-level paging as an [`Arch`].
//!
//! The entry encodings are written in terms of a level's `shift` (12 for
//! the PT, 21 for the PD, ...), not its index in [`Arch::LEVELS`], so a
//! 5-level (LA57) arch can reuse them unchanged: it only adds a PML5 level
//! at shift 48 in front and widens [`Arch::check_addr`] to 57 bits.

use core::sync::atomic::Ordering;

use mmu_notifier_core::{
    Arch, Entry, Error, Leaf, Level, LevelGeometry, PendingFlush, PhysAddr, Prot, PteSlot, VirtAddr,
};

use crate::entry::{PteFlags, ADDR_MASK};
use crate::instr;
use crate::shootdown::TlbShootdown;

/// x86-64 with 4-level paging (48-bit virtual addresses), managing the user
/// half of an address space.
///
/// It holds only how flushes reach the CPUs: where table memory lives is
/// the [`TableMemory`](mmu_notifier_core::TableMemory) implementation's
/// business (and promise).
///
/// # Geometry
/// | level | table | shift | leaf |
/// |---|---|---|---|
/// | [`PML4`](Self::PML4) | PML4 | 39 | no |
/// | [`PDPT`](Self::PDPT) | PDPT | 30 | no (1 GiB pages are not offered, see below) |
/// | [`PD`](Self::PD) | page directory | 21 | yes: 2 MiB pages |
/// | [`PT`](Self::PT) | page table | 12 | yes: 4 KiB pages |
///
/// Each table is 4096 bytes, 512 entries. 1 GiB leaves are left out on
/// purpose: they need CPUID.80000001H:EDX.Page1GB, which QEMU's default
/// `qemu64` CPU lacks (the bit is then reserved and the walk faults), and
/// [`Arch::LEVELS`] is a constant, so it cannot follow CPUID. A PDPTE with
/// PS set is still *decoded* as a leaf, so the generic walker stops there
/// with [`Error::PageSizeMismatch`] instead of following a frame address
/// as if it were a table.
///
/// # Requirements on the kernel
/// - EFER.NXE is set (leaves without [`Prot::EXEC`] carry
///   [`PteFlags::NO_EXECUTE`], a reserved bit otherwise);
/// - CR0.WP is set if write-protection (copy-on-write, `mprotect`) must
///   hold against supervisor writes too;
/// - flushes reach every CPU that may run the address space: build the
///   arch [`with_shootdown`](Self::with_shootdown) and a [`TlbShootdown`]
///   that reaches the other CPUs, or promise (`unsafe`
///   [`local_only`](Self::local_only)) that each address space is live on
///   the flushing CPU only.
///
/// # Safety of the `Arch` implementation
/// The encodings round-trip (tested bit by bit and by property on the
/// host), every primitive changes the word with one atomic instruction
/// (so a hardware A/D update is never lost), and the flushes run `invlpg`
/// or reload CR3 on a bare-metal target. On any other target (the host,
/// where the tests and Miri run) the flushes do nothing: there is no
/// hardware walker reading those tables there.
#[derive(Clone, Copy)]
pub struct X86_64 {
    shootdown: Option<&'static dyn TlbShootdown>,
}

impl core::fmt::Debug for X86_64 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("X86_64")
            .field("shootdown", &self.shootdown.is_some())
            .finish()
    }
}

/// Equal when they flush through the same shootdown object (or none).
impl PartialEq for X86_64 {
    fn eq(&self, other: &Self) -> bool {
        match (self.shootdown, other.shootdown) {
            (None, None) => true,
            (Some(a), Some(b)) => core::ptr::addr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for X86_64 {}

impl X86_64 {
    /// The PML4 level (the root).
    pub const PML4: Level<X86_64> = Level::new(0);
    /// The page-directory-pointer level.
    pub const PDPT: Level<X86_64> = Level::new(1);
    /// The page-directory level, the one that holds 2 MiB leaves (pass it
    /// to `AddressSpace::map_huge`).
    pub const PD: Level<X86_64> = Level::new(2);
    /// The page-table level (4 KiB leaves).
    pub const PT: Level<X86_64> = Level::new(3);

    /// Size of a huge page at [`PD`](Self::PD): 2 MiB.
    pub const HUGE_PAGE_SIZE: u64 = 1 << 21;

    /// The first address above the user half (the canonical hole starts
    /// here): 2^47.
    pub const USER_LIMIT: u64 = 0x0000_8000_0000_0000;

    /// Flushes purge the local TLB only.
    ///
    /// # Safety
    /// Every address space this arch changes is live (in CR3) on at most
    /// the CPU that changes it, at the time of each change and flush: a
    /// single-CPU kernel, a kernel that pins each address space to one CPU,
    /// or a host test (no hardware walker at all).
    pub const unsafe fn local_only() -> Self {
        Self { shootdown: None }
    }

    /// Every flush purges the local TLB, then goes through `shootdown` to
    /// the other CPUs: after the local `invlpg` (or CR3 reload),
    /// [`TlbShootdown::flush_remote`] runs and the flush returns only once
    /// it has. This is what makes [`Arch::flush_tlb_page`]'s promise ("no
    /// CPU that may use the address space still holds a translation") hold
    /// with several CPUs; the `unsafe impl TlbShootdown` vouches for it.
    ///
    /// Built with `--cfg mmu_notifier_broken="no-shootdown"` (a
    /// deliberately broken test build) the remote part is skipped, so the
    /// QEMU suite can show that a missing shootdown is caught.
    pub const fn with_shootdown(shootdown: &'static dyn TlbShootdown) -> Self {
        Self {
            shootdown: Some(shootdown),
        }
    }

    /// The other CPUs' half of a flush, if this arch has one.
    fn flush_remote(&self, va: Option<VirtAddr>) {
        if cfg!(mmu_notifier_broken = "no-shootdown") {
            return;
        }
        if let Some(shootdown) = self.shootdown {
            shootdown.flush_remote(va);
        }
    }
}

/// The software bit that marks a leaf copy-on-write (bit 9, one of the
/// three the hardware ignores).
pub const COPY_ON_WRITE: PteFlags = PteFlags::SOFTWARE_9;

/// Bits a leaf's permissions are expressed in; everything else in a leaf
/// survives [`Arch::leaf_with_prot`].
const PROT_BITS: PteFlags = PteFlags::WRITABLE
    .union(PteFlags::USER)
    .union(PteFlags::NO_EXECUTE);

/// Bits the hardware sets on its own in a live leaf.
const HW_BITS: PteFlags = PteFlags::ACCESSED.union(PteFlags::DIRTY);

/// The last level: 4 KiB leaves, where bit 7 is PAT, not PS.
const BASE_SHIFT: u32 = 12;

/// The permission bits for `prot`.
fn prot_flags(prot: Prot) -> PteFlags {
    let mut f = PteFlags::empty();
    f.set(PteFlags::WRITABLE, prot.writable());
    f.set(PteFlags::USER, prot.contains(Prot::USER));
    f.set(PteFlags::NO_EXECUTE, !prot.contains(Prot::EXEC));
    f
}

/// Decodes an entry of the level at `shift` (any paging depth).
fn decode_at(shift: u32, raw: u64) -> Entry {
    let flags = PteFlags::from_bits_retain(raw);
    if !flags.contains(PteFlags::PRESENT) {
        return Entry::Invalid;
    }
    if shift != BASE_SHIFT && !flags.contains(PteFlags::HUGE_PAGE) {
        return Entry::Table(PhysAddr(raw & ADDR_MASK));
    }
    // A leaf: a 4 KiB page, or PS set above (2 MiB, 1 GiB, or reserved at
    // the top level; a leaf all the same, so nobody walks into a frame).
    // Bits of the address field below the page size are PAT or reserved.
    let span_mask = (1u64 << shift) - 1;
    let mut prot = Prot::READ;
    if flags.contains(PteFlags::WRITABLE) {
        prot = prot | Prot::WRITE;
    }
    if flags.contains(PteFlags::USER) {
        prot = prot | Prot::USER;
    }
    if !flags.contains(PteFlags::NO_EXECUTE) {
        prot = prot | Prot::EXEC;
    }
    Entry::Leaf(Leaf {
        frame: PhysAddr(raw & ADDR_MASK & !span_mask),
        prot,
        young: flags.contains(PteFlags::ACCESSED),
        dirty: flags.contains(PteFlags::DIRTY),
        cow: flags.contains(COPY_ON_WRITE),
    })
}

/// A leaf of the level at `shift` mapping `frame` with `prot`.
fn encode_leaf_at(shift: u32, frame: PhysAddr, prot: Prot) -> u64 {
    debug_assert!(
        frame.0 & !ADDR_MASK == 0,
        "frame {frame:?} outside the 52-bit physical space"
    );
    debug_assert!(
        frame.is_aligned(1 << shift),
        "frame {frame:?} not aligned to its page size"
    );
    let mut f = PteFlags::PRESENT | prot_flags(prot);
    f.set(PteFlags::HUGE_PAGE, shift != BASE_SHIFT);
    f.bits() | (frame.0 & ADDR_MASK)
}

/// A pointer to a next-level table. Permissive: the leaf decides (the
/// effective rights are the intersection over the walk).
fn encode_table_at(table: PhysAddr) -> u64 {
    debug_assert!(
        table.0 & !ADDR_MASK == 0,
        "table {table:?} not 4 KiB aligned or beyond 52 bits"
    );
    (PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::USER).bits() | (table.0 & ADDR_MASK)
}

/// `raw` with only its permission bits replaced.
fn leaf_with_prot_at(raw: u64, prot: Prot) -> u64 {
    let kept = PteFlags::from_bits_retain(raw).difference(PROT_BITS);
    kept.union(prot_flags(prot)).bits()
}

// SAFETY:
// 1. LEVELS is the 4-level x86-64 format (SDM Vol. 3A §4.5); `decode`
//    inverts `encode_leaf`/`encode_table`, and `leaf_with_prot` and
//    `leaf_with_cow` touch only their bits (tests/encoding.rs);
// 2. `check_addr` accepts only canonical user-half addresses, and
//    PHYS_ADDR_BITS is 52, the width of the address field (ADDR_MASK);
// 3. `ptep_get_and_clear`, `ptep_modify` and `ptep_test_and_clear_young`
//    each change the word with one locked instruction (xchg, cmpxchg,
//    lock and), atomic with the walker's locked A/D updates;
// 4. `flush_tlb_page` runs `invlpg`, which returns with the local TLB and
//    paging-structure caches purged for that address, then the kernel's
//    `TlbShootdown` if it gave one, which returns once every other CPU
//    that may run the address space has purged it too (that trait's
//    `unsafe impl` vouches); without one, the caller of the `unsafe`
//    `local_only` promised that the address space is live on this CPU
//    only. `flush_tlb_all` reloads CR3, the same way.
unsafe impl Arch for X86_64 {
    const NAME: &'static str = "x86_64";

    const LEVELS: &'static [LevelGeometry] = &[
        LevelGeometry {
            shift: 39,
            index_bits: 9,
            table_bytes: 4096,
            leaf: false,
        },
        LevelGeometry {
            shift: 30,
            index_bits: 9,
            table_bytes: 4096,
            leaf: false,
        },
        LevelGeometry {
            shift: 21,
            index_bits: 9,
            table_bytes: 4096,
            leaf: true,
        },
        LevelGeometry {
            shift: 12,
            index_bits: 9,
            table_bytes: 4096,
            leaf: true,
        },
    ];

    const PHYS_ADDR_BITS: u32 = 52;

    fn invalid_entry(_level: Level<Self>) -> u64 {
        0
    }

    /// Accepts the user half, `0 ..= 0x0000_7fff_ffff_ffff`.
    ///
    /// # Errors
    /// [`Error::NonCanonical`] if bits 63..=47 are not all equal;
    /// [`Error::OutOfRange`] (limit [`X86_64::USER_LIMIT`]) for a
    /// canonical kernel-half address.
    fn check_addr(va: VirtAddr) -> Result<(), Error> {
        let sign_extended = (((va.0 << 16) as i64) >> 16) as u64;
        if sign_extended != va.0 {
            Err(Error::NonCanonical { addr: va.0 })
        } else if va.0 >= Self::USER_LIMIT {
            Err(Error::OutOfRange {
                addr: va.0,
                limit: Self::USER_LIMIT,
            })
        } else {
            Ok(())
        }
    }

    /// Not present: [`Entry::Invalid`] (whatever the other bits hold).
    /// PT level, or PS set above it: a leaf, frame masked to the page size
    /// (so a large page's PAT bit 12 is not read as address). Otherwise a
    /// table.
    fn decode(level: Level<Self>, raw: u64) -> Entry {
        decode_at(level.geometry().shift, raw)
    }

    /// PRESENT | WRITABLE | USER and the address: permissions are decided
    /// at the leaf.
    fn encode_table(_level: Level<Self>, table: PhysAddr) -> u64 {
        encode_table_at(table)
    }

    /// PRESENT; WRITABLE iff [`Prot::WRITE`]; USER iff [`Prot::USER`];
    /// NO_EXECUTE unless [`Prot::EXEC`]; HUGE_PAGE (PS) above the PT level.
    /// Write-back caching, not global, A and D clear.
    fn encode_leaf(level: Level<Self>, frame: PhysAddr, prot: Prot) -> u64 {
        encode_leaf_at(level.geometry().shift, frame, prot)
    }

    /// Replaces WRITABLE, USER and NO_EXECUTE; keeps everything else: the
    /// frame, A, D, PS, caching bits, software bits, protection key.
    fn leaf_with_prot(_level: Level<Self>, raw: u64, prot: Prot) -> u64 {
        leaf_with_prot_at(raw, prot)
    }

    /// Sets or clears [`COPY_ON_WRITE`] (software bit 9), nothing else.
    fn leaf_with_cow(_level: Level<Self>, raw: u64, cow: bool) -> u64 {
        let mut flags = PteFlags::from_bits_retain(raw);
        flags.set(COPY_ON_WRITE, cow);
        flags.bits()
    }

    /// A plain release store: the entry is invalid, so no walker can be
    /// setting A/D in it, and no TLB caches a not-present entry.
    unsafe fn set_pte_at(&self, slot: &PteSlot<'_, Self>, raw: u64) {
        debug_assert_eq!(slot.read(), 0, "set_pte_at over a live entry");
        slot.word().store(raw, Ordering::Release);
    }

    /// A compare-exchange loop: A and D that the hardware set after the
    /// caller read the entry are carried into `new`, so a write that
    /// dirtied the page just before write-protection is not forgotten.
    unsafe fn ptep_modify(&self, slot: &PteSlot<'_, Self>, new: u64) -> PendingFlush<'_, Self> {
        let word = slot.word();
        let mut cur = word.load(Ordering::Acquire);
        loop {
            debug_assert!(
                PteFlags::from_bits_retain(cur).contains(PteFlags::PRESENT),
                "ptep_modify of an invalid entry"
            );
            let next = new | (cur & HW_BITS.bits());
            match word.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return PendingFlush::new(self, slot.va(), slot.level(), cur),
                Err(seen) => cur = seen,
            }
        }
    }

    /// An atomic swap with 0: A/D set by a walker up to the swap are in the
    /// returned old value, and none can be set after it (the entry is not
    /// present; a stale TLB entry may still be used until the flush, which
    /// is why a [`PendingFlush`] comes back).
    unsafe fn ptep_get_and_clear(&self, slot: &PteSlot<'_, Self>) -> PendingFlush<'_, Self> {
        let old = slot.word().swap(0, Ordering::AcqRel);
        PendingFlush::new(self, slot.va(), slot.level(), old)
    }

    /// An atomic `fetch_and` clearing ACCESSED; every other bit, including
    /// a D the hardware sets concurrently, is kept.
    unsafe fn ptep_test_and_clear_young(&self, slot: &PteSlot<'_, Self>) -> bool {
        let old = slot
            .word()
            .fetch_and(!PteFlags::ACCESSED.bits(), Ordering::AcqRel);
        PteFlags::from_bits_retain(old).contains(PteFlags::ACCESSED)
    }

    /// `invlpg va` on the current CPU, then the same on every other CPU
    /// through the [`TlbShootdown`], if the arch has one (see
    /// [`X86_64::with_shootdown`]). For a 2 MiB leaf any address inside
    /// it purges the whole TLB entry; the paging-structure caches for `va`
    /// go too. Built with `--cfg mmu_notifier_broken="no-flush"` (a
    /// deliberately broken test build) it does nothing at all, so the QEMU
    /// suite can show that a missing flush is caught.
    fn flush_tlb_page(&self, va: VirtAddr, _level: Level<Self>) {
        if cfg!(mmu_notifier_broken = "no-flush") {
            return;
        }
        instr::invlpg(va.0);
        self.flush_remote(Some(va));
    }

    /// Reloads CR3 with its own value, purging every non-global TLB entry
    /// and the paging-structure caches of the current PCID. Global entries
    /// survive; this crate never sets [`PteFlags::GLOBAL`] on user
    /// mappings, so none of its translations do.
    ///
    /// With a [`TlbShootdown`], every other CPU that may run the address
    /// space does the same before this returns.
    fn flush_tlb_all(&self) {
        instr::reload_cr3();
        self.flush_remote(None);
    }

    /// Linux x86's choice: test and clear ACCESSED, **no flush**.
    ///
    /// A stale TLB entry after clearing A is never a coherence problem: it
    /// translates to the same frame with the same rights, and A is only a
    /// hint for reclaim. The consequence: a page accessed through a TLB
    /// entry cached before the aging does not set A again, so on x86 it
    /// may look old to the next aging pass (a TLB miss, or any flush, soon
    /// makes A reliable again). Skipping the flush saves an `invlpg` (and,
    /// with several CPUs, an IPI) per young page scanned.
    ///
    /// The secondary MMUs are still aged: the `age_page` step lives in
    /// `mmu_notifier_core::pgtable::ptep_clear_flush_young_notify`, which
    /// wraps this method and which no arch can override (the 2008 patch
    /// lost aging on s390 because its override bypassed that step).
    unsafe fn ptep_clear_flush_young(&self, slot: &PteSlot<'_, Self>) -> bool {
        // SAFETY: this method's own contract (a valid leaf).
        unsafe { self.ptep_test_and_clear_young(slot) }
    }
}
