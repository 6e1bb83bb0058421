//! The shared-tables driver (Linux's SVA, `intel_svm_*`): VT-d translates
//! the device's DMA with the address space's own x86-64 page tables, through
//! a scalable-mode PASID entry whose first-stage pointer is the address
//! space's root. There is no second copy of any translation, so the driver
//! needs no range callbacks: it listens to
//! [`MmuNotifier::invalidate_secondary_tlbs`], which the core calls right
//! after every CPU TLB flush of a cleared or downgraded entry, and issues a
//! PASID-based IOTLB invalidation for exactly that span.
//!
//! # Call sites
//! | call site | core step | what this driver issues |
//! |---|---|---|
//! | `zap_range` | `ptep_clear_flush_notify` per page | page-selective PASID-IOTLB (type 6) for the page, then a wait |
//! | `change_protection`, `copy_range` COW | `ptep_modify_flush_notify` per page | the same |
//! | `unmap_huge_range` | `ptep_clear_flush_notify` per huge entry | type 6 over the 2 MiB span (address mask 9) |
//! | `remap_pfn_range` | new entries only | nothing (a not-present entry is never cached) |
//! | `clear_flush_young` | the AGE callback | type 6 over the page: the accessed bit is the CPU entry's own, which the core already reported; the flush makes the next DMA walk, and set it, again |
//! | `teardown` | `release`, before any table or frame is freed | the PASID entry cleared, a PASID-cache invalidation (type 7), a PASID-wide IOTLB invalidation (type 6, granularity 2) |
//!
//! Built with `--cfg mmu_notifier_broken="no-iotlb"` the driver skips
//! every PASID-IOTLB invalidation (it still clears the PASID entry on
//! release): the device goes on using stale translations, which the DMA
//! cases must catch. Built with `no-notify`, the core never calls it.

use core::sync::atomic::{AtomicBool, Ordering};

use mmu_notifier_conformance::dma::{Invalidation, InvalidationStats, IOTLB_INVALIDATION};
use mmu_notifier_core::{Callbacks, Event, MmuNotifier, PageRange, PhysAddr};

use super::aligned_blocks;
use super::tables::ScalableRoot;
use super::vtd::{Desc, Vtd, VtdError};
use crate::SpinLock;

/// One PASID bound to one address space's tables.
pub struct Sva<'v, 'p> {
    vtd: &'v Vtd<'p>,
    tables: &'v ScalableRoot<'p>,
    pasid: u32,
    did: u16,
    attached: AtomicBool,
    stats: SpinLock<InvalidationStats>,
}

impl<'v, 'p> Sva<'v, 'p> {
    /// A driver for `pasid` in domain `did`, not attached yet.
    pub fn new(vtd: &'v Vtd<'p>, tables: &'v ScalableRoot<'p>, pasid: u32, did: u16) -> Self {
        Self {
            vtd,
            tables,
            pasid,
            did,
            attached: AtomicBool::new(false),
            stats: SpinLock::new(InvalidationStats::default()),
        }
    }

    /// Points the PASID at the x86-64 tables rooted at `root` (register the
    /// notifier first, so no change of those tables goes unannounced).
    /// Their every level must allow user access: VT-d's first stage
    /// treats untagged DMA as a user request.
    ///
    /// # Errors
    /// The invalidation queue's, if the unit refused to drop what it may
    /// have cached of an earlier binding (then the PASID stays unbound).
    pub fn attach(&self, root: PhysAddr) -> Result<(), VtdError> {
        self.tables.set_first_stage(self.pasid, root.0, self.did);
        // A not-present entry is not cached, but a unit may have cached a
        // previous binding of this PASID: drop it.
        let r = self.vtd.invalidate(&[
            Desc::pasid_cache(self.did, self.pasid),
            Desc::piotlb_pasid(self.did, self.pasid),
        ]);
        if r.is_err() {
            self.tables.clear(self.pasid);
            return r;
        }
        self.attached.store(true, Ordering::Release);
        Ok(())
    }

    /// Makes the PASID not present and drops everything the unit cached
    /// for it. Idempotent.
    pub fn detach(&self, event: Option<Event>) {
        if !self.attached.swap(false, Ordering::AcqRel) {
            return;
        }
        self.tables.clear(self.pasid);
        let descs = [
            Desc::pasid_cache(self.did, self.pasid),
            Desc::piotlb_pasid(self.did, self.pasid),
        ];
        let n = if IOTLB_INVALIDATION { 2 } else { 1 };
        // Nothing better to do on a refusal than to go on: the entry is
        // cleared, and the cases see any translation that survived.
        let _ = self.vtd.invalidate(&descs[..n]);
        if IOTLB_INVALIDATION {
            self.stats.lock().record(Invalidation {
                event,
                iova: 0,
                len: 1 << 48,
                kind: "PASID entry cleared, PASID-cache (type 7) and PASID-wide IOTLB (type 6) invalidation",
            });
        }
    }

    /// The invalidations issued so far.
    pub fn stats(&self) -> InvalidationStats {
        *self.stats.lock()
    }

    fn flush(&self, range: PageRange, event: Option<Event>) {
        if !IOTLB_INVALIDATION || !self.attached.load(Ordering::Acquire) {
            return;
        }
        let mut descs = [Desc::iotlb_global(); 16];
        let mut n = 0;
        for (addr, am) in aligned_blocks(range.start().0, range.len(), self.vtd.max_address_mask())
        {
            if n == descs.len() {
                let _ = self.vtd.invalidate(&descs[..n]);
                n = 0;
            }
            descs[n] = Desc::piotlb_pages(self.did, self.pasid, addr, am);
            n += 1;
        }
        let _ = self.vtd.invalidate(&descs[..n]);
        self.stats.lock().record(Invalidation {
            event,
            iova: range.start().0,
            len: range.len(),
            kind: "page-selective PASID-based IOTLB invalidation (queued, type 6)",
        });
    }
}

impl MmuNotifier for Sva<'_, '_> {
    fn callbacks(&self) -> Callbacks {
        Callbacks::SECONDARY_TLB
            .union(Callbacks::AGE)
            .union(Callbacks::RELEASE)
    }

    fn release(&self) {
        self.detach(Some(Event::Release));
    }

    fn invalidate_secondary_tlbs(&self, range: PageRange) {
        self.flush(range, None);
    }

    fn clear_flush_young(&self, range: PageRange) -> bool {
        // The unit sets the accessed bit in the CPU entry itself, which the
        // core has just tested and cleared: nothing of our own to report.
        self.flush(range, None);
        false
    }

    fn clear_young(&self, _range: PageRange) -> bool {
        false
    }
}
