//! Fixed lowcore locations. These are *real* addresses: each CPU sees its
//! own 8 KiB lowcore there through prefixing, with DAT on (the identity map
//! makes virtual = real below 128 MiB) or off.
//!
//! 0x200..0x2ff is the part the architecture leaves to software; the
//! program-check handler owns it. 0x300..0x33f holds what a CPU needs to
//! start and to die on its own ([`crate::smp`] fills it in a secondary
//! CPU's lowcore before starting it; boot fills CPU 0's).

/// Program-interruption ILC byte (instruction length in bytes: 2, 4 or 6).
pub const PGM_ILC: u64 = 0x8d;
/// Program-interruption code (halfword).
pub const PGM_CODE: u64 = 0x8e;
/// Translation-exception identification (doubleword): the failing
/// address in bits 0-51, access and space flags in the low bits.
pub const TEID: u64 = 0xa8;
/// External old PSW: where an external interruption left off.
pub const EXT_OLD_PSW: u64 = 0x130;
/// Program old PSW: where a program interruption left off.
pub const PGM_OLD_PSW: u64 = 0x150;

/// Restart new PSW.
pub const RESTART_NEW_PSW: u64 = 0x1a0;
/// External new PSW.
pub const EXTERNAL_NEW_PSW: u64 = 0x1b0;
/// Supervisor-call new PSW.
pub const SVC_NEW_PSW: u64 = 0x1c0;
/// Program new PSW.
pub const PROGRAM_NEW_PSW: u64 = 0x1d0;
/// Machine-check new PSW.
pub const MCCK_NEW_PSW: u64 = 0x1e0;
/// I/O new PSW.
pub const IO_NEW_PSW: u64 = 0x1f0;

/// Software: the program-check handler saves r0-r15 here (128 bytes).
pub const SAVE_AREA: u64 = 0x200;
/// Software: address to resume at if the next program check happens
/// inside a probe; 0 when no probe is active. Cleared by the handler.
pub const PROBE_FIXUP: u64 = 0x280;
/// Software: interruption code of the last probe fault (halfword).
pub const PROBE_CODE: u64 = 0x288;
/// Software: ILC byte of the last probe fault.
pub const PROBE_ILC: u64 = 0x28a;
/// Software: TEID of the last probe fault (doubleword).
pub const PROBE_TEID: u64 = 0x290;

/// Software: initial stack pointer (top of the stack) of a secondary CPU,
/// loaded by its start stub.
pub const CPU_STACK_TOP: u64 = 0x300;
/// Software: this CPU's index (0 for the boot CPU; equal to its CPU address
/// under QEMU, see [`crate::smp::cpu_id`]).
pub const CPU_INDEX: u64 = 0x308;
/// Software: the CR0 value a secondary CPU loads when it starts (the boot
/// CPU's, AFP and vector bits included: a reset CPU has them off; plus the
/// external-call subclass, which wakes it).
pub const CPU_CR0: u64 = 0x310;
/// Software: the ASCE (CR1) a secondary CPU loads when it starts, before it
/// turns DAT on: the kernel's identity map.
pub const CPU_ASCE: u64 = 0x318;
/// Software: one scratch byte for STOSM's old mask in the start stub.
pub const CPU_SCRATCH: u64 = 0x320;
/// Software: top of this CPU's own stack for the fatal path of the
/// program-check handler (two CPUs may fail at once).
pub const FATAL_STACK_TOP: u64 = 0x328;

/// Reads a lowcore doubleword.
pub fn read_u64(addr: u64) -> u64 {
    debug_assert!(addr != 0 && addr < 0x2000 && addr % 8 == 0);
    // SAFETY: `addr` is a non-null, aligned lowcore address; the lowcore is
    // always mapped (identity map, or DAT off) and never a Rust object.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}

/// Reads a lowcore halfword.
pub fn read_u16(addr: u64) -> u16 {
    debug_assert!(addr != 0 && addr < 0x2000 && addr % 2 == 0);
    // SAFETY: as in `read_u64`.
    unsafe { core::ptr::read_volatile(addr as *const u16) }
}

/// Reads a lowcore byte.
pub fn read_u8(addr: u64) -> u8 {
    debug_assert!(addr != 0 && addr < 0x2000);
    // SAFETY: as in `read_u64`.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

/// Writes a lowcore doubleword.
///
/// # Safety
///
/// `addr` is a lowcore field this harness owns or means to set (a new PSW,
/// the software area); writing a new PSW changes where the next
/// interruption of that class goes.
pub unsafe fn write_u64(addr: u64, value: u64) {
    debug_assert!(addr != 0 && addr < 0x2000 && addr % 8 == 0);
    // SAFETY: as in `read_u64`; the effect of the write is the caller's
    // responsibility.
    unsafe { core::ptr::write_volatile(addr as *mut u64, value) }
}
