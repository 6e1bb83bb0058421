//! Reading what the benchmark tools write: criterion's `estimates.json`
//! and `benchmark.json` (through serde_json), callgrind's totals line,
//! cargo's `--message-format=json` artifact messages, the `icount`
//! driver's `calls:` line, and the `scaling` binary's report.

use std::path::Path;

use mmu_notifier_bench_params::scaling::{Cell, Machine, Report, Round, Settings, FORMAT};
use mmu_notifier_bench_params::{List, Op};
use serde_json::Value;

/// Every benchmark criterion recorded under `home`: (full id, median ns).
///
/// # Errors
/// A `new/` directory whose JSON lacks the id or the median.
pub fn criterion_medians(home: &Path) -> Result<Vec<(String, f64)>, String> {
    let mut found = Vec::new();
    let mut dirs = vec![home.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            if p.file_name().is_none_or(|n| n != "new") {
                dirs.push(p);
                continue;
            }
            let bench = std::fs::read_to_string(p.join("benchmark.json"));
            let est = std::fs::read_to_string(p.join("estimates.json"));
            if let (Ok(bench), Ok(est)) = (bench, est) {
                let id = full_id(&bench).ok_or_else(|| format!("no full_id in {}", p.display()))?;
                let median =
                    median_estimate(&est).ok_or_else(|| format!("no median in {}", p.display()))?;
                found.push((id, median));
            }
        }
    }
    Ok(found)
}

/// `full_id` of criterion's `benchmark.json`.
pub fn full_id(json: &str) -> Option<String> {
    let v: Value = serde_json::from_str(json).ok()?;
    Some(v.get("full_id")?.as_str()?.to_string())
}

/// `median.point_estimate` of criterion's `estimates.json`, in ns.
pub fn median_estimate(json: &str) -> Option<f64> {
    let v: Value = serde_json::from_str(json).ok()?;
    v.get("median")?.get("point_estimate")?.as_f64()
}

/// The executable of the artifact `name` in cargo's JSON messages.
pub fn artifact_executable(messages: &str, name: &str) -> Option<String> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m.get("reason").and_then(Value::as_str) == Some("compiler-artifact"))
        .filter(|m| m.pointer("/target/name").and_then(Value::as_str) == Some(name))
        .find_map(|m| Some(m.get("executable")?.as_str()?.to_string()))
}

/// The `totals:` (or `summary:`) line of a callgrind output file.
pub fn callgrind_total(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find(|l| l.starts_with("totals:"))
        .or_else(|| text.lines().find(|l| l.starts_with("summary:")))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What the `icount` driver says one notifier received (`calls: ...`).
pub fn icount_calls(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("calls: "))
        .unwrap_or("unknown")
        .to_string()
}

/// A report of the `scaling` binary.
///
/// # Errors
/// Not JSON, another format, or a field missing or of the wrong type
/// (named in the message).
pub fn scaling_report(json: &str) -> Result<Report, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let format = str_at(&v, "/format")?;
    if format != FORMAT {
        return Err(format!("format {format:?}, expected {FORMAT:?}"));
    }
    let machine = Machine {
        nproc: uint_at(&v, "/machine/nproc")? as usize,
        cpu: str_at(&v, "/machine/cpu")?.to_string(),
        kernel: str_at(&v, "/machine/kernel")?.to_string(),
        unix_time: uint_at(&v, "/machine/unix_time")?,
    };
    let settings = Settings {
        notifiers: uint_at(&v, "/settings/notifiers")? as usize,
        warmup_ms: uint_at(&v, "/settings/warmup_ms")?,
        measure_ms: uint_at(&v, "/settings/measure_ms")?,
        rounds: uint_at(&v, "/settings/rounds")? as usize,
        pinned: v
            .pointer("/settings/pinned")
            .and_then(Value::as_bool)
            .ok_or("no boolean /settings/pinned")?,
    };
    let cells = v
        .get("cells")
        .and_then(Value::as_array)
        .ok_or("no array /cells")?
        .iter()
        .enumerate()
        .map(|(i, c)| cell(c).map_err(|e| format!("/cells/{i}: {e}")))
        .collect::<Result<Vec<Cell>, String>>()?;
    Ok(Report {
        machine,
        settings,
        cells,
    })
}

fn cell(c: &Value) -> Result<Cell, String> {
    let op = str_at(c, "/op")?;
    let list = str_at(c, "/list")?;
    let rounds = c
        .get("rounds")
        .and_then(Value::as_array)
        .ok_or("no array rounds")?
        .iter()
        .map(|r| {
            let calls = r
                .get("calls")
                .and_then(Value::as_array)
                .ok_or("no array calls")?
                .iter()
                .map(|n| n.as_u64().ok_or("a call count that is not a count"))
                .collect::<Result<Vec<u64>, _>>()?;
            let seconds = r
                .get("seconds")
                .and_then(Value::as_f64)
                .filter(|s| *s > 0.0)
                .ok_or("no positive seconds")?;
            Ok(Round { seconds, calls })
        })
        .collect::<Result<Vec<Round>, &str>>()?;
    Ok(Cell {
        op: Op::parse(op).ok_or(format!("unknown op {op:?}"))?,
        list: List::parse(list).ok_or(format!("unknown list {list:?}"))?,
        threads: uint_at(c, "/threads")? as usize,
        rounds,
    })
}

fn str_at<'v>(v: &'v Value, at: &str) -> Result<&'v str, String> {
    v.pointer(at)
        .and_then(Value::as_str)
        .ok_or(format!("no string {at}"))
}

fn uint_at(v: &Value, at: &str) -> Result<u64, String> {
    v.pointer(at)
        .and_then(Value::as_u64)
        .ok_or(format!("no count {at}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_median_of_criterion_estimates() {
        let json = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":3.0},"point_estimate":2.0,"standard_error":0.1},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.5,"upper_bound":2.5},"point_estimate":1.75,"standard_error":0.2}}"#;
        assert_eq!(
            median_estimate(json),
            Some(1.75),
            "the median, not the mean"
        );
    }

    #[test]
    fn reads_the_full_id_with_escapes() {
        let json = r#"{"group_id":"dispatch","function_id":"page-list-1t","value_str":"4","full_id":"dispatch/page-list-1t/4","directory_name":"dispatch/page-list-1t/4","title":"a \"quoted\" title"}"#;
        assert_eq!(
            full_id(json).as_deref(),
            Some("dispatch/page-list-1t/4"),
            "the id the report looks up"
        );
    }

    #[test]
    fn reads_callgrind_totals() {
        let text = "events: Ir\nfn=main\n1 5\nsummary: 1234\ntotals: 1234\n";
        assert_eq!(callgrind_total(text), Some(1234), "the totals line");
    }

    #[test]
    fn finds_the_executable_cargo_reports() {
        let msgs = concat!(
            r#"{"reason":"compiler-artifact","target":{"name":"mmu_notifier_bench","kind":["lib"]},"executable":null}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"icount","kind":["bin"]},"executable":"/t/release/icount","fresh":true}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
        );
        assert_eq!(
            artifact_executable(msgs, "icount").as_deref(),
            Some("/t/release/icount"),
            "the binary's path"
        );
        assert_eq!(
            artifact_executable(msgs, "mmu_notifier_bench"),
            None,
            "a library has no executable"
        );
    }

    #[test]
    fn a_scaling_report_reads_back_what_the_binary_writes() {
        let report = Report {
            machine: Machine {
                nproc: 16,
                cpu: "Some \"CPU\" @ 3 GHz".into(),
                kernel: "6.1.0".into(),
                unix_time: 1_800_000_000,
            },
            settings: Settings {
                notifiers: 1,
                warmup_ms: 100,
                measure_ms: 300,
                rounds: 2,
                pinned: true,
            },
            cells: vec![Cell {
                op: Op::Range,
                list: List::Lock,
                threads: 16,
                rounds: vec![
                    Round {
                        seconds: 0.3001,
                        calls: vec![5; 16],
                    },
                    Round {
                        seconds: 0.25,
                        calls: vec![u64::MAX / 32; 16],
                    },
                ],
            }],
        };
        assert_eq!(
            scaling_report(&report.to_json()),
            Ok(report),
            "the JSON round-trips exactly"
        );
    }

    #[test]
    fn a_scaling_report_of_another_format_is_refused() {
        let e = scaling_report(r#"{"format":"something-else/2"}"#).unwrap_err();
        assert!(e.contains("something-else/2"), "the error names it: {e}");
        let e = scaling_report(r#"{"format":"mmu-notifier-scaling/1","machine":{}}"#).unwrap_err();
        assert!(
            e.contains("/machine/nproc"),
            "the missing field is named: {e}"
        );
    }
}
