//! The conformance suite's [`Machine`] and [`Cpus`] on this kernel: QEMU's
//! s390x DAT (its TLB included), [`mmu_notifier_s390::S390x`] as the arch,
//! the kernel's frame pool, program-check probes and address-space
//! switching, and its CPUs ([`smp`]).
//!
//! Used by the `conformance` kernel (which runs the shared suite on it), by
//! the `demo` kernel, and on every CPU by the `smp` kernel: each CPU
//! activates and leaves the view on its own; all of them share one view
//! table, so the CPUs run on one tree at a time.
//!
//! # How a case's address space reaches CR1
//! An [`AddressSpace`](mmu_notifier_core::AddressSpace) owns its whole
//! region-first table and its teardown walks all 2048 entries, whereas
//! [`dat::activate`] writes the kernel's identity map into entry 0 of the
//! table it loads. Loaded directly, the tree would then own the kernel's
//! tables (a teardown would "unmap" and free the kernel). So
//! [`activate`](Machine::activate) runs the CPU on the harness's *view* of
//! the tree ([`activate_view`]): a harness-owned region-first table with
//! the kernel in entry 0 and the tree's entries 1..=2047; every lower table
//! is the tree's own, so the CPU walks, and caches translations of, exactly
//! the entries the core changes, and IPTE (which names a page table and a
//! virtual address, not a root) purges them. Each CPU access first picks
//! up new region-first entries ([`refresh_view`]: an invalid entry cannot
//! be in any TLB, so copying a newly valid one needs no purge), and the
//! table allocator switches the CPU back to the kernel's space before any
//! table is freed, so the CPU never walks a freed table, even when a
//! failing case drops an active address space.
//!
//! # Table memory
//! Region and segment tables are 16 KiB, page tables 2 KiB; the core asks
//! for blocks aligned to their size. [`KernelFrames`] takes them from the
//! pool's reusable table blocks ([`frame::alloc_table_block`]), two page
//! tables per 4 KiB frame, so a suite that gives back every table leaves
//! [`frame::bytes_in_use`] unchanged.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use mmu_notifier_conformance::{CpuFault, Cpus, Machine};
use mmu_notifier_core::{PhysAddr, TableMemory, VirtAddr};
use mmu_notifier_s390::S390x;

use crate::dat::{self, Level, TABLE_ENTRIES, TEST_WINDOW};
use crate::frame::{self, FRAME_SIZE};
use crate::probe::{code, probe_read, probe_write, Fault};
use crate::smp::{self, MAX_CPUS};

/// The harness's region-first table the CPUs run on while a tree is
/// active (allocated on first use, never freed).
static VIEW: AtomicU64 = AtomicU64::new(0);
/// Per CPU (by [`smp::cpu_index`]): root of the tree the view mirrors for
/// that CPU; 0 while it runs on the kernel's own space.
static VIEWED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

fn viewed() -> &'static AtomicU64 {
    &VIEWED[smp::cpu_index()]
}

fn view_table() -> u64 {
    let view = VIEW.load(Ordering::Acquire);
    if view != 0 {
        return view;
    }
    let view = dat::alloc_table(Level::RegionFirst)
        .expect("frame pool exhausted: no region-first table for the view");
    match VIEW.compare_exchange(0, view, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => view,
        // Another CPU was first; this table stays unused (never freed: the
        // pool's aligned blocks are not reusable anyway).
        Err(first) => first,
    }
}

/// Forgets which tree this CPU viewed: called when a secondary CPU starts
/// a job (its start stub loaded the kernel's space).
pub(crate) fn forget_view() {
    viewed().store(0, Ordering::Relaxed);
}

/// Copies region-first entries 1..=2047 of `root` into the view, those
/// that differ only.
fn copy_entries(root: u64, view: u64) {
    for i in 1..TABLE_ENTRIES {
        // SAFETY: `root` is a live region-first table (16 KiB, identity
        // mapped; `activate_view`'s contract) and `view` the harness's own;
        // `i` < 2048. The words are DAT entries no Rust reference covers.
        unsafe {
            let entry = (root as *const u64).add(i).read_volatile();
            let slot = (view as *mut u64).add(i);
            if slot.read_volatile() != entry {
                slot.write_volatile(entry);
            }
        }
    }
}

/// Makes this CPU translate through the tree at `root` (via the view).
///
/// # Safety
///
/// 1. `root` is the region-first table of a live tree whose tables come
///    from [`KernelFrames`];
/// 2. its leaves map memory no Rust reference covers;
/// 3. it stays live until [`deactivate`] (which [`KernelFrames::free_table`]
///    calls before any table goes).
pub unsafe fn activate_view(root: u64) {
    let view = view_table();
    copy_entries(root, view);
    viewed().store(root, Ordering::Relaxed);
    // SAFETY: `dat::activate`'s 1. the view is a full region-first table
    // (from `alloc_table`); entry 0 becomes the kernel's, entries 1.. are
    // the live tree's valid DAT entries (conditions 1 and 3 here); 2. no
    // Rust reference points into the test window (condition 2).
    unsafe { dat::activate(view) };
}

/// Picks up region-first entries the active tree gained since
/// [`activate_view`] (new top-level tables); nothing if none is active.
pub fn refresh_view() {
    let root = viewed().load(Ordering::Relaxed);
    if root != 0 {
        copy_entries(root, view_table());
    }
}

/// The root of the tree this CPU runs on, if any.
pub fn viewed_root() -> Option<u64> {
    match viewed().load(Ordering::Relaxed) {
        0 => None,
        root => Some(root),
    }
}

/// Switches this CPU back to the kernel's own address space (identity map
/// only).
pub fn deactivate() {
    viewed().store(0, Ordering::Relaxed);
    // SAFETY: the kernel root is complete and always valid; the probes are
    // the only accesses to the test window, and none is in progress.
    unsafe { dat::activate(dat::kernel_root()) };
}

/// Table memory for the core: 16 KiB region/segment tables and 2 KiB page
/// tables from the pool's reusable table blocks.
#[derive(Debug, Default)]
pub struct KernelFrames;

// SAFETY: 1. `alloc_table_block` hands out zeroed blocks of exactly `bytes`
// (16 KiB or 2 KiB, the only sizes S390x asks for), aligned to `bytes`,
// used by nobody else until `free_table_block`; 2. they lie below 128 MiB,
// where the kernel runs with physical = virtual, readable and writable for
// its lifetime; 3. that is where DAT reads them (real addresses). The pool
// is a spin lock, so `Sync`.
unsafe impl TableMemory for KernelFrames {
    fn phys_to_virt(&self, pa: PhysAddr) -> core::ptr::NonNull<u8> {
        core::ptr::NonNull::new(core::ptr::with_exposed_provenance_mut(pa.0 as usize))
            .expect("the pool starts at 16 MiB, never address 0")
    }

    fn alloc_table(&self, bytes: usize) -> Option<PhysAddr> {
        frame::alloc_table_block(bytes as u64).map(PhysAddr)
    }

    unsafe fn free_table(&self, pa: PhysAddr, bytes: usize) {
        // The core frees a table only after unlinking it and purging every
        // TLB (CSP); but this CPU may still run on a view of its tree (a
        // failing case drops its address space while active). Leave it
        // first: the view's stale region-first entries are not walked and
        // are rewritten by the next `activate_view`. (Other CPUs must have
        // left before: the teardown contract; the `smp` kernel's cases
        // have every other CPU stopped or off the view by then.)
        if viewed_root().is_some() {
            deactivate();
        }
        // SAFETY: 1. `pa` came from `alloc_table(bytes)`, i.e.
        // `alloc_table_block(bytes)`, and the core frees it once; 2. the core
        // unlinked it and purged the TLBs (TableMemory contract), and the
        // CPU no longer walks its tree (above).
        unsafe { frame::free_table_block(pa.0, bytes as u64) }
    }
}

/// Frames the suite gave back twice, counted instead of corrupting the
/// pool's free list (see [`take_double_frees`]).
static DOUBLE_FREES: AtomicU64 = AtomicU64::new(0);
/// The last frame given back twice.
static DOUBLE_FREED: AtomicU64 = AtomicU64::new(0);

/// The real machine, for the conformance suite: the running CPU, QEMU's TLB.
///
/// `D` is what the machine has beside its CPUs and memory: nothing for
/// the suite's kernels, the zPCI function and its device for the `iommu`
/// kernel (which implements the DMA cases' machine on
/// `KernelMachine<Zpci>`).
#[derive(Debug)]
pub struct KernelMachine<D = ()> {
    arch: S390x,
    frames: KernelFrames,
    devices: D,
}

impl KernelMachine {
    /// The machine: tables in the identity map, the harness's frames.
    /// Allocates the view's region-first table now (once per boot), so
    /// that it does not count against the first case's memory.
    pub fn new() -> Self {
        Self::with_devices(())
    }
}

impl<D> KernelMachine<D> {
    /// The machine with `devices` beside its CPUs (allocates the view's
    /// table, as [`new`](KernelMachine::new)).
    pub fn with_devices(devices: D) -> Self {
        let _ = view_table();
        Self {
            arch: S390x::new(),
            frames: KernelFrames,
            devices,
        }
    }

    /// What the machine has beside its CPUs.
    pub fn devices(&self) -> &D {
        &self.devices
    }
}

/// How many frames were given back while not allocated since the last
/// call, and the last of them. Such a second free is ignored (it would make
/// the free list cyclic, so two owners would share frames later); the
/// harness fails the case that did it.
pub fn take_double_frees() -> (u64, u64) {
    (
        DOUBLE_FREES.swap(0, Ordering::Relaxed),
        DOUBLE_FREED.load(Ordering::Relaxed),
    )
}

impl Default for KernelMachine {
    fn default() -> Self {
        Self::new()
    }
}

/// The suite's view of a probe's fault: translation exceptions (segment,
/// page, ASCE type, region first/second/third) are "not mapped", a
/// protection exception is a protection fault; anything else (addressing,
/// translation specification) is `Other(program-interruption code)`.
pub fn cpu_fault(f: Fault) -> CpuFault {
    match f.code {
        code::SEGMENT_TRANSLATION
        | code::PAGE_TRANSLATION
        | code::ASCE_TYPE
        | code::REGION_FIRST_TRANSLATION
        | code::REGION_SECOND_TRANSLATION
        | code::REGION_THIRD_TRANSLATION => CpuFault::NotMapped,
        code::PROTECTION => CpuFault::Protection,
        other => CpuFault::Other(u64::from(other)),
    }
}

/// A [`CpuFault`] in s390 words, for the demo.
pub fn fault_name(f: CpuFault) -> &'static str {
    match f {
        CpuFault::NotMapped => "translation exception (page, segment or region)",
        CpuFault::Protection => "protection exception 0x04",
        CpuFault::Other(_) => "program exception (interruption code)",
    }
}

impl<D> Machine for KernelMachine<D> {
    type Arch = S390x;
    type Frames = KernelFrames;
    type Kernel = crate::platform::Kernel;

    fn arch(&self) -> &S390x {
        &self.arch
    }

    fn frames(&self) -> &KernelFrames {
        &self.frames
    }

    fn alloc_frame(&self) -> Option<PhysAddr> {
        frame::alloc_frame().map(PhysAddr)
    }

    fn alloc_contiguous(&self, count: usize, align: u64) -> Option<PhysAddr> {
        frame::alloc_aligned(count as u64 * FRAME_SIZE, align.max(FRAME_SIZE)).map(PhysAddr)
    }

    fn free_frame(&self, frame: PhysAddr) {
        if !frame::is_allocated(frame.0) {
            DOUBLE_FREES.fetch_add(1, Ordering::Relaxed);
            DOUBLE_FREED.store(frame.0, Ordering::Relaxed);
            return;
        }
        // SAFETY: 1. the suite frees only data frames it got from
        // `alloc_frame`/`alloc_contiguous` (whole frames of an aligned
        // block), once (a second free is caught above); 2. after the core
        // handed them back (`Reusable`: unmapped, IPTE done, secondaries
        // told) or after teardown. (A deliberately broken build skips the
        // IPTE: a stale TLB entry may then still reach the frame, which is
        // what the suite detects; frames are plain RAM the kernel only
        // reaches through probes and `write_phys`, so no Rust object is at
        // stake.)
        unsafe { frame::free_frame(frame.0) }
    }

    fn write_phys(&self, pa: PhysAddr, value: u64) {
        assert!(pa.0 % 8 == 0, "write_phys({pa}): misaligned");
        assert!(
            frame::is_allocated(pa.0 & !(FRAME_SIZE - 1)),
            "write_phys({pa}): not an allocated frame"
        );
        // SAFETY: `pa` lies in an allocated frame of the pool (checked),
        // identity mapped; no Rust reference covers data frames, so a
        // volatile store cannot break aliasing.
        unsafe { (pa.0 as *mut u64).write_volatile(value) }
    }

    unsafe fn activate(&self, root: PhysAddr) {
        // SAFETY: 1. `root` is the root of an address space on `S390x` and
        // `KernelFrames` (the caller's condition 1); 2. its leaves map data
        // frames, which no Rust reference covers; 3. the caller keeps it live
        // until `deactivate` (its condition 2).
        unsafe { activate_view(root.0) }
    }

    fn deactivate(&self) {
        if viewed_root().is_some() {
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

    /// None: QEMU's TCG CPU has no EDAT-1, so a segment entry with the
    /// large bit is walked as a page-table pointer. s390 large segments are
    /// covered by the host tests of `arch/s390`.
    fn huge_level(&self) -> Result<mmu_notifier_core::Level<S390x>, &'static str> {
        Err("no EDAT under QEMU TCG; s390 large pages are host-tested in arch/s390")
    }

    fn log(&self, line: fmt::Arguments<'_>) {
        crate::println!("{line}");
    }
}

/// How long a CPU may take for its part of [`Cpus::run_on_each`] (the
/// cases bound their own waits well below this).
const JOB_TIMEOUT_US: u64 = 60_000_000;

impl<D: Sync> Cpus for KernelMachine<D> {
    fn count(&self) -> usize {
        smp::online()
    }

    fn run_on_each(&self, work: &(dyn Fn(usize) + Sync)) {
        smp::on_all_cpus(
            &work,
            |work, cpu| {
                work(cpu);
                deactivate();
            },
            JOB_TIMEOUT_US,
        );
    }

    fn now_us(&self) -> u64 {
        crate::clock::now_us()
    }
}
