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

use core::marker::PhantomData;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::addr::{PageRange, PhysAddr, VirtAddr};
use crate::error::Error;

/// The shape of one level of the translation-table tree (an entry of
/// [`Arch::LEVELS`], root first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelGeometry {
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

impl LevelGeometry {
    /// Bytes mapped by one entry of this level.
    pub const fn entry_span(&self) -> u64 {
        1 << self.shift
    }
    /// Index of `va` in a table of this level.
    pub const fn index(&self, va: VirtAddr) -> usize {
        ((va.0 >> self.shift) & ((1 << self.index_bits) - 1)) as usize
    }
}

/// A level of `A`'s translation tree: an index into [`Arch::LEVELS`] that
/// is valid by construction, so a level that does not exist cannot reach
/// a walker or an arch primitive.
///
/// Arch crates name their levels (`X86_64::PT`, `S390x::SEGMENT`); generic
/// walkers use [`ROOT`](Self::ROOT), [`LAST`](Self::LAST) and
/// [`child`](Self::child). A level out of range is a compile error in a
/// constant and `None` from [`from_index`](Self::from_index):
///
/// ```compile_fail,E0080
/// # use mmu_notifier_core::arch::{Arch, Level, LevelGeometry, Entry, Prot, PteSlot, PendingFlush};
/// # use mmu_notifier_core::{Error, PhysAddr, VirtAddr};
/// # struct OneLevel;
/// # unsafe impl Arch for OneLevel {
/// #     const NAME: &'static str = "one";
/// #     const LEVELS: &'static [LevelGeometry] = &[LevelGeometry { shift: 12, index_bits: 9, table_bytes: 4096, leaf: true }];
/// #     const PHYS_ADDR_BITS: u32 = 52;
/// #     fn invalid_entry(_: Level<Self>) -> u64 { 0 }
/// #     fn check_addr(_: VirtAddr) -> Result<(), Error> { Ok(()) }
/// #     fn decode(_: Level<Self>, _: u64) -> Entry { Entry::Invalid }
/// #     fn encode_table(_: Level<Self>, _: PhysAddr) -> u64 { 0 }
/// #     fn encode_leaf(_: Level<Self>, _: PhysAddr, _: Prot) -> u64 { 0 }
/// #     fn leaf_with_prot(_: Level<Self>, raw: u64, _: Prot) -> u64 { raw }
/// #     fn leaf_with_cow(_: Level<Self>, raw: u64, _: bool) -> u64 { raw }
/// #     unsafe fn set_pte_at(&self, _: &PteSlot<'_, Self>, _: u64) {}
/// #     unsafe fn ptep_modify(&self, s: &PteSlot<'_, Self>, _: u64) -> PendingFlush<'_, Self> { unimplemented!() }
/// #     unsafe fn ptep_get_and_clear(&self, s: &PteSlot<'_, Self>) -> PendingFlush<'_, Self> { unimplemented!() }
/// #     unsafe fn ptep_test_and_clear_young(&self, _: &PteSlot<'_, Self>) -> bool { false }
/// #     fn flush_tlb_page(&self, _: VirtAddr, _: Level<Self>) {}
/// #     fn flush_tlb_all(&self) {}
/// # }
/// const NO_SUCH_LEVEL: Level<OneLevel> = Level::new(7);
/// # let _ = NO_SUCH_LEVEL;
/// ```
pub struct Level<A: ?Sized> {
    index: u8,
    _arch: PhantomData<fn() -> *const A>,
}

impl<A: ?Sized> Clone for Level<A> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<A: ?Sized> Copy for Level<A> {}
impl<A: ?Sized> PartialEq for Level<A> {
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index
    }
}
impl<A: ?Sized> Eq for Level<A> {}
impl<A: ?Sized> core::hash::Hash for Level<A> {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.index.hash(state);
    }
}
impl<A: ?Sized> core::fmt::Debug for Level<A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Level({})", self.index)
    }
}
#[cfg(feature = "defmt")]
impl<A: ?Sized> defmt::Format for Level<A> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "Level({})", self.index);
    }
}

impl<A: Arch + ?Sized> Level<A> {
    /// The root level.
    pub const ROOT: Self = Self::new(0);
    /// The last level, which holds base pages.
    pub const LAST: Self = Self::new(A::LEVELS.len() - 1);

    /// Level `index` of `A` (root = 0).
    ///
    /// # Panics
    /// If `A` has no such level; in a constant, that is a compile error.
    pub const fn new(index: usize) -> Self {
        match Self::from_index(index) {
            Some(level) => level,
            None => panic!("the arch has no translation level with this index"),
        }
    }

    /// Level `index` of `A`, if it has one.
    pub const fn from_index(index: usize) -> Option<Self> {
        if index < A::LEVELS.len() && index <= u8::MAX as usize {
            Some(Self {
                index: index as u8,
                _arch: PhantomData,
            })
        } else {
            None
        }
    }

    /// The index in [`Arch::LEVELS`].
    pub const fn index(self) -> usize {
        self.index as usize
    }

    /// Its shape.
    pub const fn geometry(self) -> &'static LevelGeometry {
        &A::LEVELS[self.index as usize]
    }

    /// Bytes one entry of this level maps.
    pub const fn entry_span(self) -> u64 {
        self.geometry().entry_span()
    }

    /// Whether this is the last level (base pages).
    pub const fn is_last(self) -> bool {
        self.index as usize == A::LEVELS.len() - 1
    }

    /// Whether an entry of this level may be a leaf.
    pub const fn may_be_leaf(self) -> bool {
        self.geometry().leaf
    }

    /// Whether this level holds huge pages: leaves above the last level.
    pub const fn holds_huge_pages(self) -> bool {
        self.may_be_leaf() && !self.is_last()
    }

    /// The next level down, if any.
    pub const fn child(self) -> Option<Self> {
        Self::from_index(self.index as usize + 1)
    }

    /// The index of `va` in a table of this level.
    pub const fn index_of(self, va: VirtAddr) -> usize {
        self.geometry().index(va)
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
    /// Whether going from `self` to `new` adds a permission.
    pub const fn is_upgrade_to(self, new: Prot) -> bool {
        new.0 & !self.0 != 0
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
    /// Write-protected because its frame is shared copy-on-write with
    /// another address space (a software bit): it must not become writable
    /// in place, a write must copy the frame first.
    pub cow: bool,
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

/// A live entry of a translation table: the word, where it is in physical
/// memory, the address it translates and its level.
///
/// Only a page-table walker that holds the address space's page-table lock
/// makes these, so the arch primitives that take one may assume exclusive
/// write access to the word (the hardware may still set bits in it). The
/// constructor checks what it can: the level exists (its type), the address
/// is aligned to the level's span and translatable, and the span fits in
/// the address space, so [`span`](Self::span) always exists.
#[derive(Debug)]
pub struct PteSlot<'t, A: Arch + ?Sized> {
    entry: &'t AtomicU64,
    entry_pa: PhysAddr,
    va: VirtAddr,
    level: Level<A>,
}

impl<'t, A: Arch + ?Sized> PteSlot<'t, A> {
    /// The slot of `entry`, the entry of `level` that translates `va`.
    ///
    /// # Safety
    /// 1. `entry` is the entry of a translation table, at `level`, that
    ///    translates `va` in an address space the CPUs may be using, and
    ///    `entry_pa` is its physical address;
    /// 2. the caller holds that address space's page-table lock for `'t`,
    ///    so nobody else changes the entry meanwhile (hardware accessed and
    ///    dirty updates aside).
    ///
    /// # Errors
    /// [`Error::Unaligned`] if `va` is not aligned to the level's span;
    /// [`Error::OutOfRange`] or [`Error::NonCanonical`] if the arch cannot
    /// translate `va`, or its span reaches past the end of the address
    /// space.
    pub unsafe fn new(
        entry: &'t AtomicU64,
        entry_pa: PhysAddr,
        va: VirtAddr,
        level: Level<A>,
    ) -> Result<Self, Error> {
        let span = level.entry_span();
        if !va.is_aligned(span) {
            return Err(Error::Unaligned {
                addr: va.0,
                align: span,
            });
        }
        A::check_addr(va)?;
        let end = va.checked_add(span).ok_or(Error::OutOfRange {
            addr: va.0,
            limit: u64::MAX,
        })?;
        A::check_addr(VirtAddr(end.0 - 1))?;
        Ok(Self {
            entry,
            entry_pa,
            va,
            level,
        })
    }
    /// The entry word (hardware may set bits in it concurrently).
    pub fn word(&self) -> &'t AtomicU64 {
        self.entry
    }
    /// The entry's physical address (what s390's IPTE needs).
    pub fn entry_pa(&self) -> PhysAddr {
        self.entry_pa
    }
    /// Reads the entry.
    pub fn read(&self) -> u64 {
        self.entry.load(Ordering::Acquire)
    }
    /// The entry, decoded.
    pub fn decode(&self) -> Entry {
        A::decode(self.level, self.read())
    }
    /// The leaf it holds, if it holds one.
    pub fn leaf(&self) -> Option<Leaf> {
        match self.decode() {
            Entry::Leaf(leaf) => Some(leaf),
            _ => None,
        }
    }
    /// The first virtual address it translates.
    pub fn va(&self) -> VirtAddr {
        self.va
    }
    /// Its level.
    pub fn level(&self) -> Level<A> {
        self.level
    }
    /// Every address a leaf in this slot translates.
    pub fn span(&self) -> PageRange {
        let end = VirtAddr(self.va.0 + self.level.entry_span());
        PageRange::new(self.va, end, A::PAGE_SIZE)
            .expect("checked at construction: aligned, non-empty, no overflow")
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
    level: Level<A>,
    old: u64,
    done: bool,
}

impl<'a, A: Arch + ?Sized> PendingFlush<'a, A> {
    /// Records that the entry at `va`/`level` held `old` and changed.
    /// Arch primitives return this after changing a live entry. Safe: the
    /// worst a wrong address does is flush a translation nobody needed
    /// flushed.
    pub fn new(arch: &'a A, va: VirtAddr, level: Level<A>, old: u64) -> Self {
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
        self.arch.flush_tlb_page(self.va, self.level);
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
            self.arch.flush_tlb_page(self.va, self.level);
        }
    }
}

/// Proof that no CPU TLB holds the old translation of an entry, with the
/// entry's old value (its final accessed and dirty bits).
#[derive(Debug)]
#[must_use = "carries the old entry and its final accessed/dirty bits"]
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
///    with frame `f` and prot `p`, not copy-on-write; `leaf_with_prot` and
///    `leaf_with_cow` change only what they name);
/// 2. [`check_addr`](Self::check_addr) refuses every address the hardware
///    cannot translate, and [`PHYS_ADDR_BITS`](Self::PHYS_ADDR_BITS) is at
///    most what an entry can hold, so every encoding of a frame the default
///    [`check_frame`](Self::check_frame) accepts is exact (no bit of the
///    frame is dropped);
/// 3. every primitive that returns a [`PendingFlush`] has changed the entry
///    in memory before returning, atomically with respect to hardware
///    accessed/dirty updates;
/// 4. [`flush_tlb_page`](Self::flush_tlb_page) and
///    [`flush_tlb_all`](Self::flush_tlb_all) return only once no CPU that
///    may use the address space still holds a translation they cover made
///    before the call (or the arch's entry-changing instruction already
///    guaranteed that, e.g. s390 IPTE).
///
/// Where table memory is and how it is reached is not the arch's business:
/// the [`TableMemory`](crate::mm::TableMemory) implementation vouches for
/// that.
pub unsafe trait Arch: Sync {
    /// A short name for logs.
    const NAME: &'static str;
    /// The table levels, root first; the last one holds base pages.
    const LEVELS: &'static [LevelGeometry];
    /// Physical addresses (frames and tables) must lie below `2^bits`.
    const PHYS_ADDR_BITS: u32;

    /// The base page size.
    const PAGE_SIZE: u64 = 1 << Self::LEVELS[Self::LEVELS.len() - 1].shift;

    /// The word an empty entry of `level` holds (new tables are filled with
    /// it: 0 on x86-64, the invalid bit on s390).
    fn invalid_entry(level: Level<Self>) -> u64;

    /// Checks that `va` can be translated at all.
    ///
    /// # Errors
    /// [`Error::NonCanonical`] or [`Error::OutOfRange`] with the reason.
    fn check_addr(va: VirtAddr) -> Result<(), Error>;

    /// Checks that a leaf of `level` may map `frame`: aligned to the
    /// level's span and wholly below `2^PHYS_ADDR_BITS`. Checked before a
    /// mapping changes, in release builds too: an entry cannot hold the
    /// frame otherwise, and a silently truncated one would map another.
    ///
    /// # Errors
    /// [`Error::Unaligned`]; [`Error::PhysOutOfRange`].
    fn check_frame(frame: PhysAddr, level: Level<Self>) -> Result<(), Error> {
        let span = level.entry_span();
        if !frame.is_aligned(span) {
            return Err(Error::Unaligned {
                addr: frame.0,
                align: span,
            });
        }
        check_phys_limit::<Self>(frame, span)
    }

    /// Decodes an entry word of `level`.
    fn decode(level: Level<Self>, raw: u64) -> Entry;

    /// Encodes a pointer to a next-level table (checked with
    /// [`check_frame`](Self::check_frame)-like limits by the caller).
    fn encode_table(level: Level<Self>, table: PhysAddr) -> u64;

    /// Encodes a leaf mapping `frame` with `prot` (not young, not dirty,
    /// not copy-on-write). `frame` passed [`check_frame`](Self::check_frame).
    fn encode_leaf(level: Level<Self>, frame: PhysAddr, prot: Prot) -> u64;

    /// The leaf `raw` with its permissions replaced by `prot`, everything
    /// else (frame, accessed/dirty, copy-on-write) kept.
    fn leaf_with_prot(level: Level<Self>, raw: u64, prot: Prot) -> u64;

    /// The leaf `raw` marked (or unmarked) copy-on-write in a software bit,
    /// everything else kept. The mark does not write-protect: pair it with
    /// [`leaf_with_prot`](Self::leaf_with_prot).
    fn leaf_with_cow(level: Level<Self>, raw: u64, cow: bool) -> u64;

    /// Installs `raw` in an invalid entry. No flush is needed: no TLB can
    /// cache an invalid translation.
    ///
    /// # Safety
    /// 1. The slot's entry is currently invalid;
    /// 2. `raw` maps memory that the address space may map (or points to a
    ///    table of the next level).
    unsafe fn set_pte_at(&self, slot: &PteSlot<'_, Self>, raw: u64);

    /// Replaces a valid leaf with `new`, which maps the same frame with
    /// other permissions or another copy-on-write mark; keeps hardware
    /// accessed/dirty bits set meanwhile.
    ///
    /// # Safety
    /// 1. The slot's entry is a valid leaf;
    /// 2. `new` is that leaf with only its permissions or copy-on-write mark
    ///    changed (built with `leaf_with_prot`/`leaf_with_cow`).
    unsafe fn ptep_modify(&self, slot: &PteSlot<'_, Self>, new: u64) -> PendingFlush<'_, Self>;

    /// Clears the entry, returning the old one (with the final
    /// accessed/dirty bits).
    ///
    /// # Safety
    /// 1. The slot's entry is a valid leaf;
    /// 2. nothing the running code needs is mapped by it.
    unsafe fn ptep_get_and_clear(&self, slot: &PteSlot<'_, Self>) -> PendingFlush<'_, Self>;

    /// Tests and clears the accessed state of a valid leaf.
    ///
    /// # Safety
    /// The slot's entry is a valid leaf.
    unsafe fn ptep_test_and_clear_young(&self, slot: &PteSlot<'_, Self>) -> bool;

    /// Purges the translation of `va` (an entry of `level`) from every CPU
    /// TLB that may hold it.
    ///
    /// Safe to call with any address: purging a translation never breaks
    /// memory safety. Run where the instruction is not allowed (user mode on
    /// x86-64, problem state on s390), it raises the CPU's privilege
    /// exception, which the kernel reports; that is a fault, not undefined
    /// behaviour.
    fn flush_tlb_page(&self, va: VirtAddr, level: Level<Self>);

    /// Purges every translation of the address space (and cached
    /// upper-level entries) from the CPU TLBs. Safe, as
    /// [`flush_tlb_page`](Self::flush_tlb_page).
    fn flush_tlb_all(&self);

    /// Clears a valid leaf and purges it from the CPU TLBs (generic: get,
    /// clear, `flush_tlb_page`). Override when the hardware does both at
    /// once; the notifier step is not part of this and cannot be lost.
    ///
    /// # Safety
    /// As [`ptep_get_and_clear`](Self::ptep_get_and_clear).
    unsafe fn ptep_clear_flush(&self, slot: &PteSlot<'_, Self>) -> Flushed {
        // SAFETY: 1. and 2. are this function's own contract.
        unsafe { self.ptep_get_and_clear(slot) }.flush()
    }

    /// Tests and clears the accessed state; if it was set, purges the
    /// translation so the next access sets it again (generic behaviour).
    /// Override to skip the flush where stale accessed state is harmless
    /// (Linux x86) or where the hardware has no accessed bit (s390).
    ///
    /// # Safety
    /// As [`ptep_test_and_clear_young`](Self::ptep_test_and_clear_young).
    unsafe fn ptep_clear_flush_young(&self, slot: &PteSlot<'_, Self>) -> bool {
        // SAFETY: this function's own contract.
        let young = unsafe { self.ptep_test_and_clear_young(slot) };
        if young {
            self.flush_tlb_page(slot.va(), slot.level());
        }
        young
    }
}

/// Checks that `[pa, pa + bytes)` lies below `2^A::PHYS_ADDR_BITS`.
///
/// # Errors
/// [`Error::PhysOutOfRange`].
pub fn check_phys_limit<A: Arch + ?Sized>(pa: PhysAddr, bytes: u64) -> Result<(), Error> {
    let limit = 1u128 << A::PHYS_ADDR_BITS;
    if u128::from(pa.0) + u128::from(bytes) > limit {
        return Err(Error::PhysOutOfRange {
            addr: pa.0,
            limit: u64::try_from(limit).unwrap_or(u64::MAX),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Prot;

    const FLAGS: [Prot; 3] = [Prot::WRITE, Prot::EXEC, Prot::USER];

    fn every_prot() -> impl Iterator<Item = Prot> {
        (0u8..8).map(|bits| {
            FLAGS
                .iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .fold(Prot::READ, |p, (_, &f)| p | f)
        })
    }

    #[test]
    fn a_downgrade_is_losing_any_permission_and_an_upgrade_gaining_any() {
        for old in every_prot() {
            for new in every_prot() {
                let loses = FLAGS.iter().any(|&f| old.contains(f) && !new.contains(f));
                let gains = FLAGS.iter().any(|&f| !old.contains(f) && new.contains(f));
                assert_eq!(old.is_downgrade_to(new), loses, "{old:?} -> {new:?}");
                assert_eq!(old.is_upgrade_to(new), gains, "{old:?} -> {new:?}");
            }
        }
        assert!(Prot::WRITE.is_downgrade_to(Prot::READ), "write-protect");
        assert!(!Prot::READ.is_downgrade_to(Prot::WRITE), "making writable");
        assert!(!Prot::WRITE.is_downgrade_to(Prot::WRITE), "no change");
        let rwu = Prot::WRITE | Prot::USER;
        let rwx = Prot::WRITE | Prot::EXEC;
        assert!(
            rwu.is_downgrade_to(rwx) && rwu.is_upgrade_to(rwx),
            "trading USER for EXEC is both"
        );
    }
}
