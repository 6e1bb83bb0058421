//! The machine a run is measured on, as `BENCHMARKS.md` describes it.

use std::path::Path;
use std::process::Command;

/// What the report says about this machine.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    /// CPUs available to the run.
    pub nproc: usize,
    /// `model name` of `/proc/cpuinfo`.
    pub cpu: String,
    /// `rustc -V`.
    pub rustc: String,
    /// `valgrind --version`.
    pub valgrind: String,
    /// The kernel release.
    pub kernel: String,
    /// When the run started.
    pub date: String,
    /// The 1-minute load average at the start.
    pub load_start: String,
    /// ... and at the end.
    pub load_end: String,
}

impl Machine {
    /// Describes this machine now.
    pub fn describe(root: &Path) -> Machine {
        let cmd = |prog: &str, args: &[&str]| {
            Command::new(prog)
                .args(args)
                .current_dir(root)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_else(|| "unknown".into())
        };
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        Machine {
            nproc: nproc(),
            cpu,
            rustc: cmd("rustc", &["-V"]),
            valgrind: cmd("valgrind", &["--version"]),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            date: utc_date(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            ),
            load_start: load_average(),
            load_end: String::new(),
        }
    }
}

/// CPUs available to this process.
pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The 1-minute load average.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// `YYYY-MM-DD HH:MM UTC` of a time in seconds since 1970.
pub fn utc_date(unix: u64) -> String {
    let (mut days, secs) = (unix / 86_400, unix % 86_400);
    let leap = |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let mut year = 1970;
    loop {
        let len = if leap(year) { 366 } else { 365 };
        if days < len {
            break;
        }
        days -= len;
        year += 1;
    }
    let feb = if leap(year) { 29 } else { 28 };
    let mut month = 1;
    for len in [31, feb, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31] {
        if days < len {
            break;
        }
        days -= len;
        month += 1;
    }
    format!(
        "{year}-{month:02}-{:02} {:02}:{:02} UTC",
        days + 1,
        secs / 3600,
        secs % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_count_leap_years() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC", "the epoch");
        assert_eq!(
            utc_date(951_782_400),
            "2000-02-29 00:00 UTC",
            "2000 is a leap year"
        );
        assert_eq!(
            utc_date(4_107_542_340),
            "2100-02-28 23:59 UTC",
            "2100 is not"
        );
        assert_eq!(
            utc_date(1_798_761_600 + 3_660),
            "2027-01-01 01:01 UTC",
            "new year"
        );
    }
}
