//! The console: COM1 (I/O port 0x3f8), driven by polling.
//!
//! QEMU's `-serial stdio` connects it to the runner. Owns COM1 and nothing
//! else; [`print!`](crate::print) and [`println!`](crate::println) take a lock
//! so lines from different CPUs do not interleave.

use core::fmt::{self, Write};

use crate::cpu::{inb, outb};
use mmu_notifier_kernel_harness::SpinLock;

const COM1: u16 = 0x3f8;
/// Line status register; bit 5 is "transmit holding register empty".
const LSR: u16 = COM1 + 5;
const LSR_THR_EMPTY: u8 = 1 << 5;

static LOCK: SpinLock<()> = SpinLock::new(());

/// Programs COM1 for 115200 8N1 with interrupts off.
pub(crate) fn init() {
    let regs: [(u16, u8); 6] = [
        (COM1 + 1, 0x00), // no interrupts: we poll
        (COM1 + 3, 0x80), // DLAB on, to set the divisor
        (COM1, 0x01),     // divisor 1 = 115200 baud
        (COM1 + 1, 0x00), // divisor high byte
        (COM1 + 3, 0x03), // DLAB off, 8 data bits, no parity, 1 stop bit
        (COM1 + 2, 0xc7), // FIFOs on and cleared
    ];
    for (port, val) in regs {
        // SAFETY: these are the UART's own registers; the harness owns COM1.
        unsafe { outb(port, val) }
    }
}

struct Com1;

impl Com1 {
    fn put(byte: u8) {
        // SAFETY: reading the line status register has no side effects.
        while unsafe { inb(LSR) } & LSR_THR_EMPTY == 0 {
            core::hint::spin_loop();
        }
        // SAFETY: the transmit register is empty, so the byte is not lost.
        unsafe { outb(COM1, byte) }
    }
}

impl Write for Com1 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(Com1::put);
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    let _guard = LOCK.lock();
    // Com1 never fails; a formatting error from a Display impl is ignored.
    let _ = Com1.write_fmt(args);
}

/// Prints without taking the console lock: for the panic and fatal-exception
/// paths, which may run while the lock is held (a panic inside `println!`).
pub(crate) fn emergency_print(args: fmt::Arguments<'_>) {
    let _ = Com1.write_fmt(args);
}

/// Prints to the serial console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::serial::_print(format_args!($($arg)*)) };
}

/// Prints a line to the serial console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::serial::_print(format_args!("{}\n", format_args!($($arg)*))) };
}
