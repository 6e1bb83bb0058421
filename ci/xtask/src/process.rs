//! Running cargo commands for the test matrix: a command line with its
//! environment and time limit ([`Cargo`]), and what it did ([`Ran`]): its
//! status, its output (echoed as it came and kept), the libtest counts in
//! it, the first error worth quoting and how a test binary ended.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use crate::package::{dash_p, Package};
use crate::qemu::Summary;

/// What `coreutils timeout` exits with when it stopped the command.
const TIMED_OUT: [i32; 2] = [124, 137];
/// Per-step limit under CI (`CI` set): a hang shows as that step failing
/// instead of CI's own deadline killing the whole run without a summary.
pub const CI_STEP_LIMIT: Duration = Duration::from_secs(15 * 60);

/// Whether the last thing echoed from a command did not end its line (a
/// test killed in the middle of `test name ... `): the verdict then needs
/// a line of its own.
static LINE_OPEN: AtomicBool = AtomicBool::new(false);

/// Whether the last echoed output left a line open; clears the flag.
pub fn take_open_line() -> bool {
    LINE_OPEN.swap(false, Ordering::Relaxed)
}

/// A cargo command line with its environment.
#[derive(Debug, Clone)]
pub struct Cargo {
    args: Vec<String>,
    env: Vec<(String, String)>,
    limit: Duration,
}

impl Cargo {
    /// `cargo ARGS`.
    pub fn new(args: &[&str]) -> Cargo {
        Cargo {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            limit: CI_STEP_LIMIT,
        }
    }

    /// `cargo +TOOLCHAIN ARGS`.
    pub fn on(toolchain: &str, args: &[&str]) -> Cargo {
        Cargo::new(&[&format!("+{toolchain}")]).args(args)
    }

    /// Appends `args`; options go before a `--` separator already there.
    pub fn args(mut self, args: &[&str]) -> Cargo {
        let at = match self.args.iter().position(|a| a == "--") {
            Some(sep) if args.first() != Some(&"--") => sep,
            _ => self.args.len(),
        };
        for (i, a) in args.iter().enumerate() {
            self.args.insert(at + i, a.to_string());
        }
        self
    }

    /// Appends `-p NAME` per package.
    pub fn packages(self, packages: &[Package]) -> Cargo {
        self.args(&dash_p(packages))
    }

    /// Sets an environment variable for the command.
    pub fn env(mut self, key: &str, value: &str) -> Cargo {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The limit under CI (default [`CI_STEP_LIMIT`]).
    pub fn limit(mut self, limit: Duration) -> Cargo {
        self.limit = limit;
        self
    }

    /// The command as a human would type it.
    pub fn display(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.env {
            if v.contains(' ') || v.contains('"') {
                s.push_str(&format!("{k}='{v}' "));
            } else {
                s.push_str(&format!("{k}={v} "));
            }
        }
        s.push_str("cargo ");
        s.push_str(&self.args.join(" "));
        s
    }

    /// Runs it from `root`, echoing its output and keeping a copy.
    pub fn run(&self, root: &Path) -> Ran {
        // Under CI a hung step is stopped by coreutils' `timeout`, which
        // kills the whole process group (cargo and the test binary it runs).
        // Not locally: there the group would not get the terminal's Ctrl-C.
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
        let mut cmd = if ci {
            let mut c = Command::new("timeout");
            c.arg("--kill-after=10")
                .arg(self.limit.as_secs().to_string())
                .arg("cargo");
            c
        } else {
            Command::new("cargo")
        };
        cmd.args(&self.args).current_dir(root);
        if self.args.first().is_some_and(|a| a.starts_with('+')) {
            // `cargo run` told us which toolchain it is; another one asked
            // for with `+` must not inherit that (cargo-miri would call our
            // cargo through $CARGO).
            cmd.env_remove("RUSTUP_TOOLCHAIN").env_remove("CARGO");
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let (status, output) = tee(cmd);
        Ran {
            status,
            output,
            limit: if ci { Some(self.limit) } else { None },
        }
    }
}

/// What a command did.
#[derive(Debug)]
pub struct Ran {
    /// Its exit status, or why it could not run.
    pub status: Result<ExitStatus, String>,
    /// stdout, then stderr.
    pub output: String,
    /// The limit it ran under (under CI only).
    pub limit: Option<Duration>,
}

/// How a test binary that cargo ran ended, when it did not succeed: what
/// cargo says after `process didn't exit successfully`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinaryExit {
    /// Killed by a signal: its number and cargo's description
    /// (`SIGSEGV: invalid memory reference`).
    Signal(i32, String),
    /// Exited with this status.
    Status(i32),
}

impl std::fmt::Display for BinaryExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BinaryExit::Signal(n, what) if what.is_empty() => write!(f, "signal {n}"),
            BinaryExit::Signal(n, what) => write!(f, "signal {n}, {what}"),
            BinaryExit::Status(c) => write!(f, "exit status {c}"),
        }
    }
}

impl Ran {
    /// Whether it ran and exited 0.
    pub fn succeeded(&self) -> bool {
        self.status.as_ref().is_ok_and(ExitStatus::success)
    }

    /// Whether CI's `timeout` stopped it.
    pub fn timed_out(&self) -> bool {
        self.limit.is_some()
            && self
                .status
                .as_ref()
                .is_ok_and(|s| s.code().is_some_and(|c| TIMED_OUT.contains(&c)))
    }

    /// Why it failed, in a line.
    pub fn describe(&self) -> String {
        match &self.status {
            Err(e) => e.clone(),
            Ok(_) if self.timed_out() => format!(
                "timed out after {} s",
                self.limit.unwrap_or_default().as_secs()
            ),
            Ok(s) => match first_error(&self.output) {
                Some(e) => format!("{s}; {e}"),
                None => s.to_string(),
            },
        }
    }

    /// Sums libtest's `test result: ok. N passed; M failed; ...` lines.
    pub fn tests(&self) -> Summary {
        libtest_counts(&self.output)
    }

    /// How the test binary ended, if cargo reported that it failed.
    pub fn binary_exit(&self) -> Option<BinaryExit> {
        binary_exit(&self.output)
    }

    /// Whether cargo reported a compile error.
    pub fn compile_failed(&self) -> bool {
        self.output
            .lines()
            .any(|l| l.starts_with("error: could not compile") || l.starts_with("error[E"))
    }
}

/// Sums libtest's `test result:` lines.
pub fn libtest_counts(output: &str) -> Summary {
    let mut total = Summary::default();
    for line in output.lines() {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            continue;
        };
        let count = |word: &str| -> u32 {
            rest.split(';')
                .find_map(|part| {
                    part.trim()
                        .strip_suffix(word)?
                        .rsplit(' ')
                        .next()?
                        .parse()
                        .ok()
                })
                .unwrap_or(0)
        };
        // "ok. 3 passed" / "FAILED. 2 passed": the number is after the dot.
        total.passed += count(" passed");
        total.failed += count(" failed");
    }
    total
}

/// Cargo's account of a test binary that failed:
/// ``process didn't exit successfully: `...` (signal: 11, SIGSEGV: invalid
/// memory reference)`` or ``(exit status: 101)``.
pub fn binary_exit(output: &str) -> Option<BinaryExit> {
    let line = output
        .lines()
        .find(|l| l.contains("process didn't exit successfully"))?;
    let (_, tail) = line.rsplit_once('(')?;
    let tail = tail.trim_end().strip_suffix(')')?;
    if let Some(sig) = tail.strip_prefix("signal: ") {
        let (n, what) = sig.split_once(',').unwrap_or((sig, ""));
        return Some(BinaryExit::Signal(
            n.trim().parse().ok()?,
            what.trim().to_string(),
        ));
    }
    let code = tail.strip_prefix("exit status: ")?.trim().parse().ok()?;
    Some(BinaryExit::Status(code))
}

/// The first line worth quoting when a command failed: a compiler error,
/// a missing target, a file rustfmt would change.
pub fn first_error(output: &str) -> Option<String> {
    let mut fmt_files: Vec<&str> = Vec::new();
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix("Diff in ") {
            let file = rest.rsplit_once(':').map_or(rest, |(f, _)| f);
            let file = file.rsplit_once(':').map_or(file, |(f, _)| f);
            if !fmt_files.contains(&file) {
                fmt_files.push(file);
            }
        }
    }
    if !fmt_files.is_empty() {
        return Some(format!("rustfmt would change {}", fmt_files.join(", ")));
    }
    output
        .lines()
        .find(|l| l.starts_with("error") && !l.starts_with("error: could not compile"))
        .or_else(|| output.lines().find(|l| l.starts_with("error")))
        .map(|l| l.chars().take(200).collect())
}

/// Runs `cmd` without stdin, echoing stdout and stderr as they come and
/// returning both (stdout first).
fn tee(mut cmd: Command) -> (Result<ExitStatus, String>, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (Err(format!("cannot run {cmd:?}: {e}")), String::new()),
    };
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let out = thread::spawn(move || echo(out, false));
    let err = thread::spawn(move || echo(err, true));
    let status = child.wait().map_err(|e| format!("waiting for cargo: {e}"));
    let mut text = out.join().unwrap_or_default();
    text.push_str(&err.join().unwrap_or_default());
    (status, text)
}

fn echo(pipe: impl Read, to_stderr: bool) -> String {
    let mut all = String::new();
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                if to_stderr {
                    eprint!("{line}");
                } else {
                    print!("{line}");
                }
                all.push_str(&line);
                LINE_OPEN.store(!line.ends_with('\n'), Ordering::Relaxed);
            }
        }
    }
    all
}

/// Flushes stdout (progress lines before a long step).
pub fn flush() {
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_result_lines_are_summed() {
        let out = "running 3 tests\n\
                   test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s\n\
                   test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n";
        let s = libtest_counts(out);
        assert_eq!((s.passed, s.failed), (5, 1), "both lines are counted");
    }

    #[test]
    fn no_result_line_counts_nothing() {
        let s = libtest_counts("error[E0432]: unresolved import\n");
        assert_eq!((s.passed, s.failed), (0, 0), "nothing ran, nothing counted");
    }

    #[test]
    fn fmt_failures_name_the_files() {
        let out = "Diff in /r/a.rs:17:\n-x\nDiff in /r/a.rs:40:\nDiff in /r/b.rs:3:\n";
        assert_eq!(
            first_error(out).unwrap(),
            "rustfmt would change /r/a.rs, /r/b.rs",
            "each file once"
        );
    }

    #[test]
    fn extra_args_go_before_the_separator() {
        let c = Cargo::new(&["clippy"])
            .args(&["--", "-D", "warnings"])
            .args(&["--no-run"]);
        assert_eq!(
            c.args,
            ["clippy", "--no-run", "--", "-D", "warnings"],
            "options stay cargo's, not the tool's"
        );
    }

    #[test]
    fn a_crashed_test_binary_is_recognised_with_its_signal() {
        let out = "running 12 tests\n\
            error: test failed, to rerun pass `-p mmu-notifier-core --test notifier`\n\n\
            Caused by:\n  process didn't exit successfully: `/t/debug/deps/notifier-1234` (signal: 11, SIGSEGV: invalid memory reference)\n";
        assert_eq!(
            binary_exit(out),
            Some(BinaryExit::Signal(
                11,
                "SIGSEGV: invalid memory reference".into()
            )),
            "the signal cargo reports"
        );
        assert_eq!(
            binary_exit(out).unwrap().to_string(),
            "signal 11, SIGSEGV: invalid memory reference",
            "the note names the signal"
        );
    }

    #[test]
    fn a_failed_test_binary_gives_its_exit_status() {
        let out = "test result: FAILED. 3 passed; 1 failed; 0 ignored\n\
            error: test failed, to rerun pass `--test conformance`\n\nCaused by:\n  \
            process didn't exit successfully: `/t/conformance-ab (x)` (exit status: 101)\n";
        assert_eq!(
            binary_exit(out),
            Some(BinaryExit::Status(101)),
            "the status in the last parenthesis"
        );
        assert_eq!(binary_exit("test result: ok."), None, "nothing failed");
    }
}
