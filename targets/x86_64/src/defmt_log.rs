//! The defmt global logger (the `defmt` feature): frames on COM2.
//!
//! defmt output is binary (rzCOBS frames holding indices into the ELF's
//! `.defmt` section), so it gets a serial port of its own, COM2 (I/O port
//! 0x2f8), driven by polling like COM1; the text console on COM1 is
//! unchanged. The runner (`cargo xtask qemu --arch x86_64 --defmt`) sends
//! COM2 to a file and decodes it with `defmt-print -e <kernel ELF>`.
//!
//! # Locking
//! defmt brackets every log call with `acquire`/`release`; here they take a
//! spin lock of this module (not the console's: text and defmt output do not
//! wait for each other), so frames from different CPUs never interleave.
//! The lock is not reentrant: an interrupt or exception handler that logs
//! through defmt while its CPU is inside a defmt call would spin forever.
//! None does (the harness's handlers only print on COM1, and only fatal
//! ones); the spin lock holds while several CPUs run, since interrupts
//! (IPIs) never log.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::cpu::{inb, outb};

const COM2: u16 = 0x2f8;
/// Line status register: bit 5 "transmit holding register empty", bit 6
/// "transmitter empty" (the shift register too).
const LSR: u16 = COM2 + 5;
const LSR_THR_EMPTY: u8 = 1 << 5;
const LSR_TX_EMPTY: u8 = 1 << 6;

/// Programs COM2 for 115200 8N1 with interrupts off (as COM1).
pub(crate) fn init() {
    let regs: [(u16, u8); 6] = [
        (COM2 + 1, 0x00), // no interrupts: we poll
        (COM2 + 3, 0x80), // DLAB on, to set the divisor
        (COM2, 0x01),     // divisor 1 = 115200 baud
        (COM2 + 1, 0x00), // divisor high byte
        (COM2 + 3, 0x03), // DLAB off, 8 data bits, no parity, 1 stop bit
        (COM2 + 2, 0xc7), // FIFOs on and cleared
    ];
    for (port, val) in regs {
        // SAFETY: these are the UART's own registers; this module owns COM2.
        unsafe { outb(port, val) }
    }
}

fn put_bytes(bytes: &[u8]) {
    for &byte in bytes {
        // SAFETY: reading the line status register has no side effects.
        while unsafe { inb(LSR) } & LSR_THR_EMPTY == 0 {
            core::hint::spin_loop();
        }
        // SAFETY: the transmit register is empty, so the byte is not lost.
        unsafe { outb(COM2, byte) }
    }
}

/// Held from `acquire` to `release`.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The frame encoder, used only by the holder of [`TAKEN`].
struct Encoder(UnsafeCell<defmt::Encoder>);

// SAFETY: the encoder is only touched between `acquire` and `release`, that
// is while holding `TAKEN`, so by one CPU at a time.
unsafe impl Sync for Encoder {}

static ENCODER: Encoder = Encoder(UnsafeCell::new(defmt::Encoder::new()));

/// The encoder.
///
/// # Safety
/// Only while holding [`TAKEN`], and no other reference from this function
/// may be live.
unsafe fn encoder() -> &'static mut defmt::Encoder {
    // SAFETY: the caller holds the lock and no other reference exists.
    unsafe { &mut *ENCODER.0.get() }
}

#[defmt::global_logger]
struct Com2Logger;

// SAFETY: `acquire` takes a lock that `release` frees, so only one log call
// at a time (on any CPU) writes to the encoder and to COM2; `write` and
// `flush` run only between the two, as the trait requires of its callers.
unsafe impl defmt::Logger for Com2Logger {
    fn acquire() {
        while TAKEN
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        // SAFETY: we just took the lock; the reference ends with this call.
        unsafe { encoder() }.start_frame(put_bytes);
    }

    unsafe fn flush() {
        // Every byte was handed to the UART already: wait until it sent them.
        // SAFETY: reading the line status register has no side effects.
        while unsafe { inb(LSR) } & LSR_TX_EMPTY == 0 {
            core::hint::spin_loop();
        }
    }

    unsafe fn release() {
        // SAFETY: the caller acquired the lock (trait contract); the reference
        // ends before the lock is freed.
        unsafe { encoder() }.end_frame(put_bytes);
        TAKEN.store(false, Ordering::Release);
    }

    unsafe fn write(bytes: &[u8]) {
        // SAFETY: the caller acquired the lock (trait contract).
        unsafe { encoder() }.write(bytes, put_bytes);
    }
}
