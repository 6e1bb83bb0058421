//! Builds and boots the s390x test kernels.
//!
//! The kernels live in `targets/s390x`, a cargo workspace of its own that
//! builds for `s390x-unknown-linux-gnu` (its `.cargo/config.toml`). Each is
//! booted with `-kernel` on QEMU's `s390-ccw-virtio` machine under TCG and
//! judged on two things, because neither is enough alone: QEMU's exit
//! status (0 only for the kernel's "special wait" PSW; a failing wait is a
//! guest panic, status 1 thanks to `-action panic=exit-failure`) and the
//! kernel's last line `N passed, M failed`.
//!
//! The filter reaches the kernel as `-append filter=...` (the kernel's
//! entry at 0x10000 makes QEMU copy the command line to 0x10480), and with
//! `--smp N` (N > 1) the CPU count as `smp=N` next to it.
//!
//! With `--smp N` (N > 1) the `smp` kernel boots too, after the others: it
//! brings the secondary CPUs up with SIGP and runs the concurrency cases
//! (global IPTE seen by the other CPUs, invalidations racing a faulting
//! secondary MMU, registration racing invalidation, teardown racing
//! everything). With one CPU it has nothing to test and is not booted.
//!
//! `--broken no-flush|no-notify|no-grace` builds the kernels with
//! `--cfg mmu_notifier_broken="<variant>"` added to the rustflags of
//! `targets/s390x/.cargo/config.toml` (cargo appends a `--config` array to
//! the file's, so the static relocation model and `panic=abort` stay), into
//! a target directory of its own, so the normal build stays fresh. The core
//! reacts to `no-notify` (no notifier step) and `no-grace` (SRCU
//! `synchronize` returns at once, so `unregister` and `release` no longer
//! wait for running callbacks: only the `smp` kernel can see that), the
//! s390 arch crate to `no-flush` (a plain store of the invalid bit instead
//! of IPTE, so QEMU's TLB keeps the stale translation). Such a run must
//! fail; this runner only reports, the test pipeline inverts the verdict.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{QemuOpts, Summary};

const TARGET: &str = "s390x-unknown-linux-gnu";
/// Wall-clock limit per kernel (boot to exit takes well under a second;
/// the `smp` kernel a few seconds at `-smp 4`).
const TIMEOUT_SECS: u32 = 60;
/// What `timeout(1)` returns when the limit was hit.
const TIMEOUT_STATUS: i32 = 124;

/// What a kernel binary is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Run by `cargo xtask qemu`.
    Test,
    /// Run by `cargo xtask qemu --smp N` with N > 1, after the test kernels.
    Smp,
    /// Run instead of the tests by `cargo xtask qemu --demo`.
    Demo,
}

/// The kernels, by binary name (`targets/s390x/src/bin/<name>.rs`). Adding
/// one is one line here.
const KERNELS: &[(&str, Role)] = &[
    ("selftest", Role::Test),
    ("conformance", Role::Test),
    ("demo", Role::Demo),
    ("smp", Role::Smp),
];

/// `--broken` values: each builds the kernels with
/// `--cfg mmu_notifier_broken="<value>"`.
const BROKEN_VARIANTS: &[&str] = &["no-flush", "no-notify", "no-grace"];

/// Builds the s390x kernels and boots each one under QEMU.
///
/// A kernel that crashes, hangs, exits non-zero or prints no summary
/// counts as one failure (with its printed cases); `Err` is for problems
/// before any kernel ran (build, missing tools, bad options).
pub fn run(opts: &QemuOpts) -> Result<Summary, String> {
    let wanted = |r: Role| match r {
        Role::Demo => opts.demo,
        Role::Test => !opts.demo,
        Role::Smp => !opts.demo && opts.smp > 1,
    };
    let kernels: Vec<&str> = KERNELS
        .iter()
        .filter(|(_, r)| wanted(*r))
        .map(|(name, _)| *name)
        .collect();
    if kernels.is_empty() {
        return Err(format!(
            "no s390x {} kernel yet",
            if opts.demo { "demo" } else { "test" }
        ));
    }
    if opts.kvm {
        eprintln!("xtask qemu s390x: --kvm ignored (TCG only on this host)");
    }
    let dir = opts.root.join("targets/s390x");
    let broken = match opts.broken.as_deref() {
        None => None,
        Some(b) if BROKEN_VARIANTS.contains(&b) => Some(b),
        Some(b) => {
            return Err(format!(
                "unknown --broken {b:?}: s390x knows {}",
                BROKEN_VARIANTS.join(", ")
            ))
        }
    };
    // Other rustflags, so another target directory: switching between the
    // normal and a broken build rebuilds neither.
    let target_dir = match broken {
        None => dir.join("target"),
        Some(b) => dir.join("target").join(format!("broken-{b}")),
    };
    build(&dir, &target_dir, &kernels, broken)?;

    let mut total = Summary::default();
    for name in kernels {
        total.add(boot(name, &elf_path(&target_dir, name), opts));
    }
    if let (Some(filter), 0, 0) = (&opts.filter, total.passed, total.failed) {
        eprintln!("s390x: no case of any kernel matches {filter:?}");
        total.failed = 1;
    }
    Ok(total)
}

/// `cargo build --release` of the selected kernels in their own workspace.
fn build(
    dir: &Path,
    target_dir: &Path,
    kernels: &[&str],
    broken: Option<&str>,
) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(dir)
        .args(["build", "--release"])
        .arg("--target-dir")
        .arg(target_dir);
    for k in kernels {
        cmd.args(["--bin", k]);
    }
    if let Some(variant) = broken {
        // Cargo joins array values given with `--config` to those of
        // targets/s390x/.cargo/config.toml (the file's first; checked with
        // `cargo build -v`), whereas the RUSTFLAGS variables would replace
        // them.
        cmd.arg("--config").arg(format!(
            "target.{TARGET}.rustflags = ['--cfg', 'mmu_notifier_broken=\"{variant}\"']"
        ));
    }
    // The kernels' flags come from targets/s390x/.cargo/config.toml; flags
    // or a target meant for the outer build would replace or break them,
    // and a foreign target dir would hide the ELF from us.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_S390X_UNKNOWN_LINUX_GNU_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("running cargo in {}: {e}", dir.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("building the s390x kernels failed ({status})"))
    }
}

/// Boots one kernel and judges it.
fn boot(name: &str, elf: &Path, opts: &QemuOpts) -> Summary {
    let prefix = format!("[s390x {name}]");
    let mut cmd = Command::new("timeout");
    cmd.args([
        "--kill-after=5",
        &TIMEOUT_SECS.to_string(),
        "qemu-system-s390x",
    ]);
    cmd.args(["-M", "s390-ccw-virtio", "-nodefaults", "-display", "none"]);
    // The SCLP ASCII console, where the kernel prints.
    cmd.args(["-serial", "stdio"]);
    // A failing disabled wait is a "guest panic": make that exit status 1.
    cmd.args(["-action", "panic=exit-failure"]);
    cmd.args(["-smp", &opts.smp.to_string(), "-m", "256M"]);
    cmd.arg("-kernel").arg(elf);
    // The kernel command line: whitespace-separated `key=value` words.
    let mut append = Vec::new();
    if opts.smp > 1 {
        append.push(format!("smp={}", opts.smp));
    }
    if let Some(f) = &opts.filter {
        append.push(format!("filter={f}"));
    }
    if !append.is_empty() {
        cmd.args(["-append", &append.join(" ")]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let fail = |why: String, mut s: Summary| {
        eprintln!("{prefix} FAILED: {why}");
        s.failed += 1;
        s
    };
    let start = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return fail(
                format!("cannot run timeout/qemu-system-s390x: {e}"),
                Summary::default(),
            )
        }
    };
    // QEMU's own messages (e.g. -d logs) on stderr, collected on the side.
    let mut stderr = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // Stream the console so a hang shows how far the kernel got.
    let mut output = String::new();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = match line {
            Ok(l) => l,
            Err(_) => break,
        };
        println!("{prefix} {}", line.trim_end_matches('\r'));
        output.push_str(&line);
        output.push('\n');
    }
    let status = child.wait();
    let elapsed = start.elapsed();
    for line in err_reader.join().unwrap_or_default().lines() {
        eprintln!("{prefix} qemu: {line}");
    }
    let status = match status {
        Ok(s) => s,
        Err(e) => return fail(format!("waiting for QEMU: {e}"), Summary::default()),
    };
    verdict(name, status.code(), &output, opts.filter.is_some(), elapsed)
        .unwrap_or_else(|(why, s)| fail(why, s))
}

/// Combines exit status and printed summary; `Err` carries the reason and
/// the cases counted so far.
fn verdict(
    name: &str,
    code: Option<i32>,
    output: &str,
    filtered: bool,
    elapsed: Duration,
) -> Result<Summary, (String, Summary)> {
    let summary = super::parse_summary(output);
    let counted = summary.unwrap_or_default();
    match code {
        Some(TIMEOUT_STATUS) => return Err((format!("timed out after {TIMEOUT_SECS} s"), counted)),
        None => return Err(("QEMU was killed by a signal".into(), counted)),
        _ => {}
    }
    let Some(s) = summary else {
        return Err((
            format!(
                "no `N passed, M failed` line (exit status {})",
                code.unwrap_or(-1)
            ),
            counted,
        ));
    };
    // The kernel exits with failure when nothing ran; with a filter that
    // only matches another kernel's cases, that is not an error.
    if filtered && s.passed == 0 && s.failed == 0 {
        println!("[s390x {name}] no case matches the filter: skipped");
        return Ok(s);
    }
    match code {
        Some(0) if s.failed == 0 && s.passed > 0 => {
            println!(
                "[s390x {name}] {} passed in {:.2} s",
                s.passed,
                elapsed.as_secs_f64()
            );
            Ok(s)
        }
        Some(0) => Err((
            format!(
                "exit status 0 but the summary says {} passed, {} failed",
                s.passed, s.failed
            ),
            s,
        )),
        // Failed cases are already counted; the status just agrees with them.
        Some(_) if s.failed > 0 => Ok(s),
        Some(c) => Err((
            format!(
                "exit status {c} although all {} cases passed (crash after the summary?)",
                s.passed
            ),
            s,
        )),
        None => unreachable!("handled above"),
    }
}

/// Where `cargo build --release --target-dir <target_dir>` leaves kernel
/// `name`.
fn elf_path(target_dir: &Path, name: &str) -> PathBuf {
    target_dir.join(TARGET).join("release").join(name)
}
