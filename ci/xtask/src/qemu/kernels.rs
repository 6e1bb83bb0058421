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

impl Role {
    /// Whether a kernel of this role boots in a run on `smp` CPUs (`demo`:
    /// a run of the demos instead of the tests).
    pub fn boots(self, smp: u32, demo: bool) -> bool {
        match self {
            Role::Demo => demo,
            Role::Test => !demo,
            Role::Smp => !demo && smp > 1,
        }
    }
}

/// A kernel boot: a binary of `targets/<arch>/src/bin/` for each of its
/// arches, with the QEMU devices and command-line words it is booted with.
/// One binary may be booted several ways (the IOMMU kernel in each of
/// VT-d's modes), each its own entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernel {
    /// The boot's name: what `--kernel` selects and the console's tag says.
    pub name: &'static str,
    /// The binary: `targets/<arch>/src/bin/<binary>.rs`.
    pub binary: &'static str,
    /// When it boots.
    pub role: Role,
    /// The arches that have it.
    pub arches: &'static [Arch],
    /// QEMU arguments this kernel needs besides its arch's (a device to
    /// drive, say `-device intel-iommu`).
    pub qemu_args: &'static [&'static str],
    /// Words added to the kernel command line after the runner's own.
    pub append: &'static [&'static str],
}

impl Kernel {
    /// The binary `name`, booted with no QEMU arguments or words of its
    /// own.
    pub const fn new(name: &'static str, role: Role, arches: &'static [Arch]) -> Kernel {
        Kernel {
            name,
            binary: name,
            role,
            arches,
            qemu_args: &[],
            append: &[],
        }
    }

    /// The same boot, of the binary `binary`.
    pub const fn of_binary(self, binary: &'static str) -> Kernel {
        Kernel { binary, ..self }
    }

    /// The same kernel, booted with `args` added to its arch's.
    pub const fn with_qemu_args(self, args: &'static [&'static str]) -> Kernel {
        Kernel {
            qemu_args: args,
            ..self
        }
    }

    /// The same kernel, with `words` added to its command line.
    pub const fn with_append(self, words: &'static [&'static str]) -> Kernel {
        Kernel {
            append: words,
            ..self
        }
    }
}

const BOTH: &[Arch] = &[Arch::X86_64, Arch::S390x];
const X86_64: &[Arch] = &[Arch::X86_64];
const S390X: &[Arch] = &[Arch::S390x];

/// VT-d in legacy mode (second-level tables, the shadow driver) and QEMU's
/// `edu` device to do DMA through it. The IOMMU must come before the
/// device it translates for.
const VTD_LEGACY: &[&str] = &[
    "-device",
    "intel-iommu,aw-bits=48",
    "-device",
    "edu,dma_mask=0xffffffffffff",
];
/// VT-d in scalable mode with first-level tables: the device walks the CPU
/// page tables through a PASID (the shared-tables driver).
const VTD_SCALABLE: &[&str] = &[
    "-device",
    "intel-iommu,x-scalable-mode=on,x-flts=on,aw-bits=48",
    "-device",
    "edu,dma_mask=0xffffffffffff",
];
/// zPCI: a virtio-rng behind the zPCI IOMMU, whose DMA goes through the
/// function's DMA tables.
const ZPCI: &[&str] = &[
    "-device",
    "zpci,uid=1,fid=1,target=r0",
    "-device",
    "virtio-rng-pci,id=r0,iommu_platform=on,disable-legacy=on",
];
/// The IOMMU kernel tells the DMA story instead of running its cases.
const DEMO: &[&str] = &["mode=demo"];

/// Every kernel, in boot order.
pub const KERNELS: &[Kernel] = &[
    // The harness's own checks: faults, A/D bits, the TLB.
    Kernel::new("selftest", Role::Test, BOTH),
    // The shared suite of `tests/conformance` on the real MMU.
    Kernel::new("conformance", Role::Test, BOTH),
    // Device DMA through the platform IOMMU, kept coherent by notifiers:
    // a missed invalidation is DMA into a frame already handed back.
    Kernel::new("iommu-vtd", Role::Test, X86_64)
        .of_binary("iommu")
        .with_qemu_args(VTD_LEGACY),
    Kernel::new("iommu-vtd-scalable", Role::Test, X86_64)
        .of_binary("iommu")
        .with_qemu_args(VTD_SCALABLE),
    Kernel::new("iommu-zpci", Role::Test, S390X)
        .of_binary("iommu")
        .with_qemu_args(ZPCI),
    // Secondary CPUs: TLB shootdown, notifiers under concurrency.
    Kernel::new("smp", Role::Smp, BOTH),
    Kernel::new("demo", Role::Demo, BOTH),
    Kernel::new("demo-dma-vtd", Role::Demo, X86_64)
        .of_binary("iommu")
        .with_qemu_args(VTD_LEGACY)
        .with_append(DEMO),
    Kernel::new("demo-dma-vtd-scalable", Role::Demo, X86_64)
        .of_binary("iommu")
        .with_qemu_args(VTD_SCALABLE)
        .with_append(DEMO),
    Kernel::new("demo-dma-zpci", Role::Demo, S390X)
        .of_binary("iommu")
        .with_qemu_args(ZPCI)
        .with_append(DEMO),
];

/// The kernels that do DMA through an IOMMU.
const IOMMU_KERNELS: &[&str] = &["iommu-vtd", "iommu-vtd-scalable", "iommu-zpci"];

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
    /// test kernels when empty): a variant that only some kernels can
    /// catch need not boot the others.
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
/// `invlpg`; on s390x a plain store of the invalid bit instead of IPTE),
/// x86's to `no-shootdown` (no flush on the other CPUs: `smp` only) and
/// the IOMMU drivers to `no-iotlb` (no IOTLB invalidation: the IOMMU
/// kernels only).
///
/// Each boots only the kernels that can catch it (those whose cases fail
/// under it), so a negative step costs what it proves.
pub const BROKEN: &[Broken] = &[
    Broken::new(
        "no-flush",
        &[(Arch::X86_64, 1), (Arch::S390x, 1), (Arch::S390x, 2)],
    )
    .only(&["conformance", "smp"]),
    Broken::new("no-notify", &[(Arch::X86_64, 1), (Arch::S390x, 1)]).only(&[
        "conformance",
        "iommu-vtd",
        "iommu-vtd-scalable",
        "iommu-zpci",
    ]),
    Broken::new("no-shootdown", &[(Arch::X86_64, 2)]).only(&["smp"]),
    Broken::new("no-grace", &[(Arch::X86_64, 2), (Arch::S390x, 2)]).only(&["smp"]),
    Broken::new("no-iotlb", &[(Arch::X86_64, 1), (Arch::S390x, 1)]).only(IOMMU_KERNELS),
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
                    .join(format!("{}.rs", k.binary));
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
    fn every_check_of_a_variant_boots_some_kernel() {
        for b in BROKEN {
            for &(arch, smp) in b.checks {
                let booted = select(arch, |r| r.boots(smp, false), b.kernels);
                assert!(
                    !booted.is_empty(),
                    "{} at -smp {smp} on {} boots a kernel that can catch it",
                    b.name,
                    arch.name()
                );
            }
        }
    }

    #[test]
    fn a_variant_is_known_only_to_the_arches_it_is_checked_on() {
        assert!(broken("no-shootdown", Arch::X86_64).is_ok(), "x86 has it");
        let e = broken("no-shootdown", Arch::S390x).unwrap_err();
        assert!(
            e.contains("s390x knows no-flush, no-notify, no-grace, no-iotlb"),
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
            select(Arch::S390x, |r| r.boots(smp, false), &[])
                .iter()
                .map(|k| k.name)
                .collect()
        };
        assert_eq!(
            names(1),
            ["selftest", "conformance", "iommu-zpci"],
            "one CPU: no smp"
        );
        assert_eq!(
            names(2),
            ["selftest", "conformance", "iommu-zpci", "smp"],
            "smp boots after the test kernels"
        );
    }

    #[test]
    fn kernel_names_are_unique_per_arch() {
        for (i, k) in KERNELS.iter().enumerate() {
            for other in &KERNELS[i + 1..] {
                assert!(
                    other.name != k.name || other.arches.iter().all(|a| !k.arches.contains(a)),
                    "{} names one boot per arch",
                    k.name
                );
            }
        }
    }

    #[test]
    fn the_iotlb_variant_boots_each_arches_iommu_kernels_only() {
        let b = broken("no-iotlb", Arch::X86_64).expect("x86 has it");
        let on = |arch| -> Vec<&str> {
            select(arch, |r| r == Role::Test, b.kernels)
                .iter()
                .map(|k| k.name)
                .collect()
        };
        assert_eq!(
            on(Arch::X86_64),
            ["iommu-vtd", "iommu-vtd-scalable"],
            "both VT-d modes"
        );
        assert_eq!(on(Arch::S390x), ["iommu-zpci"], "zPCI");
    }
}
