//! The parameters of the benchmark suite, defined once.
//!
//! Two crates read them: `mmu-notifier-bench` (ci/bench), which measures,
//! and `xtask`, which runs the measurements and writes `BENCHMARKS.md`.
//! Everything they must agree on is here: the notifier counts, thread
//! counts and sizes of each figure, the benchmark ids the criterion binary
//! records and the report reads back, and the format of the `scaling`
//! binary's report. The goals are the report's business and stay in xtask.
//!
//! No dependencies, so that xtask still builds before anything else is
//! installed.

pub mod scaling;

/// Registered notifiers in the dispatch figure (figure 2).
pub const DISPATCH_COUNTS: [usize; 4] = [1, 4, 16, 64];
/// Threads calling at once in the dispatch figure.
pub const DISPATCH_THREADS: [usize; 2] = [1, 2];
/// Registered notifiers in the churn figure (figure 3).
pub const CHURN_COUNTS: [usize; 3] = [1, 4, 16];
/// Zap sizes in pages (figure 4); the last is the issue's 2^18.
pub const ZAP_PAGES: [usize; 3] = [1 << 12, 1 << 15, 1 << 18];
/// Interval subscriptions (figure 5).
pub const INTERVAL_COUNTS: [usize; 3] = [10, 1_000, 100_000];
/// Notifiers registered in the hooks' scale table (figure 6).
pub const HOOK_COUNTS: [usize; 3] = [1, 4, 16];
/// Do-nothing notifiers registered in the reader-scaling figure (figure 7).
pub const SCALING_NOTIFIERS: usize = 1;
/// Loop lengths of the two callgrind runs per hook: per call is
/// `(I(N2) - I(N1)) / (N2 - N1)`, so setup cancels.
pub const ICOUNT_N1: u64 = 10_000;
/// See [`ICOUNT_N1`].
pub const ICOUNT_N2: u64 = 110_000;

/// The environment variable that overrides the reader counts of figure 3
/// (a comma-separated list, e.g. `1,15`).
pub const CHURN_READERS_ENV: &str = "MMU_NOTIFIER_BENCH_CHURN_READERS";

/// Figure 3's reader counts on a machine of `nproc` CPUs: one reader, and
/// one per CPU but the one the writer churns on (the same on 2 CPUs).
pub fn churn_readers(nproc: usize) -> Vec<usize> {
    let mut v = vec![1, nproc.saturating_sub(1).max(1)];
    v.dedup();
    v
}

/// Parses a comma-separated list of positive counts (`1,2,4`).
///
/// # Errors
/// An empty list, a word that is not a number, or a zero.
pub fn parse_counts(list: &str) -> Result<Vec<usize>, String> {
    let v: Vec<usize> = list
        .split(',')
        .map(|w| match w.trim().parse() {
            Ok(0) | Err(_) => Err(format!("{w:?} is not a count of 1 or more")),
            Ok(n) => Ok(n),
        })
        .collect::<Result<_, _>>()?;
    if v.is_empty() {
        return Err("an empty list".into());
    }
    Ok(v)
}

/// The operation a dispatch benchmark calls on every notifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// `invalidate_page`.
    Page,
    /// `invalidate_range_start` and its end.
    Range,
}

impl Op {
    /// Both, in report order.
    pub const ALL: [Op; 2] = [Op::Page, Op::Range];

    /// Its name in benchmark ids and reports.
    pub fn name(self) -> &'static str {
        match self {
            Op::Page => "page",
            Op::Range => "range",
        }
    }

    /// How a report names it.
    pub fn label(self) -> &'static str {
        match self {
            Op::Page => "`invalidate_page`",
            Op::Range => "range start + end",
        }
    }

    /// The op called `name`.
    pub fn parse(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|o| o.name() == name)
    }
}

/// The list a dispatch benchmark walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum List {
    /// The core's notifier list (`NotifierHead`).
    Head,
    /// The physical limit: a plain loop over a slice of `&dyn`.
    Limit,
    /// What a kernel writes by hand: `spin::RwLock<Vec<&dyn>>`.
    Lock,
}

impl List {
    /// All three, in report order.
    pub const ALL: [List; 3] = [List::Head, List::Limit, List::Lock];

    /// Its name in benchmark ids and reports.
    pub fn name(self) -> &'static str {
        match self {
            List::Head => "list",
            List::Limit => "limit",
            List::Lock => "lock",
        }
    }

    /// How a report names it.
    pub fn label(self) -> &'static str {
        match self {
            List::Head => "notifier list",
            List::Limit => "limit (slice of `&dyn`)",
            List::Lock => "`spin::RwLock<Vec<&dyn>>`",
        }
    }

    /// The list called `name`.
    pub fn parse(name: &str) -> Option<List> {
        List::ALL.into_iter().find(|l| l.name() == name)
    }
}

/// An idle hook of figure 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hook {
    /// `ptep_clear_flush` with the notifier step.
    ClearFlush,
    /// `ptep_clear_flush_young` with the notifier step.
    Young,
}

impl Hook {
    /// Both, in report order.
    pub const ALL: [Hook; 2] = [Hook::ClearFlush, Hook::Young];

    /// The core function's name.
    pub fn function(self) -> &'static str {
        match self {
            Hook::ClearFlush => "ptep_clear_flush",
            Hook::Young => "ptep_clear_flush_young",
        }
    }

    /// Its name on the `icount` command line.
    pub fn op(self) -> &'static str {
        match self {
            Hook::ClearFlush => "clear-flush",
            Hook::Young => "young",
        }
    }

    /// The hook whose `icount` op is `op`.
    pub fn parse_op(op: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|h| h.op() == op)
    }
}

/// Which notifier figure 4's zap runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ZapWith {
    /// Nobody registered: the baseline.
    Nobody,
    /// One notifier that works by range.
    Range,
    /// One notifier that works per page.
    Page,
}

impl ZapWith {
    /// All variants, baseline first.
    pub const ALL: [ZapWith; 3] = [ZapWith::Nobody, ZapWith::Range, ZapWith::Page];

    /// The name used in benchmark ids and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ZapWith::Nobody => "nobody",
            ZapWith::Range => "range",
            ZapWith::Page => "page",
        }
    }

    /// The variant called `name`.
    pub fn parse(name: &str) -> Option<ZapWith> {
        ZapWith::ALL.into_iter().find(|z| z.name() == name)
    }
}

/// Figure 5's two ways to find the subscriptions a range overlaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// The interval notifiers' tree.
    Tree,
    /// One notifier scanning its own list.
    Scan,
}

impl Interval {
    fn name(self) -> &'static str {
        match self {
            Interval::Tree => "tree",
            Interval::Scan => "scan",
        }
    }
}

/// A criterion benchmark id: `group/function/parameter`, which criterion
/// records as `full_id` in `benchmark.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Id {
    /// The benchmark group (one per figure).
    pub group: &'static str,
    /// The function within the group.
    pub function: String,
    /// The parameter (a count).
    pub parameter: String,
}

impl Id {
    /// `group/function/parameter`.
    pub fn full(&self) -> String {
        format!("{}/{}/{}", self.group, self.function, self.parameter)
    }

    /// Figure 1: `hook` timed with the notifier feature on or off.
    pub fn idle(hook: Hook, on: bool) -> Id {
        Id {
            group: "idle",
            function: hook.function().into(),
            parameter: if on { "on" } else { "off" }.into(),
        }
    }

    /// Figure 2: `op` over `k` notifiers of `list`, `threads` calling.
    pub fn dispatch(op: Op, list: List, threads: usize, k: usize) -> Id {
        Id {
            group: "dispatch",
            function: format!("{}-{}-{threads}t", op.name(), list.name()),
            parameter: k.to_string(),
        }
    }

    /// Figure 3: `invalidate_page` over `k` notifiers of `list` with
    /// `readers` reader threads, while another thread registers and
    /// unregisters (`churn`) or does nothing.
    pub fn churn(list: List, readers: usize, churn: bool, k: usize) -> Id {
        Id {
            group: "churn",
            function: format!(
                "{}-{}-{readers}r",
                list.name(),
                if churn { "churn" } else { "quiet" }
            ),
            parameter: k.to_string(),
        }
    }

    /// Figure 4: one zap of `pages` pages with `with` registered.
    pub fn zap(with: ZapWith, pages: usize) -> Id {
        Id {
            group: "zap",
            function: with.name().into(),
            parameter: pages.to_string(),
        }
    }

    /// Figure 5: a one-page invalidation among `n` interval subscriptions.
    pub fn interval(how: Interval, n: usize) -> Id {
        Id {
            group: "interval",
            function: how.name().into(),
            parameter: n.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_group_function_parameter() {
        assert_eq!(
            Id::dispatch(Op::Range, List::Lock, 2, 64).full(),
            "dispatch/range-lock-2t/64",
            "dispatch id"
        );
        assert_eq!(
            Id::churn(List::Head, 15, true, 4).full(),
            "churn/list-churn-15r/4",
            "churn id carries the reader count"
        );
        assert_eq!(
            Id::idle(Hook::Young, false).full(),
            "idle/ptep_clear_flush_young/off",
            "idle id"
        );
    }

    #[test]
    fn churn_readers_are_one_and_all_but_the_writers_cpu() {
        assert_eq!(churn_readers(2), [1], "2 CPUs: the same reader count");
        assert_eq!(churn_readers(16), [1, 15], "16 CPUs: 1 and 15");
        assert_eq!(churn_readers(1), [1], "never zero readers");
    }

    #[test]
    fn count_lists_refuse_zero_and_words() {
        assert_eq!(parse_counts("1,2, 4").unwrap(), [1, 2, 4], "a list");
        assert!(parse_counts("1,0").is_err(), "zero threads is no count");
        assert!(parse_counts("two").is_err(), "not a number");
        assert!(parse_counts("").is_err(), "empty");
    }
}
