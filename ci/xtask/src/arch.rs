//! The architectures the kernels are built for and booted on: what differs
//! between them, as data. The QEMU arguments and the exit-status convention
//! of each live in `qemu/<arch>.rs`; everything else about booting is shared.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::package::Package;

/// An architecture with kernels under `targets/<name>` and an arch crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Arch {
    /// x86-64: PVH boot on q35, `isa-debug-exit`.
    X86_64,
    /// s390x: `-kernel` on `s390-ccw-virtio`, disabled-wait exit.
    S390x,
}

impl Arch {
    /// Every arch, in the order `--arch all` boots them.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::S390x];

    /// Its name on the command line and in step names.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::S390x => "s390x",
        }
    }

    /// The arch called `name`.
    pub fn parse(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The target triple the kernels (and the cross clippy step) build for.
    pub fn triple(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-none",
            Arch::S390x => "s390x-unknown-linux-gnu",
        }
    }

    /// The arch crate.
    pub fn package(self) -> Package {
        match self {
            Arch::X86_64 => Package::X86,
            Arch::S390x => Package::S390,
        }
    }

    /// The QEMU system emulator.
    pub fn qemu(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::S390x => "qemu-system-s390x",
        }
    }

    /// The kernels' cargo workspace (its `.cargo/config.toml` selects the
    /// target and the linker flags, so cargo must run from there).
    pub fn kernel_dir(self, root: &Path) -> PathBuf {
        root.join("targets").join(self.name())
    }

    /// The environment variable that would replace the rustflags of the
    /// kernels' `.cargo/config.toml` for this target.
    pub fn rustflags_var(self) -> String {
        format!(
            "CARGO_TARGET_{}_RUSTFLAGS",
            self.triple().to_uppercase().replace('-', "_")
        )
    }

    /// Whether `--kvm` can do anything here (KVM for s390x guests needs an
    /// s390x host).
    pub fn has_kvm(self) -> bool {
        self == Arch::X86_64
    }

    /// Whether the kernels have a `defmt` feature and a port to log it on.
    pub fn has_defmt(self) -> bool {
        self == Arch::X86_64
    }

    /// Wall-clock limit for one kernel under `accel`, before the extra the
    /// `smp` kernels get per CPU. A TCG boot takes well under a second: the
    /// limit is there for hangs. KVM on these machines may be software
    /// virtualisation and much slower.
    pub fn timeout(self, kvm: bool) -> Duration {
        Duration::from_secs(if kvm { 300 } else { 60 })
    }

    /// Added to the limit of a kernel with [`crate::qemu::kernels::Role::Smp`] per
    /// CPU: x86's vCPUs spin on each other, and with more vCPUs than host
    /// cores each handshake waits for the host to schedule them (about 45 s
    /// for `-smp 4` on 2 cores). s390x's takes a few seconds at `-smp 4`.
    pub fn smp_timeout_per_cpu(self) -> Duration {
        match self {
            Arch::X86_64 => Duration::from_secs(45),
            Arch::S390x => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_to_their_arch() {
        for a in Arch::ALL {
            assert_eq!(Arch::parse(a.name()), Some(a), "{} round-trips", a.name());
        }
        assert_eq!(Arch::parse("arm64"), None, "an unknown arch is refused");
    }

    #[test]
    fn rustflags_variable_is_cargos_spelling_of_the_triple() {
        assert_eq!(
            Arch::X86_64.rustflags_var(),
            "CARGO_TARGET_X86_64_UNKNOWN_NONE_RUSTFLAGS",
            "upper case, dashes as underscores"
        );
        assert_eq!(
            Arch::S390x.rustflags_var(),
            "CARGO_TARGET_S390X_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "upper case, dashes as underscores"
        );
    }
}
