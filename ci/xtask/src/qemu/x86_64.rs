//! x86-64: how QEMU boots the kernels of `targets/x86_64` and what its exit
//! status means.
//!
//! Each kernel is booted through PVH with `-kernel` on q35, prints one line
//! per test case and `N passed, N failed` on COM1, and ends the VM through
//! `isa-debug-exit`. Every kernel gets `accel=` and `smp=N` on its command
//! line after the filter, so the harness knows how many CPUs to wake.
//! Broken builds are caught under TCG only (KVM here does not keep the
//! stale TLB entries a missing `invlpg` leaves).
//!
//! `--defmt` adds COM2, written to `<kernel>.defmt` next to the ELF: the
//! kernels' defmt frames, decoded after the run (see `defmt.rs`).

use std::ffi::OsString;
use std::path::PathBuf;

use super::{Boot, Exit};

/// QEMU's exit status when the kernel reports success (`harness::exit_success`,
/// `isa-debug-exit` value 16, `(16 << 1) | 1`).
const EXIT_SUCCESS: i32 = 33;
/// QEMU's exit status when the kernel reports failure (`harness::exit_failure`).
const EXIT_FAILURE: i32 = 35;

/// qboot boots PVH kernels much faster than SeaBIOS (seconds under a slow
/// KVM); used where installed (Debian's qemu-system-data ships it).
const QBOOT_PATHS: &[&str] = &[
    "/usr/share/qemu/qboot.rom",
    "/usr/local/share/qemu/qboot.rom",
];

/// The qboot firmware, if installed.
pub fn qboot() -> Option<PathBuf> {
    QBOOT_PATHS.iter().map(PathBuf::from).find(|p| p.exists())
}

/// The machine: everything before `-smp`.
pub fn machine_args(boot: &Boot) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |args: &[&str]| a.extend(args.iter().map(OsString::from));
    // -nodefaults: no VGA or NIC (whose option ROMs only slow the boot).
    push(&["-M", "q35", "-nodefaults", "-m", "512M"]);
    push(&["-display", "none", "-monitor", "none", "-serial", "stdio"]);
    if let Some(frames) = boot.frames {
        // The second `-serial` is COM2 (0x2f8): defmt's binary frames, kept
        // out of the text console.
        let mut arg = OsString::from("file:");
        arg.push(frames);
        a.push("-serial".into());
        a.push(arg);
    }
    let mut push = |args: &[&str]| a.extend(args.iter().map(OsString::from));
    push(&["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
    // A triple fault then ends QEMU with status 0, which is a failure.
    push(&["-no-reboot"]);
    if let Some(q) = qboot() {
        a.push("-bios".into());
        a.push(q.into());
    }
    let mut push = |args: &[&str]| a.extend(args.iter().map(OsString::from));
    if boot.kvm {
        // Plain `-cpu host` aborts here (MSR 0x10a cannot be set).
        push(&["-accel", "kvm", "-cpu", "host,-arch-capabilities"]);
    } else {
        push(&["-accel", "tcg"]);
    }
    a
}

/// The kernel command line: the test-name filter, then `key=value` words.
pub fn cmdline(boot: &Boot) -> Vec<String> {
    let mut words: Vec<String> = boot.filter.map(String::from).into_iter().collect();
    words.push(format!("accel={}", if boot.kvm { "kvm" } else { "tcg" }));
    words.push(format!("smp={}", boot.smp));
    words
}

/// What QEMU's exit status means.
pub fn exit(code: i32) -> Exit {
    match code {
        EXIT_SUCCESS => Exit::Passed,
        EXIT_FAILURE => Exit::Failed,
        0 => Exit::Odd(
            "QEMU exited with 0: the guest reset (triple fault?) instead of reporting".into(),
        ),
        1 => Exit::Odd("QEMU exited with 1 (bad options, or exit through the wrong value)".into()),
        c => Exit::Odd(format!("unexpected QEMU exit status {c}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_exit_values_mean_pass_and_fail() {
        assert_eq!(exit(33), Exit::Passed, "(16 << 1) | 1 is success");
        assert_eq!(exit(35), Exit::Failed, "(17 << 1) | 1 is failure");
        assert!(
            matches!(exit(0), Exit::Odd(w) if w.contains("triple fault")),
            "0 is a reset"
        );
    }
}
