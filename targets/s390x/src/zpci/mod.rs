//! DMA through zPCI, s390x's PCI architecture, whose translations an
//! IOTLB caches: a virtio-rng function that writes random bytes wherever
//! the driver points it, translated by DMA tables this kernel owns and
//! refreshed with RPCIT, kept coherent with an address space by the
//! arch-neutral shadow driver (`tests/conformance/src/dma/shadow.rs`).
//!
//! # Layout
//! Hardware code (depends on the kernel only through [`Platform`] and the
//! harness's `SpinLock`):
//! - [`insn`]: CLP, PCILG, PCISTG, MPCIFC, STPCIFC, RPCIT, CHSC;
//! - [`function`]: one function found, enabled and queried with CLP, its
//!   DMA translation registered, its error events (the DMA fault records)
//!   read with CHSC store-event-information, its error state reset;
//! - [`tables`]: the zPCI DMA tables (region-third, segment and page
//!   tables: not the CPU's DAT format);
//! - [`virtio`]: virtio 1.0 over the function's PCI capabilities, one
//!   virtqueue at bus addresses, the virtio-rng request.
//!
//! Drivers:
//! - [`domain`]: the function's DMA tables as the shadow driver's
//!   `IoDomain`: an IO entry is a page-table entry, the invalidation is
//!   RPCIT;
//! - [`machine`]: the conformance suite's `DmaMachine`, for the `iommu`
//!   kernel.
//!
//! # What QEMU's zPCI does with a stale translation
//! A DMA is translated from the function's IOTLB only
//! (`s390_translate_iommu`), which only RPCIT fills or refreshes: a table
//! change without RPCIT leaves the device using the old translation. A
//! DMA with no valid translation is refused, queues an error event with
//! the address, and puts the function in the error state (every later DMA
//! and PCI load/store refused) until MPCIFC reset-error; the virtio device
//! is then reset and set up again.
//!
//! # Which invalidation each call site issues
//! Every call site reaches the shadow driver through its range start;
//! the driver clears the page-table entries (invalid bit 0x400) of what it
//! mirrored in the range, then issues one RPCIT over the span:
//!
//! | call site | event | zPCI invalidation |
//! |---|---|---|
//! | `zap_range` | `Unmap` | RPCIT over the cleared pages |
//! | `change_protection` | `ProtectionVma` | RPCIT over the cleared pages (the next fault maps them again with the protect bit 0x200, and RPCITs that) |
//! | `copy_range`, COW | `Clear` | RPCIT over the parent's cleared pages |
//! | `remap_pfn_range` | `Clear` | nothing mirrored there, nothing issued |
//! | `teardown` | `Release` | RPCIT over everything it mirrored |
//! | `unmap_huge_range` | not reachable: QEMU's TCG CPU has no EDAT, so no huge pages |
//!
//! Establishing a translation needs an RPCIT too (the fault path's
//! `publish`): an entry that is valid in the tables but not refreshed is
//! still refused.

pub mod domain;
pub mod function;
pub mod insn;
pub mod machine;
pub mod tables;
pub mod virtio;

/// What the zPCI code needs from the kernel around it.
///
/// # Safety
/// Implementors promise that:
/// 1. [`alloc_block`](Self::alloc_block) returns zeroed memory of `bytes`
///    (4 KiB, 16 KiB or 2 KiB), aligned to `bytes`, that nothing else uses
///    until [`free_block`](Self::free_block);
/// 2. [`phys_to_virt`](Self::phys_to_virt) gives a pointer through which
///    such memory (and every frame handed to a device) can be accessed;
/// 3. [`now_us`](Self::now_us) never goes backwards.
pub unsafe trait Platform: Sync {
    /// Zeroed memory of `bytes` (4096, 16384 or 2048), aligned to `bytes`.
    fn alloc_block(&self, bytes: u64) -> Option<u64>;
    /// Gives a block back.
    ///
    /// # Safety
    /// `pa` came from `alloc_block(bytes)` and no hardware structure, and
    /// no IOTLB, refers to it any more.
    unsafe fn free_block(&self, pa: u64, bytes: u64);
    /// Where physical address `pa` can be accessed.
    fn phys_to_virt(&self, pa: u64) -> *mut u8;
    /// Microseconds since some fixed point.
    fn now_us(&self) -> u64;
}
