//! The workspace's packages, by type: a step names `Package::Core`, never
//! the string `"mmu-notifier-core"`, so a rename is one line here and a
//! typo does not compile.

/// A package of the workspace that some command builds, tests or publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Package {
    /// The facade, `mmu-notifier` (the root manifest).
    Facade,
    /// The notifier core, `generic/`.
    Core,
    /// The x86-64 arch crate, `arch/x86`.
    X86,
    /// The s390x arch crate, `arch/s390`.
    S390,
    /// The emulated MMU, `arch/emu`.
    Emu,
    /// The benchmarks, `ci/bench`.
    Bench,
}

impl Package {
    /// What `cargo package` must accept: the crates that are published.
    pub const PUBLISHED: [Package; 5] = [
        Package::Core,
        Package::X86,
        Package::S390,
        Package::Emu,
        Package::Facade,
    ];

    /// The package name, as `cargo -p` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Package::Facade => "mmu-notifier",
            Package::Core => "mmu-notifier-core",
            Package::X86 => "mmu-notifier-x86",
            Package::S390 => "mmu-notifier-s390",
            Package::Emu => "mmu-notifier-emu",
            Package::Bench => "mmu-notifier-bench",
        }
    }
}

/// `-p NAME` for each package, in order.
pub fn dash_p(packages: &[Package]) -> Vec<&'static str> {
    packages.iter().flat_map(|p| ["-p", p.name()]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every package, with its directory.
    const ALL: [(Package, &str); 6] = [
        (Package::Facade, "."),
        (Package::Core, "generic"),
        (Package::X86, "arch/x86"),
        (Package::S390, "arch/s390"),
        (Package::Emu, "arch/emu"),
        (Package::Bench, "ci/bench"),
    ];

    /// The `name = "..."` of the `[package]` table of a manifest.
    fn manifest_name(text: &str) -> Option<String> {
        let package = text.split("\n[").find(|t| t.starts_with("package]"))?;
        package.lines().find_map(|l| {
            let v = l.strip_prefix("name")?.trim_start().strip_prefix('=')?;
            Some(v.trim().trim_matches('"').to_string())
        })
    }

    #[test]
    fn every_package_name_is_the_one_its_manifest_declares() {
        let root = crate::root();
        for (p, dir) in ALL {
            let text = std::fs::read_to_string(root.join(dir).join("Cargo.toml"))
                .unwrap_or_else(|e| panic!("{dir} has a manifest: {e}"));
            assert_eq!(
                manifest_name(&format!("\n{text}")).as_deref(),
                Some(p.name()),
                "the manifest in {dir} names the package {:?}",
                p.name()
            );
        }
    }

    #[test]
    fn dash_p_repeats_the_flag_per_package() {
        assert_eq!(
            dash_p(&[Package::Core, Package::X86]),
            ["-p", "mmu-notifier-core", "-p", "mmu-notifier-x86"],
            "one -p per package, in order"
        );
    }
}
