//! Thin wrappers around the privileged instructions the harness needs.
//!
//! Owns no state. Port I/O is `unsafe` because a port can be a device with
//! side effects (the exit device ends the VM).

use core::arch::asm;

/// Writes a byte to an I/O port.
///
/// # Safety
/// `port` must be a port whose device tolerates this write (the caller knows
/// what is there); port I/O cannot touch Rust-visible memory by itself.
pub(crate) unsafe fn outb(port: u16, val: u8) {
    // SAFETY: the caller vouches for the device; `out` touches no memory.
    unsafe { asm!("out dx, al", in("dx") port, in("al") val, options(nomem, nostack, preserves_flags)) }
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// As for [`outb`]: reading some device registers has side effects.
pub(crate) unsafe fn inb(port: u16) -> u8 {
    let val: u8;
    // SAFETY: the caller vouches for the device; `in` touches no memory.
    unsafe { asm!("in al, dx", in("dx") port, out("al") val, options(nomem, nostack, preserves_flags)) }
    val
}

/// The faulting linear address of the last page fault.
pub(crate) fn read_cr2() -> u64 {
    let val: u64;
    // SAFETY: reading CR2 has no side effects; we run at CPL 0.
    unsafe { asm!("mov {}, cr2", out(reg) val, options(nomem, nostack, preserves_flags)) }
    val
}

/// The current CR3 (root table address and flags).
pub(crate) fn read_cr3() -> u64 {
    let val: u64;
    // SAFETY: reading CR3 has no side effects; we run at CPL 0.
    unsafe { asm!("mov {}, cr3", out(reg) val, options(nomem, nostack, preserves_flags)) }
    val
}

/// Loads CR3, which switches the address space and flushes all non-global
/// TLB entries.
///
/// # Safety
/// `val` must address a valid top-level table that maps the kernel (code,
/// stack, statics, the identity map) exactly as the current one does, and
/// whose other mappings do not alias memory Rust code holds references to.
pub(crate) unsafe fn write_cr3(val: u64) {
    // SAFETY: the caller guarantees the new tables keep the kernel mapped.
    // No `nomem`: page-table stores before this must not be moved after it.
    unsafe { asm!("mov cr3, {}", in(reg) val, options(nostack, preserves_flags)) }
}
