//! The shared conformance suite (`tests/conformance`, the same cases the
//! host runs on its emulated MMU and every arch runs in QEMU) on the real
//! x86-64 MMU: `mmu_notifier_x86::X86_64` over the kernel's frames, CPU
//! accesses through the fault probes, the TLB as QEMU (or KVM) keeps it.
//!
//! Besides each case's own checks, every case must give back every frame it
//! took (tables and data): a case that passes but leaks fails here.
#![no_std]
#![no_main]

use mmu_notifier_kernel_x86_64::{self as h, machine::KernelMachine, println, BUILD};

h::entry!(main);

fn main() -> ! {
    println!(
        "conformance: x86_64, accelerator {:?}, {BUILD} build",
        h::accel()
    );
    let machine = KernelMachine::new();
    let before = h::frames_in_use();
    let mut runner = h::Runner::new();
    runner.run(&machine, mmu_notifier_conformance::one_cpu_cases());
    println!(
        "frames in use: {before} before the suite, {} after",
        h::frames_in_use()
    );
    runner.finish()
}
