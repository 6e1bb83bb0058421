//! Embedding the crate in a kernel that has its own memory-management
//! structures: its own page-table walker and lock, its own frame
//! allocator, its own teardown. It uses the x86-64 arch layer and the
//! notifier core directly, not the reference `AddressSpace`.
//!
//! Runs on the host (`cargo run --example own_walker`): the "physical
//! memory" is host memory and the TLB flushes are no-ops there, but every
//! step is the one a kernel takes, in the order it takes them. Each step
//! says why it is there.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use mmu_notifier::native::{PteFlags, X86_64};
use mmu_notifier::{
    ptep_clear_flush_notify, ptep_clear_flush_young_notify, ptep_modify_flush_notify, Arch,
    Callbacks, Entry, Event, InvalidateRange, MmuNotifier, NotifierHead, PageRange, PhysAddr, Prot,
    PteSlot, Subscription, VirtAddr,
};

const PAGE: u64 = 4096;

/// The kernel's memory manager for one process: its own 4-level tables,
/// its own page-table lock, and the notifier head the crate needs.
struct ProcessMm {
    /// The PML4, in "physical" memory (here: a host page at that address).
    root: PhysAddr,
    /// The kernel's page-table lock: every change of an entry holds it.
    ptl: Mutex<()>,
    /// One per address space: secondary MMUs register here.
    notifiers: NotifierHead,
    /// The arch layer. Single CPU here, so local flushes reach every CPU
    /// that runs this address space: the promise `local_only` asks for.
    arch: X86_64,
}

/// A zeroed 4 KiB page of host memory, standing for a physical frame.
fn alloc_page() -> PhysAddr {
    let layout = Layout::from_size_align(PAGE as usize, PAGE as usize).unwrap();
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc_zeroed(layout) };
    assert!(!p.is_null());
    PhysAddr(p.expose_provenance() as u64)
}

fn free_page(frame: PhysAddr) {
    let layout = Layout::from_size_align(PAGE as usize, PAGE as usize).unwrap();
    // SAFETY: allocated by `alloc_page` with this layout, freed once (the
    // frame is unmapped everywhere, CPU and secondary MMUs alike).
    unsafe {
        dealloc(
            std::ptr::with_exposed_provenance_mut(frame.0 as usize),
            layout,
        )
    };
}

/// The word of entry `index` of the table at `table` (host memory here; a
/// kernel would use its direct map).
fn entry(table: PhysAddr, index: usize) -> &'static AtomicU64 {
    // SAFETY: `table` is a live table page of this example, 512 words long,
    // and it outlives every use of the returned reference.
    unsafe {
        &*std::ptr::with_exposed_provenance::<AtomicU64>((table.0 + index as u64 * 8) as usize)
    }
}

impl ProcessMm {
    fn new() -> Self {
        Self {
            root: alloc_page(),
            ptl: Mutex::new(()),
            notifiers: NotifierHead::new(),
            // SAFETY: this example runs the address space on no CPU at all
            // (host memory, nothing walks it), so local flushes are enough.
            arch: unsafe { X86_64::local_only() },
        }
    }

    /// The kernel's own walker: the PT-level entry for `va` and its
    /// physical address, building tables on the way if `alloc`.
    fn walk(&self, va: VirtAddr, alloc: bool) -> Option<(&'static AtomicU64, PhysAddr)> {
        let mut table = self.root;
        for level in [X86_64::PML4, X86_64::PDPT, X86_64::PD] {
            let e = entry(table, level.index_of(va));
            table = match X86_64::decode(level, e.load(Ordering::Acquire)) {
                Entry::Table(next) => next,
                Entry::Invalid if alloc => {
                    let next = alloc_page();
                    e.store(X86_64::encode_table(level, next), Ordering::Release);
                    next
                }
                _ => return None,
            };
        }
        let index = X86_64::PT.index_of(va);
        Some((entry(table, index), PhysAddr(table.0 + index as u64 * 8)))
    }

    /// A live slot for the 4 KiB page at `va`. Why a `PteSlot`: it carries
    /// the entry, its physical address (s390's IPTE needs it), the address
    /// it translates and its *typed* level (`X86_64::PT`, not a bare 3), and
    /// checks what it can (alignment, the address is translatable).
    ///
    /// # Safety
    /// The caller holds `ptl` while the slot is used.
    unsafe fn slot(&self, va: VirtAddr) -> Option<PteSlot<'static, X86_64>> {
        let (word, pa) = self.walk(va, false)?;
        // SAFETY: 1. the PT entry of `va` that our walker found, at `pa`;
        // 2. our caller holds the page-table lock.
        unsafe { PteSlot::new(word, pa, va, X86_64::PT) }.ok()
    }

    fn map(&self, va: VirtAddr, frame: PhysAddr, prot: Prot) {
        let _ptl = self.ptl.lock().unwrap();
        let (word, _) = self.walk(va, true).unwrap();
        // A 0 -> present change needs no flush and no notifier: nothing
        // could cache a translation that did not exist.
        word.store(
            X86_64::encode_leaf(X86_64::PT, frame, prot),
            Ordering::Release,
        );
    }

    /// munmap: the range first, then the lock, then page by page.
    fn unmap(&self, range: PageRange) -> Vec<PhysAddr> {
        // Why a range guard: range and interval notifiers (a GPU's shadow
        // tables, an IOMMU driver) drop their translations at its start and
        // may not re-establish them until its end. Opened *before* the PT
        // lock, as Linux does, because a blocking start may sleep.
        let guard = self
            .notifiers
            .invalidate_range_start(InvalidateRange::new(range, Event::Unmap));
        let _ptl = self.ptl.lock().unwrap();
        let mut freed = Vec::new();
        let mut va = range.start();
        while va < range.end() {
            // SAFETY: we hold the page-table lock for the slot's life.
            if let Some(slot) = unsafe { self.slot(va) } {
                if slot.leaf().is_some() {
                    // Why the helper and not a plain clear: it clears, flushes
                    // the CPU TLBs, tells per-page notifiers and devices on
                    // the CPU tables, and only then hands the frame back.
                    // It checks the page lies inside `guard`'s range.
                    // SAFETY: 1. nothing this code runs from is mapped here;
                    // 2. `guard` is open on this address space's head.
                    let reusable = unsafe { ptep_clear_flush_notify(&self.arch, &guard, &slot) }
                        .expect("a leaf inside the announced range");
                    // A dirty page would be written back here.
                    freed.push(reusable.into_frame());
                }
            }
            va = VirtAddr(va.0 + PAGE);
        }
        drop(_ptl);
        // Why the frames wait until after `end`: range notifiers were told
        // at the start; the end lets them fault in again (they will find the
        // new, empty mapping).
        guard.end();
        freed
    }

    /// mprotect to read-only: downgrade each leaf, then tell per-page
    /// notifiers about the whole range once, as Linux's change_pte_range.
    fn write_protect(&self, range: PageRange) {
        let guard = self
            .notifiers
            .invalidate_range_start(InvalidateRange::new(range, Event::ProtectionVma));
        let _ptl = self.ptl.lock().unwrap();
        let mut va = range.start();
        while va < range.end() {
            // SAFETY: under the page-table lock.
            if let Some(slot) = unsafe { self.slot(va) } {
                if let Some(leaf) = slot.leaf() {
                    // Why the helper: it changes only the permissions,
                    // flushes, and runs the secondary-TLB hook for a lost
                    // permission; it refuses to make a copy-on-write leaf
                    // writable. It does *not* send `invalidate_pages`.
                    // SAFETY: 1. `guard` is open on this address space's head.
                    let _old = unsafe {
                        ptep_modify_flush_notify(
                            &self.arch,
                            &guard,
                            &slot,
                            leaf.prot.difference(Prot::WRITE),
                        )
                    }
                    .expect("a leaf inside the announced range");
                }
            }
            va = VirtAddr(va.0 + PAGE);
        }
        // That call is ours: per-page notifiers hear the range once.
        self.notifiers.invalidate_pages(range);
        drop(_ptl);
        guard.end();
    }

    /// Page reclaim: was the page used since the last scan, by the CPU or
    /// by any secondary MMU?
    fn age(&self, va: VirtAddr) -> bool {
        let _ptl = self.ptl.lock().unwrap();
        // SAFETY: under the page-table lock.
        let slot = unsafe { self.slot(va) }.expect("mapped");
        // Why the helper: it clears the CPU's accessed bit (x86 skips the
        // flush, as Linux does) and ORs in every notifier's answer; no
        // range is needed, aging changes no translation.
        // SAFETY: 1. our own head.
        unsafe { ptep_clear_flush_young_notify(&self.arch, &self.notifiers, &slot) }.unwrap()
    }

    /// exit_mmap: release *before* taking the PT lock and before freeing
    /// anything. Release waits for every range guard in flight, and our
    /// guards wait for the PT lock: holding it here would deadlock.
    fn teardown(&self) -> usize {
        self.notifiers
            .release()
            .expect("not called from a callback");
        let _ptl = self.ptl.lock().unwrap();
        // Every secondary MMU let go: frames and tables may go now (a real
        // kernel also flushes the CPU TLBs, and frees its tables).
        let mut frames = 0;
        for va in (0..4).map(|i| VirtAddr(0x40_0000 + i * PAGE)) {
            if let Some((word, _)) = self.walk(va, false) {
                if let Entry::Leaf(leaf) =
                    X86_64::decode(X86_64::PT, word.swap(0, Ordering::AcqRel))
                {
                    free_page(leaf.frame);
                    frames += 1;
                }
            }
        }
        self.arch.flush_tlb_all();
        frames
    }
}

/// A toy IOMMU: a software IOTLB of (page, writable). It drops whole
/// ranges at their start, so it declares only the range pair and release:
/// with the default callbacks it would also be called per page, and
/// invalidate twice.
#[derive(Default)]
struct ToyIommu {
    iotlb: Mutex<Vec<(VirtAddr, bool)>>,
    young: Mutex<bool>,
}

impl MmuNotifier for ToyIommu {
    fn callbacks(&self) -> Callbacks {
        Callbacks::RANGE
            .union(Callbacks::RELEASE)
            .union(Callbacks::AGE)
    }
    fn invalidate_range_start(&self, r: &InvalidateRange) -> Result<(), mmu_notifier::Again> {
        self.iotlb
            .lock()
            .unwrap()
            .retain(|(va, _)| !r.range.contains(*va));
        Ok(())
    }
    fn release(&self) {
        self.iotlb.lock().unwrap().clear();
    }
    fn clear_flush_young(&self, _: PageRange) -> bool {
        std::mem::take(&mut *self.young.lock().unwrap())
    }
}

fn main() {
    let mm = ProcessMm::new();
    let iommu = pin!(Subscription::new(ToyIommu::default()));
    mm.notifiers.register(iommu.as_ref()).expect("register");

    let base = VirtAddr(0x40_0000);
    let range = PageRange::from_pages(base, 4, PAGE).unwrap();
    for i in 0..4 {
        mm.map(
            VirtAddr(base.0 + i * PAGE),
            alloc_page(),
            Prot::WRITE | Prot::USER,
        );
    }
    // The device faults two pages in (its own fault path would look them
    // up in our tables under the PT lock).
    iommu
        .notifier()
        .iotlb
        .lock()
        .unwrap()
        .extend([(base, true), (VirtAddr(base.0 + PAGE), true)]);

    // Aging: the CPU did not touch page 0 (A clear), the device did.
    *iommu.notifier().young.lock().unwrap() = true;
    assert!(mm.age(base), "young: the device used it");
    assert!(!mm.age(base), "old after the scan");

    // mprotect(R): the device drops its writable translations.
    mm.write_protect(range);
    assert!(
        iommu.notifier().iotlb.lock().unwrap().is_empty(),
        "the IOTLB dropped the range"
    );
    let flags = PteFlags::from_bits_retain(mm.walk(base, false).unwrap().0.load(Ordering::Acquire));
    assert!(!flags.contains(PteFlags::WRITABLE), "write-protected");

    // munmap of two pages: their frames come back.
    iommu.notifier().iotlb.lock().unwrap().push((base, false));
    let freed = mm.unmap(PageRange::from_pages(base, 2, PAGE).unwrap());
    assert_eq!(freed.len(), 2);
    assert!(
        iommu.notifier().iotlb.lock().unwrap().is_empty(),
        "the device let go first"
    );
    freed.into_iter().for_each(free_page);

    // Teardown: release, then free what is left.
    let left = mm.teardown();
    assert_eq!(left, 2, "two pages were still mapped");
    assert!(
        iommu.is_released(),
        "the IOMMU was released before any frame went"
    );
    println!("own walker: aged, write-protected, unmapped and tore down with the IOMMU in step");
}
