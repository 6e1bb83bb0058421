//! `BENCHMARKS.md` from one run's results: every figure as a ratio against
//! its baseline from the same run, next to its goal, per row where a
//! figure has rows; the machine described; the goals missed listed with
//! the reason (the reasons are in [`explain`]).
//!
//! Rendering only: nothing here runs or parses anything.

pub mod explain;
mod figures;
pub mod scaling;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use mmu_notifier_bench_params::scaling::Report as ScalingReport;
use mmu_notifier_bench_params::{Hook, ZapWith, ICOUNT_N1, ICOUNT_N2};

use super::machine::Machine;
use super::run::ZapCount;

/// Figure 1: extra instructions per call of an idle hook.
pub const IDLE_MAX_EXTRA_INSNS: f64 = 3.0;
/// Figure 1: time of an idle hook against the feature-off build.
pub const IDLE_MAX_TIME_RATIO: f64 = 1.02;
/// Criterion rounds per build for figure 1's times.
pub const IDLE_ROUNDS: usize = 6;
/// Criterion rounds of figures 2-5 (the lower median of each is kept).
pub const MAIN_ROUNDS: usize = 2;
/// Figure 2: `invalidate_page` on the list against the slice limit, in
/// every row.
pub const PAGE_MAX_VS_LIMIT: f64 = 1.3;
/// Figure 2: `invalidate_page` on the list against the lock-based list, in
/// every row (strictly below: faster).
pub const PAGE_MAX_VS_LOCK: f64 = 1.0;
/// Figure 2: range start + end against the slice limit, in every row.
pub const RANGE_MAX_VS_LIMIT: f64 = 1.5;
/// Figure 3: throughput under churn over quiet, in every row.
pub const CHURN_MIN_RATIO: f64 = 0.9;
/// Figure 4: the notifier's share of a zap.
pub const ZAP_MAX_SHARE: f64 = 0.01;
/// Figure 5: the tree against the scan at the largest count.
pub const INTERVAL_MIN_VS_SCAN: f64 = 100.0;
/// Figure 5: growth from 1 000 to 100 000 subscriptions of at most twice
/// what a logarithm gives (log 100 000 / log 1 000 = 5/3), where the scan
/// grows 100-fold.
pub const INTERVAL_MAX_GROWTH: f64 = 2.0 * 5.0 / 3.0;
/// Figure 7: per-thread throughput at T threads over one thread's, for
/// every T up to the CPU count.
pub const SCALING_MIN_PER_THREAD: f64 = 0.9;

/// The local reader-scaling run (figure 7).
#[derive(Debug, Clone)]
pub struct LocalScaling {
    /// What it measured.
    pub report: ScalingReport,
    /// Whether the binary was the static one (copyable elsewhere).
    pub static_binary: bool,
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct Results {
    /// Where.
    pub machine: Machine,
    /// Building the binaries.
    pub build_time: Duration,
    /// The whole run.
    pub total: Duration,
    /// (hook, on, off) instructions per call, nobody registered.
    pub idle_icount: Vec<(Hook, f64, f64)>,
    /// (hook, notifiers, instructions per call).
    pub hook_scale: Vec<(Hook, usize, f64)>,
    /// Criterion medians of each idle id, one per round.
    pub idle_rounds: BTreeMap<String, Vec<f64>>,
    /// Criterion medians of figures 2-5 by full id (the lower of the
    /// rounds).
    pub crit: BTreeMap<String, f64>,
    /// Figure 3's reader counts.
    pub readers: Vec<usize>,
    /// Instructions per zap by (pages, notifier).
    pub zap_icount: BTreeMap<(usize, ZapWith), ZapCount>,
    /// Zap of the largest size, nobody registered, feature off.
    pub zap_off: ZapCount,
    /// Whether the criterion binary of each build (`[on, off]`) calls
    /// each hook's `_notify` out of line (`[hook][build]`).
    pub out_of_line: [[Option<bool>; 2]; 2],
    /// Figure 7 on this machine.
    pub scaling: Option<LocalScaling>,
    /// Figure 7 from another machine: the section as rendered (kept from
    /// the previous `BENCHMARKS.md`).
    pub remote: Option<String>,
}

/// One line of the summary: a figure against its baseline and its goal.
#[derive(Debug, Clone)]
pub struct Row {
    /// The figure's number.
    pub fig: &'static str,
    /// What is compared.
    pub what: String,
    /// The figure.
    pub measured: String,
    /// What it is compared with.
    pub baseline: String,
    /// measured / baseline, or what the goal compares.
    pub ratio: String,
    /// The goal ([`COMPARISON`] for a row that only informs).
    pub goal: String,
    /// `None`: not measured (or a comparison).
    pub met: Option<bool>,
    /// Why it is what it is.
    pub why: String,
}

/// The goal of a row that only gives another row its comparison.
pub const COMPARISON: &str = "comparison";

/// A time in the unit that suits it.
pub fn ns(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v >= 1e6 {
        format!("{:.2} ms", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.2} µs", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.1} ns")
    } else {
        format!("{v:.2} ns")
    }
}

/// `M min SS s`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    format!("{} min {:02} s", s / 60, s % 60)
}

/// The goal cell of a row.
pub fn yes_no(met: Option<bool>, goal: &str) -> &'static str {
    match met {
        Some(true) => "**met**",
        Some(false) => "**missed**",
        None if goal == COMPARISON => "—",
        None => "not measured",
    }
}

/// The verdict of one row of a table: met, missed, or n/a.
pub fn cell_verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "n/a",
    }
}

/// Whether every measured row met its goal; `None` if none was measured.
pub fn all_met(rows: impl IntoIterator<Item = Option<bool>>) -> Option<bool> {
    rows.into_iter()
        .flatten()
        .fold(None, |acc, m| Some(acc.unwrap_or(true) && m))
}

impl Results {
    /// The summary rows of every figure.
    fn rows(&self) -> Vec<Row> {
        let mut rows = figures::rows(self);
        if let Some(s) = &self.scaling {
            rows.extend(scaling::rows(&s.report, "this machine"));
        }
        rows
    }

    /// (BENCHMARKS.md, the summary for the terminal).
    pub fn render(&self) -> (String, String) {
        let m = &self.machine;
        let rows = self.rows();
        let mut md = String::new();
        let w = &mut md;
        let _ = writeln!(w, "# Benchmarks\n");
        let _ = writeln!(
            w,
            "Written by `cargo xtask bench` (`ci/xtask/src/bench/`) from the run below; \
             do not edit by hand, run it again. Every ratio compares two figures of this same run.\n"
        );
        let _ = writeln!(w, "## Machine and run\n");
        let _ = writeln!(w, "| | |\n|---|---|");
        let _ = writeln!(w, "| date | {} |", m.date);
        let _ = writeln!(w, "| CPUs (`nproc`) | {} |", m.nproc);
        let _ = writeln!(w, "| CPU (`/proc/cpuinfo`) | {} |", m.cpu);
        let _ = writeln!(w, "| kernel | {} |", m.kernel);
        let _ = writeln!(w, "| rustc | {} |", m.rustc);
        let _ = writeln!(w, "| valgrind | {} |", m.valgrind);
        let _ = writeln!(
            w,
            "| load average (1 min) at start / end | {} / {} |",
            m.load_start, m.load_end
        );
        let _ = writeln!(
            w,
            "| run time | {} (of which building {}) |",
            duration(self.total),
            duration(self.build_time)
        );
        let _ = writeln!(w, "\nReproduce:\n");
        let _ = writeln!(
            w,
            "```sh\n\
             cargo xtask bench                        # everything; rewrites this file\n\
             cargo xtask bench --check                # figure 1's instruction counts only (< 1 min); exit 1 over the goal\n\
             cargo xtask bench --scaling              # figure 7 only, printed (--threads 1,2,4,... to choose)\n\
             cargo xtask bench --scaling-from FILE    # figure 7 from another machine's report, into this file\n\
             ```\n"
        );
        let _ = writeln!(w, "## How it is measured\n");
        let _ = writeln!(
            w,
            "- **Code**: `ci/bench` (`mmu-notifier-bench`): `benches/notifier.rs` (criterion), \
             `src/bin/icount.rs` (loops for callgrind) and `src/bin/scaling.rs` (figure 7), on the \
             emulated MMU (`mmu-notifier-emu`, one emulated CPU, so a TLB flush is as cheap as the \
             emulator allows and the notifier's share is if anything overstated). The counts, sizes \
             and benchmark ids are defined once, in `ci/bench-params`.\n\
             - **Feature off**: the same package built with `--no-default-features`, which builds the core \
             and the emulator without `notifier` (nothing else in that build asks for it). Both builds \
             run in the same session.\n\
             - **Times**: criterion 0.5 medians (20 samples, ~0.7 s each benchmark) of the measuring \
             thread's **CPU time** (`CLOCK_THREAD_CPUTIME_ID`): the machine is shared, and time spent \
             preempted by other processes is not the code's. Figure 1 alternates the two builds for \
             {IDLE_ROUNDS} rounds and takes the median of the rounds' on/off ratios; figures 2-5 run \
             {MAIN_ROUNDS} rounds and keep each benchmark's lower median. With T threads, T − 1 more \
             threads run the same operation on the same list in a loop; the time is the first thread's.\n\
             - **Instructions**: callgrind. Per call = (I({ICOUNT_N2}) − I({ICOUNT_N1})) / {} over the \
             same binary, so setup cancels exactly; a zap counts only inside `bench_zap_once` \
             (`--toggle-collect`). Deterministic, so these are the figures to trust on a noisy machine \
             (they do not see the cost of a locked instruction or a cache miss, which the times do).\n\
             - **Reader scaling** (figure 7): wall-clock throughput of T threads, each pinned to a CPU, \
             calling in a timed loop with per-thread counters (no criterion), the median of a few rounds.\n\
             - **Notifiers**: dispatch figures register do-nothing notifiers (every callback only \
             `black_box`es its argument), so what is measured is the dispatch. Figure 4's range worker \
             does its work in `invalidate_range_start` and leaves `invalidate_page` empty; the per-page \
             worker does one counter update per `invalidate_page`.\n",
            ICOUNT_N2 - ICOUNT_N1
        );
        let _ = writeln!(w, "## Summary\n");
        let _ = writeln!(
            w,
            "| fig | figure | measured | baseline | ratio | goal | goal met |\n|---|---|---|---|---|---|---|"
        );
        for r in &rows {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.fig,
                r.what,
                r.measured,
                r.baseline,
                r.ratio,
                r.goal,
                yes_no(r.met, &r.goal)
            );
        }
        let _ = writeln!(w, "\n## Goals missed, and why\n");
        let missed: Vec<&Row> = rows
            .iter()
            .filter(|r| r.met != Some(true) && r.goal != COMPARISON)
            .collect();
        if missed.is_empty() {
            let _ = writeln!(w, "None.\n");
        }
        for r in &missed {
            let _ = writeln!(
                w,
                "- **Figure {}, {}** ({}: {} against {}): {}.",
                r.fig,
                r.what,
                if r.met.is_none() {
                    "not measured"
                } else {
                    "missed"
                },
                r.ratio,
                r.goal,
                r.why
            );
        }
        let notes: Vec<&Row> = rows
            .iter()
            .filter(|r| {
                (r.met == Some(true) && (r.fig == "1" || r.fig == "4")) || r.goal == COMPARISON
            })
            .collect();
        if !notes.is_empty() {
            let _ = writeln!(w, "\nNotes on the other rows:\n");
            for r in notes {
                let _ = writeln!(w, "- Figure {}, {}: {}.", r.fig, r.what, r.why);
            }
        }
        figures::details(self, w);
        let _ = writeln!(w, "\n## Figure 7: reader scaling\n");
        match &self.scaling {
            Some(s) => {
                let _ = write!(w, "{}", scaling::table(&s.report));
                if s.static_binary {
                    let _ = writeln!(w, "{}", scaling::ELSEWHERE);
                }
            }
            None => {
                let _ = writeln!(w, "Not measured in this run.\n");
            }
        }
        if let Some(remote) = &self.remote {
            let _ = write!(w, "\n{remote}");
        }

        let mut summary = String::from("fig | figure | ratio | goal | met\n");
        for r in &rows {
            let _ = writeln!(
                summary,
                "{} | {} | {} | {} | {}",
                r.fig,
                r.what,
                r.ratio,
                r.goal,
                yes_no(r.met, &r.goal).trim_matches('*')
            );
        }
        (md, summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_met_needs_every_measured_row() {
        assert_eq!(
            all_met([Some(true), None, Some(true)]),
            Some(true),
            "unmeasured rows are skipped"
        );
        assert_eq!(
            all_met([Some(true), Some(false)]),
            Some(false),
            "one miss misses"
        );
        assert_eq!(all_met([None, None]), None, "nothing measured");
    }
}
