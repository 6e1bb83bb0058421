//! MMU notifiers for Rust kernels: keep secondary MMUs coherent with the
//! CPU page tables.
//!
//! This facade re-exports the arch-independent core ([`mmu_notifier_core`])
//! and the arch layer of the target being built, as [`native`]. See the
//! README for the design and the crate-level example.
#![no_std]
#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    missing_docs
)]

pub use mmu_notifier_core::*;

cfg_if::cfg_if! {
    if #[cfg(target_arch = "x86_64")] {
        /// The arch layer of the build target: x86-64.
        pub use mmu_notifier_x86 as native;
    } else if #[cfg(target_arch = "s390x")] {
        /// The arch layer of the build target: s390x.
        pub use mmu_notifier_s390 as native;
    } else {
        compile_error!("mmu-notifier has arch layers for x86_64 and s390x only; use mmu-notifier-core and implement `Arch` for this target");
    }
}
