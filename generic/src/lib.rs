//! The arch-independent core of [`mmu-notifier`]: keep secondary MMUs
//! coherent with the CPU page tables.
//!
//! A *secondary MMU* (a hypervisor's shadow or EPT tables, an IOMMU, an
//! RDMA NIC, a GPU) caches translations of an address space. When the
//! kernel removes or downgrades a mapping, every secondary MMU must drop its
//! copy before the frame can be reused. This crate is that protocol,
//! after Linux's MMU notifiers (2008) and what Linux learned since:
//!
//! - [`notifier`]: the per-address-space list of [`MmuNotifier`]s, walked
//!   lock-free under sleepable RCU, with real grace periods on unregister;
//! - [`arch`]: the [`Arch`] trait an architecture implements (entry
//!   formats, `ptep_get_and_clear`, `ptep_test_and_clear_young`,
//!   `flush_tlb_page`) with overridable generic `ptep_clear_flush` and
//!   `ptep_clear_flush_young`, and `#[must_use]` flush obligations;
//! - [`pgtable`]: the notifier step wrapped around those, where no arch
//!   override can skip it, handing back [`Reusable`] frames only after it;
//! - [`mm`]: a reference address space with the call sites the seed patched
//!   (zap, fork-COW, mprotect, remap, huge unmap, teardown).
//!
//! This crate names no architecture; `arch/x86` and `arch/s390` implement
//! [`Arch`], and the `mmu-notifier` facade picks one by target.
//!
//! # Features
//! - `notifier` (default): call notifiers. Off, [`NotifierHead`] is
//!   zero-sized and every hook compiles to nothing but still type-checks.
//! - `defmt`: `defmt::Format` for the public types.
//!
//! [`mmu-notifier`]: https://docs.rs/mmu-notifier
#![no_std]
#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    missing_docs
)]

pub mod addr;
pub mod arch;
pub mod error;
pub mod interval;
pub mod mm;
pub mod notifier;
pub mod pgtable;
mod sync;

pub use addr::{PageRange, PhysAddr, VirtAddr};
pub use arch::{Arch, Entry, Flushed, Leaf, Level, PendingFlush, Prot, PteSlot};
pub use error::Error;
pub use mm::{AddressSpace, CopyMode, FrameAllocator};
pub use notifier::{
    Again, Callbacks, Event, InvalidateRange, MmuNotifier, NotifierHead, Owner, RangeGuard,
    Subscription,
};
pub use pgtable::{
    ptep_clear_flush_notify, ptep_clear_flush_young_notify, ptep_modify_flush_notify, Reusable,
};
