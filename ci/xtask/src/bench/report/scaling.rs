//! Figure 7, reader scaling: its summary rows and its table, from the
//! `scaling` binary's report, for this machine or another one. A report
//! from another machine becomes a section of its own between two marker
//! comments, so that `--scaling-from` can replace it in an existing
//! `BENCHMARKS.md` and a later full run keeps it.

use std::fmt::Write as _;

use mmu_notifier_bench_params::scaling::Report;
use mmu_notifier_bench_params::{List, Op};

use super::super::machine::utc_date;
use super::{all_met, cell_verdict, explain, Row, SCALING_MIN_PER_THREAD};

/// First line of the section from another machine.
pub const REMOTE_BEGIN: &str =
    "<!-- figure 7 from another machine: written by `cargo xtask bench --scaling-from FILE` -->";
/// Its last line.
pub const REMOTE_END: &str = "<!-- end of figure 7 from another machine -->";

/// Where the static binary is and how to use it elsewhere.
pub const ELSEWHERE: &str = "On another machine: copy `target/bench/scaling-static` (one static \
    x86-64 binary, no toolchain needed), run `./scaling-static --json scaling.json` (add \
    `--threads 1,2,4,8,16` to choose), bring `scaling.json` back and run `cargo xtask bench \
    --scaling-from scaling.json`.\n";

/// Per-thread rate at `threads` over the rate at one thread, for `op` on
/// `list`.
fn per_thread_ratio(r: &Report, op: Op, list: List, threads: usize) -> f64 {
    match (r.cell(op, list, threads), r.cell(op, list, 1)) {
        (Some(c), Some(one)) => c.per_thread() / one.per_thread(),
        _ => f64::NAN,
    }
}

/// The thread counts the goal applies to: more than one, up to the CPUs.
fn judged(r: &Report) -> Vec<usize> {
    r.thread_counts()
        .into_iter()
        .filter(|&t| t > 1 && t <= r.machine.nproc)
        .collect()
}

/// One summary row per operation: met when the list's per-thread rate
/// holds at every judged thread count.
pub fn rows(r: &Report, origin: &str) -> Vec<Row> {
    let judged = judged(r);
    Op::ALL
        .into_iter()
        .map(|op| {
            let per_t: Vec<(usize, f64)> = judged
                .iter()
                .map(|&t| (t, per_thread_ratio(r, op, List::Head, t)))
                .collect();
            let met = all_met(
                per_t
                    .iter()
                    .map(|p| p.1.is_finite().then_some(p.1 >= SCALING_MIN_PER_THREAD)),
            );
            let worst = per_t
                .iter()
                .filter(|p| p.1.is_finite())
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .copied();
            // Where the slice limit, which writes no shared memory, does
            // not scale either, the machine (other load, shared cores)
            // holds the threads back, not only the list.
            let missed: Vec<String> = per_t
                .iter()
                .filter(|p| p.1 < SCALING_MIN_PER_THREAD)
                .map(|&(t, ratio)| {
                    let limit = per_thread_ratio(r, op, List::Limit, t);
                    if limit < SCALING_MIN_PER_THREAD {
                        format!("{t} ({ratio:.2}×; the limit too: {limit:.2}×)")
                    } else {
                        format!("{t} ({ratio:.2}×)")
                    }
                })
                .collect();
            let one = r.cell(op, List::Head, 1).map_or(f64::NAN, |c| c.rate());
            let (measured, ratio) = match worst {
                Some((t, ratio)) => (
                    format!(
                        "{:.1} M/s per thread at {t} threads",
                        r.cell(op, List::Head, t)
                            .map_or(f64::NAN, |c| c.per_thread())
                            / 1e6
                    ),
                    format!("worst {ratio:.2}×"),
                ),
                None => ("—".into(), "—".into()),
            };
            Row {
                fig: "7",
                what: format!(
                    "reader scaling on {origin} ({} CPUs), {}: per-thread rate at T threads / at 1",
                    r.machine.nproc,
                    op.label()
                ),
                measured,
                baseline: format!("{:.1} M/s (1 thread)", one / 1e6),
                ratio,
                goal: format!("≥ {SCALING_MIN_PER_THREAD}× for every T ≤ nproc"),
                met,
                why: if judged.is_empty() {
                    "not measured: no thread count above 1 and up to the CPU count".into()
                } else if missed.is_empty() {
                    explain::scaling(op)
                } else {
                    format!(
                        "missed at T = {}: {}",
                        missed.join(", "),
                        explain::scaling(op)
                    )
                },
            }
        })
        .collect()
}

/// The figure's table and how it was taken.
pub fn table(r: &Report) -> String {
    let s = &r.settings;
    let mut w = String::new();
    let _ = writeln!(
        w,
        "Total calls per second of T threads calling at once on one shared list with {} do-nothing \
         notifier(s), and each list's per-thread rate at T over its rate at 1 thread. Goal for the \
         notifier list: ≥ {SCALING_MIN_PER_THREAD}× at every T up to the CPU count ({}). {} ms \
         measured after {} ms of warm-up, median of {} rounds; threads {}.\n",
        s.notifiers,
        r.machine.nproc,
        s.measure_ms,
        s.warmup_ms,
        s.rounds,
        if s.pinned {
            "pinned one per CPU"
        } else {
            "not pinned"
        }
    );
    let _ = writeln!(
        w,
        "| operation | T | list (M calls/s) | per thread / 1 thread | goal | limit (M calls/s) | per thread / 1 thread | lock-based (M calls/s) | per thread / 1 thread |\n|---|---|---|---|---|---|---|---|---|"
    );
    for op in Op::ALL {
        for t in r.thread_counts() {
            let rate = |list| r.cell(op, list, t).map_or(f64::NAN, |c| c.rate()) / 1e6;
            let ratio = |list| per_thread_ratio(r, op, list, t);
            let goal = if t == 1 {
                "—"
            } else if t > r.machine.nproc {
                "more threads than CPUs"
            } else {
                let x = ratio(List::Head);
                cell_verdict(x.is_finite().then_some(x >= SCALING_MIN_PER_THREAD))
            };
            let _ = writeln!(
                w,
                "| {} | {t} | {:.1} | {:.2}× | {goal} | {:.1} | {:.2}× | {:.1} | {:.2}× |",
                op.label(),
                rate(List::Head),
                ratio(List::Head),
                rate(List::Limit),
                ratio(List::Limit),
                rate(List::Lock),
                ratio(List::Lock),
            );
        }
    }
    w.push('\n');
    w
}

/// The section for a report from another machine, between the markers:
/// where it ran, its verdicts and its table.
pub fn remote_section(r: &Report, file: &str) -> String {
    let m = &r.machine;
    let mut w = String::new();
    let _ = writeln!(w, "{REMOTE_BEGIN}");
    let _ = writeln!(w, "### Figure 7 on another machine\n");
    let _ = writeln!(
        w,
        "**Measured on another machine**, not in the run above: `{file}`, written by the static \
         `scaling` binary on {}.\n\n\
         | | |\n|---|---|\n| CPUs | {} |\n| CPU (`/proc/cpuinfo`) | {} |\n| kernel | {} |\n",
        utc_date(m.unix_time),
        m.nproc,
        m.cpu,
        m.kernel
    );
    let _ = writeln!(w, "| figure | ratio | goal | goal met |\n|---|---|---|---|");
    for row in rows(r, "another machine") {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} |",
            row.what,
            row.ratio,
            row.goal,
            cell_verdict(row.met)
        );
    }
    let _ = writeln!(w);
    w.push_str(&table(r));
    let _ = writeln!(w, "{REMOTE_END}");
    w
}

/// The section from another machine in `markdown`, markers included.
pub fn find_remote(markdown: &str) -> Option<&str> {
    let start = markdown.find(REMOTE_BEGIN)?;
    let end = markdown[start..].find(REMOTE_END)? + start + REMOTE_END.len();
    let end = if markdown[end..].starts_with('\n') {
        end + 1
    } else {
        end
    };
    Some(&markdown[start..end])
}

/// `markdown` with its section from another machine replaced by `section`
/// (appended when it has none).
pub fn splice_remote(markdown: &str, section: &str) -> String {
    match find_remote(markdown) {
        Some(old) => markdown.replacen(old, section, 1),
        None => {
            let mut s = markdown.trim_end().to_string();
            s.push_str("\n\n");
            s.push_str(section);
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmu_notifier_bench_params::scaling::{Cell, Machine, Round, Settings};

    /// A report where the list's total rate at T threads is `list(T)`
    /// million calls per second and the others scale perfectly.
    fn report(nproc: usize, threads: &[usize], list: impl Fn(usize) -> f64) -> Report {
        let mut cells = Vec::new();
        for op in Op::ALL {
            for &t in threads {
                for l in List::ALL {
                    let total = match l {
                        List::Head => list(t),
                        _ => 100.0 * t as f64,
                    };
                    let each = (total * 1e6 / t as f64) as u64;
                    cells.push(Cell {
                        op,
                        list: l,
                        threads: t,
                        rounds: vec![Round {
                            seconds: 1.0,
                            calls: vec![each; t],
                        }],
                    });
                }
            }
        }
        Report {
            machine: Machine {
                nproc,
                cpu: "test CPU".into(),
                kernel: "6.1".into(),
                unix_time: 0,
            },
            settings: Settings {
                notifiers: 1,
                warmup_ms: 100,
                measure_ms: 300,
                rounds: 1,
                pinned: true,
            },
            cells,
        }
    }

    #[test]
    fn scaling_is_met_only_when_every_thread_count_up_to_nproc_holds() {
        let good = report(16, &[1, 2, 4, 8, 16], |t| 100.0 * t as f64);
        assert!(
            rows(&good, "x").iter().all(|r| r.met == Some(true)),
            "perfect scaling meets the goal"
        );
        // Per-thread rate 0.85x at 8 threads only.
        let dip = report(16, &[1, 2, 4, 8, 16], |t| {
            100.0 * t as f64 * if t == 8 { 0.85 } else { 1.0 }
        });
        let r = &rows(&dip, "x")[0];
        assert_eq!(r.met, Some(false), "one thread count below 0.9x misses");
        assert!(
            r.why.starts_with("missed at T = 8 (0.85×): "),
            "and names it: {}",
            r.why
        );
    }

    #[test]
    fn a_miss_where_the_limit_misses_too_says_so() {
        let mut r = report(4, &[1, 4], |t| if t == 4 { 100.0 } else { 50.0 });
        for c in r
            .cells
            .iter_mut()
            .filter(|c| c.list == List::Limit && c.threads == 4)
        {
            c.rounds[0].calls = vec![50_000_000; 4];
        }
        let row = &rows(&r, "x")[0];
        assert!(
            row.why
                .starts_with("missed at T = 4 (0.50×; the limit too: 0.50×): "),
            "the machine's share is named: {}",
            row.why
        );
    }

    #[test]
    fn thread_counts_above_nproc_are_shown_but_not_judged() {
        // 2 CPUs; at 4 threads the list collapses, which oversubscription explains.
        let r = report(
            2,
            &[1, 2, 4],
            |t| if t == 4 { 12.0 } else { 100.0 * t as f64 },
        );
        assert!(
            rows(&r, "x").iter().all(|row| row.met == Some(true)),
            "T > nproc does not count against the goal"
        );
        assert!(
            table(&r).contains("| 4 | 12.0 | 0.03× | more threads than CPUs | 400.0 | 1.00× |"),
            "but is in the table:\n{}",
            table(&r)
        );
    }

    #[test]
    fn one_thread_alone_is_not_measured() {
        let r = report(1, &[1], |_| 100.0);
        assert!(
            rows(&r, "x").iter().all(|row| row.met.is_none()),
            "nothing to compare with one CPU"
        );
    }

    #[test]
    fn the_remote_section_is_replaced_in_place_and_marked() {
        let r = report(16, &[1, 16], |t| 100.0 * t as f64);
        let section = remote_section(&r, "scaling.json");
        assert!(
            section.contains("**Measured on another machine**")
                && section.contains("| CPUs | 16 |"),
            "it says where it comes from"
        );
        let doc = "# Benchmarks\n\ntext\n";
        let once = splice_remote(doc, &section);
        assert_eq!(
            find_remote(&once),
            Some(section.as_str()),
            "appended, found back"
        );
        let other = remote_section(&report(8, &[1, 8], |t| 50.0 * t as f64), "b.json");
        let twice = splice_remote(&once, &other);
        assert_eq!(
            twice.matches(REMOTE_BEGIN).count(),
            1,
            "replaced, not added"
        );
        assert!(
            twice.contains("b.json") && !twice.contains("scaling.json"),
            "the new one"
        );
        assert!(twice.starts_with(doc.trim_end()), "the rest is untouched");
    }
}
