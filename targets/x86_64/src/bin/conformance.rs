//! The shared conformance suite (`tests/conformance`, the same cases the
//! host runs on its emulated MMU and every arch runs in QEMU) on the real
//! x86-64 MMU: `mmu_notifier_x86::X86_64` over the harness's frames, CPU
//! accesses through the fault probes, the TLB as QEMU (or KVM) keeps it.
//!
//! Besides each case's own checks, every case must give back every frame it
//! took (tables and data): a case that passes but leaks fails here.
#![no_std]
#![no_main]

use mmu_notifier_conformance::Outcome;
use mmu_notifier_kernel_x86_64::{self as h, machine::KernelMachine, Tally};

h::entry!(main);

/// Which build this is: `normal`, or the deliberately broken variant the
/// runner asked for (`--broken`), which the run must catch.
const BUILD: &str = if cfg!(mmu_notifier_broken = "no-flush") {
    "broken: no-flush (the arch skips invlpg)"
} else if cfg!(mmu_notifier_broken = "no-notify") {
    "broken: no-notify (the core skips the notifier step)"
} else {
    "normal"
};

fn main(_cmdline: &'static str) -> ! {
    h::println!("conformance: x86_64, accelerator {:?}, {BUILD} build", h::accel());
    let machine = KernelMachine::new();
    let mut tally = Tally::new();
    let before = h::frames_in_use();
    let mut baseline = before;
    mmu_notifier_conformance::run(&machine, h::filter().unwrap_or(""), &mut |name, outcome: Option<&Outcome>| {
        // `run` has switched back to the kernel's address space already.
        let now = h::frames_in_use();
        let leaked = now.wrapping_sub(baseline) as isize;
        baseline = now;
        match outcome {
            None => tally.skip(name, "does not apply to this machine"),
            Some(Ok(())) if leaked != 0 => tally.fail(name, format_args!("passed, but {leaked} frame(s) not freed")),
            Some(Ok(())) => tally.pass(name),
            Some(Err(f)) if leaked != 0 => tally.fail(name, format_args!("{f} ({leaked} frame(s) not freed)")),
            Some(Err(f)) => tally.fail(name, f),
        }
    });
    h::println!("frames in use: {before} before the suite, {} after", h::frames_in_use());
    tally.finish()
}
