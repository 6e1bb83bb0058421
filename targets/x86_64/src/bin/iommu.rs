//! DMA through VT-d, kept coherent by the notifiers: the DMA cases of
//! `tests/conformance/src/dma` on QEMU's VT-d unit and `edu` device (see
//! `iommu::machine` for the setup). Boot it under `-M q35` with
//! `-device intel-iommu,aw-bits=48` (legacy mode: the shadow driver) or
//! `-device intel-iommu,x-scalable-mode=on,x-flts=on,aw-bits=48` (the
//! shared-tables driver), and `-device edu,dma_mask=0xffffffffffff`.
//!
//! `mode=demo` on the command line tells the DMA story instead of running
//! the cases. Besides each case's own checks, every case must give back
//! every frame it took.
#![no_std]
#![no_main]

use mmu_notifier_conformance::dma::cases::{self, Binding};
use mmu_notifier_conformance::dma::{demo, DmaMachine};
use mmu_notifier_kernel_harness::Tally;
use mmu_notifier_kernel_x86_64::iommu::machine::{with_dma_kernel, DmaKernel};
use mmu_notifier_kernel_x86_64::{self as h, println, Kernel, BUILD};

h::entry!(main);

fn main() -> ! {
    let cpus = h::smp::start();
    with_dma_kernel(|k| {
        let k = match k {
            Ok(k) => k,
            Err(e) => {
                let mut tally = Tally::<Kernel>::new();
                tally.fail("iommu_setup", format_args!("{e:?}"));
                tally.finish()
            }
        };
        let io = k.devices();
        let v = io.vtd().version();
        println!(
            "iommu: x86_64, {} CPU(s), VT-d {}.{} in {}, edu at {:#06x}, {BUILD} build",
            cpus,
            (v >> 4) & 0xf,
            v & 0xf,
            io.mode_name(),
            io.source_id()
        );
        if h::cmdline_option("mode") == Some("demo") {
            demo_story(k)
        }
        run_cases(k)
    })
}

fn run_cases(k: &DmaKernel<'_>) -> ! {
    let before = h::frames_in_use();
    let start = h::rdtsc();
    let mut runner = h::Runner::new();
    for &style in k.styles() {
        runner.run(&Binding { machine: k, style }, cases::all());
    }
    let ms = (h::rdtsc() - start) / h::tsc_per_ms().max(1);
    let vtd = k.devices().vtd();
    let (dmas, faults) = k.devices().transfers();
    println!(
        "edu: {dmas} transfers, {faults} refused with a fault record; queued descriptors: {} IOTLB (type 2), {} PASID-IOTLB (type 6), {} PASID-cache (type 7), {} waits; cases took {ms} ms",
        vtd.submitted(2),
        vtd.submitted(6),
        vtd.submitted(7),
        vtd.submitted(5)
    );
    println!(
        "frames in use: {before} before the cases, {} after",
        h::frames_in_use()
    );
    runner.finish()
}

fn demo_story(k: &DmaKernel<'_>) -> ! {
    let mut runner = h::Runner::new();
    for &style in k.styles() {
        println!("DMA through VT-d, {} driver:", style.name());
        runner.run(&Binding { machine: k, style }, [demo::case()]);
    }
    runner.finish()
}
