//! `cargo xtask`: the project's commands. See the README.
//!
//! `setup` installs the tools, `test` runs the whole matrix, `qemu` boots
//! the test kernels, `demo` boots the demo kernels. Only std: this crate
//! must build before anything else is installed.

mod bench;
mod qemu;
mod setup;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

/// The dated nightly that runs Miri. `nightly-2026-05-19` has no Miri
/// component; this is the next one that does.
pub const MIRI_TOOLCHAIN: &str = "nightly-2026-05-20";
/// Where Miri runs the core's tests: the host, and big-endian s390x.
pub const MIRI_TARGETS: &[Option<&str>] = &[None, Some("s390x-unknown-linux-gnu")];

fn usage() -> ExitCode {
    eprintln!(
        "usage: cargo xtask <command>\n\
         \n  setup                 install targets, components, the Miri nightly, the MSRV toolchain, QEMU\
         \n  test [--only STAGE[,STAGE]] [--skip STAGE[,STAGE]] [--list]\
         \n                        the whole test matrix; stages: fmt clippy test package doc loom miri qemu negative msrv\
         \n  demo                  boot the demo kernels\
         \n  bench [--check]       run the benchmarks, rewrite BENCHMARKS.md (--check: idle instruction counts only)\
         \n  qemu --arch x86_64|s390x|all [--smp N] [--kvm] [--broken no-flush|no-notify|no-shootdown|no-grace] [--demo] [--defmt] [-- FILTER]\n"
    );
    ExitCode::from(2)
}

fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(|p| p.parent())
        .expect("ci/xtask sits two levels below the root")
        .to_path_buf()
}

/// `XDG_CACHE_HOME` for Miri, whose sysroots live in `$XDG_CACHE_HOME/miri`:
/// one per toolchain, so that another nightly's `cargo miri` on the same
/// machine neither rebuilds ours nor trips over a build of ours.
pub fn miri_cache_home() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home)
            .join(".cache")
            .join("mmu-notifier")
            .join(MIRI_TOOLCHAIN),
        None => root().join("target").join("miri-cache"),
    }
}

/// The MSRV: `rust-version` of the root Cargo.toml.
pub fn msrv() -> Option<String> {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).ok()?;
    manifest.lines().find_map(|l| {
        let v = l
            .strip_prefix("rust-version")?
            .trim_start()
            .strip_prefix('=')?;
        Some(v.trim().trim_matches('"').to_string())
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("qemu") => cmd_qemu(&args[1..]),
        Some("demo") if args.len() == 1 => cmd_demo(),
        Some("setup") if args.len() == 1 => match setup::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xtask setup: {e}");
                ExitCode::FAILURE
            }
        },
        Some("bench") => bench::run(&root()),
        Some("test") => match test::cmd(&args[1..], &root()) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("xtask test: {e}");
                usage()
            }
        },
        _ => usage(),
    }
}

/// Boots the demo kernel of each arch.
fn cmd_demo() -> ExitCode {
    let opts = qemu::QemuOpts {
        smp: 1,
        kvm: false,
        filter: None,
        broken: None,
        demo: true,
        defmt: false,
        root: root(),
    };
    let mut ok = true;
    for (arch, run) in [
        ("x86_64", qemu::x86_64::run as fn(&qemu::QemuOpts) -> _),
        ("s390x", qemu::s390x::run),
    ] {
        match run(&opts) {
            Ok(s) if s.failed == 0 => println!("demo {arch}: ok"),
            Ok(s) => {
                eprintln!("demo {arch}: {} failed", s.failed);
                ok = false;
            }
            Err(e) => {
                eprintln!("demo {arch}: {e}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn cmd_qemu(args: &[String]) -> ExitCode {
    let mut opts = qemu::QemuOpts {
        smp: 1,
        kvm: false,
        filter: None,
        broken: None,
        demo: false,
        defmt: false,
        root: root(),
    };
    let mut arch = String::from("all");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--arch" => arch = it.next().cloned().unwrap_or_default(),
            "--smp" => opts.smp = it.next().and_then(|s| s.parse().ok()).unwrap_or(0),
            "--kvm" => opts.kvm = true,
            "--broken" => opts.broken = it.next().cloned(),
            "--demo" => opts.demo = true,
            "--defmt" => opts.defmt = true,
            "--" => opts.filter = it.next().cloned(),
            _ => return usage(),
        }
    }
    if opts.smp == 0 {
        return usage();
    }
    let mut total = qemu::Summary::default();
    let arches: &[&str] = match arch.as_str() {
        "x86_64" => &["x86_64"],
        "s390x" => &["s390x"],
        "all" => &["x86_64", "s390x"],
        _ => return usage(),
    };
    for a in arches {
        let r = if *a == "x86_64" {
            qemu::x86_64::run(&opts)
        } else {
            qemu::s390x::run(&opts)
        };
        match r {
            Ok(s) => total.add(s),
            Err(e) => {
                eprintln!("xtask qemu {a}: {e}");
                total.failed += 1;
            }
        }
    }
    println!("{} passed, {} failed", total.passed, total.failed);
    if total.failed == 0 && total.passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
