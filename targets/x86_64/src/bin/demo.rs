//! The demo (`mmu_notifier_conformance::demo`, the story every machine
//! tells) on the real x86-64 MMU: one address space, one secondary MMU,
//! the call sites one after the other, and for each what the CPU did, what
//! the notifier received and whether the secondary MMU stayed coherent;
//! then one verdict and the runner's `N passed, N failed` line.
//!
//! Booted by `cargo xtask demo`, or `cargo xtask qemu --arch x86_64
//! --demo`. With the `defmt` feature (`--demo --defmt`) it also logs each
//! step's addresses, ranges, leaves and notifier events through defmt on
//! COM2, formatted by the library types' own `defmt::Format`.
#![no_std]
#![no_main]

use mmu_notifier_conformance::demo::{self, Words};
use mmu_notifier_conformance::CpuFault;
use mmu_notifier_kernel_x86_64::{self as h, machine::KernelMachine, println, Case, BUILD};

h::entry!(main);

/// The x86-64 words for the demo's story.
const WORDS: Words = Words {
    arch: "x86_64",
    flush: if cfg!(mmu_notifier_broken = "no-flush") {
        "no invlpg: the TLB keeps the old entry (broken build)"
    } else {
        "invlpg on this CPU (other CPUs running the space: an IPI shootdown)"
    },
    young: "the CPU's walk set the accessed bit in the PTE",
    fault: |f| match f {
        CpuFault::NotMapped => "page fault (not present)",
        CpuFault::Protection => "page fault (protection)",
        CpuFault::Other(_) => "fault",
    },
};

fn main() -> ! {
    println!("demo x86_64: MMU notifiers on the x86-64 MMU ({:?}, {BUILD} build)", h::accel());
    let machine = KernelMachine::new();
    let mut runner = h::Runner::new();
    runner.run(&machine, [Case::new("demo", |m: &KernelMachine| demo::run(m, &WORDS))]);
    runner.finish()
}
