//! The `scaling` binary's report (figure 7, reader scaling): what it
//! measured, raw, and its JSON form, which `cargo xtask bench
//! --scaling-from FILE` reads back. The binary is meant to be copied to a
//! bigger machine that has no Rust toolchain, so the report carries that
//! machine's description with it.

use crate::{List, Op};

/// The value of the report's `format` field; a reader refuses others.
pub const FORMAT: &str = "mmu-notifier-scaling/1";

/// The machine a report was measured on.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    /// CPUs the process may run on.
    pub nproc: usize,
    /// `model name` of `/proc/cpuinfo`.
    pub cpu: String,
    /// The kernel release.
    pub kernel: String,
    /// When the run started, in seconds since 1970 (UTC).
    pub unix_time: u64,
}

/// How the measurement was taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Do-nothing notifiers registered.
    pub notifiers: usize,
    /// Warm-up per measurement, in milliseconds (all threads calling,
    /// nothing counted).
    pub warmup_ms: u64,
    /// Measured time per measurement, in milliseconds.
    pub measure_ms: u64,
    /// Measurements per cell; the sweep over all cells is repeated this
    /// many times, so a slow moment of the machine hits every cell alike.
    pub rounds: usize,
    /// Whether every thread was pinned to a CPU of its own (thread `i` to
    /// the `i`-th allowed CPU, modulo their number).
    pub pinned: bool,
}

/// One measurement: `threads` threads calling at once for `seconds`.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    /// The measured time (wall clock, between the start and stop signals).
    pub seconds: f64,
    /// Calls each thread completed in that time.
    pub calls: Vec<u64>,
}

impl Round {
    /// All threads' calls per second.
    pub fn rate(&self) -> f64 {
        self.calls.iter().sum::<u64>() as f64 / self.seconds
    }
}

/// One cell of the figure: an operation on a list at a thread count.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// The operation each thread calls in a loop.
    pub op: Op,
    /// The list it calls it on (one, shared by all threads).
    pub list: List,
    /// Threads calling at once.
    pub threads: usize,
    /// One per round.
    pub rounds: Vec<Round>,
}

impl Cell {
    /// The median over the rounds of all threads' calls per second.
    pub fn rate(&self) -> f64 {
        let mut r: Vec<f64> = self.rounds.iter().map(Round::rate).collect();
        r.sort_by(f64::total_cmp);
        match r.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => r[n / 2],
            n => (r[n / 2 - 1] + r[n / 2]) / 2.0,
        }
    }

    /// [`Cell::rate`] per thread.
    pub fn per_thread(&self) -> f64 {
        self.rate() / self.threads as f64
    }
}

/// A whole run of the `scaling` binary.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// How.
    pub settings: Settings,
    /// What it measured.
    pub cells: Vec<Cell>,
}

impl Report {
    /// The cell of `op` on `list` at `threads`.
    pub fn cell(&self, op: Op, list: List, threads: usize) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.op == op && c.list == list && c.threads == threads)
    }

    /// The thread counts measured, ascending.
    pub fn thread_counts(&self) -> Vec<usize> {
        let mut t: Vec<usize> = self.cells.iter().map(|c| c.threads).collect();
        t.sort_unstable();
        t.dedup();
        t
    }

    /// The report as JSON (one object; field names as in this module).
    pub fn to_json(&self) -> String {
        let m = &self.machine;
        let s = &self.settings;
        let cells: Vec<String> = self
            .cells
            .iter()
            .map(|c| {
                let rounds: Vec<String> = c
                    .rounds
                    .iter()
                    .map(|r| {
                        let calls: Vec<String> = r.calls.iter().map(u64::to_string).collect();
                        format!(
                            "{{\"seconds\":{},\"calls\":[{}]}}",
                            number(r.seconds),
                            calls.join(",")
                        )
                    })
                    .collect();
                format!(
                    "    {{\"op\":\"{}\",\"list\":\"{}\",\"threads\":{},\"rounds\":[{}]}}",
                    c.op.name(),
                    c.list.name(),
                    c.threads,
                    rounds.join(",")
                )
            })
            .collect();
        format!(
            "{{\n  \"format\":\"{FORMAT}\",\n  \"machine\":{{\"nproc\":{},\"cpu\":{},\"kernel\":{},\"unix_time\":{}}},\n  \
             \"settings\":{{\"notifiers\":{},\"warmup_ms\":{},\"measure_ms\":{},\"rounds\":{},\"pinned\":{}}},\n  \
             \"cells\":[\n{}\n  ]\n}}\n",
            m.nproc,
            string(&m.cpu),
            string(&m.kernel),
            m.unix_time,
            s.notifiers,
            s.warmup_ms,
            s.measure_ms,
            s.rounds,
            s.pinned,
            cells.join(",\n")
        )
    }
}

/// A JSON number (JSON has no infinity or NaN: those become 0).
fn number(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "0".into()
    }
}

/// A JSON string literal.
fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        assert_eq!(
            string("a\"b\\c\n"),
            "\"a\\\"b\\\\c\\u000a\"",
            "quotes, backslash, control"
        );
    }

    #[test]
    fn cell_rate_is_the_median_round() {
        let round = |calls: u64| Round {
            seconds: 1.0,
            calls: vec![calls, calls],
        };
        let c = Cell {
            op: Op::Page,
            list: List::Head,
            threads: 2,
            rounds: vec![round(5), round(1), round(3)],
        };
        assert_eq!(c.rate(), 6.0, "median of 10, 2, 6");
        assert_eq!(c.per_thread(), 3.0, "split over the threads");
    }
}
