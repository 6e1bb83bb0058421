//! The s390x test kernels' library: boots under QEMU (`-M s390-ccw-virtio
//! -kernel`), gives a kernel binary a console, DAT with an identity map, a
//! frame pool, address-space switching, probes that survive DAT exceptions,
//! storage-key access, then exits QEMU with a status the runner checks
//! together with the printed summary; in [`machine`], the conformance
//! suite's `Machine` (and `Cpus`) over all of that. Cases run through the
//! harness every kernel shares (`mmu-notifier-kernel-harness`, re-exported
//! here), with this kernel's hooks in [`platform`].
//!
//! # Memory map (physical = virtual below 128 MiB)
//!
//! | range | what |
//! |-------|------|
//! | `0..0x2000` | lowcore (CPU 0); `0x200..0x300` belongs to the program-check handler, `0x300..0x340` to [`smp`] |
//! | `0x10000..16 MiB` | the kernel image: `_start`, command line at `0x10480`, text, data, bss, stacks, the secondary CPUs' prefix areas |
//! | `16 MiB..128 MiB` | the frame pool ([`alloc_frame`], [`alloc_aligned`]) |
//! | `TEST_WINDOW` = `1 << 53` and up | region-first entries 1..2047: the tests' own tables |
//!
//! # A kernel
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! use mmu_notifier_kernel_s390x::{cases, ensure, entry, run_cases, Outcome};
//!
//! entry!(main);
//! fn main() -> ! {
//!     run_cases(cases![two_is_two])
//! }
//! fn two_is_two() -> Outcome {
//!     ensure!(1 + 1 == 2, "arithmetic is broken");
//!     Ok(())
//! }
//! ```
//!
//! Kernel-only by design: the crate builds for `s390x-unknown-linux-gnu`
//! (for its prebuilt `core`; `target_os = "linux"` is true there but
//! meaningless) and refuses any other architecture.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

#[cfg(not(target_arch = "s390x"))]
compile_error!("mmu-notifier-kernel-s390x is an s390x kernel: build it from targets/s390x (its .cargo/config.toml selects the target)");

pub mod boot;
pub mod clock;
pub mod console;
pub mod dat;
pub mod frame;
pub mod lowcore;
pub mod machine;
mod mem;
pub mod platform;
pub mod probe;
pub mod skey;
pub mod smp;
pub mod zpci;

pub use boot::{cmdline, cmdline_arg};
pub use dat::{activate, ipte, kernel_root, ptlb, TEST_WINDOW};
pub use frame::{
    alloc_aligned, alloc_frame, alloc_table_block, bytes_in_use, free_frame, free_table_block,
};
pub use mmu_notifier_kernel_harness::{
    cases, ensure, entry, fail, Case, Failure, Outcome, SpinLock,
};
pub use platform::{Kernel, BUILD};
pub use probe::{probe_read, probe_write, Fault};

use mmu_notifier_kernel_harness::FatalLine;
use qemu_exit_s390x::{QEMUExit, S390x};

/// The harness's runner with this kernel's hooks.
pub type Runner = mmu_notifier_kernel_harness::Runner<Kernel>;

/// Runs the kernel's own cases (see [`cases!`]) and ends the run.
pub fn run_cases(cases: impl IntoIterator<Item = Case<()>>) -> ! {
    mmu_notifier_kernel_harness::run_cases::<Kernel>(cases)
}

/// Runs the conformance suite's demo on `m`, told in `words`, and ends the run.
pub fn run_demo(m: &machine::KernelMachine, words: &mmu_notifier_conformance::demo::Words) -> ! {
    mmu_notifier_kernel_harness::run_demo::<Kernel, _>(m, words)
}

/// Ends the run: QEMU exits with status 0. Stops the other CPUs first
/// (QEMU ends the run only when the last running CPU loads the exit PSW).
pub fn exit_success() -> ! {
    smp::claim_end();
    S390x::new().exit_success()
}

/// Ends the run: QEMU exits with status 1 (the runner passes
/// `-action panic=exit-failure`). Stops the other CPUs first.
pub fn exit_failure() -> ! {
    smp::claim_end();
    S390x::new().exit_failure()
}

/// The fatal path shared by panics and unexpected program checks, on any
/// CPU: every other CPU is stopped (if another CPU is already ending the
/// run, this one spins until stopped), then a `FAIL` line for the running
/// case (so the runner can name it), the message, and a failing exit whose
/// PSW address carries `code`.
pub(crate) fn fatal(msg: core::fmt::Arguments<'_>, code: u32) -> ! {
    smp::claim_end();
    // SAFETY: we never return to whatever held the console (this path ends
    // in a disabled wait), interrupts are off, and every other CPU is
    // stopped for good, so no holder of the lock runs again.
    unsafe { console::force_unlock() };
    println!("{}", FatalLine::new(smp::cpu_index(), msg));
    S390x::new().exit(code.max(1))
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    // One line, so the runner sees exactly one `FAIL` line for the case.
    match info.location() {
        Some(at) => fatal(
            format_args!("panic at {}:{}: {}", at.file(), at.line(), info.message()),
            0xdead,
        ),
        None => fatal(format_args!("panic: {}", info.message()), 0xdead),
    }
}
