//! Building an arch's kernels: one `cargo build --release` of the selected
//! binaries in the kernels' own workspace, into a target directory per
//! set of flags (`--broken`, `--defmt`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::arch::Arch;

/// Where a build of these flags goes: a broken build has other rustflags
/// and a defmt build other features, so each has its own target directory
/// and switching between them rebuilds nothing.
pub(super) fn target_dir(dir: &Path, broken: Option<&str>, defmt: bool) -> PathBuf {
    let mut t = dir.join("target");
    if let Some(b) = broken {
        t = t.join(format!("broken-{b}"));
    }
    if defmt {
        t = t.join("defmt");
    }
    t
}

/// `cargo build --release` of `kernels` in the kernels' own workspace.
pub(super) fn build_command(
    arch: Arch,
    dir: &Path,
    target_dir: &Path,
    kernels: &[&str],
    broken: Option<&str>,
    defmt: bool,
) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(dir)
        .args(["build", "--release"])
        .arg("--target-dir")
        .arg(target_dir);
    for k in kernels {
        cmd.args(["--bin", k]);
    }
    if defmt {
        cmd.args(["--features", "defmt"]);
    }
    if let Some(variant) = broken {
        // Cargo joins array values given with `--config` to those of the
        // kernels' .cargo/config.toml (the file's first), so the static
        // relocation model stays; the RUSTFLAGS variables would replace
        // them instead.
        cmd.arg("--config").arg(format!(
            "target.{}.rustflags = ['--cfg', 'mmu_notifier_broken=\"{variant}\"']",
            arch.triple()
        ));
    }
    // The kernels' flags, target and output directory come from their
    // .cargo/config.toml; these would replace or redirect them.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    cmd.env_remove(arch.rustflags_var());
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(c: &std::process::Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn broken_build_adds_its_cfg_to_the_config_rustflags() {
        let c = build_command(
            Arch::S390x,
            Path::new("t/s390x"),
            Path::new("t/s390x/target/broken-no-grace"),
            &["selftest", "smp"],
            Some("no-grace"),
            false,
        );
        assert_eq!(
            args(&c),
            [
                "build",
                "--release",
                "--target-dir",
                "t/s390x/target/broken-no-grace",
                "--bin",
                "selftest",
                "--bin",
                "smp",
                "--config",
                "target.s390x-unknown-linux-gnu.rustflags = ['--cfg', 'mmu_notifier_broken=\"no-grace\"']",
            ],
            "one build of the selected kernels, the cfg through --config"
        );
        let removed: Vec<String> = c
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert!(
            removed.contains(&"RUSTFLAGS".to_string())
                && removed.contains(&"CARGO_TARGET_S390X_UNKNOWN_LINUX_GNU_RUSTFLAGS".to_string()),
            "flags that would replace the kernels' are removed: {removed:?}"
        );
    }

    #[test]
    fn defmt_build_has_the_feature_and_its_own_directory() {
        let dir = target_dir(Path::new("t/x86_64"), Some("no-flush"), true);
        assert_eq!(
            dir,
            Path::new("t/x86_64/target/broken-no-flush/defmt"),
            "broken, then defmt"
        );
        let c = build_command(Arch::X86_64, Path::new("t"), &dir, &["demo"], None, true);
        assert!(
            args(&c).ends_with(&[
                "--bin".into(),
                "demo".into(),
                "--features".into(),
                "defmt".into()
            ]),
            "the defmt feature is asked for: {:?}",
            args(&c)
        );
    }
}
