//! Exit QEMU from a bare-metal s390x guest, with a success or failure status.
//!
//! QEMU's s390x machines have no debug-exit device (x86's `isa-debug-exit`)
//! and no semihosting (AArch64, RISC-V). What they do have is the
//! architecture's *disabled wait*: a PSW with the wait bit set and every
//! interruption class masked off stops the CPU for good. When the last
//! running CPU enters such a wait, QEMU decides what it means from the PSW
//! address:
//!
//! | PSW loaded                                   | QEMU's reading      | host exit status                           |
//! |----------------------------------------------|---------------------|--------------------------------------------|
//! | disabled wait, address ends in `0xfff`       | "special wait": a clean shutdown request | **0**                 |
//! | disabled wait, any other address             | "guest panicked"    | **1** with `-action panic=exit-failure`; **0** without it (the default action is `shutdown`) |
//!
//! This crate encodes that in one type, [`S390x`], with the same interface as
//! the [`qemu-exit`](https://docs.rs/qemu-exit) crate's `QEMUExit` trait (which
//! has no s390x backend), re-declared here as [`QEMUExit`].
//!
//! # What the host sees
//!
//! * [`exit_success`](QEMUExit::exit_success) (and `exit(0)`): the PSW
//!   `{0x0002_0001_8000_0000, 0x0000_0000_0000_0fff}`. QEMU shuts down
//!   cleanly, prints nothing, and exits with status 0.
//! * [`exit_failure`](QEMUExit::exit_failure) (`exit(1)`) and `exit(code)`
//!   for any `code != 0`: the PSW `{0x0002_0001_8000_0000, (code << 12) | 0xbad}`,
//!   e.g. address `0x1bad` for `exit(1)` and `0x11bad` for `exit(0x11)`. QEMU
//!   reports a guest panic: a `GUEST_PANICKED` QMP event and, only with
//!   `-d guest_errors`, the stderr lines
//!   `Guest crashed on cpu 0: disabled-wait` and
//!   `PSW: 0x0002000180000000 0x0000000000001bad`; without `-d` it prints
//!   nothing. With **`-action panic=exit-failure`** it then exits with
//!   status 1; with the default panic action it exits with status **0**, so
//!   a runner that does not pass that option cannot tell failure from
//!   success. The host status only distinguishes 0 from 1: the code itself
//!   is only visible in the PSW address (QMP event, `-d guest_errors` log,
//!   or `info registers` with `-action panic=pause`).
//! * With `-no-shutdown` neither case exits: QEMU stays paused.
//!
//! # Exit status 0 is not proof of success
//!
//! Status 0 also results from a guest that was never built with this crate
//! (a plain `SIGP stop` of the last CPU shuts QEMU down with 0), from a
//! runner that forgot `-action panic=exit-failure`, and from a kernel that
//! exits "successfully" before running anything. A test runner must
//! therefore **also** require a result line printed by the guest (for
//! example `N passed, 0 failed`) and treat a missing line as a failure, and
//! it should wrap QEMU in a timeout, since a guest that loops never exits.
//!
//! # Several CPUs
//!
//! QEMU only evaluates the wait PSW once *every* CPU has stopped or entered
//! a disabled wait. Stop the other CPUs (`SIGP stop`) before calling into
//! this crate, or QEMU keeps running them (and may hang).
//!
//! # Usage
//!
//! ```no_run
//! use qemu_exit_s390x::{QEMUExit, S390x};
//!
//! let qemu = S390x::new();
//! # let all_tests_passed = true;
//! if all_tests_passed {
//!     qemu.exit_success();
//! } else {
//!     qemu.exit_failure();
//! }
//! ```
//!
//! Run QEMU with `-action panic=exit-failure`, e.g.
//! `qemu-system-s390x -M s390-ccw-virtio -nodefaults -display none -serial stdio -action panic=exit-failure -kernel kernel.elf`.
//!
//! The instruction sequence is only built for `target_arch = "s390x"`; on
//! other targets the crate still compiles (so its docs and the encoding
//! tests run on the host), and the exit methods panic.

#![no_std]
#![deny(clippy::undocumented_unsafe_blocks)]

/// The same interface as `qemu_exit::QEMUExit`: exit QEMU with a code.
pub trait QEMUExit {
    /// Exit with the given code: `0` is success, anything else failure.
    ///
    /// On s390x only the distinction success/failure reaches the host exit
    /// status (0 or 1); the code is encoded in the wait-PSW address, see
    /// [`S390x::wait_psw`].
    fn exit(&self, code: u32) -> !;

    /// Exit QEMU with status 0 (a clean shutdown).
    fn exit_success(&self) -> !;

    /// Exit QEMU with status 1 (requires `-action panic=exit-failure`).
    fn exit_failure(&self) -> !;
}

/// A program-status word as stored in memory for `LPSWE` (16 bytes,
/// doubleword-aligned, big-endian like everything on s390x).
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Psw {
    /// The mask half: interruption masks, DAT, key, wait, addressing mode.
    pub mask: u64,
    /// The instruction address. For a disabled wait it is never fetched
    /// from; QEMU reads it to tell a clean shutdown from a guest panic.
    pub addr: u64,
}

/// The s390x backend: exits by loading a disabled-wait PSW.
#[derive(Debug, Default, Clone, Copy)]
pub struct S390x {
    _private: (),
}

impl S390x {
    /// PSW mask of a disabled wait: wait bit (14) and 64-bit addressing
    /// (bits 31 and 32); every interruption mask, DAT and the key are 0.
    /// 64-bit addressing lets the address carry a 32-bit code.
    pub const DISABLED_WAIT_MASK: u64 = 0x0002_0001_8000_0000;

    /// Low 12 bits of the address QEMU takes as "shut down cleanly".
    pub const SUCCESS_TAG: u64 = 0xfff;

    /// Low 12 bits of every failure address (anything but `0xfff` would do;
    /// this one is easy to spot in a log).
    pub const FAILURE_TAG: u64 = 0xbad;

    /// Creates the handle. There is nothing to configure on s390x.
    pub const fn new() -> Self {
        S390x { _private: () }
    }

    /// The disabled-wait PSW that `exit(code)` loads.
    ///
    /// Code 0 gives address `0xfff` (success); any other code `c` gives
    /// address `(c << 12) | 0xbad`, which never ends in `0xfff`, so it is
    /// always a failure and `c` can be read back as `addr >> 12`.
    pub const fn wait_psw(code: u32) -> Psw {
        let addr = if code == 0 {
            Self::SUCCESS_TAG
        } else {
            ((code as u64) << 12) | Self::FAILURE_TAG
        };
        Psw {
            mask: Self::DISABLED_WAIT_MASK,
            addr,
        }
    }

    /// Recovers the code from a wait-PSW address produced by
    /// [`wait_psw`](Self::wait_psw) (for tools that read QEMU's logs).
    pub const fn code_from_addr(addr: u64) -> Option<u32> {
        if addr & 0xfff == Self::SUCCESS_TAG {
            Some(0)
        } else if addr & 0xfff == Self::FAILURE_TAG && addr >> 44 == 0 {
            Some((addr >> 12) as u32)
        } else {
            None
        }
    }
}

impl QEMUExit for S390x {
    fn exit(&self, code: u32) -> ! {
        load_wait_psw(&Self::wait_psw(code))
    }

    fn exit_success(&self) -> ! {
        self.exit(0)
    }

    fn exit_failure(&self) -> ! {
        self.exit(1)
    }
}

/// Loads `psw`, which must be a disabled wait: the CPU stops and never
/// comes back.
#[cfg(target_arch = "s390x")]
fn load_wait_psw(psw: &Psw) -> ! {
    // SAFETY: `psw` is a valid, doubleword-aligned (by `repr(align(8))`)
    // PSW in memory. Its mask has the wait bit set and all interruption
    // masks clear, so after `LPSWE` no instruction of this program runs
    // again: nothing can observe broken Rust invariants, and returning is
    // impossible, which `noreturn` states. `LPSWE` only reads memory.
    unsafe {
        core::arch::asm!(
            "lpswe 0({psw})",
            psw = in(reg_addr) psw as *const Psw,
            options(noreturn, nostack, readonly),
        )
    }
}

#[cfg(not(target_arch = "s390x"))]
fn load_wait_psw(psw: &Psw) -> ! {
    panic!("qemu-exit-s390x: cannot load wait PSW {psw:x?} outside an s390x guest")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_is_the_special_wait_address() {
        let psw = S390x::wait_psw(0);
        assert_eq!(
            psw.addr & 0xfff,
            0xfff,
            "QEMU only shuts down cleanly for addresses ending in 0xfff"
        );
        assert_eq!(psw.mask, 0x0002_0001_8000_0000);
    }

    #[test]
    fn failure_never_looks_like_success_and_keeps_the_code() {
        for code in [1, 2, 0xfff, 0x1000, 0x11, 0x1a0, u32::MAX] {
            let psw = S390x::wait_psw(code);
            assert_ne!(psw.addr & 0xfff, 0xfff, "code {code:#x} must be a failure");
            assert_eq!(
                S390x::code_from_addr(psw.addr),
                Some(code),
                "code {code:#x} must be readable from the PSW"
            );
        }
        assert_eq!(S390x::wait_psw(1).addr, 0x1bad);
    }

    #[test]
    fn disabled_wait_mask_enables_no_interruption() {
        let mask = S390x::DISABLED_WAIT_MASK;
        let bit = |n: u32| mask & (1u64 << (63 - n)) != 0;
        assert!(bit(14), "wait bit");
        assert!(bit(31) && bit(32), "64-bit addressing");
        for n in [1, 5, 6, 7, 13] {
            assert!(
                !bit(n),
                "PSW bit {n} (PER/DAT/I/O/external/machine-check) must be off"
            );
        }
    }
}
