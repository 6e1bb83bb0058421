//! The platform hooks of this kernel, in one place: what the test harness
//! needs from it ([`Kernel`] as `mmu_notifier_kernel_harness::Platform`),
//! what the notifier core needs from it ([`init`]: the running CPU's id,
//! from the GS base), and which build this is ([`BUILD`]).

use core::fmt;

use mmu_notifier_kernel_harness::Platform;

use crate::{boot, exit, frames, paging, percpu, serial};

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

/// Tells the notifier core how to identify the running CPU (its per-CPU
/// slot, through GS), so that it refuses a (un)register from inside a
/// callback of the same head on the same CPU instead of waiting for
/// itself. Called once at boot, before the kernel's `main`.
pub(crate) fn init() {
    mmu_notifier_core::notifier::set_cpu_id_source(percpu::cpu_id);
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
} else {
    "normal"
};
