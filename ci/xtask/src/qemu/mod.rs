//! Booting the bare-metal test kernels under QEMU.
//!
//! One module per architecture builds its kernels and boots each one; this
//! module owns the options they share and the verdict format.

pub mod s390x;
pub mod x86_64;

use std::path::PathBuf;

/// What `cargo xtask qemu` was asked to do.
#[derive(Debug, Clone)]
pub struct QemuOpts {
    /// Number of virtual CPUs (`-smp`).
    pub smp: u32,
    /// Use KVM instead of TCG where it is available (x86-64 only).
    pub kvm: bool,
    /// Only run test cases whose name contains this string.
    pub filter: Option<String>,
    /// Build a deliberately broken kernel (`"no-flush"`, `"no-notify"`):
    /// the run is then expected to fail.
    pub broken: Option<String>,
    /// Boot the demo kernel instead of the test kernels.
    pub demo: bool,
    /// Build the kernels with their `defmt` feature and decode what they log
    /// on the second serial port (x86-64 only).
    pub defmt: bool,
    /// Repository root.
    pub root: PathBuf,
}

/// The outcome of booting one or more kernels.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    /// Test cases that passed.
    pub passed: u32,
    /// Test cases that failed (including a kernel that crashed, hung or
    /// printed no summary line: each such kernel counts as one failure).
    pub failed: u32,
}

impl Summary {
    /// Adds another summary to this one.
    pub fn add(&mut self, other: Summary) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

/// Parses the kernel's final line `N passed, N failed`.
pub fn parse_summary(output: &str) -> Option<Summary> {
    output.lines().rev().find_map(|line| {
        let line = line.trim();
        let (p, f) = line.split_once(" passed, ")?;
        let f = f.strip_suffix(" failed")?;
        let p = p.rsplit(' ').next()?;
        Some(Summary {
            passed: p.parse().ok()?,
            failed: f.parse().ok()?,
        })
    })
}
