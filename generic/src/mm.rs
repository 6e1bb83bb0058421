//! A reference address space: a page-table tree generic over the arch, and
//! the call sites that change it, each calling the notifiers at the point
//! the original 2008 patch did (and with the range pair around it, as Linux
//! later did).
//!
//! A kernel with its own memory-management structures can skip this module
//! and call [`crate::pgtable`] and [`NotifierHead`] from its own walkers; it
//! is also the shape the conformance suites and the benchmarks drive.
//!
//! # Locking
//! One page-table lock per address space serialises every change to the
//! tree, and is held while notifier callbacks run (they are called under
//! it, as Linux calls its per-page hooks under the PT lock). A callback
//! must therefore not call back into the same address space. Range guards
//! are opened only after every page-table lock an operation needs is held,
//! and no lock is taken inside one; [`AddressSpace::teardown`] calls
//! `release` before it takes the lock. Together that keeps the grace
//! periods of `register`, `unregister` and `release` from ever waiting for
//! a task that waits for a page-table lock.
//!
//! # Errors leave nothing half-changed
//! Each operation checks its input and the whole range (pages already
//! mapped, pages of the wrong size, frames the arch cannot map) before it
//! changes the first entry. It may allocate empty intermediate tables and
//! then fail for lack of memory, which changes no translation.

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::addr::{PageRange, PhysAddr, VirtAddr};
use crate::arch::{check_phys_limit, Arch, Entry, Leaf, Level, Prot, PteSlot};
use crate::error::Error;
use crate::kernel::{Kernel, Portable};
use crate::notifier::{Event, InvalidateRange, NotifierHead, RangeGuard};
use crate::pgtable::{
    ptep_clear_flush_notify, ptep_clear_flush_young_notify, ptep_modify_flush_notify,
    ptep_wrprotect_cow_notify, Reusable,
};
use crate::sync::RawSpinLock;

/// Memory for translation tables: where it comes from, where it goes back,
/// and where this CPU reaches it. One `unsafe impl` vouches for all three,
/// so no safe constructor can choose the address tables are written
/// through (aarch64-paging's `Translation` does the same).
///
/// # Safety
/// The implementor promises:
/// 1. `alloc_table(bytes)` returns `bytes` of memory, aligned to `bytes`,
///    that nothing else uses until it is given back with `free_table`;
/// 2. for every address `pa` inside a table it allocated and has not taken
///    back, `phys_to_virt(pa)` is a pointer through which this CPU may read
///    and write that memory (with the provenance to do so), for as long as
///    the table is allocated;
/// 3. the physical address it returns is the one the hardware walker uses
///    for that memory: an entry that points there makes the walker read
///    the same bytes `phys_to_virt` reaches.
pub unsafe trait TableMemory: Sync {
    /// Allocates `bytes` (a power of two) of table memory aligned to `bytes`.
    fn alloc_table(&self, bytes: usize) -> Option<PhysAddr>;

    /// Gives table memory back.
    ///
    /// # Safety
    /// 1. `pa` came from `alloc_table(bytes)` and was not given back since;
    /// 2. no translation-table entry, and no CPU's paging-structure cache,
    ///    refers to it any more.
    unsafe fn free_table(&self, pa: PhysAddr, bytes: usize);

    /// Where this CPU reaches table memory at `pa`.
    fn phys_to_virt(&self, pa: PhysAddr) -> NonNull<u8>;
}

/// An address space: a root table, its page-table lock and its notifiers.
pub struct AddressSpace<'a, A: Arch, M: TableMemory, K: Kernel = Portable> {
    arch: &'a A,
    mem: &'a M,
    root: PhysAddr,
    ptl: RawSpinLock,
    /// `teardown` has run (or is running): the tables are gone.
    torn_down: AtomicBool,
    notifiers: NotifierHead<K>,
}

impl<A: Arch, M: TableMemory, K: Kernel> core::fmt::Debug for AddressSpace<'_, A, M, K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AddressSpace")
            .field("arch", &A::NAME)
            .field("root", &self.root)
            .field("torn_down", &self.torn_down.load(Ordering::Relaxed))
            .field("notifiers", &self.notifiers)
            .finish()
    }
}

/// How `copy_range` treats a mapping, as Linux's `is_cow_mapping` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CopyMode {
    /// A private mapping: parent and child share frames read-only until one
    /// writes (copy-on-write). Both sides' entries are write-protected and
    /// marked copy-on-write, so the parent's secondary MMUs are told, and
    /// no later `change_protection` makes the shared frames writable.
    Cow,
    /// A shared mapping: the child gets the same permissions; the parent's
    /// entries do not change and no notifier is called.
    Shared,
}

/// A found entry: the word, its physical address.
type Found<'t> = (&'t AtomicU64, PhysAddr);

impl<'a, A: Arch, M: TableMemory> AddressSpace<'a, A, M, Portable> {
    /// An empty address space of the default kernel ([`Portable`]) with a
    /// fresh root table.
    ///
    /// # Errors
    /// As [`for_kernel`](Self::for_kernel).
    pub fn new(arch: &'a A, mem: &'a M) -> Result<Self, Error> {
        Self::for_kernel(arch, mem)
    }
}

impl<'a, A: Arch, M: TableMemory, K: Kernel> AddressSpace<'a, A, M, K> {
    /// An empty address space of kernel `K` (see [`kernel`](crate::kernel))
    /// with a fresh root table.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] if the root table cannot be allocated;
    /// [`Error::PhysOutOfRange`] if the allocator gave one the arch cannot
    /// point to. Nothing is left allocated either way.
    pub fn for_kernel(arch: &'a A, mem: &'a M) -> Result<Self, Error> {
        // The root first: an address space exists only with one, so its
        // `Drop` never walks a table that was not allocated.
        let root = new_table::<A, M>(mem, Level::ROOT)?;
        Ok(Self {
            arch,
            mem,
            root,
            ptl: RawSpinLock::new(),
            torn_down: AtomicBool::new(false),
            notifiers: NotifierHead::for_kernel(),
        })
    }

    /// The root table's physical address (what CR3 or an ASCE points to).
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// The notifiers of this address space.
    pub fn notifiers(&self) -> &NotifierHead<K> {
        &self.notifiers
    }

    /// The arch this address space uses.
    pub fn arch(&self) -> &'a A {
        self.arch
    }

    /// Whether the address space is released: its notifiers' `release`
    /// has begun (through [`teardown`](Self::teardown), or
    /// `notifiers().release()` directly). Every operation then fails with
    /// [`Error::Released`].
    pub fn is_released(&self) -> bool {
        self.notifiers.is_released() || self.torn_down.load(Ordering::Acquire)
    }

    fn table(&self, pa: PhysAddr, level: Level<A>) -> &[AtomicU64] {
        table::<A, M>(self.mem, pa, level)
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

    /// Takes the page-table lock of a live address space.
    fn lock_live(&self) -> Result<crate::sync::RawSpinGuard<'_>, Error> {
        let guard = self.ptl.lock_with(K::wait);
        // Checked under the lock: `release` and `teardown` flip these
        // before they touch the tree, and a change made after would reach
        // no notifier.
        if self.is_released() {
            return Err(Error::Released);
        }
        Ok(guard)
    }

    /// Walks to the entry of `level` that translates `va`, allocating
    /// missing tables if `alloc`. `Ok(None)`: not allocated and absent.
    fn entry(
        &self,
        va: VirtAddr,
        level: Level<A>,
        alloc: bool,
    ) -> Result<Option<Found<'_>>, Error> {
        let mut table = self.root;
        let mut l = Level::<A>::ROOT;
        while l != level {
            let e = &self.table(table, l)[l.index_of(va)];
            let child = l.child().expect("`level` lies below `l`");
            match A::decode(l, e.load(Ordering::Acquire)) {
                Entry::Table(next) => table = next,
                Entry::Invalid if alloc => {
                    let next = new_table::<A, M>(self.mem, child)?;
                    e.store(A::encode_table(l, next), Ordering::Release);
                    table = next;
                }
                Entry::Invalid => return Ok(None),
                Entry::Leaf(_) => return Err(Error::PageSizeMismatch { addr: va.0 }),
            }
            l = child;
        }
        let index = level.index_of(va);
        Ok(Some((
            &self.table(table, level)[index],
            entry_pa(table, index),
        )))
    }

    /// Calls `f` for every entry of `level` in `range` that exists (tables
    /// present down to it), in address order, skipping absent subtrees.
    /// Meets a leaf above `level`: [`Error::PageSizeMismatch`].
    fn for_each_entry(
        &self,
        range: PageRange,
        level: Level<A>,
        f: &mut dyn FnMut(Found<'_>, VirtAddr) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.visit(self.root, Level::ROOT, range, level, f)
    }

    fn visit(
        &self,
        table: PhysAddr,
        l: Level<A>,
        range: PageRange,
        level: Level<A>,
        f: &mut dyn FnMut(Found<'_>, VirtAddr) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let span = l.entry_span();
        let entries = self.table(table, l);
        let mut va = range.start().0;
        while va < range.end().0 {
            let index = l.index_of(VirtAddr(va));
            let e = &entries[index];
            let entry_start = va & !(span - 1);
            let next = entry_start.saturating_add(span).min(range.end().0);
            if l == level {
                f((e, entry_pa(table, index)), VirtAddr(va))?;
            } else {
                match A::decode(l, e.load(Ordering::Acquire)) {
                    Entry::Table(t) => {
                        let sub =
                            PageRange::new(VirtAddr(va), VirtAddr(next), 1).expect("va < next");
                        let child = l.child().expect("`level` lies below `l`");
                        self.visit(t, child, sub, level, f)?;
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

    /// The slot of an entry found by this tree's walker.
    ///
    /// # Safety
    /// 1. `found` was found by this tree's walker for `va` at `level`;
    /// 2. the page-table lock is held while the slot is used.
    unsafe fn slot<'t>(&self, found: Found<'t>, va: VirtAddr, level: Level<A>) -> PteSlot<'t, A> {
        // SAFETY: 1. the walker's entry of `level` for `va`, at the
        // physical address it computed; 2. our condition 2.
        unsafe { PteSlot::new(found.0, found.1, va, level) }
            .expect("the walkers pass aligned, checked addresses")
    }

    /// Maps the base page at `va` to `frame`.
    ///
    /// # Errors
    /// Bad address or frame ([`Error::Unaligned`],
    /// [`Error::PhysOutOfRange`]); [`Error::AlreadyMapped`];
    /// [`Error::PageSizeMismatch`] inside a huge page; [`Error::Released`];
    /// [`Error::OutOfMemory`].
    pub fn map(&self, va: VirtAddr, frame: PhysAddr, prot: Prot) -> Result<(), Error> {
        self.map_at_level(Level::LAST, va, frame, prot)
    }

    /// Maps a huge page at `level` (a level that holds huge pages: x86-64's
    /// `X86_64::PD`, s390's `S390x::SEGMENT`).
    ///
    /// # Errors
    /// As [`map`](Self::map); [`Error::HugePagesUnsupported`] if `level`
    /// holds no huge pages.
    pub fn map_huge(
        &self,
        level: Level<A>,
        va: VirtAddr,
        frame: PhysAddr,
        prot: Prot,
    ) -> Result<(), Error> {
        if !level.holds_huge_pages() {
            return Err(Error::HugePagesUnsupported);
        }
        self.map_at_level(level, va, frame, prot)
    }

    fn map_at_level(
        &self,
        level: Level<A>,
        va: VirtAddr,
        frame: PhysAddr,
        prot: Prot,
    ) -> Result<(), Error> {
        let span = level.entry_span();
        let range = PageRange::from_pages(va, 1, span)?;
        self.validate(range, span)?;
        A::check_frame(frame, level)?;
        let _ptl = self.lock_live()?;
        let found = self.entry(va, level, true)?.ok_or(Error::OutOfMemory)?;
        match A::decode(level, found.0.load(Ordering::Acquire)) {
            Entry::Invalid => {}
            Entry::Leaf(_) => return Err(Error::AlreadyMapped { addr: va.0 }),
            Entry::Table(_) => return Err(Error::PageSizeMismatch { addr: va.0 }),
        }
        // SAFETY: 1. found by the walker; 2. under the lock.
        let slot = unsafe { self.slot(found, va, level) };
        // SAFETY: 1. the entry is invalid (checked under the lock); 2. the
        // caller asked for this frame, which the arch can map (checked).
        unsafe {
            self.arch
                .set_pte_at(&slot, A::encode_leaf(level, frame, prot))
        };
        Ok(())
    }

    /// The leaf translating `va` and its level, if any (what a secondary
    /// MMU's fault path reads).
    pub fn translate(&self, va: VirtAddr) -> Option<(Leaf, Level<A>)> {
        A::check_addr(va).ok()?;
        let _ptl = self.lock_live().ok()?;
        self.find_leaf(va).map(|(_, leaf, l)| (leaf, l))
    }

    /// The entry, decoded leaf and level translating `va`, at whatever
    /// level the leaf sits. Caller holds the page-table lock.
    fn find_leaf(&self, va: VirtAddr) -> Option<(Found<'_>, Leaf, Level<A>)> {
        let mut table = self.root;
        let mut l = Level::<A>::ROOT;
        loop {
            let index = l.index_of(va);
            let e = &self.table(table, l)[index];
            match A::decode(l, e.load(Ordering::Acquire)) {
                Entry::Table(next) if !l.is_last() => table = next,
                Entry::Leaf(leaf) => return Some(((e, entry_pa(table, index)), leaf, l)),
                _ => return None,
            }
            l = l.child()?;
        }
    }

    /// Unmaps every base page in `range` (Linux's `zap_pte_range`): each
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
        self.for_each_entry(range, Level::LAST, &mut |_, _| Ok(()))?;
        let unmap = InvalidateRange::new(range, Event::Unmap);
        let guard = if may_block {
            self.notifiers.invalidate_range_start(unmap)
        } else {
            self.notifiers.try_invalidate_range_start_nonblock(unmap)?
        };
        let n = self.clear_leaves(&guard, range, Level::LAST, free);
        guard.end();
        Ok(n)
    }

    /// Clears every leaf of `level` in `range` through the notifier step.
    /// Caller holds the lock, has checked the range, and opened `guard`
    /// over it.
    fn clear_leaves(
        &self,
        guard: &RangeGuard<'_, K>,
        range: PageRange,
        level: Level<A>,
        free: &mut dyn FnMut(Reusable),
    ) -> usize {
        let mut n = 0;
        let _ = self.for_each_entry(range, level, &mut |found, va| {
            if let Entry::Leaf(_) = A::decode(level, found.0.load(Ordering::Acquire)) {
                // SAFETY: 1. found by the walker; 2. under the lock.
                let slot = unsafe { self.slot(found, va, level) };
                // SAFETY: 1. callers unmap only the address space's own
                // pages, which the kernel does not run from; 2. `guard` is
                // open on this tree's head.
                let frame = unsafe { ptep_clear_flush_notify(self.arch, guard, &slot) }
                    .expect("a leaf of the guard's own range");
                free(frame);
                n += 1;
            }
            Ok(())
        });
        n
    }

    /// Unmaps every huge page of `level` in `range` (Linux's
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
        level: Level<A>,
        range: PageRange,
        free: &mut dyn FnMut(Reusable),
    ) -> Result<usize, Error> {
        if !level.holds_huge_pages() {
            return Err(Error::HugePagesUnsupported);
        }
        self.validate(range, level.entry_span())?;
        let _ptl = self.lock_live()?;
        self.for_each_entry(range, level, &mut |found, va| match A::decode(
            level,
            found.0.load(Ordering::Acquire),
        ) {
            Entry::Table(_) => Err(Error::PageSizeMismatch { addr: va.0 }),
            _ => Ok(()),
        })?;
        let guard = self
            .notifiers
            .invalidate_range_start(InvalidateRange::new(range, Event::Unmap));
        let n = self.clear_leaves(&guard, range, level, free);
        guard.end();
        Ok(n)
    }

    /// Copies the translations of `range` into `child` (Linux's
    /// `copy_pte_range`, for fork). With [`CopyMode::Cow`] the parent's
    /// entries are write-protected and marked copy-on-write (flushed one by
    /// one), the child's are made the same way, and the parent's notifiers
    /// get `invalidate_pages(range)` after the loop, inside one
    /// [`Event::Clear`] range pair.
    ///
    /// The two page-table locks are taken in address order, so
    /// `a.copy_range(b)` racing `b.copy_range(a)` cannot deadlock.
    ///
    /// # Errors
    /// Bad range; [`Error::AlreadyMapped`] if `child` maps a page of the
    /// range; [`Error::PageSizeMismatch`] for huge pages;
    /// [`Error::SameAddressSpace`] if `child` is `self`;
    /// [`Error::Released`] if either side is released;
    /// [`Error::OutOfMemory`].
    pub fn copy_range(
        &self,
        child: &AddressSpace<'_, A, M, K>,
        range: PageRange,
        mode: CopyMode,
    ) -> Result<(), Error> {
        let (me, them) = (ptr::from_ref(self).addr(), ptr::from_ref(child).addr());
        if me == them {
            return Err(Error::SameAddressSpace);
        }
        self.validate(range, A::PAGE_SIZE)?;
        let (_first, _second) = if me < them {
            (self.lock_live()?, child.lock_live()?)
        } else {
            let c = child.lock_live()?;
            (self.lock_live()?, c)
        };
        // Check both sides, and build the child's tables, before changing
        // anything.
        self.for_each_entry(range, Level::LAST, &mut |found, va| {
            if let Entry::Leaf(_) = A::decode(Level::LAST, found.0.load(Ordering::Acquire)) {
                let (c, _) = child
                    .entry(va, Level::LAST, true)?
                    .ok_or(Error::OutOfMemory)?;
                if A::decode(Level::LAST, c.load(Ordering::Acquire)) != Entry::Invalid {
                    return Err(Error::AlreadyMapped { addr: va.0 });
                }
            }
            Ok(())
        })?;
        let guard = (mode == CopyMode::Cow).then(|| {
            self.notifiers
                .invalidate_range_start(InvalidateRange::new(range, Event::Clear))
        });
        self.for_each_entry(range, Level::LAST, &mut |found, va| {
            let Entry::Leaf(leaf) = A::decode(Level::LAST, found.0.load(Ordering::Acquire)) else {
                return Ok(());
            };
            let mut child_raw = A::encode_leaf(Level::LAST, leaf.frame, leaf.prot);
            if let Some(guard) = &guard {
                if !leaf.cow {
                    // SAFETY: 1. found by the walker; 2. under the lock.
                    let slot = unsafe { self.slot(found, va, Level::LAST) };
                    // SAFETY: 1. `guard` is open on this tree's head.
                    let _ = unsafe { ptep_wrprotect_cow_notify(self.arch, guard, &slot) }?;
                }
                let prot = leaf.prot.difference(Prot::WRITE);
                child_raw = A::leaf_with_cow(
                    Level::LAST,
                    A::encode_leaf(Level::LAST, leaf.frame, prot),
                    true,
                );
            }
            let c = child
                .entry(va, Level::LAST, false)?
                .ok_or(Error::OutOfMemory)?;
            // SAFETY: 1. found by the child's walker; 2. under its lock.
            let slot = unsafe { child.slot(c, va, Level::LAST) };
            // SAFETY: 1. the child's entry was checked invalid above, under
            // its lock; 2. it maps a frame the parent maps.
            unsafe { child.arch.set_pte_at(&slot, child_raw) };
            Ok(())
        })?;
        if let Some(guard) = guard {
            if crate::pgtable::NOTIFY {
                self.notifiers.invalidate_pages(range);
            }
            guard.end();
        }
        Ok(())
    }

    /// Changes the protection of every mapped base page in `range` to
    /// `prot` (Linux's `change_pte_range`, for mprotect): each changed
    /// entry is modified and flushed, then the notifiers get
    /// `invalidate_pages(range)` after the loop, inside one
    /// [`Event::ProtectionVma`] range pair. A copy-on-write page never
    /// becomes writable here (its frame is shared): it gets `prot` without
    /// write, and a write to it must copy it first, as in Linux. Returns
    /// the pages changed.
    ///
    /// # Errors
    /// Bad range; [`Error::PageSizeMismatch`] for huge pages;
    /// [`Error::Released`].
    pub fn change_protection(&self, range: PageRange, prot: Prot) -> Result<usize, Error> {
        self.validate(range, A::PAGE_SIZE)?;
        let _ptl = self.lock_live()?;
        self.for_each_entry(range, Level::LAST, &mut |_, _| Ok(()))?;
        let guard = self
            .notifiers
            .invalidate_range_start(InvalidateRange::new(range, Event::ProtectionVma));
        let mut n = 0;
        self.for_each_entry(range, Level::LAST, &mut |found, va| {
            if let Entry::Leaf(leaf) = A::decode(Level::LAST, found.0.load(Ordering::Acquire)) {
                let target = if leaf.cow {
                    prot.difference(Prot::WRITE)
                } else {
                    prot
                };
                if leaf.prot != target {
                    // SAFETY: 1. found by the walker; 2. under the lock.
                    let slot = unsafe { self.slot(found, va, Level::LAST) };
                    // SAFETY: 1. `guard` is open on this tree's head.
                    let _ = unsafe { ptep_modify_flush_notify(self.arch, &guard, &slot, target) }?;
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

    /// Maps `range` to consecutive frames from `first` (Linux's
    /// `remap_pte_range`, for device memory), then calls
    /// `invalidate_pages(range)` as the 2008 patch did.
    ///
    /// # Errors
    /// Bad range or frames ([`Error::Unaligned`], [`Error::PhysOutOfRange`]
    /// if any frame is beyond what the arch can map);
    /// [`Error::AlreadyMapped`] if any page of the range is mapped;
    /// [`Error::Released`]; [`Error::OutOfMemory`].
    pub fn remap_pfn_range(
        &self,
        range: PageRange,
        first: PhysAddr,
        prot: Prot,
    ) -> Result<(), Error> {
        self.validate(range, A::PAGE_SIZE)?;
        A::check_frame(first, Level::LAST)?;
        check_phys_limit::<A>(first, range.len())?;
        let _ptl = self.lock_live()?;
        let mut va = range.start();
        while va < range.end() {
            let (e, _) = self
                .entry(va, Level::LAST, true)?
                .ok_or(Error::OutOfMemory)?;
            if A::decode(Level::LAST, e.load(Ordering::Acquire)) != Entry::Invalid {
                return Err(Error::AlreadyMapped { addr: va.0 });
            }
            va = VirtAddr(va.0 + A::PAGE_SIZE);
        }
        let guard = self
            .notifiers
            .invalidate_range_start(InvalidateRange::new(range, Event::Clear));
        self.for_each_entry(range, Level::LAST, &mut |found, va| {
            let frame = PhysAddr(first.0 + (va.0 - range.start().0));
            // SAFETY: 1. found by the walker; 2. under the lock.
            let slot = unsafe { self.slot(found, va, Level::LAST) };
            // SAFETY: 1. checked invalid above under the lock; 2. the caller
            // asked for these frames, which the arch can map (checked).
            unsafe {
                self.arch
                    .set_pte_at(&slot, A::encode_leaf(Level::LAST, frame, prot))
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
    /// (through the arch) and in every secondary MMU (`clear_flush_young`):
    /// `true` if any of them used it since the last call (for page reclaim).
    ///
    /// # Errors
    /// Bad address; [`Error::Released`].
    pub fn clear_flush_young(&self, va: VirtAddr) -> Result<bool, Error> {
        self.on_leaf(va, |slot| {
            // SAFETY: 1. our own notifier head.
            unsafe { ptep_clear_flush_young_notify(self.arch, &self.notifiers, slot) }
                .expect("`on_leaf` passes a leaf")
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
            young | (crate::pgtable::NOTIFY && self.notifiers.clear_young(slot.span()))
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
            let cpu = slot.leaf().is_some_and(|l| l.young);
            cpu | (crate::pgtable::NOTIFY && self.notifiers.test_young(slot.va()))
        })
    }

    /// Runs `f` on the leaf translating the page at `va` (false if none),
    /// under the page-table lock.
    fn on_leaf(
        &self,
        va: VirtAddr,
        f: impl FnOnce(&PteSlot<'_, A>) -> bool,
    ) -> Result<bool, Error> {
        let range = PageRange::from_pages(va, 1, A::PAGE_SIZE)?;
        self.validate(range, A::PAGE_SIZE)?;
        let _ptl = self.lock_live()?;
        let Some((found, _, l)) = self.find_leaf(va) else {
            return Ok(false);
        };
        let base = VirtAddr(va.0 & !(l.entry_span() - 1));
        // SAFETY: 1. found by the walker; 2. under the lock.
        let slot = unsafe { self.slot(found, base, l) };
        Ok(f(&slot))
    }

    /// Tears the address space down (Linux's `exit_mmap`): calls every
    /// notifier's `release` **before** any frame is freed (Linux moved it
    /// there; the 2008 patch called it after), then, under the page-table
    /// lock, clears every leaf, flushes, hands each frame to `free` and
    /// frees the tables below the root. Afterwards every operation fails
    /// with [`Error::Released`].
    ///
    /// `release` runs before the page-table lock is taken (it waits for
    /// operations in flight, which hold that lock); it also makes every
    /// operation that starts from then on fail. The caller switches CPUs
    /// away from this address space first, or keeps only mappings it does
    /// not run from.
    ///
    /// # Errors
    /// [`Error::Released`] if already torn down; [`Error::InsideCallback`]
    /// if called from inside a notifier callback of this kernel (nothing is
    /// changed then).
    pub fn teardown(&self, free: &mut dyn FnMut(Reusable)) -> Result<(), Error> {
        self.notifiers.release()?;
        let _ptl = self.ptl.lock_with(K::wait);
        if self.torn_down.swap(true, Ordering::AcqRel) {
            return Err(Error::Released);
        }
        self.clear_subtree(self.root, Level::ROOT, 0, free);
        self.arch.flush_tlb_all();
        self.free_tables(self.root, Level::ROOT);
        Ok(())
    }

    /// Clears every leaf under `table` (which translates from `base`).
    fn clear_subtree(
        &self,
        table: PhysAddr,
        l: Level<A>,
        base: u64,
        free: &mut dyn FnMut(Reusable),
    ) {
        let span = l.entry_span();
        for (i, e) in self.table(table, l).iter().enumerate() {
            let va = VirtAddr(base + i as u64 * span);
            match A::decode(l, e.load(Ordering::Acquire)) {
                Entry::Invalid => {}
                Entry::Leaf(_) => {
                    // SAFETY: 1. an entry of this tree at `l` for `va`;
                    // 2. under the lock.
                    let slot = unsafe { self.slot((e, entry_pa(table, i)), va, l) };
                    // SAFETY: a valid leaf of this tree (1.), which the
                    // kernel does not run from (teardown contract, 2.). No
                    // notifier step: release has run, every secondary MMU
                    // dropped everything already.
                    let flushed = unsafe { self.arch.ptep_clear_flush(&slot) };
                    if let Entry::Leaf(leaf) = A::decode(l, flushed.old()) {
                        free(Reusable::new(leaf));
                    }
                }
                Entry::Table(next) => {
                    let child = l.child().expect("a table entry has a level below");
                    self.clear_subtree(next, child, va.0, free);
                }
            }
        }
    }

    /// Unlinks and frees every table below `table`.
    fn free_tables(&self, table: PhysAddr, l: Level<A>) {
        for e in self.table(table, l) {
            if let Entry::Table(next) = A::decode(l, e.load(Ordering::Acquire)) {
                let child = l.child().expect("a table entry has a level below");
                self.free_tables(next, child);
                e.store(A::invalid_entry(l), Ordering::Release);
                // SAFETY: 1. allocated by `new_table` for `child` and freed
                // once (unlinked just above); 2. the TLBs (paging-structure
                // caches included) were purged after the leaves went, with
                // no CPU running on this address space (teardown contract).
                unsafe { self.mem.free_table(next, child.geometry().table_bytes) };
            }
        }
    }
}

impl<A: Arch, M: TableMemory, K: Kernel> Drop for AddressSpace<'_, A, M, K> {
    fn drop(&mut self) {
        if !self.torn_down.load(Ordering::Acquire) {
            // Frames still mapped belong to the caller, who did not ask for
            // them back: they are forgotten, the tables are freed.
            if self.teardown(&mut |_| {}).is_err() {
                // Dropped inside a notifier callback: the secondary MMUs
                // were not released, and one may still walk the tables.
                // Leak them rather than free memory a device may read.
                return;
            }
        }
        // SAFETY: 1. the root came from `new_table` and is freed only here;
        // 2. the tree below it is gone, and nobody can walk a dropped
        // address space.
        unsafe {
            self.mem
                .free_table(self.root, Level::<A>::ROOT.geometry().table_bytes)
        };
    }
}

#[cfg(feature = "alloc")]
impl<A: Arch, M: TableMemory, K: Kernel> crate::notifier::HasNotifierHead
    for AddressSpace<'_, A, M, K>
{
    type Kernel = K;
    fn notifier_head(&self) -> &NotifierHead<K> {
        &self.notifiers
    }
}

/// The physical address of entry `index` of the table at `table`.
fn entry_pa(table: PhysAddr, index: usize) -> PhysAddr {
    PhysAddr(table.0 + index as u64 * 8)
}

/// A table of `level` at `pa`, as words.
fn table<A: Arch, M: TableMemory>(mem: &M, pa: PhysAddr, level: Level<A>) -> &[AtomicU64] {
    let entries = 1usize << level.geometry().index_bits;
    // SAFETY: every table of a tree was allocated by `new_table` for its
    // level (so it holds `entries` words, aligned), is reachable through
    // `phys_to_virt` while allocated (TableMemory 2.), and lives until
    // teardown frees it under the page-table lock. Words are accessed only
    // atomically, as the hardware walker also does.
    unsafe {
        core::slice::from_raw_parts(mem.phys_to_virt(pa).as_ptr().cast::<AtomicU64>(), entries)
    }
}

/// Allocates and empties a table of `level`.
///
/// # Errors
/// [`Error::OutOfMemory`]; [`Error::PhysOutOfRange`] if the allocator gave
/// memory an entry cannot point to (it is given back).
fn new_table<A: Arch, M: TableMemory>(mem: &M, level: Level<A>) -> Result<PhysAddr, Error> {
    let bytes = level.geometry().table_bytes;
    let pa = mem.alloc_table(bytes).ok_or(Error::OutOfMemory)?;
    if let Err(e) = check_phys_limit::<A>(pa, bytes as u64) {
        // SAFETY: 1. just allocated with these bytes; 2. nothing refers to it.
        unsafe { mem.free_table(pa, bytes) };
        return Err(e);
    }
    let invalid = A::invalid_entry(level);
    for e in table::<A, M>(mem, pa, level) {
        e.store(invalid, Ordering::Relaxed);
    }
    Ok(pa)
}
