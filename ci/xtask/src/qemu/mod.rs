//! `cargo xtask qemu`: builds the bare-metal test kernels and boots each
//! under QEMU.
//!
//! Everything but two things is shared by the arches: the kernel list
//! ([`kernels`]), the build (`build.rs`: one `cargo build --release` in
//! `targets/<arch>` with the `--broken` cfg and the `defmt` feature), the
//! boot (`boot.rs`: console streamed with an `[arch/kernel]` prefix and
//! kept, QEMU's stderr collected, one wall-clock limit per kernel enforced
//! by killing QEMU) and the verdict (exit status and the kernel's last line
//! `N passed, N failed`, each checked against the other). What differs, the
//! machine's arguments and what QEMU's exit status means, is in
//! [`x86_64`] and [`s390x`]. This module owns the options, the command line
//! and the loop over an arch's kernels.
//!
//! A kernel that crashes, hangs, exits with the wrong status or prints no
//! summary counts as one failure besides the failed cases it printed; `Err`
//! is for problems before any kernel could be judged (a build, a missing
//! QEMU, bad options).

mod boot;
mod build;
mod defmt;
pub mod kernels;
pub mod s390x;
pub mod x86_64;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::arch::Arch;
pub use boot::{wait_with_deadline, Boot, Exit};
use kernels::Role;

/// What `cargo xtask qemu` was asked to do.
#[derive(Debug, Clone)]
pub struct QemuOpts {
    /// Number of virtual CPUs (`-smp`).
    pub smp: u32,
    /// Use KVM instead of TCG where it is available (x86-64 only).
    pub kvm: bool,
    /// Only run test cases whose name contains this string.
    pub filter: Option<String>,
    /// Build a deliberately broken kernel (a name of [`kernels::BROKEN`]):
    /// the run is then expected to fail.
    pub broken: Option<String>,
    /// Boot the demo kernel instead of the test kernels.
    pub demo: bool,
    /// Build the kernels with their `defmt` feature and decode what they log
    /// on the second serial port (x86-64 only).
    pub defmt: bool,
    /// Only these kernels (by binary name); all of the selected role when
    /// empty.
    pub kernels: Vec<String>,
    /// Repository root.
    pub root: PathBuf,
}

impl QemuOpts {
    /// One CPU, TCG, the test kernels, no filter.
    pub fn new(root: &Path) -> QemuOpts {
        QemuOpts {
            smp: 1,
            kvm: false,
            filter: None,
            broken: None,
            demo: false,
            defmt: false,
            kernels: Vec::new(),
            root: root.to_path_buf(),
        }
    }
}

/// The outcome of booting one or more kernels, counted in test cases.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Test cases that passed.
    pub passed: u32,
    /// Test cases that failed, plus one for each kernel that crashed, hung
    /// or misreported.
    pub failed: u32,
}

impl Summary {
    /// Adds another summary to this one.
    pub fn add(&mut self, other: Summary) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

/// What booting the kernels of one or more arches gave.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// All cases together.
    pub summary: Summary,
    /// One line per kernel that failed: `arch/kernel: why`.
    pub failures: Vec<String>,
}

impl Report {
    /// Adds another report to this one.
    pub fn add(&mut self, other: Report) {
        self.summary.add(other.summary);
        self.failures.extend(other.failures);
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

const USAGE: &str =
    "usage: cargo xtask qemu --arch x86_64|s390x|all [--smp N] [--kvm] [--broken VARIANT] \
     [--demo] [--defmt] [--kernel NAME[,NAME]] [-- FILTER]";

/// `cargo xtask qemu ARGS`: parses, boots, prints `N passed, N failed`.
pub fn cmd(args: &[String], root: &Path) -> ExitCode {
    let (arches, opts) = match parse_args(args, root) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("xtask qemu: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut total = Report::default();
    for arch in arches {
        match run(arch, &opts) {
            Ok(r) => total.add(r),
            Err(e) => {
                eprintln!("xtask qemu {}: {e}", arch.name());
                total.summary.failed += 1;
            }
        }
    }
    let s = total.summary;
    println!("{} passed, {} failed", s.passed, s.failed);
    if s.failed == 0 && s.passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The arches and options of a `cargo xtask qemu` command line.
fn parse_args(args: &[String], root: &Path) -> Result<(Vec<Arch>, QemuOpts), String> {
    let mut opts = QemuOpts::new(root);
    let mut arches = Arch::ALL.to_vec();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--arch" => {
                arches = match value()?.as_str() {
                    "all" => Arch::ALL.to_vec(),
                    name => vec![Arch::parse(name).ok_or(format!("unknown arch {name:?}"))?],
                }
            }
            "--smp" => {
                opts.smp = value()?
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or("--smp needs a CPU count of 1 or more")?
            }
            "--kvm" => opts.kvm = true,
            "--broken" => opts.broken = Some(value()?),
            "--demo" => opts.demo = true,
            "--defmt" => opts.defmt = true,
            "--kernel" => opts.kernels.extend(value()?.split(',').map(str::to_string)),
            "--" => opts.filter = Some(value()?),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok((arches, opts))
}

/// Builds the kernels of `arch` that `opts` selects and boots each one.
///
/// # Errors
/// A bad option, a failed build, a kernel that was not built or a QEMU that
/// does not start.
pub fn run(arch: Arch, opts: &QemuOpts) -> Result<Report, String> {
    let broken = match &opts.broken {
        Some(b) => Some(kernels::broken(b, arch)?),
        None => None,
    };
    let mut only: Vec<&str> = opts.kernels.iter().map(String::as_str).collect();
    if let Some(b) = broken {
        only.extend(b.kernels);
    }
    let kernels = kernels::select(arch, |r: Role| r.boots(opts.smp, opts.demo), &only);
    if kernels.is_empty() {
        return Err(format!(
            "no {} {} kernel{}",
            arch.name(),
            if opts.demo { "demo" } else { "test" },
            if only.is_empty() {
                String::new()
            } else {
                format!(" named {}", only.join(" or "))
            }
        ));
    }
    let kvm = opts.kvm && choose_kvm(arch);
    let defmt = opts.defmt && arch.has_defmt();
    if opts.defmt && !defmt {
        eprintln!(
            "xtask qemu {}: --defmt ignored (no defmt port)",
            arch.name()
        );
    }
    let dir = arch.kernel_dir(&opts.root);
    let target_dir = build::target_dir(&dir, broken.map(|b| b.name), defmt);
    let mut binaries: Vec<&str> = kernels.iter().map(|k| k.binary).collect();
    binaries.sort_unstable();
    binaries.dedup();
    let status = build::build_command(
        arch,
        &dir,
        &target_dir,
        &binaries,
        broken.map(|b| b.name),
        defmt,
    )
    .status()
    .map_err(|e| format!("running cargo in {}: {e}", dir.display()))?;
    if !status.success() {
        return Err(format!(
            "building the {} kernels failed ({status})",
            arch.name()
        ));
    }

    let mut report = Report::default();
    for kernel in kernels {
        let elf = target_dir
            .join(arch.triple())
            .join("release")
            .join(kernel.binary);
        let frames = defmt.then(|| elf.with_extension("defmt"));
        let boot = Boot {
            kernel,
            elf: &elf,
            smp: opts.smp,
            kvm,
            filter: opts.filter.as_deref(),
            frames: frames.as_deref(),
        };
        report.add(boot::boot_one(arch, &boot)?);
    }
    if let (
        Some(filter),
        Summary {
            passed: 0,
            failed: 0,
        },
    ) = (&opts.filter, report.summary)
    {
        eprintln!("{}: no case of any kernel matches {filter:?}", arch.name());
        report.summary.failed = 1;
        report
            .failures
            .push(format!("{}: no case matches {filter:?}", arch.name()));
    }
    Ok(report)
}

/// KVM when the arch has it and `/dev/kvm` opens; TCG otherwise (with a
/// word why). TCG is the default because its TLB keeps stale entries,
/// which exposes a missing flush, and because KVM here may be slower.
fn choose_kvm(arch: Arch) -> bool {
    if !arch.has_kvm() {
        eprintln!(
            "xtask qemu {}: --kvm ignored (TCG only on this host)",
            arch.name()
        );
        return false;
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            eprintln!(
                "{}: --kvm: cannot open /dev/kvm ({e}); using TCG",
                arch.name()
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_is_the_last_matching_line() {
        let out = "case a ... ok\n3 passed, 0 failed\nnoise\n[x] 4 passed, 1 failed\r\n";
        assert_eq!(
            parse_summary(out),
            Some(Summary {
                passed: 4,
                failed: 1
            }),
            "the last one wins"
        );
        assert_eq!(parse_summary("no summary"), None, "none printed");
    }

    #[test]
    fn qemu_arguments_parse_into_options() {
        let a: Vec<String> = [
            "--arch", "s390x", "--smp", "2", "--broken", "no-iotlb", "--kernel", "a,b", "--",
            "flush",
        ]
        .map(String::from)
        .to_vec();
        let (arches, o) = parse_args(&a, Path::new(".")).expect("valid");
        assert_eq!(arches, [Arch::S390x], "one arch");
        assert_eq!(
            (
                o.smp,
                o.broken.as_deref(),
                o.kernels.len(),
                o.filter.as_deref()
            ),
            (2, Some("no-iotlb"), 2, Some("flush")),
            "every option lands"
        );
        let zero = ["--smp", "0"].map(String::from);
        assert!(parse_args(&zero, Path::new(".")).is_err(), "-smp 0 refused");
        let arch = ["--arch", "arm"].map(String::from);
        assert!(
            parse_args(&arch, Path::new(".")).is_err(),
            "unknown arch refused"
        );
    }
}
