//! The s390x (z/Architecture) arch layer of [`mmu-notifier`]: DAT entry
//! formats and the hardware primitives behind [`mmu_notifier_core::Arch`].
//!
//! # What this crate owns, and what it must not
//! - [`entry`](crate::PageTableEntry): region-, segment- and page-table entries and the ASCE as
//!   `#[repr(transparent)]` words with bitflags, IBM bit numbers in the docs;
//! - [`S390x`]: the [`Arch`](mmu_notifier_core::Arch) implementation
//!   (geometry, encodings, IPTE/IDTE/RRBE/ISKE/CSP);
//! - nothing else. It **never calls a notifier**: the notifier step lives in
//!   [`mmu_notifier_core::pgtable`], as free functions wrapped around the
//!   primitives, which no arch can override.
//!
//! # Why `ptep_clear_flush` is overridden, and why the notifier still runs
//! On s390 a valid entry may only be removed from under running CPUs with
//! IPTE (or IDTE/CSP), and IPTE sets the invalid bit *and* purges the TLBs
//! of every CPU in one instruction. So [`S390x`] overrides
//! `ptep_clear_flush` to be that instruction, discharging the flush
//! obligation with `PendingFlush::assume_flushed`, and `flush_tlb_page` is
//! a no-op. The 2008 "mmu notifiers #v6" patch had to change s390's
//! `ptep_clear_flush` by hand to add the notifier call, and forgot s390's
//! `ptep_clear_flush_young`, so aging never reached secondary MMUs there.
//! Here both overrides are mere hardware primitives:
//! `ptep_clear_flush_notify` and `ptep_clear_flush_young_notify` call them
//! and then the notifiers, whatever an arch overrides.
//!
//! # Aging: storage keys
//! s390 has no referenced bit in its entries: the reference (R) and change
//! (C) bits live in the *storage key* of each 4 KiB frame. This crate ages
//! pages the 2008 Linux way: `ptep_test_and_clear_young` is RRBE on the
//! frame, and `ptep_clear_flush_young` needs no TLB flush, because R is set
//! by every access in the key, not when a translation enters the TLB.
//! Chosen over Linux's post-2013 scheme (software young/dirty bits, old
//! pages made invalid so the next access faults and a fault handler marks
//! them young) because it needs no fault handler, changes no live entry,
//! and QEMU emulates the keys, so the QEMU suite checks it for real.
//! The price: R is per frame, not per mapping, so an access through any
//! other mapping of the frame (or by the kernel, or I/O) also makes it
//! young, and clearing it clears it for every mapping. For the same reason
//! decoded live entries never say young or dirty on s390x hardware; the
//! *old* word a clear returns carries the frame's R and C instead (C is
//! never reset here, so "dirty" is conservative).
//!
//! # Host and QEMU
//! Every instruction sits behind `cfg(all(target_arch = "s390x",
//! not(test), not(miri)))`. Elsewhere a stand-in performs the same memory
//! effect (IPTE sets the invalid bit) and the software young bit in the
//! entry plays the storage key's R, so host `cargo test` and Miri (also on
//! the big-endian `s390x-unknown-linux-gnu` target) run all of the logic.
//! 1 MiB large segments (EDAT-1) are encoded and tested only on the host:
//! QEMU's TCG CPU has no EDAT, and their IDTE invalidation is untested
//! there.
//!
//! # Decisions
//! - **No instruction-execution protection**: QEMU's default CPU and the
//!   2008 baseline lack facility 130, without which PTE bit 55 must be
//!   zero. EXEC (and USER, which s390 expresses by address space, not by
//!   entry) are software bits, so `decode(encode_leaf(f, p))` gives `p`
//!   back, but the CPU executes from any valid page.
//! - **Full 64-bit address space**: a region-first root; `check_addr`
//!   accepts every address (s390x has no canonical form).
//! - **`flush_tlb_all` is global** (CSP with the purge bit), not PTLB, which
//!   only purges the calling CPU: teardown frees tables afterwards.
//!
//! # Features and cfgs
//! - `defmt`: `defmt::Format` for the public types.
//! - `--cfg mmu_notifier_broken="no-flush"`: a deliberately broken build
//!   in which invalidations are plain stores of the invalid bit, without
//!   purging any TLB, for the QEMU suite's negative check. Never ship it.
//!
//! [`mmu-notifier`]: https://docs.rs/mmu-notifier
#![no_std]
#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    missing_docs
)]

mod entry;
mod instr;
mod paging;

pub use entry::{ibm_bit, Asce, PageTableEntry, RegionTableEntry, SegmentTableEntry, TableType};
pub use paging::S390x;
