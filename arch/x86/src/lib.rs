//! The x86-64 arch layer of [`mmu-notifier`]: the paging-entry format and
//! the hardware primitives, as an implementation of
//! [`mmu_notifier_core::Arch`].
//!
//! # What this crate owns
//! - [`PteFlags`] and [`ADDR_MASK`]: the x86-64 entry format, one flag per
//!   architectural bit;
//! - [`X86_64`]: 4-level paging geometry (4 KiB pages, 2 MiB pages at the
//!   page-directory level), the encodings between entries and the portable
//!   [`Entry`](mmu_notifier_core::Entry), and the primitives that change a
//!   live entry (`xchg`, `cmpxchg`, `lock and`) and purge the TLB
//!   (`invlpg`, CR3 reload).
//!
//! It never calls a notifier, and cannot skip one: the notifier step lives
//! in `mmu_notifier_core::pgtable`, around these primitives. It allocates
//! nothing and walks no tree; `mmu_notifier_core::AddressSpace` does that.
//!
//! # Use from a kernel
//! Give [`X86_64`] the base of the kernel's direct map, implement
//! [`FrameAllocator`](mmu_notifier_core::FrameAllocator) over the kernel's
//! frame allocator, and let `AddressSpace` build and change the user half
//! of a page-table tree whose root goes into CR3:
//!
//! ```no_run
//! use mmu_notifier_core::{AddressSpace, FrameAllocator, PhysAddr, Prot, VirtAddr};
//! use mmu_notifier_x86::X86_64;
//!
//! struct KernelFrames;
//! // SAFETY: frames come from the kernel's physical allocator, 4096-byte
//! // aligned, used by nobody else until freed, inside the direct map.
//! unsafe impl FrameAllocator for KernelFrames {
//!     fn alloc_table(&self, bytes: usize) -> Option<PhysAddr> {
//!         kernel_alloc_frames(bytes)
//!     }
//!     unsafe fn free_table(&self, pa: PhysAddr, bytes: usize) {
//!         kernel_free_frames(pa, bytes)
//!     }
//! }
//! # fn kernel_alloc_frames(_: usize) -> Option<PhysAddr> { None }
//! # fn kernel_free_frames(_: PhysAddr, _: usize) {}
//!
//! static ARCH: X86_64 = X86_64::with_phys_offset(0xffff_8880_0000_0000);
//! static FRAMES: KernelFrames = KernelFrames;
//!
//! let mm = AddressSpace::new(&ARCH, &FRAMES)?;
//! mm.map(VirtAddr(0x40_0000), PhysAddr(0x20_0000), Prot::USER | Prot::WRITE)?;
//! mm.map_huge(X86_64::PD, VirtAddr(0x4000_0000), PhysAddr(0x80_0000_0000), Prot::USER)?;
//! // Copy the kernel half of the PML4 in, then load `mm.root()` into CR3.
//! # Ok::<(), mmu_notifier_core::Error>(())
//! ```
//!
//! The kernel must set EFER.NXE (non-executable leaves use bit 63) and
//! CR0.WP (so write-protection binds ring 0 too). An address space that
//! more than one CPU may run needs a cross-CPU shootdown: implement
//! [`TlbShootdown`] (an IPI whose handler runs `invlpg` and acknowledges)
//! and build the arch with [`X86_64::with_shootdown`]; without one, keep
//! each address space active on one CPU at a time (see [`X86_64`]).
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

mod flags;
mod instr;
mod paging;
mod shootdown;

pub use flags::{PteFlags, ADDR_MASK};
pub use paging::X86_64;
pub use shootdown::TlbShootdown;
