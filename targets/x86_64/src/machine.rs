//! The conformance suite's [`Machine`] and [`Cpus`] on this kernel: the
//! real x86-64 MMU (TLB included), [`mmu_notifier_x86::X86_64`] as the
//! arch, the kernel's frame allocator, fault probes and address-space
//! switching, and its CPUs ([`smp`](crate::smp)).
//!
//! Used by the `conformance` kernel (which runs the shared suite on it), by
//! the `demo` kernel, and on every CPU by the `smp` kernel.
//!
//! # How a case's address space reaches CR3
//! An [`AddressSpace`](mmu_notifier_core::AddressSpace) owns its whole
//! top-level table, and its teardown walks all 512 entries. The kernel's
//! identity map must not appear there (teardown would unmap the kernel, and
//! a case that fails returns early and drops its still-active address space,
//! tearing it down). So [`activate`](Machine::activate) runs the CPU on the
//! harness's *view* of the tree ([`activate_view`]): a harness-owned
//! top-level table with the kernel in entry 0 and the tree's entries
//! 1..=511; every lower table is the tree's own, so the hardware walks, sets
//! A/D bits in, and caches translations of exactly the entries the core
//! changes. Each CPU access first picks up new top-level entries
//! ([`refresh_view`]); and the table allocator switches the CPU back to the
//! kernel's address space before any table is freed, so the CPU never walks
//! a freed table, even when a failing case drops an active address space.

use core::fmt;

use mmu_notifier_conformance::{CpuFault, Cpus, Machine};
use mmu_notifier_core::{Level, PhysAddr, TableMemory, VirtAddr};
use mmu_notifier_x86::X86_64;

use crate::frames::{alloc_frame, alloc_frames_aligned, free_frame, FRAME_SIZE};
use crate::interrupts::{probe_read, probe_write, Fault, PF_PRESENT, PF_WRITE};
use crate::paging::{
    activate_view, current_root, deactivate, kernel_root, refresh_view, viewed_root, TEST_WINDOW,
};
use crate::smp::{self, SHOOTDOWN};

/// Page-fault vector.
const VECTOR_PF: u8 = 14;

/// Table memory for the core: one harness frame per table (x86-64 tables
/// are 4096 bytes).
#[derive(Debug, Default)]
pub struct KernelFrames;

// SAFETY: 1. `alloc_frame` hands out zeroed 4 KiB frames, 4 KiB-aligned
// (so aligned to any `bytes` up to 4096, the only sizes accepted), used by
// nobody else until `free_frame`; 2. they lie in the identity map of the
// first GiB, so a frame's physical address is also its address, readable
// and writable for the kernel's lifetime; 3. the identity map is what the
// MMU walks, so an entry pointing there makes the walker read the same
// bytes. The allocator is a spin lock, so `Sync`.
unsafe impl TableMemory for KernelFrames {
    fn phys_to_virt(&self, pa: PhysAddr) -> core::ptr::NonNull<u8> {
        core::ptr::NonNull::new(core::ptr::with_exposed_provenance_mut(pa.0 as usize))
            .expect("frames come from above 16 MiB, never address 0")
    }

    fn alloc_table(&self, bytes: usize) -> Option<PhysAddr> {
        if !bytes.is_power_of_two() || bytes as u64 > FRAME_SIZE {
            return None;
        }
        alloc_frame().map(PhysAddr)
    }

    unsafe fn free_table(&self, pa: PhysAddr, _bytes: usize) {
        // A table is freed only after its tree is unlinked and flushed; but
        // the CPU may still run on a view of that tree (a failing case drops
        // its address space while active). Leave it before the table goes:
        // the CR3 load also empties every paging-structure cache. Which tree
        // the table belongs to is not known here, so freeing any table
        // switches the CPU back to the kernel's address space; callers
        // activate again if they go on (the suite deactivates before every
        // teardown anyway).
        if viewed_root().is_some() {
            deactivate();
        }
        // SAFETY: 1. `pa` came from `alloc_table`, i.e. `alloc_frame`; 2. the
        // core frees a table once; 3. it unlinked it (no entry of its tree
        // refers to it) and the CPU no longer walks that tree (above). The
        // view's stale copy of a top-level entry is not walked and is
        // rewritten by the next `activate_view`.
        unsafe { free_frame(pa.0) }
    }
}

/// The real machine, for the conformance suite. Any CPU may use it: probes
/// and views are per CPU, and the arch's flushes reach every other CPU that
/// runs a test address space (through [`SHOOTDOWN`]; a no-op while only
/// the boot CPU runs).
///
/// `D` is what the machine has beside its CPUs and memory: nothing for
/// the suite's kernels, the IOMMU and its device for the `iommu` kernel
/// (which implements the DMA cases' machine on `KernelMachine<Iommu>`).
#[derive(Debug)]
pub struct KernelMachine<D = ()> {
    arch: X86_64,
    frames: KernelFrames,
    devices: D,
}

impl KernelMachine {
    /// The machine: tables in the identity map, the harness's frames.
    pub const fn new() -> Self {
        Self::with_devices(())
    }
}

impl<D> KernelMachine<D> {
    /// The machine with `devices` beside its CPUs.
    pub const fn with_devices(devices: D) -> Self {
        Self {
            arch: X86_64::with_shootdown(&SHOOTDOWN),
            frames: KernelFrames,
            devices,
        }
    }

    /// What the machine has beside its CPUs.
    pub fn devices(&self) -> &D {
        &self.devices
    }
}

impl Default for KernelMachine {
    fn default() -> Self {
        Self::new()
    }
}

/// The suite's view of a probe's fault: x86 #PF with P = 0 is "not mapped",
/// a write with P = 1 a protection fault; anything else (a reserved bit, a
/// #GP) is `Other((vector << 32) | error code)`.
pub fn cpu_fault(f: Fault) -> CpuFault {
    match (f.vector, f.code & PF_PRESENT != 0, f.code & PF_WRITE != 0) {
        (VECTOR_PF, false, _) => CpuFault::NotMapped,
        (VECTOR_PF, true, true) => CpuFault::Protection,
        _ => CpuFault::Other((u64::from(f.vector) << 32) | f.code),
    }
}

impl<D> Machine for KernelMachine<D> {
    type Arch = X86_64;
    type Frames = KernelFrames;
    type Kernel = crate::platform::Kernel;

    fn arch(&self) -> &X86_64 {
        &self.arch
    }

    fn frames(&self) -> &KernelFrames {
        &self.frames
    }

    fn alloc_frame(&self) -> Option<PhysAddr> {
        alloc_frame().map(PhysAddr)
    }

    fn alloc_contiguous(&self, count: usize, align: u64) -> Option<PhysAddr> {
        alloc_frames_aligned(count, align.max(FRAME_SIZE)).map(PhysAddr)
    }

    fn free_frame(&self, frame: PhysAddr) {
        // SAFETY: the suite frees only data frames 1. it got from
        // `alloc_frame`/`alloc_contiguous`, 2. once, 3. after the core handed
        // them back (`Reusable`: unmapped, TLB flushed, secondaries told) or
        // after teardown. (A deliberately broken build skips that flush: then a
        // stale TLB entry may still reach the frame, which is what the
        // suite detects; frames are plain RAM, so that is no memory-safety
        // issue for the kernel, which reads them only through probes.)
        unsafe { free_frame(frame.0) }
    }

    fn write_phys(&self, pa: PhysAddr, value: u64) {
        assert!(pa.0.is_multiple_of(8), "write_phys({pa}): misaligned");
        // SAFETY: `pa` lies in a data frame the suite allocated (identity-
        // mapped, below 1 GiB); no Rust reference covers data frames, so a
        // volatile store cannot break aliasing.
        unsafe { (pa.0 as *mut u64).write_volatile(value) }
    }

    unsafe fn activate(&self, root: PhysAddr) {
        // SAFETY: 1. `root` is the root of an address space on `X86_64` and
        // `KernelFrames` (the caller's condition 1): a 4 KiB frame below
        // 1 GiB whose entries are that arch's valid tables; 2. its leaves
        // map data frames, which no Rust reference covers; 3. the caller
        // keeps the tree live until `deactivate` (its condition 2), and
        // `free_table` leaves the view before any table goes.
        unsafe { activate_view(root.0) }
    }

    fn deactivate(&self) {
        if current_root() != kernel_root() {
            deactivate();
        }
    }

    fn cpu_read(&self, va: VirtAddr) -> Result<u64, CpuFault> {
        refresh_view();
        probe_read(va.0).map_err(cpu_fault)
    }

    fn cpu_write(&self, va: VirtAddr, value: u64) -> Result<(), CpuFault> {
        refresh_view();
        probe_write(va.0, value).map_err(cpu_fault)
    }

    fn test_base(&self) -> VirtAddr {
        VirtAddr(TEST_WINDOW)
    }

    fn huge_level(&self) -> Result<Level<X86_64>, &'static str> {
        Ok(X86_64::PD)
    }

    fn log(&self, line: fmt::Arguments<'_>) {
        crate::println!("{line}");
    }
}

impl<D: Sync> Cpus for KernelMachine<D> {
    fn count(&self) -> usize {
        smp::cpus()
    }

    fn run_on_each(&self, work: &(dyn Fn(usize) + Sync)) {
        smp::on_all_cpus(&work, |work, cpu| work(cpu));
        // The other CPUs left their test address spaces in the mailbox loop.
        self.deactivate();
    }

    fn now_us(&self) -> u64 {
        crate::rdtsc() / (crate::tsc_per_ms() / 1000).max(1)
    }
}

/// A [`CpuFault`] in x86 words, for the demo.
pub fn fault_name(f: CpuFault) -> &'static str {
    match f {
        CpuFault::NotMapped => "page fault (not present)",
        CpuFault::Protection => "page fault (protection)",
        CpuFault::Other(_) => "fault (vector << 32 | error code)",
    }
}
