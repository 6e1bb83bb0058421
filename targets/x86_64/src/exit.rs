//! Ending the VM with a verdict, through QEMU's `isa-debug-exit` device
//! (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`), and the panic handler.
//!
//! QEMU exits with `(value << 1) | 1`. Both verdicts are distinct from QEMU's
//! own statuses: 0 (normal end, and also what a triple fault gives with
//! `-no-reboot`) and 1 (startup errors).

use core::panic::PanicInfo;

use mmu_notifier_kernel_harness::FatalLine;
use qemu_exit::QEMUExit;

const IOBASE: u16 = 0xf4;
/// QEMU's exit status when the kernel calls [`exit_success`].
pub const EXIT_SUCCESS_STATUS: u32 = 33;
/// QEMU's exit status when the kernel calls [`exit_failure`].
pub const EXIT_FAILURE_STATUS: u32 = 35;

fn device() -> qemu_exit::X86 {
    // SAFETY: the runner always configures isa-debug-exit at IOBASE; if it
    // is absent the write goes nowhere and `exit` halts forever, which the
    // runner's timeout turns into a failure.
    unsafe { qemu_exit::X86::new(IOBASE, EXIT_SUCCESS_STATUS) }
}

/// Ends the VM with [`EXIT_SUCCESS_STATUS`].
pub fn exit_success() -> ! {
    device().exit_success()
}

/// Ends the VM with [`EXIT_FAILURE_STATUS`].
pub fn exit_failure() -> ! {
    device().exit(EXIT_FAILURE_STATUS >> 1)
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    // The lock-free path: the panic may have happened inside `println!`.
    // One line, so that it reads like the runner's other verdicts.
    let (cpu, msg) = (crate::percpu::cpu_id(), info.message());
    match info.location() {
        Some(at) => print_fatal(FatalLine::new(cpu, format_args!("panicked at {at}: {msg}"))),
        None => print_fatal(FatalLine::new(cpu, format_args!("panicked: {msg}"))),
    }
    exit_failure()
}

/// Prints a fatal line without the console lock (its holder may be the
/// code that failed).
pub(crate) fn print_fatal(line: FatalLine<'_>) {
    crate::serial::emergency_print(format_args!("\n{line}\n"));
}
