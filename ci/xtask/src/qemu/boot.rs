//! Booting one kernel: the QEMU command (the arch's machine arguments,
//! then what every arch takes), the console streamed and kept, the one
//! wall-clock limit, and the verdict from QEMU's exit status (as the arch
//! reads it) and the kernel's summary line together.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::kernels::{Kernel, Role};
use super::{defmt, parse_summary, s390x, x86_64, Report, Summary};
use crate::arch::Arch;

/// What a QEMU exit status means on an arch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The kernel reported success.
    Passed,
    /// The kernel reported failure.
    Failed,
    /// Neither: what went wrong.
    Odd(String),
}

/// How QEMU ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ended {
    /// It exited; the arch says what the status means.
    Exited(Exit),
    /// A signal (not ours) killed it.
    Killed(String),
    /// We killed it at the limit.
    TimedOut(Duration),
}

/// One kernel's boot, as the arch modules see it.
#[derive(Debug, Clone, Copy)]
pub struct Boot<'a> {
    /// The kernel.
    pub kernel: &'a Kernel,
    /// Its ELF.
    pub elf: &'a Path,
    /// `-smp`.
    pub smp: u32,
    /// KVM rather than TCG.
    pub kvm: bool,
    /// The test-name filter.
    pub filter: Option<&'a str>,
    /// Where its defmt frames go (a defmt build).
    pub frames: Option<&'a Path>,
}

/// The words of the kernel command line (`-append`).
fn cmdline(arch: Arch, boot: &Boot) -> Vec<String> {
    let mut words = match arch {
        Arch::X86_64 => x86_64::cmdline(boot),
        Arch::S390x => s390x::cmdline(boot),
    };
    words.extend(boot.kernel.append.iter().map(|w| w.to_string()));
    words
}

/// The QEMU command that boots `boot`: the arch's machine, then what every
/// arch takes.
fn qemu_command(arch: Arch, boot: &Boot) -> Command {
    let mut cmd = Command::new(arch.qemu());
    let machine: Vec<OsString> = match arch {
        Arch::X86_64 => x86_64::machine_args(boot),
        Arch::S390x => s390x::machine_args(boot),
    };
    cmd.args(machine);
    cmd.args(["-smp", &boot.smp.to_string()]);
    cmd.args(boot.kernel.qemu_args);
    cmd.arg("-kernel").arg(boot.elf);
    let words = cmdline(arch, boot);
    if !words.is_empty() {
        cmd.arg("-append").arg(words.join(" "));
    }
    // No stdin: QEMU would otherwise put a terminal into raw mode.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// What QEMU's exit status means on `arch`.
fn exit_meaning(arch: Arch, code: i32) -> Exit {
    match arch {
        Arch::X86_64 => x86_64::exit(code),
        Arch::S390x => s390x::exit(code),
    }
}

/// Boots one kernel and judges its run.
pub(super) fn boot_one(arch: Arch, boot: &Boot) -> Result<Report, String> {
    if !boot.elf.exists() {
        return Err(format!("kernel {} was not built", boot.elf.display()));
    }
    let tag = format!("{}/{}", arch.name(), boot.kernel.name);
    if let Some(frames) = boot.frames {
        // QEMU truncates it anyway; no stale frames if it fails to start.
        let _ = std::fs::remove_file(frames);
    }
    let mut limit = arch.timeout(boot.kvm);
    if boot.kernel.role == Role::Smp {
        limit += arch.smp_timeout_per_cpu() * boot.smp;
    }
    let words = cmdline(arch, boot).join(" ");
    println!(
        "[{tag}] {} ({}){}",
        arch.qemu(),
        if boot.kvm { "kvm" } else { "tcg" },
        if words.is_empty() {
            String::new()
        } else {
            format!(" -append {words:?}")
        }
    );
    let started = Instant::now();
    let mut child = qemu_command(arch, boot)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", arch.qemu()))?;

    // Stream the console as it comes (a hang still shows how far it got),
    // and keep it for the verdict.
    let stdout = child.stdout.take().expect("stdout is piped");
    let echo_tag = tag.clone();
    let console = thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let line = line.trim_end_matches('\r');
            println!("[{echo_tag}] {line}");
            all.push_str(line);
            all.push('\n');
        }
        all
    });
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let errors = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = wait_with_deadline(&mut child, limit)
        .map_err(|e| format!("waiting for {}: {e}", arch.qemu()))?;
    let output = console.join().unwrap_or_default();
    for line in errors.join().unwrap_or_default().lines() {
        eprintln!("[{tag}] qemu: {line}");
    }
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(frames) = boot.frames {
        defmt::show(&tag, boot.elf, frames);
    }
    let ended = match status {
        None => Ended::TimedOut(limit),
        Some(s) => match s.code() {
            Some(code) => Ended::Exited(exit_meaning(arch, code)),
            None => Ended::Killed(s.to_string()),
        },
    };
    let v = judge(&ended, parse_summary(&output), boot.filter.is_some());
    let mut report = Report {
        summary: v.summary,
        failures: Vec::new(),
    };
    match v.problem {
        _ if v.skipped => println!("[{tag}] no case matches the filter: skipped"),
        None => println!("[{tag}] {} passed in {elapsed:.2} s", v.summary.passed),
        Some(why) => {
            eprintln!("[{tag}] FAILED after {elapsed:.2} s: {why}");
            report.failures.push(format!("{tag}: {why}"));
        }
    }
    Ok(report)
}

/// The verdict on one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verdict {
    summary: Summary,
    /// Why it failed; `None` when it passed (or was skipped).
    problem: Option<String>,
    /// A filter selected none of its cases.
    skipped: bool,
}

/// Combines how QEMU ended with the kernel's summary line: neither is
/// enough alone (a kernel may crash after printing all passed; QEMU may
/// exit "successfully" through a reset). The cases printed are always
/// counted; a problem that is not those failed cases counts one more.
fn judge(ended: &Ended, summary: Option<Summary>, filtered: bool) -> Verdict {
    let counted = summary.unwrap_or_default();
    let fail = |why: String, extra: bool| Verdict {
        summary: Summary {
            passed: counted.passed,
            failed: counted.failed + u32::from(extra),
        },
        problem: Some(why),
        skipped: false,
    };
    let exit = match ended {
        Ended::TimedOut(limit) => {
            return fail(format!("timed out after {} s", limit.as_secs()), true)
        }
        Ended::Killed(how) => return fail(format!("QEMU was killed ({how})"), true),
        Ended::Exited(exit) => exit,
    };
    // A kernel that ran nothing reports failure; with a filter that only
    // matches another kernel's cases, that is no failure (`run` checks
    // that some kernel ran something).
    if filtered && *exit == Exit::Failed && summary == Some(Summary::default()) {
        return Verdict {
            summary: Summary::default(),
            problem: None,
            skipped: true,
        };
    }
    let Some(s) = summary else {
        let why = match exit {
            Exit::Odd(why) => format!("{why}; no `N passed, N failed` line"),
            _ => "no `N passed, N failed` line".to_string(),
        };
        return fail(why, true);
    };
    match exit {
        Exit::Odd(why) => fail(why.clone(), true),
        Exit::Passed if s.failed > 0 => fail(
            format!(
                "QEMU reported success but the kernel says {} passed, {} failed",
                s.passed, s.failed
            ),
            false,
        ),
        Exit::Passed if s.passed == 0 => fail("no case ran".into(), true),
        Exit::Passed => Verdict {
            summary: s,
            problem: None,
            skipped: false,
        },
        // The failed cases are counted; the status agrees with them.
        Exit::Failed if s.failed > 0 => fail(format!("{} case(s) failed", s.failed), false),
        Exit::Failed => fail(
            format!(
                "the kernel reported failure although all {} cases passed (crash after the summary?)",
                s.passed
            ),
            true,
        ),
    }
}

/// Waits for `child`, killing it after `limit`. `None`: it timed out.
pub fn wait_with_deadline(
    child: &mut Child,
    limit: Duration,
) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            // Our own child: kill it by handle, then reap it.
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::kernels;

    fn args(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn s(passed: u32, failed: u32) -> Summary {
        Summary { passed, failed }
    }

    fn boot<'a>(kernel: &'a Kernel, smp: u32, filter: Option<&'a str>) -> Boot<'a> {
        Boot {
            kernel,
            elf: Path::new("k/selftest"),
            smp,
            kvm: false,
            filter,
            frames: None,
        }
    }

    #[test]
    fn x86_64_boot_command_line() {
        let k = &kernels::KERNELS[0];
        let c = qemu_command(Arch::X86_64, &boot(k, 2, Some("flush")));
        let mut want: Vec<String> = [
            "-M",
            "q35",
            "-nodefaults",
            "-m",
            "512M",
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-no-reboot",
        ]
        .map(String::from)
        .to_vec();
        if let Some(q) = x86_64::qboot() {
            want.extend(["-bios".into(), q.display().to_string()]);
        }
        want.extend(
            [
                "-accel",
                "tcg",
                "-smp",
                "2",
                "-kernel",
                "k/selftest",
                "-append",
                "flush accel=tcg smp=2",
            ]
            .map(String::from),
        );
        assert_eq!(c.get_program(), "qemu-system-x86_64", "the x86 emulator");
        assert_eq!(
            args(&c),
            want,
            "q35, debug exit, filter first on the command line"
        );
    }

    #[test]
    fn x86_64_defmt_boot_has_a_second_serial_port() {
        let k = &kernels::KERNELS[0];
        let mut b = boot(k, 1, None);
        b.frames = Some(Path::new("k/selftest.defmt"));
        b.kvm = true;
        let a = args(&qemu_command(Arch::X86_64, &b));
        let serials: Vec<&String> = a
            .windows(2)
            .filter(|w| w[0] == "-serial")
            .map(|w| &w[1])
            .collect();
        assert_eq!(
            serials,
            ["stdio", "file:k/selftest.defmt"],
            "COM1 the console, COM2 the frames"
        );
        assert!(
            a.windows(4)
                .any(|w| w == ["-accel", "kvm", "-cpu", "host,-arch-capabilities"]),
            "KVM with the CPU model that starts here: {a:?}"
        );
    }

    #[test]
    fn s390x_boot_command_line() {
        let k = kernels::KERNELS
            .iter()
            .find(|k| k.name == "smp")
            .expect("smp kernel");
        let c = qemu_command(Arch::S390x, &boot(k, 4, Some("ipte")));
        assert_eq!(c.get_program(), "qemu-system-s390x", "the s390x emulator");
        assert_eq!(
            args(&c),
            [
                "-M",
                "s390-ccw-virtio",
                "-nodefaults",
                "-display",
                "none",
                "-serial",
                "stdio",
                "-action",
                "panic=exit-failure",
                "-m",
                "256M",
                "-smp",
                "4",
                "-kernel",
                "k/selftest",
                "-append",
                "smp=4 filter=ipte",
            ],
            "ccw machine, panic exits 1, key=value words"
        );
        let c = qemu_command(Arch::S390x, &boot(k, 1, None));
        assert!(
            !args(&c).contains(&"-append".to_string()),
            "no -append without words"
        );
    }

    #[test]
    fn a_kernels_own_qemu_args_come_before_the_kernel() {
        let k = Kernel::new("iommu", Role::Test, &[Arch::X86_64])
            .with_qemu_args(&["-device", "intel-iommu"]);
        let a = args(&qemu_command(Arch::X86_64, &boot(&k, 1, None)));
        let at = a.iter().position(|x| x == "intel-iommu").expect("passed");
        assert!(
            at < a.iter().position(|x| x == "-kernel").unwrap(),
            "device options before -kernel: {a:?}"
        );
    }

    #[test]
    fn a_kernels_own_words_follow_the_runners_on_its_command_line() {
        let k = Kernel::new("demo-dma", Role::Demo, &[Arch::S390x])
            .of_binary("iommu")
            .with_append(&["mode=demo"]);
        let a = args(&qemu_command(Arch::S390x, &boot(&k, 2, None)));
        assert_eq!(
            a.last().map(String::as_str),
            Some("smp=2 mode=demo"),
            "the runner's words, then the kernel's: {a:?}"
        );
    }

    #[test]
    fn a_passing_kernel_needs_the_success_status_and_cases() {
        let ok = Ended::Exited(Exit::Passed);
        assert_eq!(judge(&ok, Some(s(3, 0)), false).problem, None, "passed");
        let v = judge(&ok, Some(s(0, 0)), false);
        assert_eq!(
            (v.summary, v.problem.is_some()),
            (s(0, 1), true),
            "nothing ran is a failure"
        );
        let v = judge(&ok, None, false);
        assert_eq!(v.summary, s(0, 1), "no summary line counts one failure");
    }

    #[test]
    fn failed_cases_are_counted_once_and_crashes_once_more() {
        let failed = Ended::Exited(Exit::Failed);
        let v = judge(&failed, Some(s(5, 2)), false);
        assert_eq!(v.summary, s(5, 2), "the status agrees with the cases");
        assert_eq!(
            v.problem.as_deref(),
            Some("2 case(s) failed"),
            "and says so"
        );
        let v = judge(&failed, Some(s(5, 0)), false);
        assert_eq!(v.summary, s(5, 1), "failure status with all passed: +1");
        let v = judge(
            &Ended::TimedOut(Duration::from_secs(60)),
            Some(s(4, 2)),
            false,
        );
        assert_eq!(v.summary, s(4, 3), "a hang after failures: +1");
        assert_eq!(v.problem.as_deref(), Some("timed out after 60 s"), "a hang");
        let reset = Ended::Exited(Exit::Odd("the guest reset".into()));
        let v = judge(&reset, Some(s(7, 0)), false);
        assert_eq!(v.summary, s(7, 1), "an odd exit after all passed: +1");
    }

    #[test]
    fn a_filter_that_matches_nothing_in_a_kernel_skips_it() {
        let v = judge(&Ended::Exited(Exit::Failed), Some(s(0, 0)), true);
        assert!(v.skipped && v.problem.is_none(), "skipped, not failed");
        let v = judge(&Ended::Exited(Exit::Failed), Some(s(0, 0)), false);
        assert!(
            !v.skipped && v.problem.is_some(),
            "without a filter: failed"
        );
    }
}
