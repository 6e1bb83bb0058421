//! DMA through zPCI, kept coherent by the notifiers: the DMA cases of
//! `tests/conformance/src/dma` on a virtio-rng function behind DMA tables
//! this kernel owns (see `zpci::machine`). Boot it with
//! `-device zpci,uid=1,fid=1,target=r0
//! -device virtio-rng-pci,id=r0,iommu_platform=on,disable-legacy=on`.
//!
//! `mode=demo` on the command line tells the DMA story instead of running
//! the cases. Besides each case's own checks, every case must give back
//! every byte of the pool it took.
#![no_std]
#![no_main]

use mmu_notifier_conformance::dma::cases::{self, Binding};
use mmu_notifier_conformance::dma::{demo, DmaMachine};
use mmu_notifier_kernel_harness::Tally;
use mmu_notifier_kernel_s390x::zpci::machine::{with_dma_kernel, DmaKernel};
use mmu_notifier_kernel_s390x::{self as h, bytes_in_use, clock, println, Kernel, BUILD};

h::entry!(main);

/// A setup failure as the run's one verdict.
fn setup_failed(why: core::fmt::Arguments<'_>) -> ! {
    let mut tally = Tally::<Kernel>::new();
    tally.fail("iommu_setup", why);
    tally.finish()
}

fn main() -> ! {
    let cpus = match h::smp::init() {
        Ok(n) => n,
        Err(e) => setup_failed(format_args!("bringing up the CPUs failed: {e}")),
    };
    with_dma_kernel(|k| {
        let k = match k {
            Ok(k) => k,
            Err(e) => setup_failed(format_args!("{e:?}")),
        };
        let f = k.devices().function();
        let q = f.query();
        println!(
            "iommu: s390x, {cpus} CPU(s), zPCI function {:#x} (handle {:#010x}, {:04x}:{:04x}, DMA {:#x}..{:#x}), {BUILD} build",
            f.fid(),
            f.handle(),
            q.ids.0,
            q.ids.1,
            q.sdma,
            q.edma
        );
        if h::cmdline_arg("mode") == Some("demo") {
            demo_story(k)
        }
        run_cases(k)
    })
}

fn run_cases(k: &DmaKernel<'_>) -> ! {
    let before = bytes_in_use();
    let start = clock::now_us();
    let mut runner = h::Runner::new();
    for &style in k.styles() {
        runner.run(&Binding { machine: k, style }, cases::all());
    }
    let (requests, faults) = k.devices().requests();
    println!(
        "virtio-rng: {requests} requests, {faults} refused with an error event; cases took {} ms; pool in use: {before} bytes before the cases, {} after",
        (clock::now_us() - start) / 1000,
        bytes_in_use()
    );
    runner.finish()
}

fn demo_story(k: &DmaKernel<'_>) -> ! {
    let mut runner = h::Runner::new();
    for &style in k.styles() {
        println!("DMA through zPCI, {} driver:", style.name());
        runner.run(&Binding { machine: k, style }, [demo::case()]);
    }
    runner.finish()
}
