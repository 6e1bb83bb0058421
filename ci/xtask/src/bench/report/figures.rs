//! Figures 1-6: their summary rows and their tables.

use std::fmt::Write as _;

use mmu_notifier_bench_params::{
    Hook, Id, Interval, List, Op, ZapWith, CHURN_COUNTS, DISPATCH_COUNTS, DISPATCH_THREADS,
    HOOK_COUNTS, INTERVAL_COUNTS, ZAP_PAGES,
};

use super::{
    all_met, cell_verdict, explain, ns, Results, Row, CHURN_MIN_RATIO, COMPARISON,
    IDLE_MAX_EXTRA_INSNS, IDLE_MAX_TIME_RATIO, IDLE_ROUNDS, INTERVAL_MAX_GROWTH,
    INTERVAL_MIN_VS_SCAN, PAGE_MAX_VS_LIMIT, PAGE_MAX_VS_LOCK, RANGE_MAX_VS_LIMIT, ZAP_MAX_SHARE,
};

impl Results {
    fn crit(&self, id: &Id) -> f64 {
        self.crit.get(&id.full()).copied().unwrap_or(f64::NAN)
    }

    /// Best (lowest) median of an idle id over the rounds.
    fn idle_best(&self, hook: Hook, on: bool) -> f64 {
        self.idle_rounds
            .get(&Id::idle(hook, on).full())
            .map_or(f64::NAN, |v| {
                v.iter().copied().fold(f64::INFINITY, f64::min)
            })
    }

    /// Figure 1's time ratio of `hook`: the median of the rounds' on/off
    /// ratios, and the ratios themselves.
    fn idle_ratio(&self, hook: Hook) -> (f64, Vec<f64>) {
        let on = self.idle_rounds.get(&Id::idle(hook, true).full());
        let off = self.idle_rounds.get(&Id::idle(hook, false).full());
        let ratios: Vec<f64> = on
            .zip(off)
            .map(|(a, b)| a.iter().zip(b).map(|(a, b)| a / b).collect())
            .unwrap_or_default();
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        let median = match sorted.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        (median, ratios)
    }

    fn zap(&self, pages: usize, with: ZapWith) -> Option<&super::ZapCount> {
        self.zap_icount.get(&(pages, with))
    }

    /// Figure 2: the list's time over `against`'s, for `op` at `threads`
    /// and `k` notifiers.
    fn dispatch_ratio(&self, op: Op, against: List, threads: usize, k: usize) -> f64 {
        self.crit(&Id::dispatch(op, List::Head, threads, k))
            / self.crit(&Id::dispatch(op, against, threads, k))
    }

    /// Figure 3: throughput under churn over quiet (quiet time / churn
    /// time) of `list` with `readers` readers and `k` notifiers.
    fn churn_ratio(&self, list: List, readers: usize, k: usize) -> f64 {
        self.crit(&Id::churn(list, readers, false, k))
            / self.crit(&Id::churn(list, readers, true, k))
    }
}

/// Figure 2's goal for `op` against `against`: `(limit, strict)`, or none.
fn dispatch_goal(op: Op, against: List) -> Option<(f64, bool)> {
    match (op, against) {
        (Op::Page, List::Limit) => Some((PAGE_MAX_VS_LIMIT, false)),
        (Op::Page, List::Lock) => Some((PAGE_MAX_VS_LOCK, true)),
        (Op::Range, List::Limit) => Some((RANGE_MAX_VS_LIMIT, false)),
        _ => None,
    }
}

/// Whether `ratio` meets a `(limit, strict)` goal.
fn meets(ratio: f64, (limit, strict): (f64, bool)) -> Option<bool> {
    ratio.is_finite().then_some(if strict {
        ratio < limit
    } else {
        ratio <= limit
    })
}

fn goal_text((limit, strict): (f64, bool)) -> String {
    format!("{} {limit}×", if strict { "<" } else { "≤" })
}

/// The summary rows of figures 1-6.
pub fn rows(r: &Results) -> Vec<Row> {
    let mut rows = Vec::new();
    idle_rows(r, &mut rows);
    dispatch_rows(r, &mut rows);
    churn_rows(r, &mut rows);
    zap_rows(r, &mut rows);
    interval_rows(r, &mut rows);
    rows
}

fn idle_rows(r: &Results, rows: &mut Vec<Row>) {
    for &(hook, on, off) in &r.idle_icount {
        let name = hook.function();
        let extra = on - off;
        let (ratio, rounds) = r.idle_ratio(hook);
        let spread = rounds.iter().copied().fold(f64::NAN, f64::max)
            - rounds.iter().copied().fold(f64::NAN, f64::min);
        let rounds: Vec<String> = rounds.iter().map(|r| format!("{r:.3}")).collect();
        let h = usize::from(hook != Hook::ClearFlush);
        let inlining = explain::idle_inlining(hook, r.out_of_line[h]);
        rows.push(Row {
            fig: "1",
            what: format!("`{name}`, nobody registered: time per call"),
            measured: format!("{} (best round)", ns(r.idle_best(hook, true))),
            baseline: format!("{} (feature off, best round)", ns(r.idle_best(hook, false))),
            ratio: format!("{ratio:.3}×"),
            goal: format!("≤ {IDLE_MAX_TIME_RATIO}×"),
            met: ratio.is_finite().then_some(ratio <= IDLE_MAX_TIME_RATIO),
            why: explain::idle_time(&rounds.join(", "), spread, off, &inlining),
        });
        rows.push(Row {
            fig: "1",
            what: format!("`{name}`, nobody registered: instructions per call"),
            measured: format!("{on:.1}"),
            baseline: format!("{off:.1} (feature off)"),
            ratio: format!("{extra:+.1}"),
            goal: format!("≤ +{IDLE_MAX_EXTRA_INSNS}"),
            met: Some(extra <= IDLE_MAX_EXTRA_INSNS + 0.05),
            why: explain::idle_insns(hook, extra),
        });
    }
}

/// One summary row per (op, threads, baseline with a goal): met when every
/// notifier count meets it, with the rows that miss named.
fn dispatch_rows(r: &Results, rows: &mut Vec<Row>) {
    for op in Op::ALL {
        for threads in DISPATCH_THREADS {
            for against in [List::Limit, List::Lock] {
                let Some(goal) = dispatch_goal(op, against) else {
                    continue;
                };
                let per_k: Vec<(usize, f64, Option<bool>)> = DISPATCH_COUNTS
                    .iter()
                    .map(|&k| {
                        let ratio = r.dispatch_ratio(op, against, threads, k);
                        (k, ratio, meets(ratio, goal))
                    })
                    .collect();
                let met = all_met(per_k.iter().map(|p| p.2));
                let (worst_k, worst) = per_k
                    .iter()
                    .filter(|p| p.1.is_finite())
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map_or((DISPATCH_COUNTS[0], f64::NAN), |p| (p.0, p.1));
                let missed: Vec<String> = per_k
                    .iter()
                    .filter(|p| p.2 == Some(false))
                    .map(|p| format!("{} ({:.2}×)", p.0, p.1))
                    .collect();
                let met_count = per_k.iter().filter(|p| p.2 == Some(true)).count();
                let why = match against {
                    List::Lock => explain::dispatch_vs_lock(op),
                    _ => explain::dispatch_vs_limit(op, threads),
                };
                rows.push(Row {
                    fig: "2",
                    what: format!(
                        "{}, {threads} thread(s): list vs {}, every row ({} notifiers)",
                        op.label(),
                        against.label(),
                        DISPATCH_COUNTS.map(|k| k.to_string()).join("/")
                    ),
                    measured: format!(
                        "{} (list, {worst_k} notifier(s))",
                        ns(r.crit(&Id::dispatch(op, List::Head, threads, worst_k)))
                    ),
                    baseline: ns(r.crit(&Id::dispatch(op, against, threads, worst_k))),
                    ratio: format!(
                        "worst {worst:.2}×; met in {met_count} of {}",
                        DISPATCH_COUNTS.len()
                    ),
                    goal: format!("{} in every row", goal_text(goal)),
                    met,
                    why: if missed.is_empty() {
                        why
                    } else {
                        format!("missed at {} notifier(s): {why}", missed.join(", "))
                    },
                });
            }
        }
    }
}

fn churn_rows(r: &Results, rows: &mut Vec<Row>) {
    for &readers in &r.readers {
        let per_k: Vec<(usize, f64)> = CHURN_COUNTS
            .iter()
            .map(|&k| (k, r.churn_ratio(List::Head, readers, k)))
            .collect();
        let met = all_met(
            per_k
                .iter()
                .map(|p| p.1.is_finite().then_some(p.1 >= CHURN_MIN_RATIO)),
        );
        let (worst_k, worst) = per_k
            .iter()
            .filter(|p| p.1.is_finite())
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .copied()
            .unwrap_or((CHURN_COUNTS[0], f64::NAN));
        let missed: Vec<String> = per_k
            .iter()
            .filter(|p| p.1 < CHURN_MIN_RATIO)
            .map(|p| format!("{} ({:.2}×)", p.0, p.1))
            .collect();
        let quiet = r.crit(&Id::churn(List::Head, readers, false, worst_k));
        let busy = r.crit(&Id::churn(List::Head, readers, true, worst_k));
        rows.push(Row {
            fig: "3",
            what: format!(
                "`invalidate_page` throughput per reader, {readers} reader(s), while another thread \
                 registers/unregisters: every row ({} notifiers)",
                CHURN_COUNTS.map(|k| k.to_string()).join("/")
            ),
            measured: format!("{:.1} M/s ({worst_k} notifier(s))", 1e3 / busy),
            baseline: format!("{:.1} M/s (quiet)", 1e3 / quiet),
            ratio: format!("worst {worst:.2}×"),
            goal: format!("≥ {CHURN_MIN_RATIO}× in every row"),
            met,
            why: if missed.is_empty() {
                explain::churn().to_string()
            } else {
                format!(
                    "missed at {} notifier(s): {}",
                    missed.join(", "),
                    explain::churn()
                )
            },
        });
    }
}

fn zap_rows(r: &Results, rows: &mut Vec<Row>) {
    let pages = ZAP_PAGES[ZAP_PAGES.len() - 1];
    let t_none = r.crit(&Id::zap(ZapWith::Nobody, pages));
    for (with, label) in [
        (ZapWith::Range, "range worker"),
        (ZapWith::Page, "per-page worker"),
    ] {
        let t = r.crit(&Id::zap(with, pages));
        let share_t = (t - t_none) / t;
        let (share_i, calls, insns_page) = match (r.zap(pages, with), r.zap(pages, ZapWith::Nobody))
        {
            (Some(w), Some(n)) => (
                (w.insns as f64 - n.insns as f64) / w.insns as f64,
                w.calls.clone(),
                (w.insns as f64 - n.insns as f64) / pages as f64,
            ),
            _ => (f64::NAN, "unknown".into(), f64::NAN),
        };
        let worst = share_t.max(share_i);
        let comparison = with == ZapWith::Page;
        let insns = |w| {
            r.zap(pages, w)
                .map_or("n/a".into(), |z| z.insns.to_string())
        };
        rows.push(Row {
            fig: "4",
            what: format!(
                "zap of 2^{} pages, one {label}: notifier share (time; instructions)",
                pages.trailing_zeros()
            ),
            measured: format!("{} ; {}", ns(t), insns(with)),
            baseline: format!(
                "{} ; {} (nobody registered)",
                ns(t_none),
                insns(ZapWith::Nobody)
            ),
            ratio: format!("{:.1} % ; {:.1} %", share_t * 100.0, share_i * 100.0),
            goal: if comparison {
                COMPARISON.into()
            } else {
                format!("≤ {:.0} %", ZAP_MAX_SHARE * 100.0)
            },
            met: if comparison {
                None
            } else {
                worst.is_finite().then_some(worst <= ZAP_MAX_SHARE)
            },
            why: if calls.contains(&format!("invalidate_page={pages}")) {
                explain::zap_page_worker(&calls, insns_page)
            } else {
                explain::zap_range_worker(&calls, insns_page)
            },
        });
    }
}

fn interval_rows(r: &Results, rows: &mut Vec<Row>) {
    let [_, mid, big] = INTERVAL_COUNTS;
    let tree = r.crit(&Id::interval(Interval::Tree, big));
    let scan = r.crit(&Id::interval(Interval::Scan, big));
    if !tree.is_finite() || !scan.is_finite() {
        rows.push(Row {
            fig: "5",
            what: format!("interval notifiers, {big} subscriptions vs a linear scan"),
            measured: "—".into(),
            baseline: "—".into(),
            ratio: "—".into(),
            goal: format!("≥ {INTERVAL_MIN_VS_SCAN:.0}×, logarithmic"),
            met: None,
            why: "not measured: the criterion binary recorded no `interval/` benchmark".into(),
        });
        return;
    }
    let ratio = scan / tree;
    rows.push(Row {
        fig: "5",
        what: format!(
            "interval notifiers, one-page invalidation, {big} subscriptions: speed-up over a linear scan"
        ),
        measured: ns(tree),
        baseline: format!("{} (one notifier scanning its own list)", ns(scan)),
        ratio: format!("{ratio:.0}× faster"),
        goal: format!("≥ {INTERVAL_MIN_VS_SCAN:.0}×"),
        met: ratio.is_finite().then_some(ratio >= INTERVAL_MIN_VS_SCAN),
        why: explain::interval_speedup().into(),
    });
    let growth = tree / r.crit(&Id::interval(Interval::Tree, mid));
    let scan_growth = scan / r.crit(&Id::interval(Interval::Scan, mid));
    rows.push(Row {
        fig: "5",
        what: format!("interval notifiers: growth from {mid} to {big} subscriptions"),
        measured: format!("{growth:.2}×"),
        baseline: format!("{scan_growth:.0}× (scan)"),
        ratio: format!("{growth:.2}×"),
        goal: format!("≤ {INTERVAL_MAX_GROWTH:.2}× (twice log growth)"),
        met: growth.is_finite().then_some(growth <= INTERVAL_MAX_GROWTH),
        why: explain::interval_growth().into(),
    });
}

/// Figures 1-6 in full.
pub fn details(r: &Results, w: &mut String) {
    idle_table(r, w);
    dispatch_table(r, w);
    churn_table(r, w);
    zap_table(r, w);
    interval_table(r, w);
    scale_tables(r, w);
}

fn idle_table(r: &Results, w: &mut String) {
    let _ = writeln!(w, "\n## Figure 1: the idle hooks\n");
    let _ = writeln!(
        w,
        "| hook | instructions/call, feature on | feature off | extra | time/call on (best) | off (best) | time ratio (median of rounds) |\n|---|---|---|---|---|---|---|"
    );
    for &(hook, on, off) in &r.idle_icount {
        let _ = writeln!(
            w,
            "| `{}` | {on:.1} | {off:.1} | {:+.1} | {} | {} | {:.3}× |",
            hook.function(),
            on - off,
            ns(r.idle_best(hook, true)),
            ns(r.idle_best(hook, false)),
            r.idle_ratio(hook).0
        );
    }
    let _ = writeln!(
        w,
        "\nTimes: each side's best median over {IDLE_ROUNDS} rounds; the ratio is the median of the \
         rounds' ratios (on and off run back to back in each round, in alternating order)."
    );
}

fn dispatch_table(r: &Results, w: &mut String) {
    let _ = writeln!(w, "\n## Figure 2: dispatch per call (median CPU time)\n");
    let _ = writeln!(
        w,
        "Goals, in every row: `invalidate_page` ≤ {PAGE_MAX_VS_LIMIT}× the limit and faster than the \
         lock-based list; range start + end ≤ {RANGE_MAX_VS_LIMIT}× the limit.\n"
    );
    let _ = writeln!(
        w,
        "| operation | threads | notifiers | list | limit (slice) | lock-based | list / limit | goal | list / lock | goal |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for op in Op::ALL {
        for threads in DISPATCH_THREADS {
            for k in DISPATCH_COUNTS {
                let t = |list| ns(r.crit(&Id::dispatch(op, list, threads, k)));
                let cell = |against| {
                    let ratio = r.dispatch_ratio(op, against, threads, k);
                    let verdict = match dispatch_goal(op, against) {
                        Some(goal) => cell_verdict(meets(ratio, goal)),
                        None => "—",
                    };
                    (ratio, verdict)
                };
                let (vs_limit, limit_met) = cell(List::Limit);
                let (vs_lock, lock_met) = cell(List::Lock);
                let _ = writeln!(
                    w,
                    "| {} | {threads} | {k} | {} | {} | {} | {vs_limit:.2}× | {limit_met} | {vs_lock:.2}× | {lock_met} |",
                    op.label(),
                    t(List::Head),
                    t(List::Limit),
                    t(List::Lock),
                );
            }
        }
    }
}

fn churn_table(r: &Results, w: &mut String) {
    let _ = writeln!(
        w,
        "\n## Figure 3: registration churn (median CPU time per `invalidate_page`, per reader)\n"
    );
    let _ = writeln!(
        w,
        "R reader threads call `invalidate_page` on one list; in the churn column one more thread \
         registers and unregisters a notifier in a loop. Goal for the notifier list: throughput \
         under churn ≥ {CHURN_MIN_RATIO}× quiet, in every row. Reader counts: 1, and one per CPU \
         but the writer's (the same on 2 CPUs).\n"
    );
    let _ = writeln!(
        w,
        "| list | readers | notifiers | quiet | churn | throughput churn / quiet | goal |\n|---|---|---|---|---|---|---|"
    );
    for list in [List::Head, List::HeadFenced, List::Lock] {
        for &readers in &r.readers {
            for k in CHURN_COUNTS {
                let q = r.crit(&Id::churn(list, readers, false, k));
                let c = r.crit(&Id::churn(list, readers, true, k));
                let ratio = q / c;
                let verdict = match list {
                    List::Head => {
                        cell_verdict(ratio.is_finite().then_some(ratio >= CHURN_MIN_RATIO))
                    }
                    _ => "—",
                };
                let _ = writeln!(
                    w,
                    "| {} | {readers} | {k} | {} | {} | {ratio:.2}× | {verdict} |",
                    list.label(),
                    ns(q),
                    ns(c),
                );
            }
        }
    }
    let _ = writeln!(
        w,
        "\nThe list with fencing readers (`StdThreadsFenced`) is the same list on a kernel \
         without a barrier on every CPU: its grace periods do not interrupt the readers, \
         which pay a locked increment per call instead. The lock-based list under churn: a \
         reader waits for every writer, and a writer preempted while holding the lock stalls \
         it; its median hides a long tail.\n"
    );
}

fn zap_table(r: &Results, w: &mut String) {
    let _ = writeln!(w, "## Figure 4: range batching in a zap\n");
    let _ = writeln!(
        w,
        "| pages | notifier | time (median CPU) | share of time | instructions | per page | share of instructions | callbacks one notifier receives |\n|---|---|---|---|---|---|---|---|"
    );
    for pages in ZAP_PAGES {
        let t_none = r.crit(&Id::zap(ZapWith::Nobody, pages));
        let i_none = r
            .zap(pages, ZapWith::Nobody)
            .map_or(f64::NAN, |z| z.insns as f64);
        for with in ZapWith::ALL {
            let t = r.crit(&Id::zap(with, pages));
            let z = r.zap(pages, with);
            let i = z.map_or(f64::NAN, |z| z.insns as f64);
            let share = |a: f64, b: f64| {
                if with == ZapWith::Nobody {
                    "—".to_string()
                } else {
                    format!("{:.1} %", (a - b) / a * 100.0)
                }
            };
            let _ = writeln!(
                w,
                "| 2^{} | {} | {} | {} | {:.0} | {:.1} | {} | {} |",
                pages.trailing_zeros(),
                with.name(),
                ns(t),
                share(t, t_none),
                i,
                i / pages as f64,
                share(i, i_none),
                z.map_or("n/a", |z| z.calls.as_str())
            );
        }
    }
    let pages = ZAP_PAGES[ZAP_PAGES.len() - 1];
    let _ = writeln!(
        w,
        "\nThe same 2^{}-page zap with the `notifier` feature compiled out: {} instructions \
         ({:.1} per page), against {} with it on and nobody registered.\n",
        pages.trailing_zeros(),
        r.zap_off.insns,
        r.zap_off.insns as f64 / pages as f64,
        r.zap(pages, ZapWith::Nobody)
            .map_or("n/a".into(), |z| z.insns.to_string())
    );
}

fn interval_table(r: &Results, w: &mut String) {
    let _ = writeln!(w, "## Figure 5: interval notifiers\n");
    if !r.crit.keys().any(|k| k.starts_with("interval/")) {
        let _ = writeln!(
            w,
            "Not measured: the criterion binary recorded no `interval/` benchmark.\n"
        );
        return;
    }
    let _ = writeln!(
        w,
        "A one-page range start + end through the head, overlapping exactly one of N \
         one-page subscriptions (spaced a page apart): the interval notifiers' tree against \
         one plain notifier that scans its own list of the same N intervals.\n\n\
         | subscriptions | interval tree | linear scan | scan / tree |\n|---|---|---|---|"
    );
    for n in INTERVAL_COUNTS {
        let t = r.crit(&Id::interval(Interval::Tree, n));
        let s = r.crit(&Id::interval(Interval::Scan, n));
        let _ = writeln!(w, "| {n} | {} | {} | {:.1}× |", ns(t), ns(s), s / t);
    }
    let _ = writeln!(w);
}

fn scale_tables(r: &Results, w: &mut String) {
    let _ = writeln!(w, "## Figure 6: scale\n");
    let _ = writeln!(
        w,
        "How each figure grows with the number of notifiers and pages. Dispatch and churn \
         by notifiers are the tables of figures 2 and 3; the zap by pages is figure 4's table.\n"
    );
    let _ = writeln!(
        w,
        "Hooks by notifiers registered (instructions per call, do-nothing notifiers):\n\n\
         | hook | 0 (idle, feature on) | {} |\n|---|---|{}",
        HOOK_COUNTS.map(|k| k.to_string()).join(" | "),
        "---|".repeat(HOOK_COUNTS.len())
    );
    for hook in Hook::ALL {
        let idle = r
            .idle_icount
            .iter()
            .find(|(h, _, _)| *h == hook)
            .map_or(f64::NAN, |(_, on, _)| *on);
        let cells: Vec<String> = HOOK_COUNTS
            .iter()
            .map(|k| {
                r.hook_scale
                    .iter()
                    .find(|(h, kk, _)| *h == hook && kk == k)
                    .map_or("n/a".into(), |(_, _, v)| format!("{v:.1}"))
            })
            .collect();
        let _ = writeln!(
            w,
            "| `{}` | {idle:.1} | {} |",
            hook.function(),
            cells.join(" | ")
        );
    }
    let (lo, hi) = (
        DISPATCH_COUNTS[0],
        DISPATCH_COUNTS[DISPATCH_COUNTS.len() - 1],
    );
    let _ = writeln!(
        w,
        "\nDispatch per notifier (the slope of figure 2, 1 thread, from {lo} to {hi} notifiers):\n\n\
         | operation | list | limit | lock-based |\n|---|---|---|---|"
    );
    for op in Op::ALL {
        let slope = |list| {
            let a = r.crit(&Id::dispatch(op, list, 1, lo));
            let b = r.crit(&Id::dispatch(op, list, 1, hi));
            ns((b - a) / (hi - lo) as f64)
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} |",
            op.label(),
            slope(List::Head),
            slope(List::Limit),
            slope(List::Lock)
        );
    }
    let _ = writeln!(
        w,
        "\nZap cost per page by size (instructions per page, figure 4):\n\n\
         | notifier | {} |\n|---|{}",
        ZAP_PAGES
            .map(|p| format!("2^{}", p.trailing_zeros()))
            .join(" | "),
        "---|".repeat(ZAP_PAGES.len())
    );
    for with in ZapWith::ALL {
        let cells: Vec<String> = ZAP_PAGES
            .iter()
            .map(|&p| {
                r.zap(p, with).map_or("n/a".into(), |z| {
                    format!("{:.1}", z.insns as f64 / p as f64)
                })
            })
            .collect();
        let _ = writeln!(w, "| {} | {} |", with.name(), cells.join(" | "));
    }
}
