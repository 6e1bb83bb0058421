//! DMA through the platform IOMMU: Intel VT-d on q35, QEMU's `edu` device,
//! and the two drivers that keep VT-d coherent with an address space
//! through this crate's notifiers.
//!
//! # Layout
//! Hardware code (no notifier logic; depends on the kernel only through
//! [`Platform`] and the harness's `SpinLock`):
//! - [`pci`]: configuration space through the legacy ports;
//! - [`edu`]: the `edu` device's DMA engine;
//! - [`vtd`]: the remapping unit's registers, queued invalidation with 128-
//!   and 256-bit descriptors, the fault-recording registers;
//! - [`tables`]: root and context tables (legacy and scalable mode), legacy
//!   second-level tables, the PASID directory and table.
//!
//! Drivers:
//! - [`domain`]: a legacy VT-d domain as the arch-neutral shadow-style
//!   driver's [`IoDomain`](mmu_notifier_conformance::dma::IoDomain)
//!   (`tests/conformance/src/dma/shadow.rs`, which holds the driver logic);
//! - [`sva`]: the shared-tables driver (Linux's SVA): VT-d walks the
//!   address space's own x86-64 tables through a PASID entry, and the
//!   driver is an `MmuNotifier` whose `invalidate_secondary_tlbs` issues
//!   PASID-based IOTLB invalidations;
//! - [`machine`]: the conformance suite's `DmaMachine` on all of that, for
//!   the `iommu` kernel.
//!
//! # Which invalidation each call site issues
//! | call site | shadow (legacy second level, [`domain`]) | shared tables (first stage through PASID 0, [`sva`]) |
//! |---|---|---|
//! | `zap_range` | range start (`Unmap`): IO entries cleared, page-selective IOTLB descriptors (type 2) + wait | per cleared page: PASID-based IOTLB, page-selective (type 6) + wait |
//! | `change_protection` | range start (`ProtectionVma`): as zap | per downgraded page: type 6 |
//! | `copy_range`, COW | range start (`Clear`) on the parent: as zap | per write-protected parent page: type 6 |
//! | `remap_pfn_range` | range start (`Clear`): nothing mirrored, nothing issued | nothing: a new entry needs no flush |
//! | `unmap_huge_range` | range start (`Unmap`): the mirrored 4 KiB IO pages, type 2 | per huge entry: type 6 with address mask 9 (2 MiB) |
//! | `teardown` | `release`, dispatched as a whole-space `Release` range: type 2 over what it mirrored | `release`: PASID entry cleared, PASID-cache (type 7) and PASID-wide IOTLB (type 6, granularity 2) |
//! | `clear_flush_young` | (not offered: the shadow table has no accessed bits) | `clear_flush_young`: type 6 over the page, so the next DMA walks and sets the accessed bit again |

pub mod domain;
pub mod edu;
pub mod machine;
pub mod pci;
pub mod sva;
pub mod tables;
pub mod vtd;

/// What the IOMMU code needs from the kernel around it.
///
/// # Safety
/// Implementors promise that:
/// 1. [`alloc_page`](Self::alloc_page) returns a zeroed, 4 KiB-aligned
///    physical page that nothing else uses until it is given back with
///    [`free_page`](Self::free_page);
/// 2. [`phys_to_virt`](Self::phys_to_virt) gives a pointer through which
///    every such page (and every frame the kernel hands to a device) can be
///    read and written;
/// 3. [`now_ms`](Self::now_ms) never goes backwards.
pub unsafe trait Platform: Sync {
    /// A zeroed 4 KiB page, by physical address.
    fn alloc_page(&self) -> Option<u64>;
    /// Gives a page back.
    ///
    /// # Safety
    /// `pa` came from `alloc_page`, and no hardware structure or cache
    /// refers to it any more.
    unsafe fn free_page(&self, pa: u64);
    /// Where physical address `pa` can be accessed.
    fn phys_to_virt(&self, pa: u64) -> *mut u8;
    /// Milliseconds since some fixed point.
    fn now_ms(&self) -> u64;
}

/// Splits `[addr, addr + len)` (page-aligned) into naturally aligned
/// power-of-two blocks of pages, each at most `2^max_mask` pages: the
/// `(address, address mask)` pairs of page-selective invalidations.
pub fn aligned_blocks(addr: u64, len: u64, max_mask: u8) -> impl Iterator<Item = (u64, u8)> {
    let end = addr + len;
    let mut at = addr;
    core::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let pages_left = (end - at) >> 12;
        let align = (at >> 12).trailing_zeros().min(63) as u8;
        let fit = (63 - pages_left.leading_zeros()) as u8;
        let mask = align.min(fit).min(max_mask);
        let block = (at, mask);
        at += 4096 << mask;
        Some(block)
    })
}
