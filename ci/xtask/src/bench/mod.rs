//! `cargo xtask bench`: the benchmark suite, and `BENCHMARKS.md` from it.
//!
//! Three parts: [`run`] builds the binaries of `ci/bench` and runs them
//! (callgrind, criterion, the scaling binary), [`parse`] reads what they
//! write, [`report`] renders the figures. This module only sequences them.
//! The parameters both sides must agree on (counts, sizes, benchmark ids,
//! the scaling report's format) come from `ci/bench-params`.
//!
//! A full run builds `mmu-notifier-bench` with the core's `notifier`
//! feature and without it, then in one session:
//! 1. counts instructions per call of the idle hooks with callgrind
//!    (deterministic: `(I(N2) - I(N1)) / (N2 - N1)`, so setup cancels);
//! 2. times them with criterion, alternating the two builds for a few
//!    rounds: the ratio is the median of the rounds' ratios, each taken
//!    between two runs side by side in time;
//! 3. times dispatch, registration churn, zaps and interval notifiers
//!    (criterion, two rounds, each benchmark's lower median kept);
//! 4. counts the instructions of one zap per size and notifier (callgrind);
//! 5. measures reader scaling with the static `scaling` binary;
//!
//! and writes `BENCHMARKS.md`: every figure as a ratio against its baseline
//! from this same run, next to its goal. No time is ever asserted.
//!
//! Owns nothing but `BENCHMARKS.md` and `target/bench/`.

mod machine;
mod parse;
pub mod report;
mod run;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use mmu_notifier_bench_params::{
    churn_readers, parse_counts, Hook, ZapWith, HOOK_COUNTS, ZAP_PAGES,
};

use machine::Machine;
use report::{LocalScaling, Results, IDLE_MAX_EXTRA_INSNS, IDLE_ROUNDS, MAIN_ROUNDS};
use run::Binary;

const USAGE: &str = "usage: cargo xtask bench [--threads N,N,...] [--readers N,N,...]\n\
    \x20      cargo xtask bench --check | --scaling [--threads N,N,...] | --scaling-from FILE\n\
    \n  (none)               the whole suite (about 6-9 minutes); rewrites BENCHMARKS.md\
    \n  --check              figure 1's instruction counts only; fails above +3 per call\
    \n  --scaling            figure 7 (reader scaling) only, printed; nothing is written\
    \n  --scaling-from FILE  figure 7 from another machine's `scaling --json FILE` report,\
    \n                       into BENCHMARKS.md (nothing is run)\
    \n  --threads LIST       figure 7's thread counts (default 1, 2, 4, ... up to nproc)\
    \n  --readers LIST       figure 3's reader counts (default 1 and nproc - 1)\n";

/// What `cargo xtask bench` was asked to do.
#[derive(Debug, Default, PartialEq, Eq)]
struct Opts {
    check: bool,
    scaling_only: bool,
    scaling_from: Option<String>,
    threads: Vec<usize>,
    readers: Vec<usize>,
}

fn parse_args(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--check" => o.check = true,
            "--scaling" => o.scaling_only = true,
            "--scaling-from" => o.scaling_from = Some(value()?.clone()),
            "--threads" => {
                o.threads = parse_counts(value()?).map_err(|e| format!("--threads: {e}"))?
            }
            "--readers" => {
                o.readers = parse_counts(value()?).map_err(|e| format!("--readers: {e}"))?
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    let modes =
        usize::from(o.check) + usize::from(o.scaling_only) + usize::from(o.scaling_from.is_some());
    if modes > 1 {
        return Err("--check, --scaling and --scaling-from go alone".into());
    }
    Ok(o)
}

/// `cargo xtask bench ARGS`.
pub fn cmd(args: &[String], root: &Path) -> ExitCode {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let o = match parse_args(args) {
        Ok(o) => o,
        Err(e) => {
            eprint!("xtask bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = if o.check {
        check_idle(root)
    } else if o.scaling_only {
        scaling_only(root, &o.threads)
    } else if let Some(file) = &o.scaling_from {
        scaling_from(root, file)
    } else {
        full(root, &o)
    };
    match result {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xtask bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn step(what: &str) {
    eprintln!("xtask bench: {what}");
}

/// Figure 1's instructions per call of each hook, on and off.
fn idle_icounts(out: &Path, on: &Path, off: &Path) -> Result<Vec<(Hook, f64, f64)>, String> {
    Hook::ALL
        .into_iter()
        .map(|h| {
            Ok((
                h,
                run::per_call_insns(out, on, h, 0)?,
                run::per_call_insns(out, off, h, 0)?,
            ))
        })
        .collect()
}

/// Figure 1's deterministic check: builds the `icount` driver with and
/// without the `notifier` feature and counts, under callgrind, the
/// instructions per call of `ptep_clear_flush` and `ptep_clear_flush_young`
/// with nobody registered.
///
/// # Errors
/// A failed build or tool, or a hook costing more than +3 instructions per
/// call over the build without notifiers (the message gives the counts).
fn check_idle(root: &Path) -> Result<String, String> {
    let out = run::out_dir(root)?;
    let on = run::build(root, &out, Binary::Icount, true, None)?;
    let off = run::build(root, &out, Binary::Icount, false, None)?;
    let mut report = String::new();
    let mut over = Vec::new();
    for (hook, on, off) in idle_icounts(&out, &on, &off)? {
        let extra = on - off;
        let _ = writeln!(
            report,
            "{}: {on:.1} instructions/call with the notifier feature, {off:.1} without: {extra:+.1} (goal <= +{IDLE_MAX_EXTRA_INSNS})",
            hook.function()
        );
        if extra > IDLE_MAX_EXTRA_INSNS + 0.05 {
            over.push(hook.function());
        }
    }
    if over.is_empty() {
        Ok(report)
    } else {
        Err(format!("{report}over the goal: {}", over.join(", ")))
    }
}

/// Figure 7 alone, printed.
fn scaling_only(root: &Path, threads: &[usize]) -> Result<String, String> {
    let out = run::out_dir(root)?;
    let (exe, static_binary) = run::build_scaling(root, &out)?;
    let r = run::scaling(&exe, threads, &out)?;
    let mut s = report::scaling::table(&r);
    for row in report::scaling::rows(&r, "this machine") {
        let _ = writeln!(
            s,
            "{}: {} (goal {}): {}",
            row.what,
            row.ratio,
            row.goal,
            report::yes_no(row.met, &row.goal).trim_matches('*')
        );
    }
    if static_binary {
        s.push('\n');
        s.push_str(report::scaling::ELSEWHERE);
    }
    Ok(s)
}

/// Figure 7 from another machine, into the existing `BENCHMARKS.md`.
fn scaling_from(root: &Path, file: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("reading {file}: {e}"))?;
    let r = parse::scaling_report(&text).map_err(|e| format!("{file}: {e}"))?;
    let name = Path::new(file)
        .file_name()
        .map_or(file.into(), |n| n.to_string_lossy().into_owned());
    let section = report::scaling::remote_section(&r, &name);
    let md_path = root.join("BENCHMARKS.md");
    let md = std::fs::read_to_string(&md_path).unwrap_or_default();
    std::fs::write(&md_path, report::scaling::splice_remote(&md, &section))
        .map_err(|e| format!("writing BENCHMARKS.md: {e}"))?;
    Ok(format!(
        "{}\nwrote figure 7 from another machine ({} CPUs) into BENCHMARKS.md",
        report::scaling::table(&r),
        r.machine.nproc
    ))
}

/// The whole suite; returns the summary table.
fn full(root: &Path, o: &Opts) -> Result<String, String> {
    let started = Instant::now();
    let machine = Machine::describe(root);
    let out = run::out_dir(root)?;
    let crit_home = out.join("criterion");
    let _ = std::fs::remove_dir_all(&crit_home);
    let readers = if o.readers.is_empty() {
        churn_readers(machine.nproc)
    } else {
        o.readers.clone()
    };

    step("building the benchmark binaries (notifier feature on and off, static scaling)");
    let icount_on = run::build(root, &out, Binary::Icount, true, None)?;
    let icount_off = run::build(root, &out, Binary::Icount, false, None)?;
    let crit_on = run::build(root, &out, Binary::Criterion, true, None)?;
    let crit_off = run::build(root, &out, Binary::Criterion, false, None)?;
    let (scaling_exe, static_binary) = run::build_scaling(root, &out)?;
    let build_time = started.elapsed();

    step("figure 1: instruction counts (callgrind)");
    let idle_icount = idle_icounts(&out, &icount_on, &icount_off)?;
    let mut hook_scale = Vec::new();
    for hook in Hook::ALL {
        for k in HOOK_COUNTS {
            hook_scale.push((hook, k, run::per_call_insns(&out, &icount_on, hook, k)?));
        }
    }

    step("figure 1: times (criterion, both builds, alternating)");
    let mut idle_rounds: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 0..IDLE_ROUNDS {
        let order = if round % 2 == 0 {
            [&crit_on, &crit_off]
        } else {
            [&crit_off, &crit_on]
        };
        for exe in order {
            let log = out.join(format!("criterion-idle-{round}.log"));
            run::criterion(exe, &crit_home, "^idle/", &readers, &log)?;
            for (id, median) in parse::criterion_medians(&crit_home)? {
                if id.starts_with("idle/") {
                    idle_rounds.entry(id).or_default().push(median);
                }
            }
            // Each run rewrites its own ids only; drop them so the next
            // round does not read this one's again.
            let _ = std::fs::remove_dir_all(crit_home.join("idle"));
        }
    }

    step("figures 2-5: dispatch, churn, zap, interval notifiers (criterion)");
    let mut crit: BTreeMap<String, f64> = BTreeMap::new();
    for round in 0..MAIN_ROUNDS {
        run::criterion(
            &crit_on,
            &crit_home,
            "^(dispatch|churn|zap|interval)/",
            &readers,
            &out.join(format!("criterion-main-{round}.log")),
        )?;
        for (id, median) in parse::criterion_medians(&crit_home)? {
            if !id.starts_with("idle/") {
                let best = crit.entry(id).or_insert(f64::INFINITY);
                *best = best.min(median);
            }
        }
    }

    step("figure 4: instructions per zap (callgrind)");
    let mut zap_icount = BTreeMap::new();
    for pages in ZAP_PAGES {
        for with in ZapWith::ALL {
            zap_icount.insert(
                (pages, with),
                run::zap_insns(&out, &icount_on, pages, with)?,
            );
        }
    }
    let zap_off = run::zap_insns(&out, &icount_off, ZAP_PAGES[2], ZapWith::Nobody)?;

    step("figure 7: reader scaling");
    let scaling = LocalScaling {
        report: run::scaling(&scaling_exe, &o.threads, &out)?,
        static_binary,
    };

    let out_of_line = Hook::ALL.map(|h| {
        [&crit_on, &crit_off].map(|exe| {
            run::has_function(
                exe,
                &format!("mmu_notifier_core::pgtable::{}_notify", h.function()),
            )
        })
    });
    let md_path = root.join("BENCHMARKS.md");
    let previous = std::fs::read_to_string(&md_path).unwrap_or_default();
    let results = Results {
        machine: Machine {
            load_end: machine::load_average(),
            ..machine
        },
        build_time,
        total: started.elapsed(),
        idle_icount,
        hook_scale,
        idle_rounds,
        crit,
        readers,
        zap_icount,
        zap_off,
        out_of_line,
        scaling: Some(scaling),
        remote: report::scaling::find_remote(&previous).map(str::to_string),
    };
    let (markdown, summary) = results.render();
    std::fs::write(&md_path, markdown).map_err(|e| format!("writing BENCHMARKS.md: {e}"))?;
    Ok(format!(
        "{summary}\nwrote BENCHMARKS.md ({} in all)",
        report::duration(started.elapsed())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn bench_options_parse() {
        assert_eq!(
            parse_args(&args(&["--threads", "1,2,4,8,16", "--readers", "1,15"])),
            Ok(Opts {
                threads: vec![1, 2, 4, 8, 16],
                readers: vec![1, 15],
                ..Opts::default()
            }),
            "lists for the full run"
        );
        assert!(
            parse_args(&args(&["--check", "--scaling"])).is_err(),
            "modes go alone"
        );
        assert!(
            parse_args(&args(&["--threads", "0"])).is_err(),
            "zero threads is refused"
        );
        assert_eq!(
            parse_args(&args(&["--scaling-from", "s.json"])).map(|o| o.scaling_from),
            Ok(Some("s.json".to_string())),
            "the file to render"
        );
    }
}
