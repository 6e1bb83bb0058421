//! The platform hooks of this kernel, in one place: what the test harness
//! needs from it ([`Kernel`] as `mmu_notifier_kernel_harness::Platform`),
//! what the notifier core needs from it ([`Kernel`] as
//! `mmu_notifier_core::Kernel`: the running CPU's index, from its
//! lowcore), and which build this is ([`BUILD`]).

use core::fmt;

use mmu_notifier_core::kernel::{ReaderSlot, Srcu};
use mmu_notifier_kernel_harness::{Failure, Platform};

use crate::smp::MAX_CPUS;
use crate::{boot, frame, machine, smp};

/// This kernel, as the harness and the core see it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Kernel;

impl Platform for Kernel {
    const IN_USE: &'static str = "bytes of the pool";

    fn print(text: fmt::Arguments<'_>) {
        crate::console::_print(text);
    }

    fn exit(passed: bool) -> ! {
        if passed {
            crate::exit_success()
        } else {
            crate::exit_failure()
        }
    }

    fn filter() -> Option<&'static str> {
        boot::cmdline_arg("filter")
    }

    fn leave_test_space() {
        machine::deactivate();
    }

    fn in_use() -> u64 {
        frame::bytes_in_use()
    }

    fn take_anomaly() -> Option<Failure> {
        let (twice, last) = machine::take_double_frees();
        (twice != 0).then(|| {
            Failure::new(format_args!(
                "gave {twice} frame(s) back twice (last {last:#x}); the second free was ignored"
            ))
        })
    }
}

/// One reader slot per CPU, indexed by the CPU index in its lowcore.
static READERS: [ReaderSlot; MAX_CPUS] = [const { ReaderSlot::new() }; MAX_CPUS];
/// The notifier core's grace-period domain on this kernel.
static SRCU: Srcu<Kernel> = Srcu::new(&READERS);

// SAFETY: 1. `smp::cpu_index` is the index the boot or start path stored in
// the running CPU's own lowcore, below MAX_CPUS, unique per CPU; 2.
// `nr_cpus` is MAX_CPUS, constant; 3. no barrier is promised (the CPUs take
// no external interrupts here, so readers fence: a locked add); 4. one task
// per CPU, never preempted, and no interrupt handler enters a read-side
// section (program checks only resume probes); 5. one static.
unsafe impl mmu_notifier_core::Kernel for Kernel {
    type Rcu = Srcu<Kernel>;

    #[inline(always)]
    fn rcu() -> &'static Srcu<Kernel> {
        &SRCU
    }

    #[inline(always)]
    fn cpu_id() -> usize {
        smp::cpu_index()
    }

    fn nr_cpus() -> usize {
        MAX_CPUS
    }

    const READER_SLOT_PER_TASK: bool = true;
}

/// Which build this is: `normal`, or the deliberately broken variant the
/// runner asked for (`--broken`), which the run must catch.
pub const BUILD: &str = if cfg!(mmu_notifier_broken = "no-flush") {
    "broken: no-flush (the arch stores the invalid bit instead of IPTE)"
} else if cfg!(mmu_notifier_broken = "no-notify") {
    "broken: no-notify (the core skips the notifier step)"
} else if cfg!(mmu_notifier_broken = "no-grace") {
    "broken: no-grace (SRCU synchronize returns at once)"
} else if cfg!(mmu_notifier_broken = "no-iotlb") {
    "broken: no-iotlb (the IOMMU driver skips RPCIT after clearing entries)"
} else {
    "normal"
};
