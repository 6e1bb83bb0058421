//! Which kernels exist, what each is for, and which deliberately broken
//! builds the matrix checks: the two tables every runner and the test
//! matrix read. Adding a kernel binary is one line in [`KERNELS`]; adding a
//! broken variant (and the negative steps that boot it) one line in
//! [`BROKEN`] (and its name in the root manifest's `check-cfg` list).

use crate::arch::Arch;

/// When a kernel boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// By `cargo xtask qemu`.
    Test,
    /// By `cargo xtask qemu --smp N` with N > 1, after the test kernels: it
    /// has nothing to test on one CPU.
    Smp,
    /// Instead of the tests, by `--demo` and `cargo xtask demo`.
    Demo,
}

/// A kernel binary: `targets/<arch>/src/bin/<name>.rs` for each of its
/// arches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernel {
    /// The binary's name.
    pub name: &'static str,
    /// When it boots.
    pub role: Role,
    /// The arches that have it.
    pub arches: &'static [Arch],
    /// QEMU arguments this kernel needs besides its arch's (a device to
    /// drive, say `-device intel-iommu`).
    pub qemu_args: &'static [&'static str],
}

impl Kernel {
    /// A kernel with no QEMU arguments of its own.
    pub const fn new(name: &'static str, role: Role, arches: &'static [Arch]) -> Kernel {
        Kernel {
            name,
            role,
            arches,
            qemu_args: &[],
        }
    }

    /// The same kernel, booted with `args` added to its arch's.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "for the first kernel that drives a device")
    )]
    pub const fn with_qemu_args(self, args: &'static [&'static str]) -> Kernel {
        Kernel {
            qemu_args: args,
            ..self
        }
    }
}

const BOTH: &[Arch] = &[Arch::X86_64, Arch::S390x];

/// Every kernel, in boot order.
pub const KERNELS: &[Kernel] = &[
    // The harness's own checks: faults, A/D bits, the TLB.
    Kernel::new("selftest", Role::Test, BOTH),
    // The shared suite of `tests/conformance` on the real MMU.
    Kernel::new("conformance", Role::Test, BOTH),
    // Secondary CPUs: TLB shootdown, notifiers under concurrency.
    Kernel::new("smp", Role::Smp, BOTH),
    Kernel::new("demo", Role::Demo, BOTH),
];

/// A deliberately broken build: the kernels built with
/// `--cfg mmu_notifier_broken="<name>"`, which must then fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Broken {
    /// The cfg value, and the `--broken` argument.
    pub name: &'static str,
    /// Where the matrix boots it: one negative step per (arch, `-smp`).
    /// Its arches are the ones `--broken` accepts it for.
    pub checks: &'static [(Arch, u32)],
    /// Only these kernels are built and booted for it (all of the arch's
    /// test kernels when empty): a variant that only one kernel can catch
    /// need not boot the others.
    pub kernels: &'static [&'static str],
}

impl Broken {
    /// A variant booted with all test kernels at each (arch, `-smp`).
    pub const fn new(name: &'static str, checks: &'static [(Arch, u32)]) -> Broken {
        Broken {
            name,
            checks,
            kernels: &[],
        }
    }

    /// The same variant, booting only `kernels`.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "for the first variant only one kernel catches")
    )]
    pub const fn only(self, kernels: &'static [&'static str]) -> Broken {
        Broken { kernels, ..self }
    }

    /// Whether `--broken <name>` builds for `arch`.
    pub fn applies_to(&self, arch: Arch) -> bool {
        self.checks.iter().any(|(a, _)| *a == arch)
    }

    /// The smallest `-smp` it is checked at on `arch`.
    pub fn min_smp(&self, arch: Arch) -> Option<u32> {
        self.checks
            .iter()
            .filter(|(a, _)| *a == arch)
            .map(|(_, n)| *n)
            .min()
    }
}

/// The broken variants. The core reacts to `no-notify` (no notifier step)
/// and `no-grace` (`unregister` does not wait for running callbacks: only
/// the `smp` kernels can see that), the arch crates to `no-flush` (no
/// `invlpg`; on s390x a plain store of the invalid bit instead of IPTE) and
/// x86's to `no-shootdown` (no flush on the other CPUs: `smp` only).
pub const BROKEN: &[Broken] = &[
    Broken::new(
        "no-flush",
        &[(Arch::X86_64, 1), (Arch::S390x, 1), (Arch::S390x, 2)],
    ),
    Broken::new("no-notify", &[(Arch::X86_64, 1), (Arch::S390x, 1)]),
    Broken::new("no-shootdown", &[(Arch::X86_64, 2)]),
    Broken::new("no-grace", &[(Arch::X86_64, 2), (Arch::S390x, 2)]),
];

/// The variant `name`, if `arch` knows it.
pub fn broken(name: &str, arch: Arch) -> Result<&'static Broken, String> {
    BROKEN
        .iter()
        .find(|b| b.name == name && b.applies_to(arch))
        .ok_or_else(|| {
            let known: Vec<&str> = BROKEN
                .iter()
                .filter(|b| b.applies_to(arch))
                .map(|b| b.name)
                .collect();
            format!(
                "unknown --broken {name:?}: {} knows {}",
                arch.name(),
                known.join(", ")
            )
        })
}

/// The kernels of `arch` to boot: those of `role`s that `wanted` accepts,
/// restricted to `only` when it is not empty.
pub fn select(arch: Arch, wanted: impl Fn(Role) -> bool, only: &[&str]) -> Vec<&'static Kernel> {
    KERNELS
        .iter()
        .filter(|k| k.arches.contains(&arch) && wanted(k.role))
        .filter(|k| only.is_empty() || only.contains(&k.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_in_the_table_has_its_source_file() {
        let root = crate::root();
        for k in KERNELS {
            for a in k.arches {
                let file = a
                    .kernel_dir(&root)
                    .join("src/bin")
                    .join(format!("{}.rs", k.name));
                assert!(
                    file.exists(),
                    "kernel {} of {} is a binary at {}",
                    k.name,
                    a.name(),
                    file.display()
                );
            }
        }
    }

    #[test]
    fn broken_variants_are_unique_and_checked_somewhere() {
        for (i, b) in BROKEN.iter().enumerate() {
            assert!(!b.checks.is_empty(), "{} is booted by some step", b.name);
            assert!(
                BROKEN[i + 1..].iter().all(|c| c.name != b.name),
                "{} is listed once",
                b.name
            );
            for k in b.kernels {
                assert!(
                    KERNELS.iter().any(|kk| kk.name == *k),
                    "{} boots kernel {k}, which is in KERNELS",
                    b.name
                );
            }
        }
    }

    #[test]
    fn a_variant_is_known_only_to_the_arches_it_is_checked_on() {
        assert!(broken("no-shootdown", Arch::X86_64).is_ok(), "x86 has it");
        let e = broken("no-shootdown", Arch::S390x).unwrap_err();
        assert!(
            e.contains("s390x knows no-flush, no-notify, no-grace"),
            "the error lists what s390x knows: {e}"
        );
    }

    #[test]
    fn a_variant_restricted_to_some_kernels_boots_only_those() {
        let b = Broken::new("no-iotlb", &[(Arch::X86_64, 1)]).only(&["conformance"]);
        let names: Vec<&str> = select(Arch::X86_64, |r| r == Role::Test, b.kernels)
            .iter()
            .map(|k| k.name)
            .collect();
        assert_eq!(names, ["conformance"], "only the kernel that catches it");
        assert_eq!(b.min_smp(Arch::X86_64), Some(1), "checked at -smp 1");
        assert!(!b.applies_to(Arch::S390x), "and on x86 only");
    }

    #[test]
    fn smp_kernels_boot_only_when_asked_for() {
        let names = |smp: u32| -> Vec<&str> {
            select(
                Arch::S390x,
                |r| r == Role::Test || (r == Role::Smp && smp > 1),
                &[],
            )
            .iter()
            .map(|k| k.name)
            .collect()
        };
        assert_eq!(names(1), ["selftest", "conformance"], "one CPU: no smp");
        assert_eq!(
            names(2),
            ["selftest", "conformance", "smp"],
            "smp boots after the test kernels"
        );
    }
}
