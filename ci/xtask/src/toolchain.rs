//! The toolchains besides the active one: the pinned nightly that runs
//! Miri (and where its sysroots live), and the MSRV. `setup` installs them,
//! `test` runs them.

use std::path::PathBuf;

use crate::arch::Arch;

/// The dated nightly that runs Miri. `nightly-2026-05-19` has no Miri
/// component; this is the next one that does.
pub const MIRI_TOOLCHAIN: &str = "nightly-2026-05-20";
/// Where Miri runs the core's tests: the host (`None`), and big-endian
/// s390x.
pub const MIRI_TARGETS: [Option<Arch>; 2] = [None, Some(Arch::S390x)];
/// The MSRV when the root manifest names none.
const DEFAULT_MSRV: &str = "1.85";

/// `XDG_CACHE_HOME` for Miri, whose sysroots live in `$XDG_CACHE_HOME/miri`:
/// one per toolchain, so that another nightly's `cargo miri` on the same
/// machine neither rebuilds ours nor trips over a build of ours.
pub fn miri_cache_home() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home)
            .join(".cache")
            .join("mmu-notifier")
            .join(MIRI_TOOLCHAIN),
        None => crate::root().join("target").join("miri-cache"),
    }
}

/// The MSRV: `rust-version` of the root manifest, if it has one.
pub fn msrv() -> Option<String> {
    let manifest = std::fs::read_to_string(crate::root().join("Cargo.toml")).ok()?;
    rust_version(&manifest)
}

/// The MSRV, or the project's default when the manifest names none.
pub fn msrv_or_default() -> String {
    msrv().unwrap_or_else(|| DEFAULT_MSRV.into())
}

/// `rust-version = "..."` of a manifest.
fn rust_version(manifest: &str) -> Option<String> {
    manifest.lines().find_map(|l| {
        let v = l
            .strip_prefix("rust-version")?
            .trim_start()
            .strip_prefix('=')?;
        Some(v.trim().trim_matches('"').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_version_is_read_from_the_manifest_line() {
        let m = "[package]\nname = \"x\"\nrust-version = \"1.85\"\n";
        assert_eq!(rust_version(m).as_deref(), Some("1.85"), "unquoted");
        assert_eq!(rust_version("[package]\n"), None, "absent");
    }
}
