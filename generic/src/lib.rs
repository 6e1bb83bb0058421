//! The arch-independent core of [`mmu-notifier`]: keep secondary MMUs
//! coherent with the CPU page tables.
//!
//! A *secondary MMU* (a hypervisor's shadow or EPT tables, an IOMMU, an
//! RDMA NIC, a GPU) caches translations of an address space. When the
//! kernel removes or downgrades a mapping, every secondary MMU must drop its
//! copy before the frame can be reused. This crate is that protocol, after
//! Linux's MMU notifiers and what Linux learned since (see
//! [Background](#background)):
//!
//! - [`notifier`]: the per-address-space list of [`MmuNotifier`]s, walked
//!   lock-free inside read-side sections, with real grace periods on
//!   unregister; [`interval`]: notifiers for address ranges with a
//!   collision-retry fault path;
//! - [`kernel`]: what the embedding kernel provides (its CPU id, how to
//!   wait, its memory barriers or its own RCU) and the per-CPU sleepable
//!   RCU built on it;
//! - [`arch`]: the [`Arch`] trait an architecture implements (entry
//!   formats, `ptep_get_and_clear`, `ptep_test_and_clear_young`,
//!   `flush_tlb_page`) with overridable generic `ptep_clear_flush` and
//!   `ptep_clear_flush_young`, and `#[must_use]` flush obligations;
//! - [`pgtable`]: the notifier step wrapped around those, where no arch
//!   override can skip it, handing back [`Reusable`] frames only after it
//!   and only inside an announced range;
//! - [`mm`]: a reference address space with the call sites that change
//!   mappings (zap, fork copy-on-write, mprotect, remap, huge unmap,
//!   teardown), each notifying where Linux does.
//!
//! This crate names no architecture; `arch/x86` and `arch/s390` implement
//! [`Arch`], and the `mmu-notifier` facade picks one by target.
//!
//! # Features
//! - `notifier` (default): call notifiers. Off, [`NotifierHead`] is
//!   zero-sized and every hook compiles to nothing but still type-checks.
//! - `alloc`: subscriptions that own their memory:
//!   [`NotifierHead::get`] (one refcounted notifier per type and address
//!   space, Linux's `mmu_notifier_get`/`put`) and [`OwnedSubscription`] (a
//!   subscription on a reference-counted address space), and
//!   [`MmuNotifier`] for `Box<dyn MmuNotifier>` and `Arc`.
//! - `std`: [`kernel::StdThreads`], host threads as the kernel's CPUs (for
//!   user-space programs, host tests and benchmarks).
//! - `defmt`: `defmt::Format` for the public types.
//!
//! # Background
//! Linux's MMU notifiers began in 2008 ("mmu notifiers #v6", Andrea
//! Arcangeli, for KVM, GRU and XPMEM) with four callbacks: `release`,
//! `invalidate_page` (called per page after the CPU TLB flush),
//! `invalidate_pages` and `age_page`, hooked into `ptep_clear_flush`, the
//! unmap, fork, mprotect and remap loops, and teardown. Linux then moved
//! the notifier step into wrappers no arch override could skip, called
//! `release` before teardown frees anything, added the range pair around
//! whole operations with SRCU so callbacks may sleep, the non-blocking
//! start, the secondary-TLB hook for devices that walk the CPU tables, and
//! interval notifiers. This crate keeps the per-page callbacks (as
//! [`Callbacks::INVALIDATE_PAGE`]) beside everything that came after.
//!
//! [`mmu-notifier`]: https://docs.rs/mmu-notifier
// Links to items behind a feature: to the item where the feature builds
// it, to the list of features where it does not, so that the docs build
// without broken links under any set of features.
#![cfg_attr(feature = "notifier", doc = "[`interval`]: crate::interval")]
#![cfg_attr(not(feature = "notifier"), doc = "[`interval`]: #features")]
#![cfg_attr(feature = "alloc", doc = "[`NotifierHead::get`]: NotifierHead::get")]
#![cfg_attr(not(feature = "alloc"), doc = "[`NotifierHead::get`]: #features")]
#![cfg_attr(feature = "alloc", doc = "[`OwnedSubscription`]: OwnedSubscription")]
#![cfg_attr(not(feature = "alloc"), doc = "[`OwnedSubscription`]: #features")]
#![cfg_attr(feature = "std", doc = "[`kernel::StdThreads`]: kernel::StdThreads")]
#![cfg_attr(not(feature = "std"), doc = "[`kernel::StdThreads`]: #features")]
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    missing_docs
)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod addr;
pub mod arch;
pub mod error;
#[cfg(feature = "notifier")]
pub mod interval;
pub mod kernel;
pub mod mm;
pub mod notifier;
pub mod pgtable;
mod sync;

pub use addr::{PageRange, PhysAddr, VirtAddr};
pub use arch::{Arch, Entry, Flushed, Leaf, Level, LevelGeometry, PendingFlush, Prot, PteSlot};
pub use error::Error;
pub use kernel::{Kernel, Portable};
pub use mm::{AddressSpace, CopyMode, TableMemory};
pub use notifier::{
    Again, Callbacks, Event, InvalidateRange, MmuNotifier, NotifierHead, Owner, RangeGuard,
    Subscription,
};
#[cfg(feature = "alloc")]
pub use notifier::{HasNotifierHead, OwnedSubscription, SharedNotifier};
pub use pgtable::{
    ptep_clear_flush_notify, ptep_clear_flush_young_notify, ptep_modify_flush_notify,
    ptep_wrprotect_cow_notify, Reusable,
};
