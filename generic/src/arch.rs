//! What an architecture provides: entry formats and hardware primitives.
//!
//! An arch crate implements [`Arch`]: how its translation tables are laid
//! out, how entries are encoded, and the few instructions that change a
//! live entry and purge the TLB. The provided methods
//! [`Arch::ptep_clear_flush`] and [`Arch::ptep_clear_flush_young`] are the
//! generic behaviour (Linux's `asm-generic/pgtable.h`); an arch overrides
//! them the way Linux's `__HAVE_ARCH_PTEP_CLEAR_FLUSH` does, for example
//! s390, whose IPTE clears and purges in one instruction.
//!
//! No method here calls a notifier, so no override can skip one: the
//! notifier step lives in [`crate::pgtable`], which wraps these.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::addr::{PhysAddr, VirtAddr};
use crate::error::Error;

/// One level of the translation-table tree, root first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    /// Bit position of the lowest virtual-address bit this level indexes.
    pub shift: u32,
    /// How many virtual-address bits this level indexes (entries = 2^bits).
    pub index_bits: u32,
    /// Size in bytes (and alignment) of one table of this level.
    pub table_bytes: usize,
    /// Whether an entry at this level may be a leaf (always true for the
    /// last level; true for levels with huge pages, e.g. x86-64's 2 MiB).
    pub leaf: bool,
}

impl Level {
    /// Bytes mapped by one entry of this level.
    pub const fn entry_span(&self) -> u64 {
        1 << self.shift
    }
    /// Index of `va` in a table of this level.
    pub const fn index(&self, va: VirtAddr) -> usize {
        ((va.0 >> self.shift) & ((1 << self.index_bits) - 1)) as usize
    }
}

/// Access permissions of a leaf, in portable terms. A valid leaf is always
/// readable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(transparent)]
pub struct Prot(u8);

impl Prot {
    /// Read-only, no execute, kernel only.
    pub const READ: Prot = Prot(0);
    /// Writable.
    pub const WRITE: Prot = Prot(1);
    /// Executable.
    pub const EXEC: Prot = Prot(2);
    /// Accessible from user mode (x86-64 U/S; ignored where the arch has no
    /// such bit).
    pub const USER: Prot = Prot(4);

    /// Both sets of permissions.
    pub const fn union(self, other: Prot) -> Prot {
        Prot(self.0 | other.0)
    }
    /// `self` without the permissions in `other`.
    pub const fn difference(self, other: Prot) -> Prot {
        Prot(self.0 & !other.0)
    }
    /// Whether every permission of `other` is in `self`.
    pub const fn contains(self, other: Prot) -> bool {
        self.0 & other.0 == other.0
    }
    /// Whether writes are allowed.
    pub const fn writable(self) -> bool {
        self.contains(Prot::WRITE)
    }
    /// Whether going from `self` to `new` removes a permission, so a CPU or
    /// secondary TLB could hold a now-too-permissive translation.
    pub const fn is_downgrade_to(self, new: Prot) -> bool {
        self.0 & !new.0 != 0
    }
}

impl core::ops::BitOr for Prot {
    type Output = Prot;
    fn bitor(self, rhs: Prot) -> Prot {
        self.union(rhs)
    }
}

impl core::fmt::Debug for Prot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("r")?;
        f.write_str(if self.writable() { "w" } else { "-" })?;
        f.write_str(if self.contains(Prot::EXEC) { "x" } else { "-" })?;
        f.write_str(if self.contains(Prot::USER) { "u" } else { "-" })
    }
}

/// A leaf entry, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Leaf {
    /// The frame it maps (aligned to the level's span).
    pub frame: PhysAddr,
    /// What it allows.
    pub prot: Prot,
    /// Accessed since the young bit was last cleared (as far as the entry
    /// itself tells; s390 keeps this in software).
    pub young: bool,
    /// Written since it was mapped (as far as the entry itself tells).
    pub dirty: bool,
}

/// An entry of any level, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Entry {
    /// Translates nothing.
    Invalid,
    /// Points to the next-level table at this physical address.
    Table(PhysAddr),
    /// Maps a frame.
    Leaf(Leaf),
}

/// A live leaf entry: the word, the address it translates, its level.
///
/// Only a page-table walker that holds the address space's page-table lock
/// makes these, so the arch primitives that take one may assume exclusive
/// write access to the word (the hardware may still set bits in it).
#[derive(Debug)]
pub struct PteSlot<'t> {
    entry: &'t AtomicU64,
    va: VirtAddr,
    level: usize,
}

impl<'t> PteSlot<'t> {
    /// # Safety
    /// - `entry` is the entry of a translation table, at `level`, that
    ///   translates `va` in an address space the CPUs may be using;
    /// - the caller holds that address space's page-table lock for `'t`, so
    ///   nobody else changes the entry meanwhile (hardware A/D updates aside);
    /// - `va` is aligned to the level's span.
    pub unsafe fn new(entry: &'t AtomicU64, va: VirtAddr, level: usize) -> Self {
        Self { entry, va, level }
    }
    /// The entry word (hardware may set bits in it concurrently).
    pub fn word(&self) -> &'t AtomicU64 {
        self.entry
    }
    /// Reads the entry.
    pub fn read(&self) -> u64 {
        self.entry.load(Ordering::Acquire)
    }
    /// The first virtual address it translates.
    pub fn va(&self) -> VirtAddr {
        self.va
    }
    /// Its level (index into [`Arch::LEVELS`]).
    pub fn level(&self) -> usize {
        self.level
    }
}

/// A translation was removed or downgraded in memory, but CPU TLBs may
/// still hold the old one.
///
/// The only ways to get rid of it are [`PendingFlush::flush`] (the arch's
/// `flush_tlb_page`) and the `unsafe` [`PendingFlush::assume_flushed`].
/// Dropping it flushes, so a forgotten flush costs time, never coherence.
#[must_use = "the CPU TLB may still hold the old translation: call .flush()"]
pub struct PendingFlush<'a, A: Arch + ?Sized> {
    arch: &'a A,
    va: VirtAddr,
    level: usize,
    old: u64,
    done: bool,
}

impl<'a, A: Arch + ?Sized> PendingFlush<'a, A> {
    /// Records that the entry at `va`/`level` held `old` and changed.
    /// Arch primitives return this after changing a live entry.
    pub fn new(arch: &'a A, va: VirtAddr, level: usize, old: u64) -> Self {
        Self {
            arch,
            va,
            level,
            old,
            done: false,
        }
    }

    /// The entry's value before the change.
    pub fn old(&self) -> u64 {
        self.old
    }

    /// Purges the translation from every CPU TLB that may hold it.
    pub fn flush(mut self) -> Flushed {
        // SAFETY: the address and level come from the slot the primitive
        // changed, which is what `flush_tlb_page` needs.
        unsafe { self.arch.flush_tlb_page(self.va, self.level) };
        self.done = true;
        Flushed {
            va: self.va,
            old: self.old,
        }
    }

    /// Declares the translation already purged.
    ///
    /// # Safety
    /// No CPU TLB holds the old translation of `va` any more: the
    /// instruction that changed the entry also purged it (s390 IPTE), or a
    /// wider flush that covers it has completed on every CPU.
    pub unsafe fn assume_flushed(mut self) -> Flushed {
        self.done = true;
        Flushed {
            va: self.va,
            old: self.old,
        }
    }
}

impl<A: Arch + ?Sized> Drop for PendingFlush<'_, A> {
    fn drop(&mut self) {
        if !self.done {
            // SAFETY: as in `flush`.
            unsafe { self.arch.flush_tlb_page(self.va, self.level) };
        }
    }
}

/// Proof that no CPU TLB holds the old translation of an entry.
#[derive(Debug)]
#[must_use = "carries the old entry; the notifier step still has to run"]
pub struct Flushed {
    va: VirtAddr,
    old: u64,
}

impl Flushed {
    /// The entry's value before the change.
    pub fn old(&self) -> u64 {
        self.old
    }
    /// The address whose translation was flushed.
    pub fn va(&self) -> VirtAddr {
        self.va
    }
}

/// An architecture: table geometry, entry encodings, and the primitives
/// that change live entries and purge CPU TLBs.
///
/// # Safety
/// Implementors promise that:
/// 1. [`LEVELS`](Self::LEVELS) describes the hardware's table format, and
///    `encode_*`/`decode` round-trip (`decode(encode_leaf(f, p))` is a leaf
///    with frame `f` and prot `p`);
/// 2. [`phys_to_virt`](Self::phys_to_virt) gives a pointer through which
///    table memory can be read and written;
/// 3. every primitive that returns a [`PendingFlush`] has changed the entry
///    in memory before returning, atomically with respect to hardware
///    accessed/dirty updates;
/// 4. [`flush_tlb_page`](Self::flush_tlb_page) returns only once no CPU
///    that may use the address space still holds a translation of the
///    given address made before the call (or the arch's entry-changing
///    instruction already guaranteed that, e.g. s390 IPTE).
pub unsafe trait Arch: Sync {
    /// A short name for logs.
    const NAME: &'static str;
    /// The table levels, root first; the last one holds base pages.
    const LEVELS: &'static [Level];

    /// The base page size.
    const PAGE_SIZE: u64 = 1 << Self::LEVELS[Self::LEVELS.len() - 1].shift;

    /// The word an empty entry of `level` holds (new tables are filled with
    /// it: 0 on x86-64, the invalid bit on s390).
    fn invalid_entry(level: usize) -> u64;

    /// Checks that `va` can be translated at all.
    ///
    /// # Errors
    /// [`Error::NonCanonical`] or [`Error::OutOfRange`] with the reason.
    fn check_addr(va: VirtAddr) -> Result<(), Error>;

    /// Decodes an entry word of `level`.
    fn decode(level: usize, raw: u64) -> Entry;

    /// Encodes a pointer to a next-level table.
    fn encode_table(level: usize, table: PhysAddr) -> u64;

    /// Encodes a leaf mapping `frame` with `prot` (not young, not dirty).
    fn encode_leaf(level: usize, frame: PhysAddr, prot: Prot) -> u64;

    /// The leaf `raw` with its permissions replaced by `prot`, frame and
    /// accessed/dirty state kept.
    fn leaf_with_prot(level: usize, raw: u64, prot: Prot) -> u64;

    /// Where table memory at `pa` can be accessed from this CPU.
    fn phys_to_virt(&self, pa: PhysAddr) -> *mut u8;

    /// Installs `raw` in an invalid entry. No flush is needed: no TLB can
    /// cache an invalid translation.
    ///
    /// # Safety
    /// The slot's entry is currently invalid, and `raw` maps memory that the
    /// address space may map.
    unsafe fn set_pte_at(&self, slot: &PteSlot<'_>, raw: u64);

    /// Replaces a valid entry with `new`, which must not grant more than the
    /// old entry (a downgrade, e.g. write-protection); keeps hardware
    /// accessed/dirty bits set meanwhile.
    ///
    /// # Safety
    /// The slot's entry is valid and `new` maps the same frame with no more
    /// permissions.
    unsafe fn ptep_modify(&self, slot: &PteSlot<'_>, new: u64) -> PendingFlush<'_, Self>;

    /// Clears the entry, returning the old one (with the final
    /// accessed/dirty bits).
    ///
    /// # Safety
    /// The slot's entry is valid, and nothing the running code needs is
    /// mapped by it.
    unsafe fn ptep_get_and_clear(&self, slot: &PteSlot<'_>) -> PendingFlush<'_, Self>;

    /// Tests and clears the accessed state of a valid leaf.
    ///
    /// # Safety
    /// The slot's entry is a valid leaf.
    unsafe fn ptep_test_and_clear_young(&self, slot: &PteSlot<'_>) -> bool;

    /// Purges the translation of `va` (an entry of `level`) from every CPU
    /// TLB that may hold it.
    ///
    /// # Safety
    /// Must be called only from a context that may run TLB-purging
    /// instructions (ring 0 on x86-64, supervisor state on s390).
    unsafe fn flush_tlb_page(&self, va: VirtAddr, level: usize);

    /// Purges every translation of the address space (and cached
    /// upper-level entries) from the CPU TLBs.
    ///
    /// # Safety
    /// As [`flush_tlb_page`](Self::flush_tlb_page).
    unsafe fn flush_tlb_all(&self);

    /// Clears a valid entry and purges it from the CPU TLBs (generic: get,
    /// clear, `flush_tlb_page`). Override when the hardware does both at
    /// once; the notifier step is not part of this and cannot be lost.
    ///
    /// # Safety
    /// As [`ptep_get_and_clear`](Self::ptep_get_and_clear).
    unsafe fn ptep_clear_flush(&self, slot: &PteSlot<'_>) -> Flushed {
        // SAFETY: forwarded contract.
        unsafe { self.ptep_get_and_clear(slot) }.flush()
    }

    /// Tests and clears the accessed state; if it was set, purges the
    /// translation so the next access sets it again (generic behaviour).
    /// Override to skip the flush where stale accessed state is harmless
    /// (Linux x86) or where the hardware has no accessed bit (s390).
    ///
    /// # Safety
    /// As [`ptep_test_and_clear_young`](Self::ptep_test_and_clear_young).
    unsafe fn ptep_clear_flush_young(&self, slot: &PteSlot<'_>) -> bool {
        // SAFETY: forwarded contract.
        let young = unsafe { self.ptep_test_and_clear_young(slot) };
        if young {
            // SAFETY: the slot's address and level, as flush_tlb_page needs.
            unsafe { self.flush_tlb_page(slot.va(), slot.level()) };
        }
        young
    }
}
