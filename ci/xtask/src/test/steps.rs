//! Every step of the matrix, one function per stage, in the order they run.
//! Packages are [`Package`]s and arches [`Arch`]s, never string literals;
//! the broken QEMU variants come from the kernel tables of `qemu`.

use std::path::Path;
use std::time::Duration;

use super::negative;
use super::{Outcome, Stage, Step};
use crate::arch::Arch;
use crate::package::Package;
use crate::process::Cargo;
use crate::qemu::kernels::{self, Broken, Role, BROKEN};
use crate::qemu::{self, QemuOpts};
use crate::toolchain::{miri_cache_home, msrv_or_default, MIRI_TARGETS, MIRI_TOOLCHAIN};

/// The loom model checker can explode combinatorially; it gets less than
/// the default under CI.
const CI_LOOM_LIMIT: Duration = Duration::from_secs(8 * 60);
/// Each Miri step: together they must leave CI well under 20 minutes.
/// Tests too slow for it shrink themselves under `cfg(miri)`.
const CI_MIRI_LIMIT: Duration = Duration::from_secs(4 * 60);
/// Proptest cases per property under Miri (interpreted code is ~1000x
/// slower); forwarded into the interpreter with `-Zmiri-env-forward`.
const MIRI_PROPTEST_CASES: &str = "16";
/// The CPU counts every arch's kernels boot with.
const QEMU_SMP: [u32; 3] = [1, 2, 4];
/// Host builds that must fail: `(cfg value, package, test target)`. The
/// conformance suite on the emulator catches a missing flush and a missing
/// notifier step; the notifier tests a missing grace period; the DMA cases
/// over the emulated IOMMU a missing IOTLB invalidation.
const HOST_NEGATIVES: &[(&str, Package, &str)] = &[
    ("no-flush", Package::Facade, "conformance"),
    ("no-notify", Package::Facade, "conformance"),
    ("no-grace", Package::Core, "notifier"),
    ("no-iotlb", Package::Facade, "dma"),
];

/// Every step, in the order they run.
pub fn all() -> Vec<Step> {
    [
        fmt(),
        clippy(),
        test(),
        package(),
        doc(),
        loom(),
        miri(),
        qemu(),
        negative(),
        msrv(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// A step that runs one cargo command; `counts`: it runs tests, and must
/// run at least one.
fn cargo_step(stage: Stage, name: &str, c: Cargo, counts: bool) -> Step {
    Step {
        stage,
        name: name.into(),
        what: c.display(),
        run: Box::new(move |root: &Path| {
            let ran = c.run(root);
            let mut out = if ran.succeeded() {
                Outcome::pass("")
            } else {
                Outcome::fail(ran.describe())
            };
            if counts {
                out.tests = Some(ran.tests());
            }
            out
        }),
    }
}

/// A step that boots the kernels of `arch` in-process; with `broken`, a
/// negative check that passes only when the broken kernel is caught.
fn qemu_step(stage: Stage, name: String, arch: Arch, smp: u32, broken: Option<Broken>) -> Step {
    let mut what = format!("cargo xtask qemu --arch {} --smp {smp}", arch.name());
    if let Some(b) = broken {
        what.push_str(&format!(" --broken {}", b.name));
        let names: Vec<&str> = kernels::select(arch, |r: Role| r.boots(smp, false), b.kernels)
            .iter()
            .map(|k| k.name)
            .collect();
        if !b.kernels.is_empty() {
            what.push_str(&format!(" --kernel {}", names.join(",")));
        }
        what.push_str("  (must fail)");
    }
    Step {
        stage,
        name,
        what,
        run: Box::new(move |root: &Path| {
            let opts = QemuOpts {
                smp,
                broken: broken.map(|b| b.name.to_string()),
                ..QemuOpts::new(root)
            };
            let result = qemu::run(arch, &opts);
            match broken {
                Some(_) => negative::qemu_verdict(result),
                None => match result {
                    Ok(r) => Outcome {
                        ok: r.summary.failed == 0,
                        note: r.failures.join("; "),
                        tests: Some(r.summary),
                    },
                    Err(e) => Outcome::fail(e),
                },
            }
        }),
    }
}

fn fmt() -> Vec<Step> {
    let c = Cargo::new(&["fmt", "--all", "--check"]);
    vec![cargo_step(Stage::Fmt, "fmt", c, false)]
}

/// `-- -D warnings` after a clippy command.
fn deny_warnings(c: Cargo) -> Cargo {
    c.args(&["--", "-D", "warnings"])
}

fn clippy() -> Vec<Step> {
    let mut v = vec![cargo_step(
        Stage::Clippy,
        "clippy-host",
        deny_warnings(Cargo::new(&["clippy", "--workspace", "--all-targets"])),
        false,
    )];
    // The facade, the core and the arch crate, as a kernel builds them.
    for arch in Arch::ALL {
        let c = Cargo::new(&["clippy"])
            .packages(&[Package::Facade, Package::Core, arch.package()])
            .args(&["--target", arch.triple()]);
        v.push(cargo_step(
            Stage::Clippy,
            &format!("clippy-{}", arch.name()),
            deny_warnings(c),
            false,
        ));
    }
    let c = Cargo::new(&["clippy"])
        .packages(&[Package::Core])
        .args(&["--no-default-features"]);
    v.push(cargo_step(
        Stage::Clippy,
        "clippy-no-default-features",
        deny_warnings(c),
        false,
    ));
    v
}

fn test() -> Vec<Step> {
    let core = || Cargo::new(&["test"]).packages(&[Package::Core]);
    vec![
        cargo_step(
            Stage::Test,
            "test-host",
            Cargo::new(&["test", "--workspace"]),
            true,
        ),
        cargo_step(
            Stage::Test,
            "test-alloc",
            core().args(&["--features", "alloc", "--test", "shared"]),
            true,
        ),
        cargo_step(
            Stage::Test,
            "test-no-default-features",
            core().args(&["--no-default-features"]),
            true,
        ),
        // Bad input gets a typed error in release builds too: no
        // `debug_assert!` may stand between a caller and UB.
        cargo_step(
            Stage::Test,
            "test-release-bad-input",
            Cargo::new(&["test"]).packages(&[Package::Facade]).args(&[
                "--release",
                "--test",
                "bad_input",
            ]),
            true,
        ),
        // The embedding example runs, not only builds: it asserts what a
        // kernel with its own walker sees.
        cargo_step(
            Stage::Test,
            "example-own-walker",
            Cargo::new(&["run"])
                .packages(&[Package::Facade])
                .args(&["--example", "own_walker"]),
            false,
        ),
    ]
}

fn package() -> Vec<Step> {
    let c = Cargo::new(&["package"])
        .packages(&Package::PUBLISHED)
        .args(&["--allow-dirty"])
        .env("CARGO_TARGET_DIR", "target/package");
    vec![cargo_step(Stage::Package, "package", c, false)]
}

fn doc() -> Vec<Step> {
    let c = Cargo::new(&["doc", "--workspace", "--no-deps"]).env("RUSTDOCFLAGS", "-Dwarnings");
    // As docs.rs builds the published crates: every feature, `--cfg
    // docsrs` (the "Available on crate feature ..." badges), on the pinned
    // nightly.
    let docsrs = Cargo::on(MIRI_TOOLCHAIN, &["doc", "--no-deps", "--all-features"])
        .packages(&Package::PUBLISHED)
        .env("RUSTDOCFLAGS", "--cfg docsrs -Dwarnings")
        .env("CARGO_TARGET_DIR", "target/docsrs");
    vec![
        cargo_step(Stage::Doc, "doc-workspace", c, false),
        cargo_step(Stage::Doc, "doc-docsrs", docsrs, false),
    ]
}

fn loom() -> Vec<Step> {
    let c = Cargo::new(&["test"])
        .packages(&[Package::Core])
        .args(&["--features", "alloc", "--release"])
        .args(&[
            "--test",
            "loom",
            "--test",
            "loom_interval",
            "--test",
            "loom_srcu",
        ])
        .env("RUSTFLAGS", "--cfg loom")
        .env("CARGO_TARGET_DIR", "target/loom")
        .limit(CI_LOOM_LIMIT);
    vec![cargo_step(Stage::Loom, "loom", c, true)]
}

/// `MIRIFLAGS`: the caller's, plus the proptest variables forwarded into
/// the interpreter.
fn miri_flags(inherited: &str) -> String {
    format!(
        "{inherited} -Zmiri-env-forward=PROPTEST_CASES -Zmiri-env-forward=PROPTEST_DISABLE_FAILURE_PERSISTENCE"
    )
    .trim()
    .to_string()
}

fn miri() -> Vec<Step> {
    let flags = miri_flags(&std::env::var("MIRIFLAGS").unwrap_or_default());
    let cache = miri_cache_home();
    MIRI_TARGETS
        .iter()
        .map(|target| {
            // The library, the notifier list and the interval tree: the
            // code with unsafe in it, on every kernel the core ships
            // (`std`: host threads). `inside_callback` leaks its 'static
            // fixtures on purpose, which Miri reports; it has no unsafe of
            // its own.
            let mut c = Cargo::on(MIRI_TOOLCHAIN, &["miri", "test"])
                .packages(&[Package::Core])
                .args(&["--features", "alloc,std", "--lib"])
                .args(&[
                    "--test", "notifier", "--test", "interval", "--test", "shared",
                ])
                .args(&["--", "--skip", "inside_callback::"]);
            if let Some(arch) = target {
                // Big-endian: s390x page-table words and flag layouts.
                c = c.args(&["--target", arch.triple()]);
            }
            // A target directory of its own (cargo-miri adds `/miri`):
            // another nightly's `cargo miri` has the same rustc commit but
            // another sysroot, and cargo would reuse crates built against
            // that one.
            let c = c
                .env("MIRIFLAGS", &flags)
                .env("XDG_CACHE_HOME", &cache.to_string_lossy())
                .env("CARGO_TARGET_DIR", "target/miri-pinned")
                .limit(CI_MIRI_LIMIT)
                .env("PROPTEST_CASES", MIRI_PROPTEST_CASES)
                .env("PROPTEST_DISABLE_FAILURE_PERSISTENCE", "1");
            let name = format!("miri-{}", target.map_or("host", Arch::name));
            cargo_step(Stage::Miri, &name, c, true)
        })
        .collect()
}

fn qemu() -> Vec<Step> {
    let mut v = Vec::new();
    for arch in Arch::ALL {
        for smp in QEMU_SMP {
            let mut name = format!("qemu-{}", arch.name());
            if smp > 1 {
                name.push_str(&format!("-smp{smp}"));
            }
            v.push(qemu_step(Stage::Qemu, name, arch, smp, None));
        }
    }
    v
}

fn negative() -> Vec<Step> {
    let mut v: Vec<Step> = HOST_NEGATIVES
        .iter()
        .map(|&(variant, package, test)| {
            let c = Cargo::new(&["test"])
                .packages(&[package])
                .args(&["--test", test])
                .env(
                    "RUSTFLAGS",
                    &format!("--cfg mmu_notifier_broken=\"{variant}\""),
                )
                .env("CARGO_TARGET_DIR", &format!("target/broken/{variant}"));
            Step {
                stage: Stage::Negative,
                name: format!("broken-host-{variant}"),
                what: format!("{}  (must fail)", c.display()),
                run: Box::new(move |root: &Path| {
                    let build = c.clone().args(&["--no-run"]).run(root);
                    if !build.succeeded() {
                        return negative::host_verdict(&build, None);
                    }
                    negative::host_verdict(&build, Some(&c.run(root)))
                }),
            }
        })
        .collect();
    for arch in Arch::ALL {
        for b in BROKEN.iter().filter(|b| b.applies_to(arch)) {
            for &(_, smp) in b.checks.iter().filter(|(a, _)| *a == arch) {
                let mut name = format!("broken-qemu-{}-{}", arch.name(), b.name);
                // Only a check above the variant's first CPU count says it.
                if Some(smp) != b.min_smp(arch) {
                    name.push_str(&format!("-smp{smp}"));
                }
                v.push(qemu_step(Stage::Negative, name, arch, smp, Some(*b)));
            }
        }
    }
    v
}

fn msrv() -> Vec<Step> {
    let c = Cargo::on(&msrv_or_default(), &["check"])
        .packages(&[Package::Core])
        .env("CARGO_TARGET_DIR", "target/msrv");
    vec![cargo_step(Stage::Msrv, "msrv", c, false)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_name_is_unique_and_no_step_shadows_a_stage() {
        let steps = all();
        for (i, s) in steps.iter().enumerate() {
            assert!(
                steps[i + 1..].iter().all(|t| t.name != s.name),
                "{} is named once",
                s.name
            );
            assert!(
                steps
                    .iter()
                    .all(|t| t.stage.name() != s.name || t.name == s.name),
                "step {} does not shadow a stage",
                s.name
            );
        }
    }

    /// Every step's command line, as `--list` shows it: the shape of each
    /// generated command. The Miri steps' environment holds a home
    /// directory, so only their command is compared.
    #[test]
    fn generated_command_lines() {
        let want: &[(&str, &str)] = &[
            ("fmt", "cargo fmt --all --check"),
            ("clippy-host", "cargo clippy --workspace --all-targets -- -D warnings"),
            ("clippy-x86_64", "cargo clippy -p mmu-notifier -p mmu-notifier-core -p mmu-notifier-x86 --target x86_64-unknown-none -- -D warnings"),
            ("clippy-s390x", "cargo clippy -p mmu-notifier -p mmu-notifier-core -p mmu-notifier-s390 --target s390x-unknown-linux-gnu -- -D warnings"),
            ("clippy-no-default-features", "cargo clippy -p mmu-notifier-core --no-default-features -- -D warnings"),
            ("test-host", "cargo test --workspace"),
            ("test-alloc", "cargo test -p mmu-notifier-core --features alloc --test shared"),
            ("test-no-default-features", "cargo test -p mmu-notifier-core --no-default-features"),
            ("test-release-bad-input", "cargo test -p mmu-notifier --release --test bad_input"),
            ("example-own-walker", "cargo run -p mmu-notifier --example own_walker"),
            ("package", "CARGO_TARGET_DIR=target/package cargo package -p mmu-notifier-core -p mmu-notifier-x86 -p mmu-notifier-s390 -p mmu-notifier-emu -p mmu-notifier --allow-dirty"),
            ("doc-workspace", "RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps"),
            ("doc-docsrs", "RUSTDOCFLAGS='--cfg docsrs -Dwarnings' CARGO_TARGET_DIR=target/docsrs cargo +nightly-2026-05-20 doc --no-deps --all-features -p mmu-notifier-core -p mmu-notifier-x86 -p mmu-notifier-s390 -p mmu-notifier-emu -p mmu-notifier"),
            ("loom", "RUSTFLAGS='--cfg loom' CARGO_TARGET_DIR=target/loom cargo test -p mmu-notifier-core --features alloc --release --test loom --test loom_interval --test loom_srcu"),
            ("miri-host", "cargo +nightly-2026-05-20 miri test -p mmu-notifier-core --features alloc,std --lib --test notifier --test interval --test shared -- --skip inside_callback::"),
            ("miri-s390x", "cargo +nightly-2026-05-20 miri test -p mmu-notifier-core --features alloc,std --lib --test notifier --test interval --test shared --target s390x-unknown-linux-gnu -- --skip inside_callback::"),
            ("qemu-x86_64", "cargo xtask qemu --arch x86_64 --smp 1"),
            ("qemu-x86_64-smp2", "cargo xtask qemu --arch x86_64 --smp 2"),
            ("qemu-x86_64-smp4", "cargo xtask qemu --arch x86_64 --smp 4"),
            ("qemu-s390x", "cargo xtask qemu --arch s390x --smp 1"),
            ("qemu-s390x-smp2", "cargo xtask qemu --arch s390x --smp 2"),
            ("qemu-s390x-smp4", "cargo xtask qemu --arch s390x --smp 4"),
            ("broken-host-no-flush", "RUSTFLAGS='--cfg mmu_notifier_broken=\"no-flush\"' CARGO_TARGET_DIR=target/broken/no-flush cargo test -p mmu-notifier --test conformance  (must fail)"),
            ("broken-host-no-notify", "RUSTFLAGS='--cfg mmu_notifier_broken=\"no-notify\"' CARGO_TARGET_DIR=target/broken/no-notify cargo test -p mmu-notifier --test conformance  (must fail)"),
            ("broken-host-no-grace", "RUSTFLAGS='--cfg mmu_notifier_broken=\"no-grace\"' CARGO_TARGET_DIR=target/broken/no-grace cargo test -p mmu-notifier-core --test notifier  (must fail)"),
            ("broken-host-no-iotlb", "RUSTFLAGS='--cfg mmu_notifier_broken=\"no-iotlb\"' CARGO_TARGET_DIR=target/broken/no-iotlb cargo test -p mmu-notifier --test dma  (must fail)"),
            ("broken-qemu-x86_64-no-flush", "cargo xtask qemu --arch x86_64 --smp 1 --broken no-flush --kernel conformance  (must fail)"),
            ("broken-qemu-x86_64-no-notify", "cargo xtask qemu --arch x86_64 --smp 1 --broken no-notify --kernel conformance,iommu-vtd,iommu-vtd-scalable  (must fail)"),
            ("broken-qemu-x86_64-no-shootdown", "cargo xtask qemu --arch x86_64 --smp 2 --broken no-shootdown --kernel smp  (must fail)"),
            ("broken-qemu-x86_64-no-grace", "cargo xtask qemu --arch x86_64 --smp 2 --broken no-grace --kernel smp  (must fail)"),
            ("broken-qemu-x86_64-no-iotlb", "cargo xtask qemu --arch x86_64 --smp 1 --broken no-iotlb --kernel iommu-vtd,iommu-vtd-scalable  (must fail)"),
            ("broken-qemu-s390x-no-flush", "cargo xtask qemu --arch s390x --smp 1 --broken no-flush --kernel conformance  (must fail)"),
            ("broken-qemu-s390x-no-flush-smp2", "cargo xtask qemu --arch s390x --smp 2 --broken no-flush --kernel conformance,smp  (must fail)"),
            ("broken-qemu-s390x-no-notify", "cargo xtask qemu --arch s390x --smp 1 --broken no-notify --kernel conformance,iommu-zpci  (must fail)"),
            ("broken-qemu-s390x-no-grace", "cargo xtask qemu --arch s390x --smp 2 --broken no-grace --kernel smp  (must fail)"),
            ("broken-qemu-s390x-no-iotlb", "cargo xtask qemu --arch s390x --smp 1 --broken no-iotlb --kernel iommu-zpci  (must fail)"),
        ];
        let steps = all();
        let got: Vec<(&str, String)> = steps
            .iter()
            .filter(|s| s.name != "msrv")
            .map(|s| {
                let what = match s.what.find("cargo +") {
                    Some(at) if s.stage == Stage::Miri => s.what[at..].to_string(),
                    _ => s.what.clone(),
                };
                (s.name.as_str(), what)
            })
            .collect();
        assert_eq!(got.len(), want.len(), "one step per line: {got:#?}");
        for ((name, what), (want_name, want_what)) in got.iter().zip(want) {
            assert_eq!(name, want_name, "steps in order");
            assert_eq!(what, want_what, "the command of {name}");
        }
        let msrv = steps.last().expect("steps");
        assert_eq!(
            msrv.what,
            format!(
                "CARGO_TARGET_DIR=target/msrv cargo +{} check -p mmu-notifier-core",
                msrv_or_default()
            ),
            "the MSRV check is last, on the MSRV toolchain"
        );
    }

    #[test]
    fn miri_forwards_the_proptest_variables_after_the_callers_flags() {
        assert_eq!(
            miri_flags("-Zmiri-seed=3"),
            "-Zmiri-seed=3 -Zmiri-env-forward=PROPTEST_CASES -Zmiri-env-forward=PROPTEST_DISABLE_FAILURE_PERSISTENCE",
            "the caller's first"
        );
        assert!(!miri_flags("").starts_with(' '), "no leading space");
    }
}
