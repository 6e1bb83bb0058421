//! The verdict on a deliberately broken build. It passes only when the
//! broken build compiles (or boots) and its tests then fail: a variant that
//! does not even build proves nothing, and a build failure is never
//! counted as caught. A test binary that crashed after it compiled is
//! caught too, and the note says so, with the signal or status.

use super::Outcome;
use crate::process::{BinaryExit, Ran};
use crate::qemu::Report;

/// A host build: `build` is its `--no-run` build, `run` the test run (none
/// when the build failed).
pub fn host_verdict(build: &Ran, run: Option<&Ran>) -> Outcome {
    let not_built = |r: &Ran| {
        Outcome::fail(format!(
            "the broken variant does not build, so proves nothing ({})",
            r.describe()
        ))
    };
    let run = match run {
        Some(run) if build.succeeded() => run,
        _ => return not_built(build),
    };
    if run.timed_out() || run.status.is_err() {
        return Outcome::fail(run.describe());
    }
    if run.compile_failed() {
        return not_built(run);
    }
    let t = run.tests();
    if run.succeeded() {
        return Outcome::fail(format!(
            "NOT caught: the broken build passed all {} tests",
            t.passed
        ));
    }
    if t.failed > 0 {
        return Outcome::pass(format!("caught: {} passed, {} failed", t.passed, t.failed));
    }
    // It failed, but no test did: either the test binary died before its
    // summary (caught, and said so), or cargo failed for a reason of its
    // own (not caught: nothing shows the tests saw the bug).
    match run.binary_exit() {
        Some(exit) => {
            let how = match &exit {
                BinaryExit::Signal(..) => format!("test binary crashed ({exit})"),
                BinaryExit::Status(_) => format!("test binary exited with {exit}"),
            };
            let (ok, failed) = reported(&run.output);
            let by_then = match (ok, failed) {
                (0, 0) => String::new(),
                (ok, 0) => format!(", after {ok} tests passed"),
                (ok, failed) => format!("; by then {failed} tests had failed and {ok} passed"),
            };
            Outcome::pass(format!("caught: {how} before its summary{by_then}"))
        }
        None => Outcome::fail(format!(
            "cargo failed, but no test failed and no test binary crashed: {}",
            run.describe()
        )),
    }
}

/// Tests libtest reported one by one: (`test NAME ... ok`, `... FAILED`).
fn reported(output: &str) -> (usize, usize) {
    let tests = output.lines().filter(|l| l.starts_with("test "));
    tests.fold((0, 0), |(ok, failed), l| match l.trim_end() {
        l if l.ends_with(" ... ok") => (ok + 1, failed),
        l if l.ends_with(" ... FAILED") => (ok, failed + 1),
        _ => (ok, failed),
    })
}

/// A QEMU run of broken kernels: caught when some kernel failed, with the
/// kernels' own reasons in the note (failed cases, a hang, a crash).
pub fn qemu_verdict(result: Result<Report, String>) -> Outcome {
    match result {
        Ok(r) if r.summary.failed > 0 => Outcome::pass(format!(
            "caught: {} passed, {} failed ({})",
            r.summary.passed,
            r.summary.failed,
            r.failures.join("; ")
        )),
        Ok(r) => Outcome::fail(format!(
            "NOT caught: the broken kernels passed all {} cases",
            r.summary.passed
        )),
        Err(e) => Outcome::fail(format!(
            "the broken kernel did not run, so proves nothing: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::Summary;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    fn ran(code: i32, output: &str) -> Ran {
        Ran {
            status: Ok(ExitStatus::from_raw(code << 8)),
            output: output.into(),
            limit: None,
        }
    }

    const BUILT: &str =
        "    Finished `test` profile\n  Executable tests/notifier.rs (t/notifier-1)\n";
    const SEGV: &str = "running 14 tests\ntest a ... ok\ntest b ... FAILED\ntest c ... ok\n\
        error: test failed, to rerun pass `-p mmu-notifier-core --test notifier`\n\nCaused by:\n  \
        process didn't exit successfully: `t/notifier-1` (signal: 11, SIGSEGV: invalid memory reference)\n";

    #[test]
    fn a_build_failure_is_never_caught() {
        let build = ran(
            101,
            "error[E0425]: cannot find value `x`\nerror: could not compile `mmu-notifier-core`\n",
        );
        let out = host_verdict(&build, None);
        assert!(!out.ok, "a variant that does not build proves nothing");
        assert!(
            out.note.contains("does not build"),
            "and says so: {}",
            out.note
        );
        // Even if a test run were somehow reported, a failed build decides.
        assert!(
            !host_verdict(&build, Some(&ran(101, SEGV))).ok,
            "a crash after a failed build is not caught either"
        );
        let rebuilt = ran(101, "error: could not compile `mmu-notifier-core`\n");
        assert!(
            !host_verdict(&ran(0, BUILT), Some(&rebuilt)).ok,
            "a compile error in the test run is a build failure, not a catch"
        );
    }

    #[test]
    fn failing_tests_are_caught_with_their_counts() {
        let out = host_verdict(
            &ran(0, BUILT),
            Some(&ran(
                101,
                "test result: FAILED. 10 passed; 2 failed; 0 ignored\n",
            )),
        );
        assert!(out.ok, "failed tests catch the bug");
        assert_eq!(out.note, "caught: 10 passed, 2 failed", "with the counts");
    }

    #[test]
    fn a_crashed_test_binary_is_caught_and_the_note_says_it_crashed() {
        let out = host_verdict(&ran(0, BUILT), Some(&ran(101, SEGV)));
        assert!(out.ok, "a crash after compiling counts as caught");
        assert_eq!(
            out.note,
            "caught: test binary crashed (signal 11, SIGSEGV: invalid memory reference) before its summary; \
             by then 1 tests had failed and 2 passed",
            "the note names the crash, not `0 passed, 0 failed`"
        );
    }

    #[test]
    fn a_passing_broken_build_is_not_caught() {
        let out = host_verdict(
            &ran(0, BUILT),
            Some(&ran(0, "test result: ok. 14 passed; 0 failed\n")),
        );
        assert!(!out.ok, "the tests missed the bug");
        assert!(out.note.starts_with("NOT caught"), "{}", out.note);
    }

    #[test]
    fn cargo_failing_without_a_test_failure_is_not_caught() {
        let out = host_verdict(
            &ran(0, BUILT),
            Some(&ran(101, "error: no test target named `notifer`\n")),
        );
        assert!(!out.ok, "nothing shows a test saw the bug");
    }

    #[test]
    fn qemu_failures_are_caught_with_the_kernels_reasons() {
        let r = Report {
            summary: Summary {
                passed: 20,
                failed: 1,
            },
            failures: vec!["x86_64/smp: timed out after 150 s".into()],
        };
        let out = qemu_verdict(Ok(r));
        assert!(out.ok, "a failing kernel catches it");
        assert_eq!(
            out.note, "caught: 20 passed, 1 failed (x86_64/smp: timed out after 150 s)",
            "the note says how"
        );
        assert!(
            !qemu_verdict(Err("building the kernels failed".into())).ok,
            "a kernel that does not build is not caught"
        );
    }
}
