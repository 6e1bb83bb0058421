//! The x86-64 arch layer of [`mmu-notifier`]: the paging-entry format and
//! the hardware primitives, as an implementation of
//! [`mmu_notifier_core::Arch`].
//!
//! # What this crate owns
//! - [`PteFlags`] and [`ADDR_MASK`]: the x86-64 entry format, one flag per
//!   architectural bit;
//! - [`X86_64`]: 4-level paging geometry (4 KiB pages, 2 MiB pages at the
//!   page-directory level), the encodings between entries and the portable
//!   [`Entry`](mmu_notifier_core::Entry) (with [`COPY_ON_WRITE`] in a
//!   software bit), and the primitives that change a live entry (`xchg`,
//!   `cmpxchg`, `lock and`) and purge the TLB (`invlpg`, CR3 reload);
//! - [`TlbShootdown`]: the kernel's cross-CPU half of a flush.
//!
//! It never calls a notifier, and cannot skip one: the notifier step lives
//! in `mmu_notifier_core::pgtable`, around these primitives. It allocates
//! nothing and walks no tree; `mmu_notifier_core::AddressSpace` does that.
//!
//! # Use from a kernel
//! Implement [`TableMemory`](mmu_notifier_core::TableMemory) over the
//! kernel's frame allocator and direct map (one `unsafe impl` vouches for
//! both), pick how flushes reach the other CPUs, and let `AddressSpace`
//! build and change the user half of a page-table tree whose root goes
//! into CR3:
//!
//! ```no_run
//! use core::ptr::NonNull;
//! use mmu_notifier_core::{AddressSpace, PhysAddr, Prot, TableMemory, VirtAddr};
//! use mmu_notifier_x86::{TlbShootdown, X86_64};
//!
//! /// Where the kernel's direct map of physical memory starts.
//! const DIRECT_MAP: u64 = 0xffff_8880_0000_0000;
//!
//! struct KernelTables;
//! // SAFETY: 1. frames come from the kernel's physical allocator, `bytes`
//! // long and aligned, used by nobody else until freed; 2. the direct map
//! // covers all physical memory, read-write, for the kernel's lifetime;
//! // 3. it maps physical address `pa` at `DIRECT_MAP + pa`, so the walker
//! // reads what `phys_to_virt` reaches.
//! unsafe impl TableMemory for KernelTables {
//!     fn alloc_table(&self, bytes: usize) -> Option<PhysAddr> {
//!         kernel_alloc_frames(bytes)
//!     }
//!     unsafe fn free_table(&self, pa: PhysAddr, bytes: usize) {
//!         kernel_free_frames(pa, bytes)
//!     }
//!     fn phys_to_virt(&self, pa: PhysAddr) -> NonNull<u8> {
//!         NonNull::new(core::ptr::with_exposed_provenance_mut(
//!             (DIRECT_MAP + pa.as_u64()) as usize,
//!         ))
//!         .expect("the direct map is not at address 0")
//!     }
//! }
//! # fn kernel_alloc_frames(_: usize) -> Option<PhysAddr> { None }
//! # fn kernel_free_frames(_: PhysAddr, _: usize) {}
//!
//! /// The kernel's IPI-based TLB shootdown.
//! struct Ipis;
//! // SAFETY: 1.-4. as `TlbShootdown` lists: an IPI to every other CPU that
//! // may run the address space, whose handler runs `invlpg` and
//! // acknowledges; the initiator waits for every acknowledgement and
//! // takes no lock.
//! unsafe impl TlbShootdown for Ipis {
//!     fn flush_remote(&self, va: Option<VirtAddr>) {
//!         send_flush_ipis_and_wait(va)
//!     }
//! }
//! # fn send_flush_ipis_and_wait(_: Option<VirtAddr>) {}
//!
//! static ARCH: X86_64 = X86_64::with_shootdown(&Ipis);
//! static TABLES: KernelTables = KernelTables;
//!
//! let mm: AddressSpace<'_, X86_64, KernelTables> = AddressSpace::new(&ARCH, &TABLES)?;
//! mm.map(VirtAddr(0x40_0000), PhysAddr(0x20_0000), Prot::USER | Prot::WRITE)?;
//! mm.map_huge(X86_64::PD, VirtAddr(0x4000_0000), PhysAddr(0x80_0000_0000), Prot::USER)?;
//! // Copy the kernel half of the PML4 in, then load `mm.root()` into CR3.
//! # Ok::<(), mmu_notifier_core::Error>(())
//! ```
//!
//! The kernel must set EFER.NXE (non-executable leaves use bit 63) and
//! CR0.WP (so write-protection binds ring 0 too). A kernel that runs each
//! address space on one CPU only may skip the shootdown with the `unsafe`
//! [`X86_64::local_only`], promising just that.
//!
//! # Five-level paging
//! Not yet. The encodings are keyed by a level's shift, not its index, so
//! LA57 is a second type (`X86_64La57`) with a PML5 level at shift 48 in
//! front of these four and a 57-bit `check_addr`; a type rather than a
//! runtime flag because `Arch::LEVELS` is a constant.
//!
//! # Features
//! - `defmt`: `defmt::Format` for [`PteFlags`] (and the core's types).
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
mod shootdown;

pub use entry::{PteFlags, ADDR_MASK};
pub use paging::{COPY_ON_WRITE, X86_64};
pub use shootdown::TlbShootdown;
