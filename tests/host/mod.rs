//! The host's machine for the suites that run on the emulated MMU (the
//! conformance suite, the DMA cases): the emulator's CPUs as threads, its
//! memory and TLBs. A module of each test binary that uses it.
#![allow(
    dead_code,
    reason = "each test binary uses its part: the suite no devices, the DMA cases no `Host::new`"
)]

use std::cell::Cell;
use std::fmt;
use std::time::Instant;

use mmu_notifier::kernel::StdThreads;
use mmu_notifier::Level;
use mmu_notifier::{PhysAddr, VirtAddr};
use mmu_notifier_conformance::{CpuFault, Cpus, Machine};
use mmu_notifier_emu::{Emu, Fault};

thread_local! {
    /// The emulated CPU this thread is: 0 for a test's own thread.
    static CPU: Cell<usize> = const { Cell::new(0) };
}

fn this_cpu() -> usize {
    CPU.with(Cell::get)
}

/// The emulator with `cpus` CPUs; the test's thread is CPU 0, and
/// [`Cpus::run_on_each`] runs the others as threads. The notifier core
/// runs on host threads ([`StdThreads`]): each thread has its own reader
/// slot, so the core can tell which one is inside a callback.
///
/// `D` is what the machine has beside its CPUs and memory: nothing for
/// the conformance suite, a software IOMMU for the DMA cases.
pub struct Host<D = ()> {
    /// The emulated CPUs and memory.
    pub emu: Emu,
    cpus: usize,
    start: Instant,
    /// What the machine has beside its CPUs.
    pub devices: D,
}

impl Host {
    /// The machine with `cpus` CPUs and nothing beside them.
    pub fn new(cpus: usize) -> Self {
        Self::with_devices(cpus, ())
    }
}

impl<D> Host<D> {
    /// The machine with `cpus` CPUs and `devices` beside them.
    pub fn with_devices(cpus: usize, devices: D) -> Self {
        Self {
            emu: Emu::new(cpus),
            cpus,
            start: Instant::now(),
            devices,
        }
    }
}

impl<D> Machine for Host<D> {
    type Arch = Emu;
    type Frames = Emu;
    type Kernel = StdThreads;

    fn arch(&self) -> &Emu {
        &self.emu
    }
    fn frames(&self) -> &Emu {
        &self.emu
    }
    fn alloc_frame(&self) -> Option<PhysAddr> {
        Some(self.emu.alloc_frame())
    }
    fn alloc_contiguous(&self, count: usize, align: u64) -> Option<PhysAddr> {
        self.emu.alloc_contiguous(count, align)
    }
    fn free_frame(&self, frame: PhysAddr) {
        self.emu.free_frame(frame);
    }
    fn write_phys(&self, pa: PhysAddr, value: u64) {
        self.emu.write_phys(pa, value);
    }
    unsafe fn activate(&self, root: PhysAddr) {
        self.emu.activate(this_cpu(), root);
    }
    fn deactivate(&self) {
        self.emu.activate(this_cpu(), PhysAddr(0));
    }
    fn cpu_read(&self, va: VirtAddr) -> Result<u64, CpuFault> {
        self.emu.read(this_cpu(), va).map_err(fault)
    }
    fn cpu_write(&self, va: VirtAddr, value: u64) -> Result<(), CpuFault> {
        self.emu.write(this_cpu(), va, value).map_err(fault)
    }
    fn test_base(&self) -> VirtAddr {
        VirtAddr(0x0000_0080_0000_0000)
    }
    fn huge_level(&self) -> Result<Level<Emu>, &'static str> {
        Ok(Level::new(2))
    }
    fn log(&self, line: fmt::Arguments<'_>) {
        println!("{line}");
    }
}

impl<D: Sync> Cpus for Host<D> {
    fn count(&self) -> usize {
        self.cpus
    }
    fn run_on_each(&self, work: &(dyn Fn(usize) + Sync)) {
        std::thread::scope(|s| {
            for cpu in 1..self.cpus {
                s.spawn(move || {
                    CPU.with(|c| c.set(cpu));
                    work(cpu);
                    self.deactivate();
                });
            }
            work(0);
            self.deactivate();
        });
    }
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
    fn relax(&self) {
        // More CPUs than host cores: let the one we wait for run.
        std::thread::yield_now();
    }
}

fn fault(f: Fault) -> CpuFault {
    match f {
        Fault::NotMapped => CpuFault::NotMapped,
        Fault::Protection => CpuFault::Protection,
        Fault::FreedFrame(pa) => CpuFault::Other(pa.0),
    }
}
