//! s390x: how QEMU boots the kernels of `targets/s390x` and what its exit
//! status means.
//!
//! Each kernel is booted with `-kernel` on QEMU's `s390-ccw-virtio` machine
//! under TCG, prints on the SCLP console, and ends in a disabled wait:
//! QEMU exits 0 only for the kernel's "special wait" PSW; a failing wait
//! is a guest panic, status 1 thanks to `-action panic=exit-failure`.
//!
//! The filter reaches the kernel as `filter=...` on the command line (the
//! kernel's entry at 0x10000 makes QEMU copy it to 0x10480), and with
//! `--smp N` (N > 1) the CPU count as `smp=N` before it. The `smp` kernel
//! brings the secondary CPUs up with SIGP.
//!
//! `no-flush` makes the arch crate store the invalid bit instead of issuing
//! IPTE, so QEMU's TLB keeps the stale translation.

use std::ffi::OsString;

use super::{Boot, Exit};

/// The machine: everything before `-smp`.
pub fn machine_args(_boot: &Boot) -> Vec<OsString> {
    [
        "-M",
        "s390-ccw-virtio",
        "-nodefaults",
        "-display",
        "none",
        // The SCLP ASCII console, where the kernel prints.
        "-serial",
        "stdio",
        // A failing disabled wait is a "guest panic": make that status 1.
        "-action",
        "panic=exit-failure",
        "-m",
        "256M",
    ]
    .map(OsString::from)
    .to_vec()
}

/// The kernel command line: whitespace-separated `key=value` words.
pub fn cmdline(boot: &Boot) -> Vec<String> {
    let mut words = Vec::new();
    if boot.smp > 1 {
        words.push(format!("smp={}", boot.smp));
    }
    if let Some(f) = boot.filter {
        words.push(format!("filter={f}"));
    }
    words
}

/// What QEMU's exit status means.
pub fn exit(code: i32) -> Exit {
    match code {
        0 => Exit::Passed,
        // Also QEMU's own status for bad options: the missing summary line
        // then tells the two apart.
        1 => Exit::Failed,
        c => Exit::Odd(format!("unexpected QEMU exit status {c}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_wait_passes_and_a_panic_fails() {
        assert_eq!(exit(0), Exit::Passed, "the special wait PSW");
        assert_eq!(exit(1), Exit::Failed, "panic=exit-failure");
        assert!(matches!(exit(2), Exit::Odd(_)), "anything else is odd");
    }
}
