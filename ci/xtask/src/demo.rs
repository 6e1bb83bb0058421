//! `cargo xtask demo`: boots the demo kernels of each arch (`--demo` of
//! `cargo xtask qemu`: the notifier story, then the DMA story through each
//! IOMMU the arch has), one line of verdict per arch.

use std::path::Path;
use std::process::ExitCode;

use crate::arch::Arch;
use crate::qemu::{self, QemuOpts};

/// Boots every arch's demo kernels; fails if any fails.
pub fn cmd(root: &Path) -> ExitCode {
    let opts = QemuOpts {
        demo: true,
        ..QemuOpts::new(root)
    };
    let mut ok = true;
    for arch in Arch::ALL {
        let arch_name = arch.name();
        match qemu::run(arch, &opts) {
            Ok(r) if r.summary.failed == 0 => println!("demo {arch_name}: ok"),
            Ok(r) => {
                eprintln!("demo {arch_name}: {} failed", r.summary.failed);
                ok = false;
            }
            Err(e) => {
                eprintln!("demo {arch_name}: {e}");
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
