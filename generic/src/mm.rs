//! A reference address space: a page-table tree generic over the arch, and
//! the call sites the seed patched, each calling the notifiers at the
//! point the seed did (and with the range pair around it, as Linux later
//! did).
//!
//! A kernel with its own memory-management structures can skip this module
//! and call [`crate::pgtable`] and [`NotifierHead`] from its own walkers; it
//! is also the shape the conformance suites and the benchmarks drive.
//!
//! # Locking
//! One page-table lock per address space serialises every change to the
//! tree, and is held while notifier callbacks run (the seed's rule: they
//! are called in atomic context, under the PT lock). A callback must
//! therefore not call back into the same address space.
//!
//! # Errors leave nothing half-changed
//! Each operation checks its input and the whole range (pages already
//! mapped, pages of the wrong size) before it changes the first entry.
//! It may allocate empty intermediate tables and then fail for lack of
//! memory, which changes no translation.

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::addr::{PageRange, PhysAddr, VirtAddr};
use crate::arch::{Arch, Entry, Leaf, Prot, PteSlot};
use crate::error::Error;
use crate::notifier::{Event, InvalidateRange, NotifierHead};
use crate::pgtable::{
    ptep_clear_flush_notify, ptep_clear_flush_young_notify, ptep_modify_flush_notify, Reusable,
};
use crate::sync::RawSpinLock;

/// Memory for translation tables.
///
/// # Safety
/// `alloc_table` returns memory that nothing else uses until it is given
/// back with `free_table`, aligned to `bytes`, reachable through the arch's
/// [`Arch::phys_to_virt`].
pub unsafe trait FrameAllocator: Sync {
    /// Allocates `bytes` (a power of two) of table memory aligned to `bytes`.
    fn alloc_table(&self, bytes: usize) -> Option<PhysAddr>;

    /// Gives table memory back.
    ///
    /// # Safety
    /// `pa` came from `alloc_table(bytes)` and no translation table entry,
    /// and no CPU's paging-structure cache, refers to it any more.
    unsafe fn free_table(&self, pa: PhysAddr, bytes: usize);
}

/// An address space: a root table, its page-table lock and its notifiers.
pub struct AddressSpace<'a, A: Arch, F: FrameAllocator> {
    arch: &'a A,
    frames: &'a F,
    root: PhysAddr,
    ptl: RawSpinLock,
    released: AtomicBool,
    notifiers: NotifierHead,
}

impl<A: Arch, F: FrameAllocator> core::fmt::Debug for AddressSpace<'_, A, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AddressSpace")
            .field("arch", &A::NAME)
            .field("root", &self.root)
            .field("released", &self.released.load(Ordering::Relaxed))
            .field("notifiers", &self.notifiers)
            .finish()
    }
}

/// How `copy_range` treats a mapping, as the seed's `is_cow_mapping` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CopyMode {
    /// A private writable mapping: parent and child share frames read-only
    /// until one writes (copy-on-write). The parent's writable entries are
    /// write-protected, so its secondary MMUs are told.
    Cow,
    /// A shared mapping: the child gets the same permissions; the parent's
    /// entries do not change and no notifier is called.
    Shared,
}

impl<'a, A: Arch, F: FrameAllocator> AddressSpace<'a, A, F> {
    /// An empty address space with a fresh root table.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] if the root table cannot be allocated.
    pub fn new(arch: &'a A, frames: &'a F) -> Result<Self, Error> {
        let mut mm = Self {
            arch,
            frames,
            root: PhysAddr(0),
            ptl: RawSpinLock::new(),
            released: AtomicBool::new(false),
            notifiers: NotifierHead::new(),
        };
        mm.root = mm.new_table(0)?;
        Ok(mm)
    }

    /// The root table's physical address (what CR3 or an ASCE points to).
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// The notifiers of this address space.
    pub fn notifiers(&self) -> &NotifierHead {
        &self.notifiers
    }

    /// The arch this address space uses.
    pub fn arch(&self) -> &'a A {
        self.arch
    }

    /// Whether [`teardown`](Self::teardown) has run.
    pub fn is_released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }

    const LAST: usize = A::LEVELS.len() - 1;

    fn table(&self, pa: PhysAddr, level: usize) -> &[AtomicU64] {
        let entries = 1usize << A::LEVELS[level].index_bits;
        // SAFETY: every table of this tree was allocated by `new_table` for
        // this level (so it holds `entries` words, aligned), is reachable
        // through `phys_to_virt` (FrameAllocator contract), and lives until
        // teardown frees it under the page-table lock. Words are accessed
        // only atomically, as the hardware walker also does.
        unsafe {
            core::slice::from_raw_parts(self.arch.phys_to_virt(pa).cast::<AtomicU64>(), entries)
        }
    }

    fn new_table(&self, level: usize) -> Result<PhysAddr, Error> {
        let bytes = A::LEVELS[level].table_bytes;
        let pa = self.frames.alloc_table(bytes).ok_or(Error::OutOfMemory)?;
        let invalid = A::invalid_entry(level);
        for e in self.table(pa, level) {
            e.store(invalid, Ordering::Relaxed);
        }
        Ok(pa)
    }

    fn validate(&self, range: PageRange, align: u64) -> Result<(), Error> {
        for a in [range.start(), range.end()] {
            if !a.is_aligned(align) {
                return Err(Error::Unaligned { addr: a.0, align });
            }
        }
        A::check_addr(range.start())?;
        A::check_addr(VirtAddr(range.end().0 - 1))
    }

    fn lock_live(&self) -> Result<crate::sync::RawSpinGuard<'_>, Error> {
        let guard = self.ptl.lock();
        if self.released.load(Ordering::Relaxed) {
            return Err(Error::Released);
        }
        Ok(guard)
    }

    /// Walks to the entry of `level` that translates `va`, allocating
    /// missing tables if `alloc`. `Ok(None)`: not allocated and absent.
    fn entry(&self, va: VirtAddr, level: usize, alloc: bool) -> Result<Option<&AtomicU64>, Error> {
        let mut table = self.root;
        for l in 0..level {
            let e = &self.table(table, l)[A::LEVELS[l].index(va)];
            match A::decode(l, e.load(Ordering::Acquire)) {
                Entry::Table(next) => table = next,
                Entry::Invalid if alloc => {
                    let next = self.new_table(l + 1)?;
                    e.store(A::encode_table(l, next), Ordering::Release);
                    table = next;
                }
                Entry::Invalid => return Ok(None),
                Entry::Leaf(_) => return Err(Error::PageSizeMismatch { addr: va.0 }),
            }
        }
        Ok(Some(&self.table(table, level)[A::LEVELS[level].index(va)]))
    }

    /// Calls `f` for every entry of `level` in `range` that exists (tables
    /// present down to it), in address order, skipping absent subtrees.
    /// Meets a leaf above `level`: [`Error::PageSizeMismatch`].
    fn for_each_entry(
        &self,
        range: PageRange,
        level: usize,
        f: &mut dyn FnMut(&AtomicU64, VirtAddr) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.visit(self.root, 0, range, level, f)
    }

    fn visit(
        &self,
        table: PhysAddr,
        l: usize,
        range: PageRange,
        level: usize,
        f: &mut dyn FnMut(&AtomicU64, VirtAddr) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let desc = A::LEVELS[l];
        let span = desc.entry_span();
        let entries = self.table(table, l);
        let mut va = range.start().0;
        while va < range.end().0 {
            let e = &entries[desc.index(VirtAddr(va))];
            let entry_start = va & !(span - 1);
            let next = entry_start.saturating_add(span).min(range.end().0);
            if l == level {
                f(e, VirtAddr(va))?;
            } else {
                match A::decode(l, e.load(Ordering::Acquire)) {
                    Entry::Table(t) => {
                        let sub =
                            PageRange::new(VirtAddr(va), VirtAddr(next), 1).expect("va < next");
                        self.visit(t, l + 1, sub, level, f)?;
                    }
                    Entry::Invalid => {}
                    Entry::Leaf(_) => return Err(Error::PageSizeMismatch { addr: va }),
                }
            }
            if next == u64::MAX {
                break;
            }
            va = next;
        }
        Ok(())
    }

    /// Builds the slot for a live entry found by the walker.
    ///
    /// # Safety
    /// `entry` was found by this tree's walker for `va` at `level`, and the
    /// page-table lock is held while the slot is used.
    unsafe fn slot<'t>(&self, entry: &'t AtomicU64, va: VirtAddr, level: usize) -> PteSlot<'t> {
        // SAFETY: forwarded contract; `va` is aligned by the walkers.
        unsafe { PteSlot::new(entry, va, level) }
    }

    /// Maps the base page at `va` to `frame`.
    ///
    /// # Errors
    /// Bad address or frame alignment; [`Error::AlreadyMapped`];
    /// [`Error::PageSizeMismatch`] inside a huge page; [`Error::Released`];
    /// [`Error::OutOfMemory`].
    pub fn map(&self, va: VirtAddr, frame: PhysAddr, prot: Prot) -> Result<(), Error> {
        self.map_at_level(Self::LAST, va, frame, prot)
    }

    /// Maps a huge page at `level` (an index into [`Arch::LEVELS`] whose
    /// `leaf` is true, above the last level).
    ///
    /// # Errors
    /// As [`map`](Self::map); [`Error::HugePagesUnsupported`] if `level`
    /// cannot hold a leaf.
    pub fn map_huge(
        &self,
        level: usize,
        va: VirtAddr,
        frame: PhysAddr,
        prot: Prot,
    ) -> Result<(), Error> {
        if level >= Self::LAST || !A::LEVELS[level].leaf {
            return Err(Error::HugePagesUnsupported);
        }
        self.map_at_level(level, va, frame, prot)
    }

    fn map_at_level(
        &self,
        level: usize,
        va: VirtAddr,
        frame: PhysAddr,
        prot: Prot,
    ) -> Result<(), Error> {
        let span = A::LEVELS[level].entry_span();
        let range = PageRange::from_pages(va, 1, span)?;
        self.validate(range, span)?;
        if !frame.is_aligned(span) {
            return Err(Error::Unaligned {
                addr: frame.0,
                align: span,
            });
        }
        let _ptl = self.lock_live()?;
        let e = self.entry(va, level, true)?.ok_or(Error::OutOfMemory)?;
        match A::decode(level, e.load(Ordering::Acquire)) {
            Entry::Invalid => {}
            Entry::Leaf(_) => return Err(Error::AlreadyMapped { addr: va.0 }),
            Entry::Table(_) => return Err(Error::PageSizeMismatch { addr: va.0 }),
        }
        // SAFETY: found by the walker under the lock; the entry is invalid.
        unsafe {
            self.arch
                .set_pte_at(&self.slot(e, va, level), A::encode_leaf(level, frame, prot))
        };
        Ok(())
    }

    /// The leaf translating `va` and its level, if any (what a secondary
    /// MMU's fault path reads).
    pub fn translate(&self, va: VirtAddr) -> Option<(Leaf, usize)> {
        A::check_addr(va).ok()?;
        let _ptl = self.lock_live().ok()?;
        self.find_leaf(va).map(|(_, leaf, l)| (leaf, l))
    }

    /// The entry, decoded leaf and level translating `va`, at whatever
    /// level the leaf sits. Caller holds the page-table lock.
    fn find_leaf(&self, va: VirtAddr) -> Option<(&AtomicU64, Leaf, usize)> {
        let mut table = self.root;
        for l in 0..A::LEVELS.len() {
            let e = &self.table(table, l)[A::LEVELS[l].index(va)];
            match A::decode(l, e.load(Ordering::Acquire)) {
                Entry::Table(next) if l < Self::LAST => table = next,
                Entry::Leaf(leaf) => return Some((e, leaf, l)),
                _ => return None,
            }
        }
        None
    }

    /// Unmaps every base page in `range` (the seed's `zap_pte_range`): each
    /// present entry is cleared, the CPU TLB flushed, `invalidate_page`
    /// called, and its frame handed to `free`; the whole walk is bracketed
    /// by one `invalidate_range_start`/`end` pair ([`Event::Unmap`]).
    /// Returns the number of pages unmapped.
    ///
    /// # Errors
    /// Bad range; [`Error::PageSizeMismatch`] if a huge page lies in the
    /// range (unmap it with [`unmap_huge_range`](Self::unmap_huge_range));
    /// [`Error::Released`].
    pub fn zap_range(
        &self,
        range: PageRange,
        free: &mut dyn FnMut(Reusable),
    ) -> Result<usize, Error> {
        self.zap(range, free, true)
    }

    /// [`zap_range`](Self::zap_range) from a context that must not sleep
    /// (an OOM-reaper-like path): notifiers are started with
    /// `may_block() == false`.
    ///
    /// # Errors
    /// As `zap_range`, plus [`Error::Again`] if a notifier would have had to
    /// sleep: then nothing was unmapped, and the notifiers that had started
    /// were ended.
    pub fn zap_range_nonblock(
        &self,
        range: PageRange,
        free: &mut dyn FnMut(Reusable),
    ) -> Result<usize, Error> {
        self.zap(range, free, false)
    }

    fn zap(
        &self,
        range: PageRange,
        free: &mut dyn FnMut(Reusable),
        may_block: bool,
    ) -> Result<usize, Error> {
        self.validate(range, A::PAGE_SIZE)?;
        let _ptl = self.lock_live()?;
        self.for_each_entry(range, Self::LAST, &mut |_, _| Ok(()))?;
        let unmap = InvalidateRange::new(range, Event::Unmap);
        let guard = if may_block {
            self.notifiers.invalidate_range_start(unmap)
        } else {
            self.notifiers.try_invalidate_range_start_nonblock(unmap)?
        };
        let n = self.clear_leaves(range, Self::LAST, free);
        guard.end();
        Ok(n)
    }

    /// Clears every leaf of `level` in `range` through the notifier step.
    /// Caller holds the lock and has checked the range.
    fn clear_leaves(
        &self,
        range: PageRange,
        level: usize,
        free: &mut dyn FnMut(Reusable),
    ) -> usize {
        let mut n = 0;
        let _ = self.for_each_entry(range, level, &mut |e, va| {
            if let Entry::Leaf(_) = A::decode(level, e.load(Ordering::Acquire)) {
                // SAFETY: a valid leaf found by the walker under the lock;
                // callers only unmap ranges of the address space's own pages.
                let slot = unsafe { self.slot(e, va, level) };
                // SAFETY: as above; `self.notifiers` belongs to this tree.
                let frame = unsafe { ptep_clear_flush_notify(self.arch, &self.notifiers, &slot) };
                if let Some(frame) = frame {
                    free(frame);
                }
                n += 1;
            }
            Ok(())
        });
        n
    }

    /// Unmaps every huge page of `level` in `range` (the seed's
    /// `__unmap_hugepage_range`): per huge entry, clear, flush, notify
    /// (`invalidate_page` of its address and `invalidate_pages` of its
    /// span), hand back the frame. Returns the number of huge pages.
    ///
    /// # Errors
    /// [`Error::HugePagesUnsupported`] if `level` holds no huge leaves;
    /// bad range (aligned to the huge span); [`Error::PageSizeMismatch`] if
    /// a table of smaller pages lies in the range; [`Error::Released`].
    pub fn unmap_huge_range(
        &self,
        level: usize,
        range: PageRange,
        free: &mut dyn FnMut(Reusable),
    ) -> Result<usize, Error> {
        if level >= Self::LAST || !A::LEVELS[level].leaf {
            return Err(Error::HugePagesUnsupported);
        }
        self.validate(range, A::LEVELS[level].entry_span())?;
        let _ptl = self.lock_live()?;
        self.for_each_entry(range, level, &mut |e, va| match A::decode(
            level,
            e.load(Ordering::Acquire),
        ) {
            Entry::Table(_) => Err(Error::PageSizeMismatch { addr: va.0 }),
            _ => Ok(()),
        })?;
        let guard = self
            .notifiers
            .invalidate_range_start(InvalidateRange::new(range, Event::Unmap));
        let n = self.clear_leaves(range, level, free);
        guard.end();
        Ok(n)
    }

    /// Copies the translations of `range` into `child` (the seed's
    /// `copy_pte_range`, for fork). With [`CopyMode::Cow`] the parent's
    /// writable entries are write-protected (flushed one by one), both
    /// sides map the frames read-only, and the parent's notifiers get
    /// `invalidate_pages(range)` after the loop, as in the seed.
    ///
    /// # Errors
    /// Bad range; [`Error::AlreadyMapped`] if `child` maps a page of the
    /// range; [`Error::PageSizeMismatch`] for huge pages;
    /// [`Error::SameAddressSpace`] if `child` is `self`;
    /// [`Error::Released`] if either side was torn down;
    /// [`Error::OutOfMemory`].
    pub fn copy_range(
        &self,
        child: &AddressSpace<'_, A, F>,
        range: PageRange,
        mode: CopyMode,
    ) -> Result<(), Error> {
        if ptr::eq(self.root.0 as *const u8, child.root.0 as *const u8) {
            return Err(Error::SameAddressSpace);
        }
        self.validate(range, A::PAGE_SIZE)?;
        let _ptl = self.lock_live()?;
        let _child_ptl = child.lock_live()?;
        // Check both sides, and build the child's tables, before changing
        // anything.
        self.for_each_entry(range, Self::LAST, &mut |e, va| {
            if let Entry::Leaf(_) = A::decode(Self::LAST, e.load(Ordering::Acquire)) {
                let c = child
                    .entry(va, Self::LAST, true)?
                    .ok_or(Error::OutOfMemory)?;
                if A::decode(Self::LAST, c.load(Ordering::Acquire)) != Entry::Invalid {
                    return Err(Error::AlreadyMapped { addr: va.0 });
                }
            }
            Ok(())
        })?;
        let guard = (mode == CopyMode::Cow).then(|| {
            self.notifiers
                .invalidate_range_start(InvalidateRange::new(range, Event::Clear))
        });
        self.for_each_entry(range, Self::LAST, &mut |e, va| {
            let raw = e.load(Ordering::Acquire);
            let Entry::Leaf(leaf) = A::decode(Self::LAST, raw) else {
                return Ok(());
            };
            let prot = match mode {
                CopyMode::Cow => leaf.prot.difference(Prot::WRITE),
                CopyMode::Shared => leaf.prot,
            };
            if mode == CopyMode::Cow && leaf.prot.writable() {
                // SAFETY: a valid leaf found by the walker under the lock; the
                // new entry maps the same frame with less permission.
                let slot = unsafe { self.slot(e, va, Self::LAST) };
                // SAFETY: as above; our own notifier head.
                let _ = unsafe {
                    ptep_modify_flush_notify(
                        self.arch,
                        &self.notifiers,
                        &slot,
                        A::leaf_with_prot(Self::LAST, raw, prot),
                    )
                };
            }
            let c = child
                .entry(va, Self::LAST, false)?
                .ok_or(Error::OutOfMemory)?;
            // SAFETY: the child's entry was checked invalid above, under its
            // lock; it maps a frame the parent maps.
            unsafe {
                child.arch.set_pte_at(
                    &child.slot(c, va, Self::LAST),
                    A::encode_leaf(Self::LAST, leaf.frame, prot),
                )
            };
            Ok(())
        })?;
        if mode == CopyMode::Cow && crate::pgtable::NOTIFY {
            self.notifiers.invalidate_pages(range);
        }
        if let Some(guard) = guard {
            guard.end();
        }
        Ok(())
    }

    /// Changes the protection of every mapped base page in `range` to
    /// `prot` (the seed's `change_pte_range`, for mprotect): each changed
    /// entry is modified and flushed, then the notifiers get
    /// `invalidate_pages(range)` after the loop, inside one
    /// [`Event::ProtectionVma`] range pair. Returns the pages changed.
    ///
    /// # Errors
    /// Bad range; [`Error::PageSizeMismatch`] for huge pages;
    /// [`Error::Released`].
    pub fn change_protection(&self, range: PageRange, prot: Prot) -> Result<usize, Error> {
        self.validate(range, A::PAGE_SIZE)?;
        let _ptl = self.lock_live()?;
        self.for_each_entry(range, Self::LAST, &mut |_, _| Ok(()))?;
        let guard = self
            .notifiers
            .invalidate_range_start(InvalidateRange::new(range, Event::ProtectionVma));
        let mut n = 0;
        self.for_each_entry(range, Self::LAST, &mut |e, va| {
            let raw = e.load(Ordering::Acquire);
            if let Entry::Leaf(leaf) = A::decode(Self::LAST, raw) {
                if leaf.prot != prot {
                    // SAFETY: a valid leaf found by the walker under the lock;
                    // same frame, new permissions, flushed at once.
                    let slot = unsafe { self.slot(e, va, Self::LAST) };
                    // SAFETY: as above; our own notifier head.
                    let _ = unsafe {
                        ptep_modify_flush_notify(
                            self.arch,
                            &self.notifiers,
                            &slot,
                            A::leaf_with_prot(Self::LAST, raw, prot),
                        )
                    };
                    n += 1;
                }
            }
            Ok(())
        })?;
        if crate::pgtable::NOTIFY {
            self.notifiers.invalidate_pages(range);
        }
        guard.end();
        Ok(n)
    }

    /// Maps `range` to consecutive frames from `first` (the seed's
    /// `remap_pte_range`, for device memory), then calls
    /// `invalidate_pages(range)` as the seed did.
    ///
    /// # Errors
    /// Bad range or frame alignment; [`Error::AlreadyMapped`] if any page
    /// of the range is mapped; [`Error::OutOfRange`] if the frames would
    /// wrap; [`Error::Released`]; [`Error::OutOfMemory`].
    pub fn remap_pfn_range(
        &self,
        range: PageRange,
        first: PhysAddr,
        prot: Prot,
    ) -> Result<(), Error> {
        self.validate(range, A::PAGE_SIZE)?;
        if !first.is_aligned(A::PAGE_SIZE) {
            return Err(Error::Unaligned {
                addr: first.0,
                align: A::PAGE_SIZE,
            });
        }
        first.checked_add(range.len()).ok_or(Error::OutOfRange {
            addr: first.0,
            limit: u64::MAX,
        })?;
        let _ptl = self.lock_live()?;
        let mut va = range.start();
        while va < range.end() {
            let e = self
                .entry(va, Self::LAST, true)?
                .ok_or(Error::OutOfMemory)?;
            if A::decode(Self::LAST, e.load(Ordering::Acquire)) != Entry::Invalid {
                return Err(Error::AlreadyMapped { addr: va.0 });
            }
            va = VirtAddr(va.0 + A::PAGE_SIZE);
        }
        let guard = self
            .notifiers
            .invalidate_range_start(InvalidateRange::new(range, Event::Clear));
        self.for_each_entry(range, Self::LAST, &mut |e, va| {
            let frame = PhysAddr(first.0 + (va.0 - range.start().0));
            // SAFETY: checked invalid above under the lock; the caller asked
            // for these frames to be mapped.
            unsafe {
                self.arch.set_pte_at(
                    &self.slot(e, va, Self::LAST),
                    A::encode_leaf(Self::LAST, frame, prot),
                )
            };
            Ok(())
        })?;
        if crate::pgtable::NOTIFY {
            self.notifiers.invalidate_pages(range);
        }
        guard.end();
        Ok(())
    }

    /// Tests and clears the accessed state of the page at `va` on the CPU
    /// (through the arch) and in every secondary MMU (`age_page`): `true`
    /// if any of them used it since the last call (for page reclaim).
    ///
    /// # Errors
    /// Bad address; [`Error::Released`].
    pub fn clear_flush_young(&self, va: VirtAddr) -> Result<bool, Error> {
        self.on_leaf(va, |slot| {
            // SAFETY: `on_leaf` gives a valid leaf of this tree under the
            // lock; our own notifier head.
            unsafe { ptep_clear_flush_young_notify(self.arch, &self.notifiers, slot) }
        })
    }

    /// Like [`clear_flush_young`](Self::clear_flush_young) but flushes no
    /// TLB, CPU or secondary (Linux's `clear_young`): cheaper, and the next
    /// access through a cached translation may not mark the page again.
    ///
    /// # Errors
    /// Bad address; [`Error::Released`].
    pub fn clear_young(&self, va: VirtAddr) -> Result<bool, Error> {
        self.on_leaf(va, |slot| {
            // SAFETY: `on_leaf` gives a valid leaf of this tree under the lock.
            let young = unsafe { self.arch.ptep_test_and_clear_young(slot) };
            let span = crate::pgtable::leaf_range::<A>(slot.va(), slot.level());
            young | (crate::pgtable::NOTIFY && span.is_some_and(|r| self.notifiers.clear_young(r)))
        })
    }

    /// Whether the page at `va` was used since it was last aged, by the CPU
    /// (as far as its entry tells) or a secondary MMU (`test_young`),
    /// clearing nothing.
    ///
    /// # Errors
    /// Bad address; [`Error::Released`].
    pub fn test_young(&self, va: VirtAddr) -> Result<bool, Error> {
        self.on_leaf(va, |slot| {
            let cpu = matches!(A::decode(slot.level(), slot.read()), Entry::Leaf(l) if l.young);
            cpu | (crate::pgtable::NOTIFY && self.notifiers.test_young(slot.va()))
        })
    }

    /// Runs `f` on the leaf translating the page at `va` (false if none),
    /// under the page-table lock.
    fn on_leaf(&self, va: VirtAddr, f: impl FnOnce(&PteSlot<'_>) -> bool) -> Result<bool, Error> {
        let range = PageRange::from_pages(va, 1, A::PAGE_SIZE)?;
        self.validate(range, A::PAGE_SIZE)?;
        let _ptl = self.lock_live()?;
        let Some((e, _, l)) = self.find_leaf(va) else {
            return Ok(false);
        };
        let base = VirtAddr(va.0 & !(A::LEVELS[l].entry_span() - 1));
        // SAFETY: a valid leaf found by walking under the lock.
        let slot = unsafe { self.slot(e, base, l) };
        Ok(f(&slot))
    }

    /// Tears the address space down (the seed's `exit_mmap`): marks it
    /// released, calls every notifier's `release` **before** any frame is
    /// freed (Linux moved it there; the seed called it after), then clears
    /// every leaf, flushes, hands each frame to `free` and frees the
    /// tables below the root. Afterwards every operation fails with
    /// [`Error::Released`].
    ///
    /// The caller switches CPUs away from this address space first, or
    /// keeps only mappings it does not run from.
    ///
    /// # Errors
    /// [`Error::Released`] if already torn down.
    pub fn teardown(&self, free: &mut dyn FnMut(Reusable)) -> Result<(), Error> {
        let _ptl = self.lock_live()?;
        self.released.store(true, Ordering::Release);
        self.notifiers.release();
        self.clear_subtree(self.root, 0, 0, free);
        // SAFETY: purging every translation and cached table entry of an
        // address space whose tables are about to be freed.
        unsafe { self.arch.flush_tlb_all() };
        self.free_tables(self.root, 0);
        Ok(())
    }

    /// Clears every leaf under `table` (which translates from `base`).
    fn clear_subtree(&self, table: PhysAddr, l: usize, base: u64, free: &mut dyn FnMut(Reusable)) {
        let span = A::LEVELS[l].entry_span();
        for (i, e) in self.table(table, l).iter().enumerate() {
            let va = VirtAddr(base + i as u64 * span);
            match A::decode(l, e.load(Ordering::Acquire)) {
                Entry::Invalid => {}
                Entry::Leaf(_) => {
                    // SAFETY: a valid leaf of this tree, under the lock.
                    let slot = unsafe { self.slot(e, va, l) };
                    // SAFETY: as above. No notifier step: release has run,
                    // every secondary MMU dropped everything already.
                    let flushed = unsafe { self.arch.ptep_clear_flush(&slot) };
                    if let Entry::Leaf(leaf) = A::decode(l, flushed.old()) {
                        free(Reusable::new(leaf));
                    }
                }
                Entry::Table(next) => self.clear_subtree(next, l + 1, va.0, free),
            }
        }
    }

    /// Unlinks and frees every table below `table`.
    fn free_tables(&self, table: PhysAddr, l: usize) {
        for e in self.table(table, l) {
            if let Entry::Table(next) = A::decode(l, e.load(Ordering::Acquire)) {
                self.free_tables(next, l + 1);
                e.store(A::invalid_entry(l), Ordering::Release);
                // SAFETY: unlinked above, and the TLBs (paging-structure
                // caches included) were purged after the leaves went, with
                // no CPU running on this address space (teardown contract).
                unsafe { self.frames.free_table(next, A::LEVELS[l + 1].table_bytes) };
            }
        }
    }
}

impl<A: Arch, F: FrameAllocator> Drop for AddressSpace<'_, A, F> {
    fn drop(&mut self) {
        if !self.is_released() {
            // Frames still mapped belong to the caller, who did not ask for
            // them back: they are forgotten, the tables are freed.
            let _ = self.teardown(&mut |_| {});
        }
        // SAFETY: the tree below the root is gone and nobody can walk a
        // dropped address space.
        unsafe { self.frames.free_table(self.root, A::LEVELS[0].table_bytes) };
    }
}
