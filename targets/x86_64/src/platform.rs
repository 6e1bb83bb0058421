//! The platform hooks of this kernel, in one place: what the test harness
//! needs from it ([`Kernel`] as `mmu_notifier_kernel_harness::Platform`),
//! what the notifier core needs from it ([`Kernel`] as
//! `mmu_notifier_core::Kernel`: the running CPU's id from the GS base, an
//! IPI barrier on every CPU so readers fence nothing), and which build this
//! is ([`BUILD`]).

use core::fmt;

use mmu_notifier_core::kernel::{ReaderSlot, Srcu};
use mmu_notifier_kernel_harness::Platform;

use crate::percpu::MAX_CPUS;
use crate::{boot, exit, frames, paging, percpu, serial, smp};

/// This kernel, as the harness and the core see it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Kernel;

impl Platform for Kernel {
    const IN_USE: &'static str = "frame(s)";

    fn print(text: fmt::Arguments<'_>) {
        serial::_print(text);
    }

    fn exit(passed: bool) -> ! {
        if passed {
            exit::exit_success()
        } else {
            exit::exit_failure()
        }
    }

    fn filter() -> Option<&'static str> {
        boot::filter()
    }

    fn leave_test_space() {
        if paging::current_root() != paging::kernel_root() {
            paging::deactivate();
        }
    }

    fn in_use() -> u64 {
        frames::frames_in_use() as u64
    }
}

/// One reader slot per CPU, indexed by the CPU's GS-relative index.
static READERS: [ReaderSlot; MAX_CPUS] = [const { ReaderSlot::new() }; MAX_CPUS];
/// The notifier core's grace-period domain on this kernel.
static SRCU: Srcu<Kernel> = Srcu::new(&READERS);

// SAFETY: 1. `percpu::cpu_id` is the index in the running CPU's GS slot,
// below MAX_CPUS, unique per CPU; 2. `nr_cpus` is MAX_CPUS, constant;
// 3. `barrier_all_cpus` sends an IPI to every other online CPU, whose
// handler executes `mfence` before it acknowledges, and returns once all
// have (a CPU not yet online runs no read-side section: it enters the
// harness, and so the core, only after it is counted online); 4. one task
// per CPU, never preempted (no scheduler), and no interrupt handler enters a
// read-side section (the only handlers are the shootdown and the probes);
// 5. one static.
unsafe impl mmu_notifier_core::Kernel for Kernel {
    type Rcu = Srcu<Kernel>;

    #[inline(always)]
    fn rcu() -> &'static Srcu<Kernel> {
        &SRCU
    }

    #[inline(always)]
    fn cpu_id() -> usize {
        percpu::cpu_id()
    }

    fn nr_cpus() -> usize {
        MAX_CPUS
    }

    const ASYMMETRIC_BARRIER: bool = true;

    fn barrier_all_cpus() {
        smp::SHOOTDOWN.barrier_remote();
    }

    const READER_SLOT_PER_TASK: bool = true;
}

/// Which build this is: `normal`, or the deliberately broken variant the
/// runner asked for (`--broken`), which the run must catch.
pub const BUILD: &str = if cfg!(mmu_notifier_broken = "no-shootdown") {
    "broken: no-shootdown (flushes stay on the local CPU)"
} else if cfg!(mmu_notifier_broken = "no-grace") {
    "broken: no-grace (unregister does not wait for callbacks)"
} else if cfg!(mmu_notifier_broken = "no-flush") {
    "broken: no-flush (the arch skips invlpg)"
} else if cfg!(mmu_notifier_broken = "no-notify") {
    "broken: no-notify (the core skips the notifier step)"
} else if cfg!(mmu_notifier_broken = "no-iotlb") {
    "broken: no-iotlb (the IOMMU drivers skip their IOTLB invalidations)"
} else {
    "normal"
};
