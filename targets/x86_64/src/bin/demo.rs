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

use mmu_notifier_conformance::demo::Words;
use mmu_notifier_kernel_x86_64::machine::{fault_name, KernelMachine};
use mmu_notifier_kernel_x86_64::{self as h, println, BUILD};

h::entry!(main);

fn main() -> ! {
    println!(
        "demo x86_64: MMU notifiers on the x86-64 MMU ({:?}, {BUILD} build)",
        h::accel()
    );
    let flush = match cfg!(mmu_notifier_broken = "no-flush") {
        false => "invlpg on this CPU (other CPUs running the space: an IPI shootdown)",
        true => "no invlpg: the TLB keeps the old entry (broken build)",
    };
    let young = "the CPU's walk set the accessed bit in the PTE";
    h::run_demo(
        &KernelMachine::new(),
        &Words {
            flush,
            young,
            fault: fault_name,
        },
    )
}
