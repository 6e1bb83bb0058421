//! `cargo xtask test`: the whole test matrix, one step after another.
//!
//! Owns the list of steps and their order, runs each whatever became of the
//! ones before, and ends with a single line `N passed, N failed` that counts
//! steps (the test cases each step ran, where cargo or a kernel reported
//! them, are shown beside it). A step that should run tests but ran none
//! fails. Steps are named and grouped so `--only GROUP|STEP` picks some.
//!
//! It does not install anything (that is `cargo xtask setup`) and does not
//! know how a kernel is booted (that is `qemu`).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::qemu::{self, QemuOpts, Summary};
use crate::{miri_cache_home, msrv, MIRI_TOOLCHAIN};

/// What `coreutils timeout` exits with when it stopped the command.
const TIMED_OUT: [i32; 2] = [124, 137];
/// Per-step limit under CI (`CI` set): a hang shows as that step failing
/// instead of CI's own deadline killing the whole run without a summary.
const CI_STEP_LIMIT: Duration = Duration::from_secs(15 * 60);
/// The loom model checker can explode combinatorially; it gets less.
const CI_LOOM_LIMIT: Duration = Duration::from_secs(8 * 60);
/// Each Miri step: together they must leave CI well under 20 minutes.
/// Tests too slow for it shrink themselves under `cfg(miri)`.
const CI_MIRI_LIMIT: Duration = Duration::from_secs(4 * 60);

/// Whether the last thing echoed from a command did not end its line (a
/// test killed in the middle of `test name ... `): the verdict then needs
/// a line of its own.
static LINE_OPEN: AtomicBool = AtomicBool::new(false);

/// Proptest cases per property under Miri (interpreted code is ~1000x
/// slower); forwarded into the interpreter with `-Zmiri-env-forward`.
const MIRI_PROPTEST_CASES: &str = "16";

/// The verdict of one step.
struct Outcome {
    ok: bool,
    /// Why it failed, or what it saw.
    note: String,
    /// Test cases it ran, when it could count them.
    tests: Option<Summary>,
}

impl Outcome {
    fn pass(note: impl Into<String>) -> Outcome {
        Outcome {
            ok: true,
            note: note.into(),
            tests: None,
        }
    }

    fn fail(note: impl Into<String>) -> Outcome {
        Outcome {
            ok: false,
            note: note.into(),
            tests: None,
        }
    }
}

type Run = Box<dyn Fn(&Path) -> Outcome>;

/// One step of the matrix.
struct Step {
    /// What `--only` selects a family of steps by.
    group: &'static str,
    /// What `--only` selects this step by; unique.
    name: &'static str,
    /// The command, as a human would type it.
    what: String,
    run: Run,
}

/// `cargo xtask test [--only NAME[,NAME]]... [--skip NAME[,NAME]]... [--list]`.
pub fn cmd(args: &[String], root: &Path) -> Result<bool, String> {
    let steps = steps();
    let mut only: Vec<String> = Vec::new();
    let mut skip: Vec<String> = Vec::new();
    let mut list = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let names = |v: Option<&String>| -> Result<Vec<String>, String> {
            let v = v.ok_or_else(|| format!("{a} needs a stage name"))?;
            Ok(v.split(',').map(str::to_string).collect())
        };
        match a.as_str() {
            "--only" => only.extend(names(it.next())?),
            "--skip" => skip.extend(names(it.next())?),
            "--list" => list = true,
            other => return Err(format!("unknown option {other}")),
        }
    }
    for n in only.iter().chain(&skip) {
        if !steps.iter().any(|s| s.group == n || s.name == n) {
            return Err(format!(
                "no stage or step named {n:?} (see `cargo xtask test --list`)"
            ));
        }
    }
    let picked = |s: &Step| {
        let named = |n: &String| s.group == n || s.name == n;
        (only.is_empty() || only.iter().any(named)) && !skip.iter().any(named)
    };
    let steps: Vec<Step> = steps.into_iter().filter(picked).collect();
    if list {
        for s in &steps {
            println!("{:<10} {:<28} {}", s.group, s.name, s.what);
        }
        return Ok(true);
    }
    if steps.is_empty() {
        return Err("--only/--skip left no step to run".into());
    }
    Ok(run_all(&steps, root))
}

/// Runs the steps in order; prints the table, then the closing line.
fn run_all(steps: &[Step], root: &Path) -> bool {
    let n = steps.len();
    let started = Instant::now();
    let mut results = Vec::with_capacity(n);
    for (i, step) in steps.iter().enumerate() {
        let tag = format!("[{}/{n}] {}", i + 1, step.name);
        println!("\n{tag}: {}", step.what);
        flush();
        let t = Instant::now();
        let mut out = (step.run)(root);
        if let Some(s) = out.tests {
            if out.ok && s.passed == 0 {
                out.ok = false;
                out.note = "ran no test".into();
            }
        }
        let secs = t.elapsed().as_secs_f64();
        if LINE_OPEN.swap(false, Ordering::Relaxed) {
            println!();
        }
        let verdict = if out.ok { "ok" } else { "FAILED" };
        let mut line = format!("{tag}: {verdict} in {secs:.1} s");
        if let Some(s) = out.tests {
            line.push_str(&format!(
                " ({} tests passed, {} failed)",
                s.passed, s.failed
            ));
        }
        if !out.note.is_empty() {
            line.push_str(&format!(": {}", out.note));
        }
        println!("{line}");
        results.push((step, out, secs));
    }

    println!("\n== cargo xtask test: {n} steps ==");
    let mut tests = Summary::default();
    let (mut passed, mut failed) = (0, 0);
    for (i, (step, out, secs)) in results.iter().enumerate() {
        let verdict = if out.ok { "ok" } else { "FAILED" };
        let count = out
            .tests
            .map(|s| format!("{}/{} tests", s.passed, s.passed + s.failed))
            .unwrap_or_default();
        let note = if out.ok { "" } else { out.note.as_str() };
        println!(
            "{:>3}  {:<10} {:<28} {:<6} {:>7.1} s  {:<14} {}",
            i + 1,
            step.group,
            step.name,
            verdict,
            secs,
            count,
            note
        );
        if let Some(s) = out.tests {
            tests.add(s);
        }
        if out.ok {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    println!(
        "test cases counted in the steps above: {} passed / {} failed",
        tests.passed, tests.failed
    );
    println!(
        "total: {:.1} s; the line below counts steps",
        started.elapsed().as_secs_f64()
    );
    println!("{passed} passed, {failed} failed");
    flush();
    failed == 0
}

fn flush() {
    let _ = std::io::stdout().flush();
}

// ---------------------------------------------------------------- the steps

/// A step that runs one cargo command; `count`: it runs tests, and must
/// run at least one.
fn cargo_step(group: &'static str, name: &'static str, c: Cargo, count: bool) -> Step {
    Step {
        group,
        name,
        what: c.display(),
        run: Box::new(move |root: &Path| {
            let ran = c.run(root);
            let mut out = ran.verdict();
            if count {
                out.tests = Some(ran.tests());
            }
            out
        }),
    }
}

/// A step that boots the kernels of `arch` in-process; with `broken`, a
/// negative check that passes only when the broken kernel is caught.
fn qemu_step(
    group: &'static str,
    name: &'static str,
    arch: &'static str,
    smp: u32,
    broken: Option<&'static str>,
) -> Step {
    let mut what = format!("cargo xtask qemu --arch {arch} --smp {smp}");
    if let Some(b) = broken {
        what.push_str(&format!(" --broken {b}  (must fail)"));
    }
    Step {
        group,
        name,
        what,
        run: Box::new(move |root: &Path| {
            let opts = QemuOpts {
                smp,
                kvm: false,
                filter: None,
                broken: broken.map(str::to_string),
                demo: false,
                defmt: false,
                root: root.to_path_buf(),
            };
            let result = match arch {
                "x86_64" => qemu::x86_64::run(&opts),
                _ => qemu::s390x::run(&opts),
            };
            match (broken, result) {
                (None, Ok(s)) => Outcome {
                    ok: s.failed == 0,
                    note: String::new(),
                    tests: Some(s),
                },
                (None, Err(e)) => Outcome::fail(e),
                // A broken kernel must build and boot and then be caught:
                // one that does not even build proves nothing.
                (Some(_), Ok(s)) if s.failed > 0 => {
                    Outcome::pass(format!("caught: {} passed, {} failed", s.passed, s.failed))
                }
                (Some(_), Ok(s)) => Outcome::fail(format!(
                    "NOT caught: the broken kernel passed all {} cases",
                    s.passed
                )),
                (Some(_), Err(e)) => Outcome::fail(format!(
                    "the broken kernel did not run, so proves nothing: {e}"
                )),
            }
        }),
    }
}

/// Every step, in the order they run.
fn steps() -> Vec<Step> {
    let deny = ["--", "-D", "warnings"];
    let clippy = |packages: &[&str], extra: &[&str]| {
        let mut c = Cargo::new(&["clippy"]);
        for p in packages {
            c = c.args(&["-p", p]);
        }
        c.args(extra).args(&deny)
    };
    let mut v = vec![
        cargo_step(
            "fmt",
            "fmt",
            Cargo::new(&["fmt", "--all", "--check"]),
            false,
        ),
        cargo_step(
            "clippy",
            "clippy-host",
            Cargo::new(&["clippy", "--workspace", "--all-targets"]).args(&deny),
            false,
        ),
        cargo_step(
            "clippy",
            "clippy-x86_64-unknown-none",
            clippy(
                &["mmu-notifier", "mmu-notifier-core", "mmu-notifier-x86"],
                &["--target", "x86_64-unknown-none"],
            ),
            false,
        ),
        cargo_step(
            "clippy",
            "clippy-s390x",
            clippy(
                &["mmu-notifier", "mmu-notifier-core", "mmu-notifier-s390"],
                &["--target", "s390x-unknown-linux-gnu"],
            ),
            false,
        ),
        cargo_step(
            "clippy",
            "clippy-no-default-features",
            clippy(&["mmu-notifier-core"], &["--no-default-features"]),
            false,
        ),
        cargo_step(
            "test",
            "test-host",
            Cargo::new(&["test", "--workspace"]),
            true,
        ),
        cargo_step(
            "test",
            "test-alloc",
            Cargo::new(&[
                "test",
                "-p",
                "mmu-notifier-core",
                "--features",
                "alloc",
                "--test",
                "shared",
            ]),
            true,
        ),
        cargo_step(
            "test",
            "test-no-default-features",
            Cargo::new(&["test", "-p", "mmu-notifier-core", "--no-default-features"]),
            true,
        ),
        cargo_step(
            "package",
            "package",
            Cargo::new(&[
                "package",
                "-p",
                "mmu-notifier-core",
                "-p",
                "mmu-notifier-x86",
                "-p",
                "mmu-notifier-s390",
                "-p",
                "mmu-notifier-emu",
                "-p",
                "mmu-notifier",
                "--allow-dirty",
            ])
            .env("CARGO_TARGET_DIR", "target/package"),
            false,
        ),
        cargo_step(
            "doc",
            "doc",
            Cargo::new(&["doc", "--workspace", "--no-deps"]).env("RUSTDOCFLAGS", "-Dwarnings"),
            false,
        ),
    ];

    let loom = Cargo::new(&[
        "test",
        "-p",
        "mmu-notifier-core",
        "--test",
        "loom",
        "--test",
        "loom_interval",
        "--release",
    ])
    .env("RUSTFLAGS", "--cfg loom")
    .env("CARGO_TARGET_DIR", "target/loom")
    .limit(CI_LOOM_LIMIT);
    v.push(Step {
        group: "loom",
        name: "loom",
        what: loom.display(),
        run: Box::new(move |root: &Path| {
            let file = "generic/tests/loom.rs";
            if !root.join(file).exists() {
                return Outcome::fail(format!(
                    "{file} does not exist (yet): no loom model to check"
                ));
            }
            let ran = loom.run(root);
            Outcome {
                tests: Some(ran.tests()),
                ..ran.verdict()
            }
        }),
    });

    let plus = format!("+{MIRI_TOOLCHAIN}");
    let miri = |target: Option<&str>| {
        // The library, the notifier list and the interval tree: the code
        // with unsafe in it. (`inside_callback` leaks its 'static fixtures
        // on purpose, which Miri reports; it has no unsafe of its own.)
        let mut c = Cargo::new(&[
            &plus,
            "miri",
            "test",
            "-p",
            "mmu-notifier-core",
            "--features",
            "alloc",
            "--lib",
            "--test",
            "notifier",
            "--test",
            "interval",
            "--test",
            "shared",
        ]);
        if let Some(t) = target {
            c = c.args(&["--target", t]);
        }
        let flags = format!(
            "{} -Zmiri-env-forward=PROPTEST_CASES -Zmiri-env-forward=PROPTEST_DISABLE_FAILURE_PERSISTENCE",
            std::env::var("MIRIFLAGS").unwrap_or_default()
        );
        let cache = miri_cache_home();
        // A target directory of its own (cargo-miri adds `/miri`): another
        // nightly's `cargo miri` has the same rustc commit but another
        // sysroot, and cargo would reuse crates built against that one.
        c.env("MIRIFLAGS", flags.trim())
            .env("XDG_CACHE_HOME", &cache.to_string_lossy())
            .env("CARGO_TARGET_DIR", "target/miri-pinned")
            .limit(CI_MIRI_LIMIT)
            .env("PROPTEST_CASES", MIRI_PROPTEST_CASES)
            .env("PROPTEST_DISABLE_FAILURE_PERSISTENCE", "1")
    };
    v.push(cargo_step("miri", "miri-host", miri(None), true));
    // Big-endian: s390x page-table words and flag layouts.
    v.push(cargo_step(
        "miri",
        "miri-s390x",
        miri(Some("s390x-unknown-linux-gnu")),
        true,
    ));

    v.push(qemu_step("qemu", "qemu-x86_64", "x86_64", 1, None));
    v.push(qemu_step("qemu", "qemu-x86_64-smp2", "x86_64", 2, None));
    v.push(qemu_step("qemu", "qemu-x86_64-smp4", "x86_64", 4, None));
    v.push(qemu_step("qemu", "qemu-s390x", "s390x", 1, None));
    v.push(qemu_step("qemu", "qemu-s390x-smp2", "s390x", 2, None));
    v.push(qemu_step("qemu", "qemu-s390x-smp4", "s390x", 4, None));

    for (name, variant, package, test) in [
        (
            "broken-host-no-flush",
            "no-flush",
            "mmu-notifier",
            "conformance",
        ),
        (
            "broken-host-no-notify",
            "no-notify",
            "mmu-notifier",
            "conformance",
        ),
        (
            "broken-host-no-grace",
            "no-grace",
            "mmu-notifier-core",
            "notifier",
        ),
    ] {
        let c = Cargo::new(&["test", "-p", package, "--test", test])
            .env(
                "RUSTFLAGS",
                &format!("--cfg mmu_notifier_broken=\"{variant}\""),
            )
            .env("CARGO_TARGET_DIR", &format!("target/broken/{variant}"));
        v.push(Step {
            group: "negative",
            name,
            what: format!("{}  (must fail)", c.display()),
            run: Box::new(move |root: &Path| negative_host(&c, root)),
        });
    }
    v.push(qemu_step(
        "negative",
        "broken-qemu-x86_64-no-flush",
        "x86_64",
        1,
        Some("no-flush"),
    ));
    v.push(qemu_step(
        "negative",
        "broken-qemu-x86_64-no-notify",
        "x86_64",
        1,
        Some("no-notify"),
    ));
    v.push(qemu_step(
        "negative",
        "broken-qemu-x86_64-no-shootdown",
        "x86_64",
        2,
        Some("no-shootdown"),
    ));
    v.push(qemu_step(
        "negative",
        "broken-qemu-x86_64-no-grace",
        "x86_64",
        2,
        Some("no-grace"),
    ));
    v.push(qemu_step(
        "negative",
        "broken-qemu-s390x-no-flush",
        "s390x",
        1,
        Some("no-flush"),
    ));
    v.push(qemu_step(
        "negative",
        "broken-qemu-s390x-no-notify",
        "s390x",
        1,
        Some("no-notify"),
    ));
    v.push(qemu_step(
        "negative",
        "broken-qemu-s390x-no-flush-smp2",
        "s390x",
        2,
        Some("no-flush"),
    ));
    v.push(qemu_step(
        "negative",
        "broken-qemu-s390x-no-grace",
        "s390x",
        2,
        Some("no-grace"),
    ));

    let version = msrv().unwrap_or_else(|| "1.85".into());
    let plus = format!("+{version}");
    v.push(cargo_step(
        "msrv",
        "msrv",
        Cargo::new(&[&plus, "check", "-p", "mmu-notifier-core"])
            .env("CARGO_TARGET_DIR", "target/msrv"),
        false,
    ));
    v
}

/// A broken host build passes its check when it compiles and its tests
/// then fail: a variant that does not compile proves nothing.
fn negative_host(c: &Cargo, root: &Path) -> Outcome {
    let build = c.clone().args(&["--no-run"]).run(root);
    if !build.succeeded() {
        return Outcome::fail(format!(
            "the broken variant does not build, so proves nothing ({})",
            build.describe()
        ));
    }
    let ran = c.run(root);
    let t = ran.tests();
    if ran.timed_out() {
        Outcome::fail(ran.describe())
    } else if ran.succeeded() {
        Outcome::fail(format!(
            "NOT caught: the broken build passed all {} tests",
            t.passed
        ))
    } else {
        Outcome::pass(format!("caught: {} passed, {} failed", t.passed, t.failed))
    }
}

// ------------------------------------------------------- running commands

/// A cargo command line with its environment.
#[derive(Clone)]
struct Cargo {
    args: Vec<String>,
    env: Vec<(String, String)>,
    limit: Duration,
}

impl Cargo {
    fn new(args: &[&str]) -> Cargo {
        Cargo {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            limit: CI_STEP_LIMIT,
        }
    }

    /// Appends `args`; options go before a `--` separator already there.
    fn args(mut self, args: &[&str]) -> Cargo {
        let at = match self.args.iter().position(|a| a == "--") {
            Some(sep) if args.first() != Some(&"--") => sep,
            _ => self.args.len(),
        };
        for (i, a) in args.iter().enumerate() {
            self.args.insert(at + i, a.to_string());
        }
        self
    }

    fn env(mut self, key: &str, value: &str) -> Cargo {
        self.env.push((key.into(), value.into()));
        self
    }

    fn limit(mut self, limit: Duration) -> Cargo {
        self.limit = limit;
        self
    }

    fn display(&self) -> String {
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
    fn run(&self, root: &Path) -> Ran {
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
struct Ran {
    status: Result<ExitStatus, String>,
    /// stdout, then stderr.
    output: String,
    limit: Option<Duration>,
}

impl Ran {
    fn succeeded(&self) -> bool {
        self.status.as_ref().is_ok_and(ExitStatus::success)
    }

    fn timed_out(&self) -> bool {
        self.limit.is_some()
            && self
                .status
                .as_ref()
                .is_ok_and(|s| s.code().is_some_and(|c| TIMED_OUT.contains(&c)))
    }

    fn describe(&self) -> String {
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

    fn verdict(&self) -> Outcome {
        if self.succeeded() {
            Outcome::pass("")
        } else {
            Outcome::fail(self.describe())
        }
    }

    /// Sums libtest's `test result: ok. N passed; M failed; ...` lines.
    fn tests(&self) -> Summary {
        let mut total = Summary::default();
        for line in self.output.lines() {
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
}

/// The first line worth quoting when a command failed: a compiler error,
/// a missing target, a file rustfmt would change.
fn first_error(output: &str) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ran(output: &str) -> Ran {
        Ran {
            status: Err(String::new()),
            output: output.into(),
            limit: None,
        }
    }

    #[test]
    fn libtest_result_lines_are_summed() {
        let out = "running 3 tests\n\
                   test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s\n\
                   test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n";
        let s = ran(out).tests();
        assert_eq!((s.passed, s.failed), (5, 1));
    }

    #[test]
    fn no_result_line_counts_nothing() {
        let s = ran("error[E0432]: unresolved import\n").tests();
        assert_eq!((s.passed, s.failed), (0, 0));
    }

    #[test]
    fn fmt_failures_name_the_files() {
        let out = "Diff in /r/a.rs:17:\n-x\nDiff in /r/a.rs:40:\nDiff in /r/b.rs:3:\n";
        assert_eq!(
            first_error(out).unwrap(),
            "rustfmt would change /r/a.rs, /r/b.rs"
        );
    }

    #[test]
    fn extra_args_go_before_the_separator() {
        let c = Cargo::new(&["clippy"])
            .args(&["--", "-D", "warnings"])
            .args(&["--no-run"]);
        assert_eq!(c.args, ["clippy", "--no-run", "--", "-D", "warnings"]);
    }

    #[test]
    fn every_step_name_is_unique() {
        let steps = steps();
        for (i, s) in steps.iter().enumerate() {
            assert!(
                steps[i + 1..].iter().all(|t| t.name != s.name),
                "{} twice",
                s.name
            );
            assert!(
                steps.iter().all(|t| t.group != s.name || t.name == s.name),
                "step {} shadows a group",
                s.name
            );
        }
    }
}
