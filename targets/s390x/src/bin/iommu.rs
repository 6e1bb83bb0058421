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

use mmu_notifier_conformance::dma::cases::{self, Verdict};
use mmu_notifier_conformance::dma::{demo, DmaMachine};
use mmu_notifier_kernel_s390x::zpci::machine::{with_dma_kernel, DmaKernel};
use mmu_notifier_kernel_s390x::{self as h, bytes_in_use, clock, println};

h::entry!(main);

/// Which build this is: `normal`, or the deliberately broken variant the
/// runner asked for, which the run must catch.
const BUILD: &str = if cfg!(mmu_notifier_broken = "no-iotlb") {
    "broken: no-iotlb (the driver skips RPCIT after clearing entries)"
} else if cfg!(mmu_notifier_broken = "no-notify") {
    "broken: no-notify (the core skips the notifier step)"
} else if cfg!(mmu_notifier_broken = "no-flush") {
    "broken: no-flush (the arch stores the invalid bit instead of IPTE)"
} else {
    "normal"
};

fn main() -> ! {
    let cpus = match h::smp::init() {
        Ok(n) => n,
        Err(e) => {
            println!("iommu: bringing up the CPUs failed: {e}");
            println!("0 passed, 1 failed");
            h::exit_failure()
        }
    };
    with_dma_kernel(|k| {
        let k = match k {
            Ok(k) => k,
            Err(e) => {
                println!("iommu: setup failed: {e:?}");
                println!("0 passed, 1 failed");
                h::exit_failure()
            }
        };
        let f = k.function();
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

fn finish(passed: u32, failed: u32, skipped: u32) -> ! {
    if skipped > 0 {
        println!("({skipped} skipped: not applicable on this machine)");
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 && passed > 0 {
        h::exit_success()
    } else {
        h::exit_failure()
    }
}

fn run_cases(k: &DmaKernel<'_>) -> ! {
    let filter = h::cmdline_arg("filter").unwrap_or("");
    let (mut passed, mut failed, mut skipped) = (0u32, 0u32, 0u32);
    let before = bytes_in_use();
    let mut baseline = before;
    let start = clock::now_us();
    cases::run(k, filter, &mut |name, style, verdict| {
        let now = bytes_in_use();
        let leaked = now as i64 - baseline as i64;
        baseline = now;
        match verdict {
            Verdict::Skipped(needs) => {
                skipped += 1;
                println!("skip {name}: [{}] needs {needs}", style.name());
            }
            Verdict::Ran(Ok(())) if leaked != 0 => {
                failed += 1;
                println!("FAIL {name}: [{}] passed, but {leaked} bytes of the pool not given back", style.name());
            }
            Verdict::Ran(Ok(())) => {
                passed += 1;
                println!("ok   {name}");
            }
            Verdict::Ran(Err(f)) => {
                failed += 1;
                println!("FAIL {name}: [{}] {f}", style.name());
            }
        }
    });
    let (requests, faults) = k.requests();
    println!(
        "virtio-rng: {requests} requests, {faults} refused with an error event; cases took {} ms; pool in use: {before} bytes before the cases, {} after",
        (clock::now_us() - start) / 1000,
        bytes_in_use()
    );
    finish(passed, failed, skipped)
}

fn demo_story(k: &DmaKernel<'_>) -> ! {
    let (mut passed, mut failed) = (0, 0);
    for &style in k.styles() {
        println!("DMA through zPCI, {} driver:", style.name());
        match demo::story(k, style) {
            Ok(()) => {
                passed += 1;
                println!("ok   dma_story");
            }
            Err(e) => {
                failed += 1;
                println!("FAIL dma_story: {e}");
            }
        }
    }
    finish(passed, failed, 0)
}
