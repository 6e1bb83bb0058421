//! `cargo xtask test`: the whole test matrix, one step after another.
//!
//! Owns the order of the stages and runs each step whatever became of the
//! ones before, then ends with a single line `N passed, N failed` that
//! counts steps (the test cases each step ran, where cargo or a kernel
//! reported them, are shown beside it). A step that should run tests but
//! ran none fails. Steps are named and grouped by stage so
//! `--only STAGE|STEP` picks some.
//!
//! The steps themselves, one function per stage, are in [`steps`]; the
//! verdicts of the deliberately broken builds in [`negative`]. It does not
//! install anything (that is `cargo xtask setup`) and does not know how a
//! kernel is booted (that is `qemu`).

mod negative;
mod steps;

use std::path::Path;
use std::time::Instant;

use crate::process::{flush, take_open_line};
use crate::qemu::Summary;

/// The stages, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `cargo fmt --check`.
    Fmt,
    /// clippy on the host, each kernel target and without default features.
    Clippy,
    /// `cargo test`.
    Test,
    /// `cargo package` of the published crates.
    Package,
    /// rustdoc with warnings denied.
    Doc,
    /// The loom models.
    Loom,
    /// Miri, on the host and big-endian s390x.
    Miri,
    /// The QEMU kernels.
    Qemu,
    /// Deliberately broken builds that must fail.
    Negative,
    /// The MSRV toolchain.
    Msrv,
}

impl Stage {
    /// What `--only` selects it by.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Fmt => "fmt",
            Stage::Clippy => "clippy",
            Stage::Test => "test",
            Stage::Package => "package",
            Stage::Doc => "doc",
            Stage::Loom => "loom",
            Stage::Miri => "miri",
            Stage::Qemu => "qemu",
            Stage::Negative => "negative",
            Stage::Msrv => "msrv",
        }
    }
}

/// The verdict of one step.
#[derive(Debug)]
pub struct Outcome {
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
pub struct Step {
    /// Its stage, which `--only` also selects it by.
    stage: Stage,
    /// What `--only` selects this step by; unique.
    name: String,
    /// The command, as a human would type it.
    what: String,
    run: Run,
}

/// `cargo xtask test [--only NAME[,NAME]]... [--skip NAME[,NAME]]... [--list]`.
///
/// # Errors
/// A bad option: the caller prints the usage.
pub fn cmd(args: &[String], root: &Path) -> Result<bool, String> {
    let steps = steps::all();
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
        if !steps.iter().any(|s| s.stage.name() == n || s.name == *n) {
            return Err(format!(
                "no stage or step named {n:?} (see `cargo xtask test --list`)"
            ));
        }
    }
    let picked = |s: &Step| {
        let named = |n: &String| s.stage.name() == n || s.name == *n;
        (only.is_empty() || only.iter().any(named)) && !skip.iter().any(named)
    };
    let steps: Vec<Step> = steps.into_iter().filter(picked).collect();
    if list {
        for s in &steps {
            println!("{:<10} {:<32} {}", s.stage.name(), s.name, s.what);
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
        if take_open_line() {
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
        // A negative step's note says how it was caught: worth a look even
        // when it passed.
        let note = if out.ok && step.stage != Stage::Negative {
            ""
        } else {
            out.note.as_str()
        };
        println!(
            "{:>3}  {:<10} {:<32} {:<6} {:>7.1} s  {:<14} {}",
            i + 1,
            step.stage.name(),
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
