//! The s390x test-kernel harness: boots under QEMU (`-M s390-ccw-virtio
//! -kernel`), gives a kernel binary a console, DAT with an identity map, a
//! frame pool, address-space switching, probes that survive DAT exceptions,
//! storage-key access and a tiny test framework, then exits QEMU with a
//! status the runner checks together with the printed summary; and, in
//! [`machine`], the conformance suite's `Machine` over all of that.
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
//! use mmu_notifier_kernel_s390x::{case, ensure, entry, run_tests, TestCase};
//!
//! entry!(main);
//! fn main() -> ! {
//!     run_tests(&[case!(two_is_two)])
//! }
//! fn two_is_two() -> Result<(), &'static str> {
//!     ensure!(1 + 1 == 2, "arithmetic");
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
pub mod probe;
pub mod skey;
pub mod smp;
mod sync;
pub mod test;
pub mod zpci;

pub use boot::{cmdline, cmdline_arg};
pub use dat::{activate, ipte, kernel_root, ptlb, TEST_WINDOW};
pub use frame::{alloc_aligned, alloc_frame, alloc_table_block, bytes_in_use, free_frame, free_table_block};
pub use probe::{probe_read, probe_write, Fault};
pub use test::{run_tests, TestCase};

use qemu_exit_s390x::{QEMUExit, S390x};

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
    let cpu = smp::cpu_index();
    match (test::current_case(), cpu) {
        (Some(name), 0) => println!("FAIL {name}: {msg}"),
        (Some(name), cpu) => println!("FAIL {name}: on CPU {cpu}: {msg}"),
        (None, 0) => println!("FATAL: {msg}"),
        (None, cpu) => println!("FATAL: on CPU {cpu}: {msg}"),
    }
    S390x::new().exit(code.max(1))
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    // One line, so the runner sees exactly one `FAIL` line for the case.
    match info.location() {
        Some(at) => fatal(format_args!("panic at {}:{}: {}", at.file(), at.line(), info.message()), 0xdead),
        None => fatal(format_args!("panic: {}", info.message()), 0xdead),
    }
}
