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

use mmu_notifier_conformance::dma::cases::{self, Verdict};
use mmu_notifier_conformance::dma::{demo, DmaMachine};
use mmu_notifier_kernel_x86_64::iommu::machine::{with_dma_kernel, DmaKernel};
use mmu_notifier_kernel_x86_64::{self as h, Tally};

h::entry!(main);

/// Which build this is: `normal`, or the deliberately broken variant the
/// runner asked for, which the run must catch.
const BUILD: &str = if cfg!(mmu_notifier_broken = "no-iotlb") {
    "broken: no-iotlb (the drivers skip their IOTLB invalidations)"
} else if cfg!(mmu_notifier_broken = "no-notify") {
    "broken: no-notify (the core skips the notifier step)"
} else if cfg!(mmu_notifier_broken = "no-flush") {
    "broken: no-flush (the arch skips invlpg)"
} else {
    "normal"
};

fn main(_cmdline: &'static str) -> ! {
    let cpus = h::smp::start();
    with_dma_kernel(|k| {
        let k = match k {
            Ok(k) => k,
            Err(e) => {
                h::println!("iommu: setup failed: {e:?}");
                h::println!("0 passed, 1 failed");
                h::exit_failure()
            }
        };
        let v = k.vtd().version();
        h::println!(
            "iommu: x86_64, {} CPU(s), VT-d {}.{} in {}, edu at {:#06x}, {BUILD} build",
            cpus,
            (v >> 4) & 0xf,
            v & 0xf,
            k.mode_name(),
            k.source_id()
        );
        if h::cmdline_option("mode") == Some("demo") {
            demo_story(k)
        }
        run_cases(k)
    })
}

fn run_cases(k: &DmaKernel<'_>) -> ! {
    let mut tally = Tally::new();
    let before = h::frames_in_use();
    let mut baseline = before;
    let start = h::rdtsc();
    cases::run(k, h::filter().unwrap_or(""), &mut |name, style, verdict| {
        let now = h::frames_in_use();
        let leaked = now.wrapping_sub(baseline) as isize;
        baseline = now;
        match verdict {
            Verdict::Skipped(needs) => tally.skip(name, format_args!("[{}] needs {needs}", style.name())),
            Verdict::Ran(Ok(())) if leaked != 0 => {
                tally.fail(name, format_args!("[{}] passed, but {leaked} frame(s) not freed", style.name()))
            }
            Verdict::Ran(Ok(())) => tally.pass(name),
            Verdict::Ran(Err(f)) => tally.fail(name, format_args!("[{}] {f}", style.name())),
        }
    });
    let ms = (h::rdtsc() - start) / h::tsc_per_ms().max(1);
    let vtd = k.vtd();
    let (dmas, faults) = k.transfers();
    h::println!(
        "edu: {dmas} transfers, {faults} refused with a fault record; queued descriptors: {} IOTLB (type 2), {} PASID-IOTLB (type 6), {} PASID-cache (type 7), {} waits; cases took {ms} ms",
        vtd.submitted(2),
        vtd.submitted(6),
        vtd.submitted(7),
        vtd.submitted(5)
    );
    h::println!("frames in use: {before} before the cases, {} after", h::frames_in_use());
    tally.finish()
}

fn demo_story(k: &DmaKernel<'_>) -> ! {
    let mut tally = Tally::new();
    for &style in k.styles() {
        h::println!("DMA through VT-d, {} driver:", style.name());
        tally.record("dma_story", demo::story(k, style));
    }
    tally.finish()
}
