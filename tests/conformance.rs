//! The conformance suite on the host's emulated MMU: one test per case of
//! `mmu_notifier_conformance::suite!`, named after the behaviour it checks
//! (`cargo test <case_name>`), grouped by what the case needs (`one_cpu::`,
//! `several_cpus::`), and the demo. The same cases run in the QEMU kernels
//! of every arch (`cargo xtask qemu`).
//!
//! Several CPUs are threads: each runs as one emulated CPU, with its own
//! TLB, and is the CPU id the notifier core sees.

mod host;

use host::Host;
use mmu_notifier_conformance::demo::{self, Words};
use mmu_notifier_conformance::{Case, CpuFault, Machine};

/// How many emulated CPUs the multi-CPU cases run on: a thread each. More
/// threads than the host has cores slow the cases down (a grace period
/// waits for readers the host has descheduled) without testing more; the
/// kernels run them at `-smp 2` and `4`.
const CPUS: usize = 3;

/// Runs `case` on `host`: it must apply, pass, and give back every frame.
fn run(host: &Host, case: Case<Host>) {
    let name = case.name;
    if let Some(why) = (case.skip)(host) {
        panic!("{name} does not run on the host: {why}");
    }
    let outcome = (case.run)(host);
    host.deactivate();
    if let Err(failure) = outcome {
        panic!("{name}: {failure}");
    }
    assert_eq!(
        host.emu.allocated_frames(),
        0,
        "{name} leaked frames (tables or data)"
    );
}

fn run_one_cpu(name: &str) {
    let host = Host::new(1);
    let case = mmu_notifier_conformance::one_cpu_cases::<Host>()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no conformance case named {name}"));
    run(&host, case);
}

fn run_several_cpus(name: &str) {
    let host = Host::new(CPUS);
    let case = mmu_notifier_conformance::several_cpu_cases::<Host>()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no conformance case named {name}"));
    run(&host, case);
}

macro_rules! host_tests {
    (
        one_cpu { $($om:ident :: $on:ident $(if $oc:ident)?),* $(,)? }
        several_cpus { $($sm:ident :: $sn:ident $(if $sc:ident)?),* $(,)? }
    ) => {
        mod one_cpu {
            $(
                #[test]
                fn $on() {
                    super::run_one_cpu(stringify!($on));
                }
            )*
        }

        mod several_cpus {
            $(
                #[test]
                fn $sn() {
                    super::run_several_cpus(stringify!($sn));
                }
            )*
        }
    };
}

mmu_notifier_conformance::suite!(host_tests);

#[test]
fn demo_stays_coherent_at_every_step() {
    let host = Host::new(1);
    let words = Words {
        flush: if cfg!(mmu_notifier_broken = "no-flush") {
            "no flush: every emulated TLB keeps the old entry (broken build)"
        } else {
            "the entry cleared, then dropped from every emulated CPU's TLB"
        },
        young: "the emulated walker sets the accessed bit, as x86 does",
        fault: |f| match f {
            CpuFault::NotMapped => "page fault (not present)",
            CpuFault::Protection => "page fault (protection)",
            CpuFault::Other(_) => "access to a freed frame",
        },
    };
    let outcome = demo::run(&host, &words);
    assert!(
        outcome.is_ok(),
        "the demo found an incoherence: {outcome:?}"
    );
    assert_eq!(
        host.emu.allocated_frames(),
        0,
        "the demo leaked frames (tables or data)"
    );
}
