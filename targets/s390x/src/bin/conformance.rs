//! The shared conformance suite (`tests/conformance`, the same cases the
//! host runs on its emulated MMU and every arch runs in QEMU) on QEMU's
//! s390x DAT: `mmu_notifier_s390::S390x` over the kernel's pool, CPU
//! accesses through the program-check probes, the TLB as TCG keeps it
//! (stale until IPTE/PTLB), reference bits in QEMU's storage keys.
//!
//! Besides each case's own checks, every case must give back every byte of
//! the pool it took (tables and data) and no frame twice: a case that
//! passes but leaks fails here. The huge-page case does not apply (no EDAT
//! under TCG).
#![no_std]
#![no_main]

use mmu_notifier_kernel_s390x::frame::high_water;
use mmu_notifier_kernel_s390x::machine::KernelMachine;
use mmu_notifier_kernel_s390x::{self as h, bytes_in_use, println, BUILD};

h::entry!(main);

fn main() -> ! {
    println!("conformance: s390x, QEMU TCG, CPU 0, {BUILD} build");
    let machine = KernelMachine::new();
    let before = bytes_in_use();
    let mut runner = h::Runner::new();
    runner.run(&machine, mmu_notifier_conformance::one_cpu_cases());
    println!(
        "pool in use: {before} bytes before the suite, {} after (high-water {} KiB)",
        bytes_in_use(),
        high_water() >> 10
    );
    runner.finish()
}
