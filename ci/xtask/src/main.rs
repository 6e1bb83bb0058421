//! `cargo xtask`: the project's commands. See the README.

mod qemu;

use std::path::PathBuf;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!(
        "usage: cargo xtask <command>\n\
         \n  qemu --arch x86_64|s390x|all [--smp N] [--kvm] [--broken no-flush|no-notify] [-- FILTER]\n"
    );
    ExitCode::from(2)
}

fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().and_then(|p| p.parent()).expect("ci/xtask sits two levels below the root").to_path_buf()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("qemu") => cmd_qemu(&args[1..]),
        _ => usage(),
    }
}

fn cmd_qemu(args: &[String]) -> ExitCode {
    let mut opts = qemu::QemuOpts { smp: 1, kvm: false, filter: None, broken: None, demo: false, root: root() };
    let mut arch = String::from("all");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--arch" => arch = it.next().cloned().unwrap_or_default(),
            "--smp" => opts.smp = it.next().and_then(|s| s.parse().ok()).unwrap_or(0),
            "--kvm" => opts.kvm = true,
            "--broken" => opts.broken = it.next().cloned(),
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
        let r = if *a == "x86_64" { qemu::x86_64::run(&opts) } else { qemu::s390x::run(&opts) };
        match r {
            Ok(s) => total.add(s),
            Err(e) => {
                eprintln!("xtask qemu {a}: {e}");
                total.failed += 1;
            }
        }
    }
    println!("{} passed, {} failed", total.passed, total.failed);
    if total.failed == 0 && total.passed > 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
