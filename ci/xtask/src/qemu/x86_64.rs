//! Builds and boots the x86_64 test kernels.
//!
//! The kernels are the binaries of `targets/x86_64`, a cargo workspace of
//! its own (its `.cargo/config.toml` selects `x86_64-unknown-none` and the
//! linker flags, so cargo must run from that directory). Each kernel is
//! booted through PVH with `-kernel`, prints one line per test case and
//! `N passed, N failed` on COM1, and ends the VM through `isa-debug-exit`.
//!
//! The test kernels are `selftest` (the harness's own checks: faults, A/D
//! bits, the TLB) and `conformance` (the shared suite of
//! `tests/conformance` on the real MMU), and with `--smp N` (N > 1) also
//! `smp` (secondary CPUs, TLB shootdown, notifiers under concurrency);
//! `--demo` boots `demo` instead. Every kernel gets `smp=N` on its command
//! line (QEMU's `-smp`), so the harness knows how many CPUs to wake.
//! `--broken <variant>` builds them with `--cfg mmu_notifier_broken=...`
//! into `targets/x86_64/target/broken-<variant>`; that run must then fail
//! (under TCG: KVM here does not keep the stale TLB entries a missing
//! `invlpg` leaves, so `no-flush` goes unnoticed there; `no-shootdown` and
//! `no-grace` are caught only by the `smp` kernel, so only with `--smp 2`
//! or more).
//!
//! `--defmt` builds them with their `defmt` feature (into a `defmt/`
//! subdirectory of the target directory) and gives QEMU a second serial
//! port, COM2, written to `<kernel>.defmt` next to the ELF: the kernels'
//! defmt frames. After each run they are decoded with
//! `defmt-print -e <ELF>` when `defmt-print` is on PATH (`cargo install
//! defmt-print`), otherwise the runner says where they are and how to
//! decode them. The text console and the verdict do not depend on it.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{parse_summary, QemuOpts, Summary};

/// The test kernels, booted in this order: binaries in
/// `targets/x86_64/src/bin/`.
const TEST_KERNELS: &[&str] = &["selftest", "conformance"];
/// Booted after the test kernels when the machine has more than one CPU.
const SMP_KERNELS: &[&str] = &["smp"];
/// What `--demo` boots instead of the test kernels.
const DEMO_KERNELS: &[&str] = &["demo"];
/// `--broken` values: each builds the kernels with
/// `--cfg mmu_notifier_broken="<value>"`, to which the core (`no-notify`:
/// no notifier step; `no-grace`: `unregister` does not wait for callbacks)
/// and the x86 arch crate (`no-flush`: no `invlpg`; `no-shootdown`: no
/// flush on the other CPUs) react. `no-shootdown` and `no-grace` are caught
/// by the `smp` kernel only, so only with `--smp 2` or more.
const BROKEN_VARIANTS: &[&str] = &["no-flush", "no-notify", "no-shootdown", "no-grace"];

/// QEMU's exit status when the kernel reports success (`harness::exit_success`,
/// `isa-debug-exit` value 16, `(16 << 1) | 1`).
const EXIT_SUCCESS: i32 = 33;
/// QEMU's exit status when the kernel reports failure (`harness::exit_failure`).
const EXIT_FAILURE: i32 = 35;

/// Wall-clock limit for one kernel. A TCG boot takes well under a second;
/// the limit is there for hangs. KVM on these machines may be software
/// virtualization and much slower.
const TIMEOUT_TCG: Duration = Duration::from_secs(60);
const TIMEOUT_KVM: Duration = Duration::from_secs(300);
/// Added to the limit of the `smp` kernel per CPU: its vCPUs spin on each
/// other, and with more vCPUs than host cores each handshake waits for the
/// host to schedule them (about 45 s for `-smp 4` on 2 cores).
const TIMEOUT_SMP_PER_CPU: Duration = Duration::from_secs(45);

/// qboot boots PVH kernels much faster than SeaBIOS (seconds under a slow
/// KVM); used where installed (Debian's qemu-system-data ships it).
const QBOOT_PATHS: &[&str] = &[
    "/usr/share/qemu/qboot.rom",
    "/usr/local/share/qemu/qboot.rom",
];

const TARGET: &str = "x86_64-unknown-none";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Accel {
    Tcg,
    Kvm,
}

impl Accel {
    fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }

    /// KVM only when asked for and `/dev/kvm` opens; TCG otherwise. TCG is
    /// the default because its TLB keeps stale entries, which exposes a
    /// missing flush, and because KVM here may be slower than TCG.
    fn choose(want_kvm: bool) -> Accel {
        if !want_kvm {
            return Accel::Tcg;
        }
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
        {
            Ok(_) => Accel::Kvm,
            Err(e) => {
                eprintln!("x86_64: --kvm: cannot open /dev/kvm ({e}); using TCG");
                Accel::Tcg
            }
        }
    }
}

/// Builds the x86_64 kernels and boots each one under QEMU.
///
/// A kernel that fails to report success (a failed case, a crash, a triple
/// fault, a hang, no summary line) counts at least one failure; a build
/// failure is an error.
pub fn run(opts: &QemuOpts) -> Result<Summary, String> {
    let dir = opts.root.join("targets").join("x86_64");
    let kernels: Vec<&str> = if opts.demo {
        DEMO_KERNELS.to_vec()
    } else if opts.smp > 1 {
        TEST_KERNELS.iter().chain(SMP_KERNELS).copied().collect()
    } else {
        TEST_KERNELS.to_vec()
    };
    let broken = match opts.broken.as_deref() {
        None => None,
        Some(b) if BROKEN_VARIANTS.contains(&b) => Some(b),
        Some(b) => {
            return Err(format!(
                "unknown --broken {b:?} (known: {})",
                BROKEN_VARIANTS.join(", ")
            ))
        }
    };
    // A broken build has other rustflags, so its own target directory: the
    // normal build stays fresh.
    let target_dir = match broken {
        None => dir.join("target"),
        Some(b) => dir.join("target").join(format!("broken-{b}")),
    };
    // Likewise a defmt build (other features).
    let target_dir = if opts.defmt {
        target_dir.join("defmt")
    } else {
        target_dir
    };
    build(&dir, &target_dir, &kernels, broken, opts.defmt)?;

    let accel = Accel::choose(opts.kvm);
    let mut total = Summary::default();
    for kernel in &kernels {
        let elf = target_dir.join(TARGET).join("release").join(kernel);
        let frames = opts.defmt.then(|| elf.with_extension("defmt"));
        total.add(boot(kernel, &elf, frames.as_deref(), opts, accel)?);
    }
    if let (Some(filter), 0, 0) = (&opts.filter, total.passed, total.failed) {
        eprintln!("x86_64: no case of any kernel matches {filter:?}");
        total.failed = 1;
    }
    Ok(total)
}

fn build(
    dir: &Path,
    target_dir: &Path,
    kernels: &[&str],
    broken: Option<&str>,
    defmt: bool,
) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(dir)
        .args(["build", "--release"])
        .arg("--target-dir")
        .arg(target_dir);
    for kernel in kernels {
        cmd.args(["--bin", kernel]);
    }
    if defmt {
        cmd.args(["--features", "defmt"]);
    }
    if let Some(variant) = broken {
        // Cargo joins array values from `--config` with those of
        // targets/x86_64/.cargo/config.toml (the file's come first), so the
        // static relocation model stays; the RUSTFLAGS variables would
        // replace them instead.
        cmd.arg("--config").arg(format!(
            "target.{TARGET}.rustflags = ['--cfg', 'mmu_notifier_broken=\"{variant}\"']"
        ));
    }
    // These would replace or redirect what targets/x86_64/.cargo/config.toml
    // sets (rustflags, target, output directory).
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_X86_64_UNKNOWN_NONE_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "building the kernels in {} failed ({status})",
            dir.display()
        ))
    }
}

/// The kernel command line: the test-name filter, then `key=value` options.
fn cmdline(opts: &QemuOpts, accel: Accel) -> String {
    let accel = format!("accel={} smp={}", accel.name(), opts.smp);
    match &opts.filter {
        Some(filter) => format!("{filter} {accel}"),
        None => accel,
    }
}

/// `frames`: where COM2 (the defmt port) goes, for a defmt build.
fn qemu_command(elf: &Path, frames: Option<&Path>, opts: &QemuOpts, accel: Accel) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    // -nodefaults: no VGA or NIC (whose option ROMs only slow the boot).
    cmd.args(["-M", "q35", "-nodefaults", "-m", "512M"]);
    cmd.args(["-smp", &opts.smp.to_string()]);
    cmd.args(["-display", "none", "-monitor", "none", "-serial", "stdio"]);
    if let Some(frames) = frames {
        // The second `-serial` is COM2 (0x2f8): defmt's binary frames, kept
        // out of the text console.
        let mut arg = std::ffi::OsString::from("file:");
        arg.push(frames);
        cmd.arg("-serial").arg(arg);
    }
    cmd.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
    // A triple fault then ends QEMU with status 0, which we treat as failure.
    cmd.arg("-no-reboot");
    if let Some(qboot) = QBOOT_PATHS.iter().map(PathBuf::from).find(|p| p.exists()) {
        cmd.arg("-bios").arg(qboot);
    }
    match accel {
        Accel::Tcg => cmd.args(["-accel", "tcg"]),
        // Plain `-cpu host` aborts here (MSR 0x10a cannot be set).
        Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host,-arch-capabilities"]),
    };
    cmd.arg("-kernel")
        .arg(elf)
        .arg("-append")
        .arg(cmdline(opts, accel));
    // No stdin: QEMU would otherwise put a terminal into raw mode.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Boots one kernel and judges its run. `frames`: the file for its defmt
/// output (a defmt build), decoded after the run.
fn boot(
    kernel: &str,
    elf: &Path,
    frames: Option<&Path>,
    opts: &QemuOpts,
    accel: Accel,
) -> Result<Summary, String> {
    if !elf.exists() {
        return Err(format!("kernel {} was not built", elf.display()));
    }
    let tag = format!("x86_64/{kernel}");
    if let Some(frames) = frames {
        // QEMU truncates it anyway; no stale frames if it fails to start.
        let _ = std::fs::remove_file(frames);
    }
    let mut cmd = qemu_command(elf, frames, opts, accel);
    println!(
        "[{tag}] qemu ({}) -append {:?}",
        accel.name(),
        cmdline(opts, accel)
    );
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?;

    // Stream the console as it comes (a hang still shows how far it got),
    // and keep it for the verdict.
    let stdout = child.stdout.take().expect("stdout is piped");
    let echo_tag = tag.clone();
    let console = thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            println!("[{echo_tag}] {line}");
            all.push_str(&line);
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

    let mut limit = if accel == Accel::Kvm {
        TIMEOUT_KVM
    } else {
        TIMEOUT_TCG
    };
    if SMP_KERNELS.contains(&kernel) {
        limit += TIMEOUT_SMP_PER_CPU * opts.smp;
    }
    let status = wait_with_deadline(&mut child, limit)?;
    let output = console.join().unwrap_or_default();
    let qemu_errors = errors.join().unwrap_or_default();
    for line in qemu_errors.lines() {
        eprintln!("[{tag}] qemu: {line}");
    }
    let elapsed = started.elapsed();
    if let Some(frames) = frames {
        show_defmt(&tag, elf, frames);
    }

    let summary = parse_summary(&output);
    // A filter may select cases of one kernel only: the others run nothing
    // and report `0 passed, 0 failed` (with the failure exit, as a kernel
    // that ran nothing must). That is no failure; `run` checks that some
    // kernel ran something.
    if opts.filter.is_some()
        && status.and_then(|s| s.code()) == Some(EXIT_FAILURE)
        && summary.is_some_and(|s| s.passed == 0 && s.failed == 0)
    {
        println!("[{tag}] no case matches the filter");
        return Ok(Summary::default());
    }
    let problem = match status {
        None => Some(format!("timed out after {} s", limit.as_secs())),
        Some(s) => match s.code() {
            Some(EXIT_SUCCESS) => None,
            Some(EXIT_FAILURE) => Some("the kernel reported failure".to_string()),
            Some(0) => Some(
                "QEMU exited with 0: the guest reset (triple fault?) instead of reporting"
                    .to_string(),
            ),
            Some(1) => Some(
                "QEMU exited with 1 (bad options, or exit through the wrong value)".to_string(),
            ),
            Some(code) => Some(format!("unexpected QEMU exit status {code}")),
            None => Some(format!("QEMU was killed: {s}")),
        },
    };
    let problem = problem.or_else(|| match summary {
        None => Some("no `N passed, N failed` line".to_string()),
        Some(s) if s.failed > 0 => Some(format!("{} case(s) failed", s.failed)),
        Some(s) if s.passed == 0 => Some("no case ran (filter matched nothing?)".to_string()),
        Some(_) => None,
    });
    match problem {
        None => {
            let s = summary.expect("checked above");
            println!("[{tag}] done in {:.2} s", elapsed.as_secs_f64());
            Ok(s)
        }
        Some(why) => {
            eprintln!("[{tag}] FAILED after {:.2} s: {why}", elapsed.as_secs_f64());
            let s = summary.unwrap_or_default();
            Ok(Summary {
                passed: s.passed,
                failed: s.failed.max(1),
            })
        }
    }
}

/// Wall-clock limit for decoding one kernel's frames.
const DECODE_TIMEOUT: Duration = Duration::from_secs(30);

/// Prints a kernel's defmt log: decoded by `defmt-print` when it is on PATH,
/// or where the frames are and how to decode them. Informational only: the
/// verdict comes from the text console.
fn show_defmt(tag: &str, elf: &Path, frames: &Path) {
    let size = std::fs::metadata(frames).map(|m| m.len()).unwrap_or(0);
    if size == 0 {
        println!(
            "[{tag} defmt] no frames on COM2 ({} is empty or missing)",
            frames.display()
        );
        return;
    }
    let decode = format!("defmt-print -e {} < {}", elf.display(), frames.display());
    let Ok(input) = std::fs::File::open(frames) else {
        println!("[{tag} defmt] cannot open {}", frames.display());
        return;
    };
    let child = Command::new("defmt-print")
        .arg("-e")
        .arg(elf)
        .stdin(input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!(
                "[{tag} defmt] {size} bytes of frames in {}; defmt-print is not installed \
                 (`cargo install defmt-print`), decode with: {decode}",
                frames.display()
            );
            return;
        }
        Err(e) => {
            println!("[{tag} defmt] cannot run defmt-print ({e}); decode with: {decode}");
            return;
        }
    };
    let stdout = child.stdout.take().expect("stdout is piped");
    let out_tag = tag.to_string();
    let lines = thread::spawn(move || {
        let mut n = 0usize;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            println!("[{out_tag} defmt] {line}");
            n += 1;
        }
        n
    });
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let errors = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = wait_with_deadline(&mut child, DECODE_TIMEOUT);
    let n = lines.join().unwrap_or(0);
    let errors = errors.join().unwrap_or_default();
    match status {
        Ok(Some(s)) if s.success() && n > 0 => {}
        Ok(Some(s)) => {
            for line in errors.lines() {
                println!("[{tag} defmt] defmt-print: {line}");
            }
            println!("[{tag} defmt] defmt-print decoded {n} lines ({s}); by hand: {decode}");
        }
        Ok(None) => println!(
            "[{tag} defmt] defmt-print did not finish in {} s; by hand: {decode}",
            DECODE_TIMEOUT.as_secs()
        ),
        Err(e) => println!("[{tag} defmt] {e}; by hand: {decode}"),
    }
}

/// Waits for QEMU, killing it after `limit`. `None` means it timed out.
fn wait_with_deadline(
    child: &mut std::process::Child,
    limit: Duration,
) -> Result<Option<ExitStatus>, String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("waiting for QEMU: {e}"))?
        {
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
