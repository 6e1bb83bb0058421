//! What the benchmarks of `mmu-notifier` share: the notifiers they
//! register, the baselines they race against, and the fixtures on the
//! emulated MMU.
//!
//! Two drivers use it: the criterion suite (`benches/notifier.rs`, times)
//! and `icount` (`src/bin/icount.rs`, a loop for callgrind's deterministic
//! instruction counts). `cargo xtask bench` builds both twice, with and
//! without the core's `notifier` feature, runs them and writes
//! `BENCHMARKS.md`. Nothing here asserts a time.
//!
//! It uses the public API of the core only, as a kernel would, and owns no
//! part of the protocol: if a figure is bad, the fix is in the core. Every
//! head, subscription and address space is constructed in [`api`], the one
//! module to change when the core's constructors change; the parameters
//! (counts, sizes, benchmark ids) come from `mmu-notifier-bench-params`,
//! which `cargo xtask bench` reads too. A third driver, `scaling`
//! (`src/bin/scaling.rs`, figure 7), measures reader scaling with
//! [`scaling`] and builds as one static binary.

use core::hint::black_box;
use core::sync::atomic::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};

use mmu_notifier_core::arch::{Arch, Entry, Level, Prot, PteSlot};
use mmu_notifier_core::notifier::{Again, Callbacks, Event, InvalidateRange};
use mmu_notifier_core::{
    ptep_clear_flush_notify, ptep_clear_flush_young_notify, Error, MmuNotifier, PageRange,
    PhysAddr, Reusable, TableMemory, VirtAddr,
};
use mmu_notifier_emu::Emu;

pub mod api;
pub mod scaling;

pub use api::{Head, Mm};
pub use mmu_notifier_bench_params as params;
pub use params::ZapWith;

/// Whether this build has the notifier list (`false`: the compiled-out
/// baseline of figure 1).
pub const NOTIFIER: bool = cfg!(feature = "notifier");

/// Where the benchmarks map their pages (1 GiB-aligned, so a 2^18-page
/// zap fills whole last-level tables).
pub const BASE: VirtAddr = VirtAddr(1 << 32);
/// The level of base pages on the emulated MMU.
pub const LAST: usize = Emu::LEVELS.len() - 1;
/// The base page size.
pub const PAGE: u64 = Emu::PAGE_SIZE;
/// The emulated x86-64 accessed bit (see `mmu_notifier_emu`).
const ACCESSED: u64 = 1 << 5;
/// Fake frames for mapped pages: the emulator never reads a data frame
/// unless an emulated CPU accesses it, and the benchmarks never do, so a
/// 2^18-page mapping needs no gigabyte of host memory.
const FAKE_FRAMES: u64 = 1 << 40;

/// A notifier that does nothing observable: every callback only hides its
/// argument from the optimiser. What remains is the dispatch itself. It
/// writes no shared memory, so two threads calling it do not contend.
///
/// Not zero-sized, so every instance has its own address (the lock-based
/// list unregisters by address).
#[derive(Debug, Default, Clone, Copy)]
pub struct Sink {
    _byte: u8,
}

impl MmuNotifier for Sink {
    fn invalidate_page(&self, addr: VirtAddr) {
        black_box(addr);
    }
    fn invalidate_pages(&self, range: PageRange) {
        black_box(range);
    }
    fn age_page(&self, addr: VirtAddr) -> bool {
        black_box(addr);
        false
    }
    fn invalidate_range_start(&self, range: &InvalidateRange) -> Result<(), Again> {
        black_box(range);
        Ok(())
    }
    fn invalidate_range_end(&self, range: &InvalidateRange) {
        black_box(range);
    }
}

/// Counts every callback it gets (figure 4's "secondary calls").
#[derive(Debug, Default)]
pub struct Counting {
    /// `invalidate_page` calls.
    pub pages: AtomicU64,
    /// `invalidate_pages` calls.
    pub spans: AtomicU64,
    /// `invalidate_range_start` calls.
    pub starts: AtomicU64,
    /// `invalidate_range_end` calls.
    pub ends: AtomicU64,
}

impl Counting {
    /// All callbacks so far.
    pub fn total(&self) -> u64 {
        self.pages.load(Relaxed)
            + self.spans.load(Relaxed)
            + self.starts.load(Relaxed)
            + self.ends.load(Relaxed)
    }
}

impl MmuNotifier for Counting {
    fn invalidate_page(&self, _addr: VirtAddr) {
        self.pages.fetch_add(1, Relaxed);
    }
    fn invalidate_pages(&self, _range: PageRange) {
        self.spans.fetch_add(1, Relaxed);
    }
    fn invalidate_range_start(&self, _range: &InvalidateRange) -> Result<(), Again> {
        self.starts.fetch_add(1, Relaxed);
        Ok(())
    }
    fn invalidate_range_end(&self, _range: &InvalidateRange) {
        self.ends.fetch_add(1, Relaxed);
    }
}

/// Bumps a counter owned by one thread (no locked instruction): the stand-in
/// for "drop the secondary translation(s)".
#[inline]
fn bump(c: &AtomicU64, by: u64) {
    c.store(c.load(Relaxed).wrapping_add(by), Relaxed);
}

/// The callbacks a worker received (counted by its own thread, no locked
/// instruction).
#[derive(Debug, Default)]
pub struct Calls {
    /// `invalidate_page` calls.
    pub pages: AtomicU64,
    /// `invalidate_range_start` calls.
    pub starts: AtomicU64,
    /// `invalidate_range_end` calls.
    pub ends: AtomicU64,
}

impl Calls {
    /// `invalidate_page=.. range_start=.. range_end=.. total=..`.
    pub fn summary(&self) -> String {
        let (p, s, e) = (
            self.pages.load(Relaxed),
            self.starts.load(Relaxed),
            self.ends.load(Relaxed),
        );
        format!(
            "invalidate_page={p} range_start={s} range_end={e} total={}",
            p + s + e
        )
    }
}

/// A secondary MMU that works by range, as Linux's drivers do since the
/// range pair: it drops the whole range in `invalidate_range_start` and
/// declares that it listens to nothing per page.
#[derive(Debug, Default)]
pub struct RangeWorker {
    /// What it received.
    pub calls: Calls,
    dropped: AtomicU64,
}

impl MmuNotifier for RangeWorker {
    fn callbacks(&self) -> Callbacks {
        Callbacks::RANGE.union(Callbacks::RELEASE)
    }

    fn invalidate_page(&self, _addr: VirtAddr) {
        bump(&self.calls.pages, 1);
    }
    fn invalidate_range_start(&self, range: &InvalidateRange) -> Result<(), Again> {
        bump(&self.calls.starts, 1);
        bump(&self.dropped, range.range.len() / PAGE);
        Ok(())
    }
    fn invalidate_range_end(&self, _range: &InvalidateRange) {
        bump(&self.calls.ends, 1);
    }
}

/// A secondary MMU as the original 2008 protocol knew it: it drops one
/// translation per `invalidate_page` and listens to the per-page
/// callbacks only.
#[derive(Debug, Default)]
pub struct PageWorker {
    /// What it received (`pages` is also its work).
    pub calls: Calls,
}

impl MmuNotifier for PageWorker {
    fn callbacks(&self) -> Callbacks {
        Callbacks::PER_PAGE
    }

    fn invalidate_page(&self, _addr: VirtAddr) {
        bump(&self.calls.pages, 1);
    }
    fn invalidate_range_start(&self, _range: &InvalidateRange) -> Result<(), Again> {
        bump(&self.calls.starts, 1);
        Ok(())
    }
    fn invalidate_range_end(&self, _range: &InvalidateRange) {
        bump(&self.calls.ends, 1);
    }
}

/// The callbacks the baselines call, as a trait object: what a hand-written
/// list stores. Every [`MmuNotifier`] is one (`MmuNotifier` itself need not
/// be dyn-compatible: the core type-erases it its own way).
pub trait DynNotifier: Sync {
    /// [`MmuNotifier::invalidate_page`].
    fn invalidate_page(&self, addr: VirtAddr);
    /// [`MmuNotifier::invalidate_range_start`].
    ///
    /// # Errors
    /// As the notifier's.
    fn invalidate_range_start(&self, range: &InvalidateRange) -> Result<(), Again>;
    /// [`MmuNotifier::invalidate_range_end`].
    fn invalidate_range_end(&self, range: &InvalidateRange);
}

impl<N: MmuNotifier> DynNotifier for N {
    fn invalidate_page(&self, addr: VirtAddr) {
        MmuNotifier::invalidate_page(self, addr);
    }
    fn invalidate_range_start(&self, range: &InvalidateRange) -> Result<(), Again> {
        MmuNotifier::invalidate_range_start(self, range)
    }
    fn invalidate_range_end(&self, range: &InvalidateRange) {
        MmuNotifier::invalidate_range_end(self, range);
    }
}

/// The physical limit of dispatch: a plain loop of indirect calls over a
/// slice, with no read-side section and no liveness check.
#[derive(Clone, Copy)]
pub struct SliceList<'s, 'n>(pub &'s [&'n dyn DynNotifier]);

impl SliceList<'_, '_> {
    /// `invalidate_page` on each.
    #[inline]
    pub fn invalidate_page(&self, addr: VirtAddr) {
        for n in self.0 {
            n.invalidate_page(addr);
        }
    }

    /// `invalidate_range_start` on each, then `invalidate_range_end` on each.
    #[inline]
    pub fn invalidate_range(&self, range: &InvalidateRange) {
        for n in self.0 {
            let _ = n.invalidate_range_start(range);
        }
        for n in self.0 {
            n.invalidate_range_end(range);
        }
    }
}

/// What a kernel would write by hand: a vector of notifiers behind a
/// reader-writer spin lock. Readers take the read lock for the walk (for a
/// range, from before the first start to after the last end, so start and
/// end reach the same set); registration takes the write lock, which also
/// waits out every reader.
pub struct LockedList<'n> {
    list: spin::RwLock<Vec<&'n dyn DynNotifier>>,
}

impl<'n> LockedList<'n> {
    /// A list holding `notifiers`.
    pub fn new(notifiers: Vec<&'n dyn DynNotifier>) -> Self {
        Self {
            list: spin::RwLock::new(notifiers),
        }
    }

    /// Adds `n`.
    pub fn register(&self, n: &'n dyn DynNotifier) {
        self.list.write().push(n);
    }

    /// Removes `n`; no reader can be inside its callbacks afterwards.
    pub fn unregister(&self, n: &dyn DynNotifier) {
        self.list.write().retain(|m| !core::ptr::addr_eq(*m, n));
    }

    /// `invalidate_page` on each, under the read lock.
    #[inline]
    pub fn invalidate_page(&self, addr: VirtAddr) {
        for n in self.list.read().iter() {
            n.invalidate_page(addr);
        }
    }

    /// Every start, then every end, under one read lock.
    #[inline]
    pub fn invalidate_range(&self, range: &InvalidateRange) {
        let list = self.list.read();
        for n in list.iter() {
            let _ = n.invalidate_range_start(range);
        }
        for n in list.iter() {
            n.invalidate_range_end(range);
        }
    }
}

/// A range start and its end on the real list, with nothing in between.
#[inline]
pub fn head_range(head: &Head, range: InvalidateRange) {
    head.invalidate_range_start(range).end();
}

/// The range the dispatch figures invalidate: one page at [`BASE`].
pub fn one_page_range() -> InvalidateRange {
    let range = PageRange::from_pages(BASE, 1, PAGE).expect("BASE is page-aligned");
    InvalidateRange::new(range, Event::Unmap)
}

/// Maps `pages` base pages from `first` to fake frames.
///
/// # Errors
/// What [`mmu_notifier_core::AddressSpace::map`] returns.
pub fn map_pages(mm: &Mm<'_>, first: VirtAddr, pages: usize) -> Result<(), Error> {
    let prot = Prot::READ | Prot::WRITE | Prot::USER;
    for i in 0..pages as u64 {
        mm.map(
            VirtAddr(first.0 + i * PAGE),
            PhysAddr(FAKE_FRAMES + i * PAGE),
            prot,
        )?;
    }
    Ok(())
}

/// Unmaps `pages` base pages from [`BASE`] with `zap_range` (one range pair
/// around the walk, one `invalidate_page` per page) and returns how many
/// were mapped.
///
/// # Panics
/// If the range is invalid or the address space released.
#[inline]
pub fn zap(mm: &Mm<'_>, pages: usize) -> usize {
    let range = PageRange::from_pages(BASE, pages as u64, PAGE).expect("a valid range");
    mm.zap_range(range, &mut |frame: Reusable| {
        let _ = black_box(frame);
    })
    .expect("the address space is live")
}

/// The entry of level [`LAST`] that translates `va`, found by walking the
/// tables as a page-table walker does, with its physical address; `None`
/// if a table is missing.
pub fn leaf_entry<'e>(
    emu: &'e Emu,
    mm: &Mm<'e>,
    va: VirtAddr,
) -> Option<(&'e AtomicU64, PhysAddr)> {
    let mut table = mm.root();
    for level in (0..Emu::LEVELS.len()).map(Level::<Emu>::new) {
        let words = emu.phys_to_virt(table).as_ptr().cast::<AtomicU64>();
        let index = level.index_of(va);
        // SAFETY: `table` is a table of this tree (the root, or read from a
        // table entry just above); every emulated table is one 4 KiB arena
        // frame of 512 aligned words, `index` is below 512, and arena frames
        // stay allocated until the `Emu` itself drops, which outlives 'e.
        // The tree only ever accesses these words atomically too.
        let entry = unsafe { &*words.add(index) };
        if level.is_last() {
            return Some((entry, PhysAddr(table.0 + index as u64 * 8)));
        }
        match Emu::decode(level, entry.load(Acquire)) {
            Entry::Table(next) => table = next,
            _ => return None,
        }
    }
    None
}

/// One mapped base page, ready for the hot paths of figure 1: the entry as
/// the walker of `zap_range` finds it, the leaf it holds, the head of its
/// address space.
pub struct Armed<'e> {
    emu: &'e Emu,
    head: &'e Head,
    entry: &'e AtomicU64,
    entry_pa: PhysAddr,
    va: VirtAddr,
    leaf: u64,
}

impl<'e> Armed<'e> {
    /// Maps `va` in `mm` and finds its entry.
    ///
    /// # Errors
    /// What mapping the page returns.
    pub fn new(emu: &'e Emu, mm: &'e Mm<'e>, va: VirtAddr) -> Result<Self, Error> {
        map_pages(mm, va, 1)?;
        let (entry, entry_pa) = leaf_entry(emu, mm, va).ok_or(Error::OutOfMemory)?;
        let leaf = entry.load(Acquire);
        debug_assert!(
            matches!(Emu::decode(Level::LAST, leaf | ACCESSED), Entry::Leaf(l) if l.young),
            "bit 5 is the emulated accessed bit"
        );
        Ok(Self {
            emu,
            head: mm.notifiers(),
            entry,
            entry_pa,
            va,
            leaf,
        })
    }

    fn slot(&self, level: usize) -> PteSlot<'e, Emu> {
        let level = Level::from_index(level).expect("an emulated level");
        // SAFETY: 1. `entry` is the entry translating `va` at `entry_pa`
        // (found by walking the tree); 2. the benchmark is the only user of
        // this address space, so nothing else changes the entry while the
        // slot lives: what holding the page-table lock guarantees.
        unsafe { PteSlot::new(self.entry, self.entry_pa, self.va, level) }
            .expect("a page-aligned address inside the emulated space")
    }

    /// Opens the range a walker opens around this page's unmap: what
    /// [`clear_flush`](Self::clear_flush) needs. Open it once for many
    /// calls, as a zap opens one range for all its pages.
    pub fn range(&self) -> mmu_notifier_core::RangeGuard<'e, api::Kernel> {
        let span = PageRange::from_pages(self.va, 1, PAGE).expect("a page");
        self.head
            .invalidate_range_start(InvalidateRange::new(span, Event::Unmap))
    }

    /// `ptep_clear_flush` with the notifier step (clear, flush, notify),
    /// inside `range` (from [`range`](Self::range)), then the page is
    /// mapped again for the next call: the per-page cost of a zap. `level`
    /// is the level the walker passes: [`LAST`], or hidden from the
    /// optimiser to model a walker that does not know it at compile time.
    #[inline(always)]
    pub fn clear_flush(
        &self,
        range: &mmu_notifier_core::RangeGuard<'_, api::Kernel>,
        level: usize,
    ) -> Option<Reusable> {
        let slot = self.slot(level);
        // SAFETY: 1. nothing runs from the fake frame the leaf maps; 2.
        // `range` is open on this address space's head.
        let frame = unsafe { ptep_clear_flush_notify(self.emu, range, &slot) }.ok();
        // SAFETY: 1. the entry is invalid (just cleared); 2. the leaf maps
        // the page's own frame again.
        unsafe { self.emu.set_pte_at(&slot, self.leaf) };
        frame
    }

    /// Marks the page accessed (what the hardware walker does on a
    /// use), then `ptep_clear_flush_young` with the notifier step: test and
    /// clear the accessed bit, flush because it was set, ask the notifiers.
    #[inline(always)]
    pub fn clear_flush_young(&self, level: usize) -> bool {
        self.entry.store(self.leaf | ACCESSED, Release);
        let slot = self.slot(level);
        // SAFETY: 1. this address space's own head.
        unsafe { ptep_clear_flush_young_notify(self.emu, self.head, &slot) }.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn armed_page_is_cleared_flushed_and_mapped_again() {
        let emu = api::machine();
        let mm = api::address_space(&emu).expect("root table");
        let armed = Armed::new(&emu, &mm, BASE).expect("map");
        let flushes = emu.flush_count();
        assert!(
            armed.clear_flush(&armed.range(), LAST).is_some(),
            "a mapped page gives its frame back"
        );
        assert_eq!(emu.flush_count(), flushes + 1, "the CPU TLB is flushed");
        assert!(
            mm.translate(BASE).is_some(),
            "the page is mapped again for the next call"
        );
        assert!(
            armed.clear_flush_young(LAST),
            "an accessed page is reported young"
        );
    }

    #[cfg(feature = "notifier")]
    #[test]
    fn zap_reaches_a_registered_notifier_per_page_and_once_per_range() {
        let emu = api::machine();
        let mm = api::address_space(&emu).expect("root table");
        let sub = api::subscribe(mm.notifiers(), Counting::default()).expect("register");
        map_pages(&mm, BASE, 64).expect("map");
        assert_eq!(zap(&mm, 64), 64, "every mapped page is zapped");
        let c = sub.notifier();
        assert_eq!(c.pages.load(Relaxed), 64, "one invalidate_page per page");
        assert_eq!(
            (c.starts.load(Relaxed), c.ends.load(Relaxed)),
            (1, 1),
            "one range pair around the zap"
        );
    }

    #[test]
    fn baselines_call_every_notifier() {
        let c = Counting::default();
        let list: Vec<&dyn DynNotifier> = vec![&c, &c];
        SliceList(&list).invalidate_page(BASE);
        let locked = LockedList::new(list.clone());
        locked.invalidate_page(BASE);
        locked.invalidate_range(&one_page_range());
        assert_eq!(c.pages.load(Relaxed), 4, "both lists call each entry");
        assert_eq!(c.starts.load(Relaxed), 2, "one start per entry");
        locked.unregister(&c);
        locked.invalidate_page(BASE);
        assert_eq!(c.pages.load(Relaxed), 4, "unregister removes the entries");
    }
}

/// Figure 5: interval notifiers against the scan a driver wrote before them.
#[cfg(feature = "notifier")]
pub mod interval {
    use super::{black_box, Again, InvalidateRange, MmuNotifier, PageRange, VirtAddr, BASE, PAGE};
    use mmu_notifier_core::interval::{IntervalOps, IntervalSub};
    use mmu_notifier_core::notifier::Event;

    /// A device whose interval callback does the protocol's minimum: record
    /// the sequence (no driver lock: nothing faults in the benchmark).
    #[derive(Debug, Default)]
    pub struct Device;

    impl IntervalOps for Device {
        fn invalidate(
            &self,
            sub: &IntervalSub<'_, Self>,
            range: &InvalidateRange,
            cur_seq: u64,
        ) -> bool {
            sub.set_seq(cur_seq);
            black_box(range);
            true
        }
    }

    /// What a driver wrote before interval notifiers: one plain notifier
    /// with its own list of intervals, scanned on every invalidation.
    #[derive(Debug, Default)]
    pub struct Scan {
        intervals: Vec<(u64, u64)>,
    }

    impl Scan {
        /// The intervals of subscriptions `0..n`.
        pub fn new(n: usize) -> Self {
            Self {
                intervals: (0..n)
                    .map(|i| {
                        let (start, len) = interval_of(i);
                        (start.0, start.0 + len)
                    })
                    .collect(),
            }
        }
    }

    impl MmuNotifier for Scan {
        fn invalidate_range_start(&self, range: &InvalidateRange) -> Result<(), Again> {
            let (start, end) = (range.range.start().0, range.range.end().0);
            for &(a, b) in &self.intervals {
                if a < end && start < b {
                    black_box((a, b));
                }
            }
            Ok(())
        }
    }

    /// The interval of subscription `i`: one page, then a one-page gap.
    pub fn interval_of(i: usize) -> (VirtAddr, u64) {
        (VirtAddr(BASE.0 + i as u64 * 2 * PAGE), PAGE)
    }

    /// The invalidation figure 5 times: the page of the middle one of `n`
    /// subscriptions, so exactly one overlaps.
    pub fn probe(n: usize) -> InvalidateRange {
        let (start, len) = interval_of(n / 2);
        let range = PageRange::from_pages(start, len / PAGE, PAGE).expect("page-aligned");
        InvalidateRange::new(range, Event::Unmap)
    }
}
