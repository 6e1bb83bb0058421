//! Figure 7, reader scaling: total `invalidate_page` (and range start +
//! end) calls per second with T threads calling at once on one shared
//! list, for the notifier list, the slice limit and the lock-based list,
//! with one do-nothing notifier registered.
//!
//! ```text
//! scaling [--threads 1,2,4,8,16] [--warmup-ms 100] [--measure-ms 300]
//!         [--rounds 3] [--no-pin] [--json FILE]
//! ```
//!
//! Prints a table; `--json FILE` also writes the raw report, which
//! `cargo xtask bench --scaling-from FILE` renders into `BENCHMARKS.md`
//! as a figure from another machine. Without `--threads`: 1, 2, 4, ... up
//! to the CPUs this process may use, and that count itself.
//!
//! Built by `cargo xtask bench` as one static binary
//! (`x86_64-unknown-linux-musl`) so that it can be copied to a bigger
//! machine that has no Rust toolchain. No criterion here: a timed loop with
//! per-thread counters ([`mmu_notifier_bench::scaling`]).

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mmu_notifier_bench::params::scaling::{Cell, Machine, Report, Settings};
use mmu_notifier_bench::params::{parse_counts, List, Op, SCALING_NOTIFIERS};
use mmu_notifier_bench::scaling::{allowed_cpus, measure, Timing};
use mmu_notifier_bench::{
    api, head_range, one_page_range, DynNotifier, LockedList, Sink, SliceList, BASE,
};

const USAGE: &str = "usage: scaling [--threads 1,2,4,...] [--warmup-ms N] [--measure-ms N] [--rounds N] [--no-pin] [--json FILE]";

struct Args {
    threads: Option<Vec<usize>>,
    warmup_ms: u64,
    measure_ms: u64,
    rounds: usize,
    pin: bool,
    json: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        threads: None,
        warmup_ms: 100,
        measure_ms: 300,
        rounds: 3,
        pin: true,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| -> Result<u64, String> {
            v.parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(format!("{flag} needs a number of 1 or more"))
        };
        match flag.as_str() {
            "--threads" => a.threads = Some(parse_counts(&value()?)?),
            "--warmup-ms" => a.warmup_ms = number(value()?)?,
            "--measure-ms" => a.measure_ms = number(value()?)?,
            "--rounds" => a.rounds = number(value()?)? as usize,
            "--no-pin" => a.pin = false,
            "--json" => a.json = Some(value()?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(a)
}

/// 1, 2, 4, ... below `nproc`, then `nproc`.
fn default_threads(nproc: usize) -> Vec<usize> {
    let mut v: Vec<usize> = std::iter::successors(Some(1usize), |t| t.checked_mul(2))
        .take_while(|&t| t < nproc)
        .collect();
    v.push(nproc.max(1));
    v
}

fn describe(nproc: usize) -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    Machine {
        nproc,
        cpu,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into()),
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

fn run(a: &Args) -> Result<Report, String> {
    let cpus = allowed_cpus();
    let nproc = if cpus.is_empty() {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        cpus.len()
    };
    let threads = a.threads.clone().unwrap_or_else(|| default_threads(nproc));
    let timing = Timing {
        warmup: Duration::from_millis(a.warmup_ms),
        measure: Duration::from_millis(a.measure_ms),
    };

    let head = api::head();
    let _subs = (0..SCALING_NOTIFIERS)
        .map(|_| api::subscribe(&head, Sink::default()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("registering a notifier: {e:?}"))?;
    let sinks = [Sink::default(); SCALING_NOTIFIERS];
    let dyns: Vec<&dyn DynNotifier> = sinks.iter().map(|s| s as &dyn DynNotifier).collect();
    let slice = SliceList(&dyns);
    let locked = LockedList::new(dyns.clone());
    let range = one_page_range();

    let pin: &[usize] = if a.pin { &cpus } else { &[] };
    let mut pinned = a.pin && !cpus.is_empty();
    let mut cells: Vec<Cell> = Vec::new();
    for round in 0..a.rounds {
        eprintln!("scaling: round {} of {}", round + 1, a.rounds);
        for op in Op::ALL {
            for &t in &threads {
                for list in List::ALL {
                    let (r, all_pinned) = match (op, list) {
                        (Op::Page, List::Head) => {
                            measure(&|| head.invalidate_page(black_box(BASE)), t, pin, timing)
                        }
                        (Op::Page, List::Limit) => measure(
                            &|| black_box(slice).invalidate_page(black_box(BASE)),
                            t,
                            pin,
                            timing,
                        ),
                        (Op::Page, List::Lock) => {
                            measure(&|| locked.invalidate_page(black_box(BASE)), t, pin, timing)
                        }
                        (Op::Range, List::Head) => {
                            measure(&|| head_range(&head, black_box(range)), t, pin, timing)
                        }
                        (Op::Range, List::Limit) => measure(
                            &|| black_box(slice).invalidate_range(black_box(&range)),
                            t,
                            pin,
                            timing,
                        ),
                        (Op::Range, List::Lock) => measure(
                            &|| locked.invalidate_range(black_box(&range)),
                            t,
                            pin,
                            timing,
                        ),
                    };
                    pinned &= all_pinned;
                    match cells
                        .iter_mut()
                        .find(|c| c.op == op && c.list == list && c.threads == t)
                    {
                        Some(c) => c.rounds.push(r),
                        None => cells.push(Cell {
                            op,
                            list,
                            threads: t,
                            rounds: vec![r],
                        }),
                    }
                }
            }
        }
    }
    Ok(Report {
        machine: describe(nproc),
        settings: Settings {
            notifiers: SCALING_NOTIFIERS,
            warmup_ms: a.warmup_ms,
            measure_ms: a.measure_ms,
            rounds: a.rounds,
            pinned,
        },
        cells,
    })
}

/// The human-readable table: per op and thread count, each list's total
/// rate and its per-thread rate against one thread's.
fn table(r: &Report) -> String {
    let mut s = format!(
        "reader scaling: {} CPU(s), {}; {} notifier(s); {} ms x {} rounds; {}\n",
        r.machine.nproc,
        r.machine.cpu,
        r.settings.notifiers,
        r.settings.measure_ms,
        r.settings.rounds,
        if r.settings.pinned {
            "pinned"
        } else {
            "not pinned"
        }
    );
    s.push_str("M calls/s of all threads (per-thread rate / 1 thread's)\n");
    s.push_str(&format!(
        "{:<6} {:>7} {:>17} {:>17} {:>17}\n",
        "op", "threads", "list", "limit", "lock"
    ));
    for op in Op::ALL {
        for t in r.thread_counts() {
            s.push_str(&format!("{:<6} {t:>7}", op.name()));
            for list in List::ALL {
                let cell = match (r.cell(op, list, t), r.cell(op, list, 1)) {
                    (Some(c), Some(one)) => format!(
                        "{:.1} ({:.2}x)",
                        c.rate() / 1e6,
                        c.per_thread() / one.per_thread()
                    ),
                    _ => "n/a".into(),
                };
                s.push_str(&format!(" {cell:>17}"));
            }
            s.push('\n');
        }
    }
    s
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("scaling: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let report = match run(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("scaling: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", table(&report));
    if let Some(path) = &args.json {
        if let Err(e) = std::fs::write(path, report.to_json()) {
            eprintln!("scaling: writing {path}: {e}");
            return ExitCode::FAILURE;
        }
        eprintln!("scaling: wrote {path}");
    }
    ExitCode::SUCCESS
}
