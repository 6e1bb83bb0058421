//! Running the benchmarks: building the binaries of `ci/bench` (with and
//! without the core's `notifier` feature, and the static `scaling`
//! binary), and running them under callgrind, as criterion benchmarks and
//! as the scaling measurement. Everything it reads back goes through
//! `parse`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mmu_notifier_bench_params::scaling::Report as ScalingReport;
use mmu_notifier_bench_params::{Hook, ZapWith, CHURN_READERS_ENV, ICOUNT_N1, ICOUNT_N2};

use super::parse;
use crate::package::Package;

/// The target of the static scaling binary.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-musl";

/// `target/bench`, created.
///
/// # Errors
/// It cannot be created.
pub fn out_dir(root: &Path) -> Result<PathBuf, String> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { root.join(t) })
        .unwrap_or_else(|| root.join("target"));
    let out = target.join("bench");
    std::fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    Ok(out)
}

/// A binary of the bench package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// `src/bin/icount.rs`, for callgrind.
    Icount,
    /// `benches/notifier.rs`, criterion.
    Criterion,
    /// `src/bin/scaling.rs`, figure 7.
    Scaling,
}

impl Binary {
    fn name(self) -> &'static str {
        match self {
            Binary::Icount => "icount",
            Binary::Criterion => "notifier",
            Binary::Scaling => "scaling",
        }
    }
}

/// The cargo command that builds `bin` (for `target`, default the host),
/// with or without the notifier feature, reporting artifacts as JSON.
pub fn build_command(bin: Binary, notifier: bool, target: Option<&str>) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    match bin {
        Binary::Criterion => cmd.args(["bench", "--no-run", "--bench", bin.name()]),
        _ => cmd.args(["build", "--release", "--bin", bin.name()]),
    };
    cmd.args(["-p", Package::Bench.name(), "--message-format=json"]);
    if !notifier {
        cmd.arg("--no-default-features");
    }
    if let Some(t) = target {
        cmd.args(["--target", t]);
    }
    cmd
}

/// Builds `bin` and copies it to `out` (the next build would overwrite
/// it); returns the copy.
///
/// # Errors
/// The build fails or cargo does not say where the binary is.
pub fn build(
    root: &Path,
    out: &Path,
    bin: Binary,
    notifier: bool,
    target: Option<&str>,
) -> Result<PathBuf, String> {
    let output = build_command(bin, notifier, target)
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running cargo: {e}"))?;
    let name = bin.name();
    if !output.status.success() {
        return Err(format!("building {name} failed"));
    }
    let exe = parse::artifact_executable(&String::from_utf8_lossy(&output.stdout), name)
        .ok_or_else(|| format!("cargo did not say where {name} is"))?;
    let copy = match (bin, target) {
        (Binary::Scaling, Some(_)) => out.join(format!("{name}-static")),
        (Binary::Scaling, None) => out.join(name),
        _ => out.join(format!("{name}-{}", if notifier { "on" } else { "off" })),
    };
    std::fs::copy(&exe, &copy).map_err(|e| format!("copying {exe}: {e}"))?;
    Ok(copy)
}

/// The valgrind command that counts `exe args`, writing to `file`, only
/// inside `toggle` if given.
pub fn callgrind_command(
    exe: &Path,
    args: &[String],
    toggle: Option<&str>,
    file: &Path,
) -> Command {
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", file.display()));
    if let Some(f) = toggle {
        cmd.arg(format!("--toggle-collect={f}"));
    }
    cmd.arg(exe).args(args).stdin(Stdio::null());
    cmd
}

/// Runs `exe args` under callgrind; returns the instructions it executed
/// (only inside `toggle` if given) and its stdout.
fn callgrind(
    out: &Path,
    exe: &Path,
    args: &[String],
    toggle: Option<&str>,
) -> Result<(u64, String), String> {
    let file = out.join("callgrind.out");
    let output = callgrind_command(exe, args, toggle, &file)
        .output()
        .map_err(|e| format!("running valgrind (is it installed?): {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{} {} under callgrind failed: {}",
            exe.display(),
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    let text =
        std::fs::read_to_string(&file).map_err(|e| format!("reading callgrind output: {e}"))?;
    let total = parse::callgrind_total(&text).ok_or("no totals in the callgrind output")?;
    Ok((total, String::from_utf8_lossy(&output.stdout).into_owned()))
}

/// Instructions per call of `hook` with `k` notifiers registered:
/// `(I(N2) - I(N1)) / (N2 - N1)`.
///
/// # Errors
/// valgrind fails.
pub fn per_call_insns(out: &Path, exe: &Path, hook: Hook, k: usize) -> Result<f64, String> {
    let run = |n: u64| {
        callgrind(
            out,
            exe,
            &[hook.op().into(), n.to_string(), k.to_string()],
            None,
        )
    };
    let (i1, _) = run(ICOUNT_N1)?;
    let (i2, _) = run(ICOUNT_N2)?;
    Ok((i2 as f64 - i1 as f64) / (ICOUNT_N2 - ICOUNT_N1) as f64)
}

/// One counted zap.
#[derive(Debug, Clone)]
pub struct ZapCount {
    /// Instructions inside `bench_zap_once`.
    pub insns: u64,
    /// What one notifier received, as `icount` reports it.
    pub calls: String,
}

/// Counts one zap of `pages` pages with `with` registered.
///
/// # Errors
/// valgrind fails.
pub fn zap_insns(out: &Path, exe: &Path, pages: usize, with: ZapWith) -> Result<ZapCount, String> {
    let (insns, stdout) = callgrind(
        out,
        exe,
        &["zap".into(), pages.to_string(), with.name().into()],
        Some("bench_zap_once"),
    )?;
    Ok(ZapCount {
        insns,
        calls: parse::icount_calls(&stdout),
    })
}

/// The command that runs the criterion binary on the benchmarks matching
/// `filter`, recording under `home`, with figure 3's reader counts.
pub fn criterion_command(exe: &Path, home: &Path, filter: &str, readers: &[usize]) -> Command {
    let mut cmd = Command::new(exe);
    let readers: Vec<String> = readers.iter().map(usize::to_string).collect();
    cmd.args(["--bench", filter])
        .env("CRITERION_HOME", home)
        .env(CHURN_READERS_ENV, readers.join(","))
        .stdin(Stdio::null());
    cmd
}

/// Runs the criterion binary, its output to `log`.
///
/// # Errors
/// It fails (see the log).
pub fn criterion(
    exe: &Path,
    home: &Path,
    filter: &str,
    readers: &[usize],
    log: &Path,
) -> Result<(), String> {
    let file =
        std::fs::File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| format!("log file: {e}"))?;
    let status = criterion_command(exe, home, filter, readers)
        .stdout(file)
        .stderr(err)
        .status()
        .map_err(|e| format!("running {}: {e}", exe.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {filter} failed ({status}); see {}",
            exe.display(),
            log.display()
        ))
    }
}

/// Builds the scaling binary: static for [`STATIC_TARGET`] where the host
/// is x86-64 and rustup can add that target, else for the host (said on
/// stderr). Returns the binary and whether it is the static one.
///
/// # Errors
/// The build fails.
pub fn build_scaling(root: &Path, out: &Path) -> Result<(PathBuf, bool), String> {
    if cfg!(all(target_arch = "x86_64", target_os = "linux")) {
        match ensure_rust_target(STATIC_TARGET) {
            Ok(()) => {
                return Ok((
                    build(root, out, Binary::Scaling, true, Some(STATIC_TARGET))?,
                    true,
                ))
            }
            Err(e) => {
                eprintln!("xtask bench: no static scaling binary ({e}); building for the host")
            }
        }
    }
    Ok((build(root, out, Binary::Scaling, true, None)?, false))
}

/// `rustup target add target` unless it is installed.
fn ensure_rust_target(target: &str) -> Result<(), String> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == target)
    {
        return Ok(());
    }
    eprintln!("xtask bench: rustup target add {target} (for the static scaling binary)");
    let status = Command::new("rustup")
        .args(["target", "add", target])
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`rustup target add {target}` failed ({status})"))
    }
}

/// The command that runs the scaling binary at `threads` (its default
/// when empty), writing its report to `json`.
pub fn scaling_command(exe: &Path, threads: &[usize], json: &Path) -> Command {
    let mut cmd = Command::new(exe);
    if !threads.is_empty() {
        let t: Vec<String> = threads.iter().map(usize::to_string).collect();
        cmd.args(["--threads", &t.join(",")]);
    }
    cmd.arg("--json").arg(json).stdin(Stdio::null());
    cmd
}

/// Runs the scaling binary (its table on our stdout) and reads its report.
///
/// # Errors
/// It fails, or its report does not read back.
pub fn scaling(exe: &Path, threads: &[usize], out: &Path) -> Result<ScalingReport, String> {
    let json = out.join("scaling.json");
    let status = scaling_command(exe, threads, &json)
        .status()
        .map_err(|e| format!("running {}: {e}", exe.display()))?;
    if !status.success() {
        return Err(format!("{} failed ({status})", exe.display()));
    }
    let text =
        std::fs::read_to_string(&json).map_err(|e| format!("reading {}: {e}", json.display()))?;
    parse::scaling_report(&text).map_err(|e| format!("{}: {e}", json.display()))
}

/// Whether `exe` has an out-of-line copy of `function` (`None`: `nm`
/// failed): the inlining decision behind a time that instructions counted
/// in another binary do not show.
pub fn has_function(exe: &Path, function: &str) -> Option<bool> {
    let out = Command::new("nm").arg("-C").arg(exe).output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.ends_with(&format!(" {function}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn bench_binaries_build_commands() {
        assert_eq!(
            args(&build_command(Binary::Icount, false, None)),
            [
                "build",
                "--release",
                "--bin",
                "icount",
                "-p",
                "mmu-notifier-bench",
                "--message-format=json",
                "--no-default-features",
            ],
            "icount, feature off"
        );
        assert_eq!(
            args(&build_command(Binary::Criterion, true, None)),
            [
                "bench",
                "--no-run",
                "--bench",
                "notifier",
                "-p",
                "mmu-notifier-bench",
                "--message-format=json",
            ],
            "the criterion binary, built not run"
        );
        assert_eq!(
            args(&build_command(Binary::Scaling, true, Some(STATIC_TARGET))),
            [
                "build",
                "--release",
                "--bin",
                "scaling",
                "-p",
                "mmu-notifier-bench",
                "--message-format=json",
                "--target",
                "x86_64-unknown-linux-musl",
            ],
            "the static scaling binary"
        );
    }

    #[test]
    fn callgrind_command_counts_only_the_toggled_function() {
        let c = callgrind_command(
            Path::new("b/icount-on"),
            &["zap".into(), "4096".into(), "range".into()],
            Some("bench_zap_once"),
            Path::new("o/callgrind.out"),
        );
        assert_eq!(c.get_program(), "valgrind", "valgrind runs it");
        assert_eq!(
            args(&c),
            [
                "--tool=callgrind",
                "--callgrind-out-file=o/callgrind.out",
                "--toggle-collect=bench_zap_once",
                "b/icount-on",
                "zap",
                "4096",
                "range",
            ],
            "tool, output, toggle, then the driver"
        );
    }

    #[test]
    fn criterion_command_passes_the_filter_home_and_readers() {
        let c = criterion_command(
            Path::new("b/notifier-on"),
            Path::new("h"),
            "^idle/",
            &[1, 15],
        );
        assert_eq!(args(&c), ["--bench", "^idle/"], "the filter");
        let env: Vec<(String, String)> = c
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_string_lossy().into(), v?.to_string_lossy().into())))
            .collect();
        assert!(
            env.contains(&("CRITERION_HOME".into(), "h".into()))
                && env.contains(&(CHURN_READERS_ENV.into(), "1,15".into())),
            "home and reader counts in the environment: {env:?}"
        );
    }

    #[test]
    fn scaling_command_lists_the_threads() {
        let c = scaling_command(Path::new("s"), &[1, 2, 4], Path::new("o/s.json"));
        assert_eq!(
            args(&c),
            ["--threads", "1,2,4", "--json", "o/s.json"],
            "threads as one list, then the report file"
        );
        let c = scaling_command(Path::new("s"), &[], Path::new("o/s.json"));
        assert_eq!(
            args(&c),
            ["--json", "o/s.json"],
            "the binary's default threads"
        );
    }
}
