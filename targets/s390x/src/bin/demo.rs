//! The demo (`mmu_notifier_conformance::demo`, the story every machine
//! tells) on QEMU's s390x DAT: one address space, one secondary MMU, the
//! call sites one after the other, and for each what the CPU did (the
//! program interruption it took, if any), what the notifier received and
//! whether the secondary MMU stayed coherent; then one verdict and the
//! runner's `N passed, N failed` line.
//!
//! Booted by `cargo xtask demo`, or `cargo xtask qemu --arch s390x --demo`.
#![no_std]
#![no_main]

use mmu_notifier_conformance::demo::Words;
use mmu_notifier_kernel_s390x::machine::{fault_name, KernelMachine};
use mmu_notifier_kernel_s390x::{self as h, println, BUILD};

h::entry!(main);

/// How this build removes or downgrades a live PTE.
const FLUSH: &str = if cfg!(mmu_notifier_broken = "no-flush") {
    "plain store of the invalid bit: NO IPTE, no TLB purged (broken build)"
} else {
    "IPTE: invalidated and purged in one instruction (every CPU's TLB)"
};

fn main() -> ! {
    println!("demo s390x: MMU notifiers on QEMU's s390x DAT (TCG, CPU 0, {BUILD} build)");
    let young = "the read set R in the frame's storage key; RRBE tested and reset it";
    h::run_demo(
        &KernelMachine::new(),
        &Words {
            flush: FLUSH,
            young,
            fault: fault_name,
        },
    )
}
