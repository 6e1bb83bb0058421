//! `cargo xtask`: the project's commands. See the README.
//!
//! One module per command: `setup` installs the tools, `test` runs the
//! whole matrix, `qemu` boots the test kernels, `demo` the demo kernels,
//! `bench` runs the benchmarks and writes `BENCHMARKS.md`. Beside them:
//! the typed arches (`arch`) and packages (`package`), the toolchains
//! (`toolchain`) and running cargo for the matrix (`process`).
//!
//! Its dependencies are serde_json (criterion's and cargo's JSON) and the
//! benchmark parameters of `ci/bench-params`, which has none: it must build
//! before anything else is installed.

mod arch;
mod bench;
mod demo;
mod package;
mod process;
mod qemu;
mod setup;
mod test;
mod toolchain;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <command>\n\
    \n  setup                 install targets, components, the Miri nightly, the MSRV toolchain, QEMU\
    \n  test [--only STAGE[,STAGE]] [--skip STAGE[,STAGE]] [--list]\
    \n                        the whole test matrix; stages: fmt clippy test package doc loom miri qemu negative msrv\
    \n  demo                  boot the demo kernels\
    \n  bench [--check | --scaling | --scaling-from FILE] [--threads N,N,...]\
    \n                        run the benchmarks, rewrite BENCHMARKS.md (see `cargo xtask bench --help`)\
    \n  qemu --arch x86_64|s390x|all [--smp N] [--kvm] [--broken VARIANT] [--demo] [--defmt] [--kernel NAME[,NAME]] [-- FILTER]\n";

fn usage() -> ExitCode {
    eprint!("{USAGE}");
    ExitCode::from(2)
}

/// The repository root.
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(|p| p.parent())
        .expect("ci/xtask sits two levels below the root")
        .to_path_buf()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    match args.first().map(String::as_str) {
        Some("qemu") => qemu::cmd(rest, &root()),
        Some("demo") if rest.is_empty() => demo::cmd(&root()),
        Some("setup") if rest.is_empty() => match setup::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xtask setup: {e}");
                ExitCode::FAILURE
            }
        },
        Some("bench") => bench::cmd(rest, &root()),
        Some("test") => match test::cmd(rest, &root()) {
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
