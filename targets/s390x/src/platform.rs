//! The platform hooks of this kernel, in one place: what the test harness
//! needs from it ([`Kernel`] as `mmu_notifier_kernel_harness::Platform`),
//! what the notifier core needs from it ([`init`]: the running CPU's id,
//! from its lowcore), and which build this is ([`BUILD`]).

use core::fmt;

use mmu_notifier_kernel_harness::{Failure, Platform};

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

/// Tells the notifier core how to identify the running CPU (its index, from
/// its lowcore), so that it refuses a (un)register from inside a callback
/// of the same head on the same CPU instead of waiting for itself. Called
/// once at boot, before the kernel's `main`.
pub(crate) fn init() {
    mmu_notifier_core::notifier::set_cpu_id_source(smp::cpu_index);
}

/// Which build this is: `normal`, or the deliberately broken variant the
/// runner asked for (`--broken`), which the run must catch.
pub const BUILD: &str = if cfg!(mmu_notifier_broken = "no-flush") {
    "broken: no-flush (the arch stores the invalid bit instead of IPTE)"
} else if cfg!(mmu_notifier_broken = "no-notify") {
    "broken: no-notify (the core skips the notifier step)"
} else if cfg!(mmu_notifier_broken = "no-grace") {
    "broken: no-grace (SRCU synchronize returns at once)"
} else {
    "normal"
};
