//! Ending the VM with a verdict, through QEMU's `isa-debug-exit` device
//! (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`), and the panic handler.
//!
//! QEMU exits with `(value << 1) | 1`. Both verdicts are distinct from QEMU's
//! own statuses: 0 (normal end, and also what a triple fault gives with
//! `-no-reboot`) and 1 (startup errors).

use core::panic::PanicInfo;

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
    let msg = info.message();
    match (crate::ktest::current_case(), info.location()) {
        (Some(name), Some(at)) => crate::serial::emergency_print(format_args!("\nFAIL {name}: panicked at {at}: {msg}\n")),
        (Some(name), None) => crate::serial::emergency_print(format_args!("\nFAIL {name}: panicked: {msg}\n")),
        (None, Some(at)) => crate::serial::emergency_print(format_args!("\nkernel panicked at {at}: {msg}\n")),
        (None, None) => crate::serial::emergency_print(format_args!("\nkernel panicked: {msg}\n")),
    }
    exit_failure()
}
