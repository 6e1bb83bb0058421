//! The shared conformance suite (`tests/conformance`, the same cases the
//! host runs on its emulated MMU and every arch runs in QEMU) on QEMU's
//! s390x DAT: `mmu_notifier_s390::S390x` over the harness's pool, CPU
//! accesses through the program-check probes, the TLB as TCG keeps it
//! (stale until IPTE/PTLB), reference bits in QEMU's storage keys.
//!
//! Besides each case's own checks, every case must give back every byte of
//! the pool it took (tables and data): a case that passes but leaks fails
//! here. The huge-page case does not apply (no EDAT under TCG).
#![no_std]
#![no_main]

use mmu_notifier_conformance::{cases, Outcome};
use mmu_notifier_kernel_s390x::machine::KernelMachine;
use mmu_notifier_kernel_s390x::frame::high_water;
use mmu_notifier_kernel_s390x::{self as h, bytes_in_use, println};

h::entry!(main);

/// Which build this is: `normal`, or the deliberately broken variant the
/// runner asked for (`--broken`), which the run must catch.
const BUILD: &str = if cfg!(mmu_notifier_broken = "no-flush") {
    "broken: no-flush (the arch stores the invalid bit instead of IPTE)"
} else if cfg!(mmu_notifier_broken = "no-notify") {
    "broken: no-notify (the core skips the notifier step)"
} else {
    "normal"
};

fn main() -> ! {
    let filter = h::cmdline_arg("filter").unwrap_or("");
    println!("conformance: s390x, QEMU TCG, CPU 0, {BUILD} build");
    let machine = KernelMachine::new();
    // `run` reports a case after running it; the fatal paths (panic,
    // unexpected program check) name the running one, so keep it named.
    let names = cases::all::<KernelMachine>().map(|c| c.name);
    let mut upcoming = names.into_iter().filter(|n| n.contains(filter));
    h::test::set_current_case(upcoming.next());
    let (mut passed, mut failed, mut skipped) = (0u32, 0u32, 0u32);
    let before = bytes_in_use();
    let mut baseline = before;
    mmu_notifier_conformance::run(&machine, filter, &mut |name, outcome: Option<&Outcome>| {
        h::test::set_current_case(upcoming.next());
        // `run` has switched back to the kernel's address space already.
        let now = bytes_in_use();
        let leaked = now as i64 - baseline as i64;
        baseline = now;
        let (twice, last) = machine.take_double_frees();
        match outcome {
            None => {
                skipped += 1;
                println!("skip {name}: not applicable (no EDAT under QEMU TCG; s390 large pages are host-tested in arch/s390)");
            }
            Some(Ok(())) if leaked != 0 => {
                failed += 1;
                println!("FAIL {name}: passed, but {leaked} bytes of the pool not given back");
            }
            Some(Ok(())) => {
                passed += 1;
                println!("ok   {name}");
            }
            Some(Err(f)) if leaked != 0 => {
                failed += 1;
                println!("FAIL {name}: {f} ({leaked} bytes of the pool not given back)");
            }
            Some(Err(f)) => {
                failed += 1;
                println!("FAIL {name}: {f}");
            }
        }
        if twice != 0 {
            println!(
                "     note: the case gave {twice} frame(s) back twice (last {last:#x}); the second free was ignored"
            );
        }
    });
    h::test::set_current_case(None);
    println!(
        "pool in use: {before} bytes before the suite, {} after (high-water {} KiB)",
        bytes_in_use(),
        high_water() >> 10
    );
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
