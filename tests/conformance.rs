//! The conformance suite on the host's emulated MMU: one test per case of
//! `mmu_notifier_conformance::suite!`, named after the behaviour it checks
//! (`cargo test <case_name>`), grouped by what the case needs (`one_cpu::`,
//! `several_cpus::`), and the demo. The same cases run in the QEMU kernels
//! of every arch (`cargo xtask qemu`).
//!
//! Several CPUs are threads: each runs as one emulated CPU, with its own
//! TLB, and is the CPU id the notifier core sees.

use std::cell::Cell;
use std::fmt;
use std::time::Instant;

use mmu_notifier::kernel::StdThreads;
use mmu_notifier::Level;
use mmu_notifier::{PhysAddr, VirtAddr};
use mmu_notifier_conformance::demo::{self, Words};
use mmu_notifier_conformance::{Case, CpuFault, Cpus, Machine};
use mmu_notifier_emu::{Emu, Fault};

/// How many emulated CPUs the multi-CPU cases run on: a thread each. More
/// threads than the host has cores slow the cases down (a grace period
/// waits for readers the host has descheduled) without testing more; the
/// kernels run them at `-smp 2` and `4`.
const CPUS: usize = 3;

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
struct Host {
    emu: Emu,
    cpus: usize,
    start: Instant,
}

impl Host {
    fn new(cpus: usize) -> Self {
        Self {
            emu: Emu::new(cpus),
            cpus,
            start: Instant::now(),
        }
    }
}

impl Machine for Host {
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

impl Cpus for Host {
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

/// Runs `case` on `host`: it must apply, pass, and give back every frame.
fn run(host: &Host, case: Case<Host>) {
    let name = case.name;
    if let Some(why) = (case.skip)(host) {
        panic!("{name} does not run on the host: {why}");
    }
    let outcome = (case.run)(host);
    host.deactivate();
    if let Err(failure) = outcome {
        panic!("{name}: {failure}");
    }
    assert_eq!(
        host.emu.allocated_frames(),
        0,
        "{name} leaked frames (tables or data)"
    );
}

fn run_one_cpu(name: &str) {
    let host = Host::new(1);
    let case = mmu_notifier_conformance::one_cpu_cases::<Host>()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no conformance case named {name}"));
    run(&host, case);
}

fn run_several_cpus(name: &str) {
    let host = Host::new(CPUS);
    let case = mmu_notifier_conformance::several_cpu_cases::<Host>()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no conformance case named {name}"));
    run(&host, case);
}

macro_rules! host_tests {
    (
        one_cpu { $($om:ident :: $on:ident $(if $oc:ident)?),* $(,)? }
        several_cpus { $($sm:ident :: $sn:ident $(if $sc:ident)?),* $(,)? }
    ) => {
        mod one_cpu {
            $(
                #[test]
                fn $on() {
                    super::run_one_cpu(stringify!($on));
                }
            )*
        }

        mod several_cpus {
            $(
                #[test]
                fn $sn() {
                    super::run_several_cpus(stringify!($sn));
                }
            )*
        }
    };
}

mmu_notifier_conformance::suite!(host_tests);

#[test]
fn demo_stays_coherent_at_every_step() {
    let host = Host::new(1);
    let words = Words {
        flush: if cfg!(mmu_notifier_broken = "no-flush") {
            "no flush: every emulated TLB keeps the old entry (broken build)"
        } else {
            "the entry cleared, then dropped from every emulated CPU's TLB"
        },
        young: "the emulated walker sets the accessed bit, as x86 does",
        fault: |f| match f {
            CpuFault::NotMapped => "page fault (not present)",
            CpuFault::Protection => "page fault (protection)",
            CpuFault::Other(_) => "access to a freed frame",
        },
    };
    let outcome = demo::run(&host, &words);
    assert!(
        outcome.is_ok(),
        "the demo found an incoherence: {outcome:?}"
    );
    assert_eq!(
        host.emu.allocated_frames(),
        0,
        "the demo leaked frames (tables or data)"
    );
}
