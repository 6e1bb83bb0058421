//! MMU notifiers for Rust kernels: keep secondary MMUs coherent with the
//! CPU page tables.
//!
//! A *secondary MMU* (a hypervisor's shadow or EPT tables, an IOMMU, an
//! RDMA NIC, a GPU) caches translations of an address space. When the
//! kernel removes or downgrades a mapping, every secondary MMU must drop
//! its copy before the frame can be reused. This crate is that protocol
//! (Linux's MMU notifiers, 2008, and what Linux learned since), with the
//! order of operations enforced by types.
//!
//! This facade re-exports the arch-independent core
//! ([`mmu_notifier_core`]) and the arch layer of the target being built as
//! [`native`] (`mmu_notifier_x86` on x86-64, `mmu_notifier_s390` on
//! s390x); any other target is a compile error. A kernel that wants to
//! name an arch explicitly depends on the core and an arch crate directly.
//!
//! # Example: a kernel wiring a secondary MMU
//!
//! The device below caches translations (an IOTLB). It registers on the
//! address space, faults a page in, and the kernel unmaps it: the CPU TLB
//! is flushed (`invlpg` on bare metal), then the device is told, and only
//! then does the frame come back for reuse.
//!
//! ```
//! # #[cfg(target_arch = "x86_64")] {
//! use core::pin::pin;
//! use core::ptr::NonNull;
//! use std::alloc::{alloc_zeroed, dealloc, Layout};
//! use std::sync::Mutex;
//!
//! use mmu_notifier::native::X86_64;
//! use mmu_notifier::{
//!     AddressSpace, Callbacks, MmuNotifier, PageRange, PhysAddr, Prot, Subscription,
//!     TableMemory, VirtAddr,
//! };
//!
//! /// The kernel's page allocator. Here: host memory, whose addresses
//! /// stand in for physical ones (an identity direct map).
//! struct Pages;
//!
//! // SAFETY: 1. each allocation is exclusively the caller's until freed,
//! // `bytes` long and aligned; 2. it is reachable at its own address, with
//! // the provenance exposed here; 3. there is no hardware walker on the
//! // host, so that address is also the "physical" one.
//! unsafe impl TableMemory for Pages {
//!     fn alloc_table(&self, bytes: usize) -> Option<PhysAddr> {
//!         let layout = Layout::from_size_align(bytes, bytes).ok()?;
//!         // SAFETY: the layout has a non-zero size.
//!         let p = unsafe { alloc_zeroed(layout) };
//!         (!p.is_null()).then(|| PhysAddr(p.expose_provenance() as u64))
//!     }
//!     unsafe fn free_table(&self, pa: PhysAddr, bytes: usize) {
//!         let layout = Layout::from_size_align(bytes, bytes).unwrap();
//!         // SAFETY: allocated by `alloc_table` with this layout.
//!         unsafe { dealloc(self.phys_to_virt(pa).as_ptr(), layout) };
//!     }
//!     fn phys_to_virt(&self, pa: PhysAddr) -> NonNull<u8> {
//!         NonNull::new(core::ptr::with_exposed_provenance_mut(pa.0 as usize)).unwrap()
//!     }
//! }
//!
//! /// A device TLB: which pages it may access without asking the CPU tables.
//! #[derive(Default)]
//! struct Iotlb(Mutex<Vec<VirtAddr>>);
//!
//! impl MmuNotifier for Iotlb {
//!     // A plain IOTLB drops pages as they are unmapped: per-page calls and
//!     // release are all it needs.
//!     fn callbacks(&self) -> Callbacks {
//!         Callbacks::PER_PAGE
//!     }
//!     fn invalidate_page(&self, addr: VirtAddr) {
//!         self.0.lock().unwrap().retain(|&a| a != addr);
//!     }
//!     fn invalidate_pages(&self, range: PageRange) {
//!         self.0.lock().unwrap().retain(|&a| !range.contains(a));
//!     }
//!     fn release(&self) {
//!         self.0.lock().unwrap().clear();
//!     }
//! }
//!
//! # fn main() -> Result<(), mmu_notifier::Error> {
//! // SAFETY: host memory: no CPU walks these tables, so flushing the local
//! // TLB only (here: nothing) is all any CPU needs.
//! let arch = unsafe { X86_64::local_only() };
//! let mm: AddressSpace<'_, X86_64, Pages> = AddressSpace::new(&arch, &Pages)?;
//! let iotlb = pin!(Subscription::new(Iotlb::default()));
//! mm.notifiers().register(iotlb.as_ref())?;
//!
//! let va = VirtAddr(0x4000_0000);
//! let frame = Pages.alloc_table(4096).expect("a data frame");
//! mm.map(va, frame, Prot::WRITE)?;
//!
//! // The device's fault path: look the page up, then cache it.
//! let (leaf, _level) = mm.translate(va).expect("mapped");
//! assert_eq!(leaf.frame, frame);
//! iotlb.notifier().0.lock().unwrap().push(va);
//!
//! // Unmap: clear, flush the CPU TLB, tell the device, then free.
//! let range = PageRange::from_pages(va, 1, 4096)?;
//! mm.zap_range(range, &mut |reusable| {
//!     assert!(iotlb.notifier().0.lock().unwrap().is_empty(), "device let go first");
//!     // SAFETY: the frame is unmapped everywhere; it came from `Pages`.
//!     unsafe { Pages.free_table(reusable.into_frame(), 4096) };
//! })?;
//! mm.teardown(&mut |_| {})?;
//! # Ok(())
//! # }
//! # main().unwrap();
//! # }
//! ```
//!
//! See the README for the design, the supported targets and the test
//! matrix.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    missing_docs
)]

pub use mmu_notifier_core::*;

cfg_if::cfg_if! {
    if #[cfg(target_arch = "x86_64")] {
        /// The arch layer of the build target: x86-64.
        pub use mmu_notifier_x86 as native;
    } else if #[cfg(target_arch = "s390x")] {
        /// The arch layer of the build target: s390x.
        pub use mmu_notifier_s390 as native;
    } else {
        compile_error!("mmu-notifier has arch layers for x86_64 and s390x only; use mmu-notifier-core and implement `Arch` for this target");
    }
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
