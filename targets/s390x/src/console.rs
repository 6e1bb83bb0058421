//! The SCLP ASCII console: `print!`/`println!` for the test kernels.
//!
//! QEMU shows SCLP "ASCII console data" events (type 0x1a) on the chardev of
//! `-serial stdio`. A write is one SERVC "write event data" (0x00760005)
//! with a 4 KiB-aligned SCCB below 2 GiB. QEMU answers synchronously (the
//! response code is in place when SERVC returns); the completion interrupt
//! it then raises stays pending, as external interrupts are always off.
//!
//! Owns the single SCCB and its lock.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU16, Ordering};

use mmu_notifier_kernel_harness::SpinLock;

const SCCB_SIZE: usize = 4096;
/// SCCB header: u16 length, u8 function code, 3 bytes control mask, u16 response.
const SCCB_HEADER: usize = 8;
/// Event-buffer header: u16 length, u8 type, u8 flags, u16 reserved.
const EVENT_HEADER: usize = 6;
const TEXT_START: usize = SCCB_HEADER + EVENT_HEADER;
const TEXT_CAPACITY: usize = SCCB_SIZE - TEXT_START;

const SCLP_CMD_WRITE_EVENT_DATA: u64 = 0x0076_0005;
const EVENT_TYPE_ASCII_CONSOLE: u8 = 0x1a;
/// SCLP response "normal completion".
const SCLP_RC_OK: u16 = 0x0020;

#[repr(C, align(4096))]
struct Sccb {
    bytes: [u8; SCCB_SIZE],
    /// Bytes of text waiting in `bytes[TEXT_START..]`.
    used: usize,
}

/// The last SCLP response code other than 0x0020, or 0.
static LAST_BAD_RESPONSE: AtomicU16 = AtomicU16::new(0);

static CONSOLE: SpinLock<Sccb> = SpinLock::new(Sccb {
    bytes: [0; SCCB_SIZE],
    used: 0,
});

impl Sccb {
    fn flush(&mut self) {
        if self.used == 0 {
            return;
        }
        let total = TEXT_START + self.used;
        self.bytes[..SCCB_HEADER].copy_from_slice(&[0; SCCB_HEADER]);
        self.bytes[0..2].copy_from_slice(&(total as u16).to_be_bytes());
        self.bytes[SCCB_HEADER..SCCB_HEADER + 2]
            .copy_from_slice(&((EVENT_HEADER + self.used) as u16).to_be_bytes());
        self.bytes[SCCB_HEADER + 2] = EVENT_TYPE_ASCII_CONSOLE;
        self.bytes[SCCB_HEADER + 3] = 0;
        self.bytes[SCCB_HEADER + 4..TEXT_START].copy_from_slice(&[0, 0]);
        let sccb = self.bytes.as_mut_ptr() as u64;
        loop {
            // SAFETY: `sccb` is this 4 KiB-aligned SCCB (by `repr(align)`),
            // below 2 GiB (the kernel image ends below 16 MiB), identity
            // mapped, with a valid header; `&mut self` makes it exclusively
            // ours while SCLP reads it and writes the response code. SERVC
            // takes the command word in R1 and the SCCB address in R2, and
            // is not known to the assembler, hence `.insn`.
            let cc = unsafe {
                let cc: u64;
                core::arch::asm!(
                    ".insn rre,0xb2200000,{cmd},{sccb}",
                    "ipm {cc}",
                    "srlg {cc},{cc},28",
                    cmd = in(reg) SCLP_CMD_WRITE_EVENT_DATA,
                    sccb = in(reg) sccb,
                    cc = lateout(reg) cc,
                    options(nostack),
                );
                cc & 3
            };
            // cc 2: SCLP busy with an earlier command; anything else is final.
            if cc != 2 {
                break;
            }
        }
        // SAFETY: reading back the response code SCLP wrote into our SCCB;
        // volatile because the write came from outside the abstract machine.
        let response =
            unsafe { core::ptr::read_volatile(self.bytes.as_ptr().add(6).cast::<u16>()) };
        // There is nowhere to report a console failure; keep it for a
        // debugger (`-action panic=pause`, then `x` on this symbol).
        LAST_BAD_RESPONSE.store(
            if response == SCLP_RC_OK { 0 } else { response },
            Ordering::Relaxed,
        );
        self.used = 0;
    }

    fn push(&mut self, s: &[u8]) {
        for &b in s {
            if self.used == TEXT_CAPACITY {
                self.flush();
            }
            self.bytes[TEXT_START + self.used] = b;
            self.used += 1;
        }
    }
}

struct Writer<'a>(&'a mut Sccb);

impl Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.push(s.as_bytes());
        Ok(())
    }
}

/// Formats and writes to the console: one SERVC per call unless the text
/// exceeds one SCCB. Used by [`print!`](crate::print) and
/// [`println!`](crate::println).
pub fn _print(args: fmt::Arguments<'_>) {
    let mut sccb = CONSOLE.lock();
    let _ = Writer(&mut sccb).write_fmt(args);
    sccb.flush();
}

/// Frees the console even if its holder never returns.
///
/// # Safety
///
/// Only for the fatal paths (panic, unexpected program check) that end in
/// a disabled wait: the interrupted holder must never run again.
pub(crate) unsafe fn force_unlock() {
    // SAFETY: `SpinLock::force_unlock`'s one condition, that no holder of
    // a guard runs again, is this function's own.
    unsafe { CONSOLE.force_unlock() }
}

/// Prints to the SCLP console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::_print(format_args!($($arg)*)) };
}

/// Prints to the SCLP console, with a newline.
#[macro_export]
macro_rules! println {
    () => { $crate::console::_print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::_print(format_args!("{}\n", format_args!($($arg)*))) };
}
