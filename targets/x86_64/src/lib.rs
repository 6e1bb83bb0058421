//! The x86-64 test kernels' library: booting and running cases on x86-64.
//!
//! Each kernel is a binary in `src/bin/` that links this library. The library
//! boots through PVH (QEMU's `-kernel`), switches to long mode with an
//! identity map of the first GiB of physical memory, and then offers the
//! services tests need: a serial console, fault probes, a frame allocator,
//! address-space switching and QEMU exit codes. Cases run through the
//! harness every kernel shares (`mmu-notifier-kernel-harness`, re-exported
//! here), with this kernel's hooks in [`platform`].
//!
//! # Memory layout
//! - PML4 entry 0 (virtual `0..512 GiB`) belongs to the kernel: the first GiB
//!   is identity-mapped with 2 MiB pages, so a physical address below 1 GiB is
//!   also a valid pointer. The kernel image is linked at 1 MiB.
//! - PML4 entries 1..=511, starting at [`TEST_WINDOW`], belong to the tests.
//!   The harness never maps anything there.
//! - Frames handed out by [`alloc_frame`] come from RAM above 16 MiB.
//! - Trees built by the code under test are run through a *view*
//!   ([`activate_view`]): a harness-owned top-level table holding the
//!   kernel's entry 0 and the tree's entries 1..=511, so the tree itself
//!   never contains the kernel. [`machine::KernelMachine`] is the
//!   conformance suite's `Machine` (and `Cpus`) built that way.
//!
//! # Writing a kernel
//! ```ignore
//! #![no_std]
//! #![no_main]
//! use mmu_notifier_kernel_x86_64 as h;
//!
//! h::entry!(main);
//!
//! fn main() -> ! {
//!     h::run_cases(h::cases![answer_is_42])
//! }
//!
//! fn answer_is_42() -> h::Outcome {
//!     h::ensure!(6 * 7 == 42, "arithmetic is broken");
//!     Ok(())
//! }
//! ```
//!
//! A kernel runs on the boot CPU only, with interrupts disabled (the only
//! events are CPU exceptions), unless it calls [`smp::start`]: that brings
//! up the other CPUs QEMU was given (`-smp N`, passed as `smp=N` on the
//! command line), enables interrupts on every CPU (IPIs only), and lets
//! [`smp::on_all_cpus`] run work on all of them. Probes and address-space
//! switching work on every CPU (their state is per CPU), and
//! [`machine::KernelMachine`]'s arch shoots TLB entries down on every CPU
//! that runs a test address space ([`smp::SHOOTDOWN`]).
//!
//! # defmt
//! With the `defmt` feature the library types implement `defmt::Format`, and
//! the harness defines the global logger: `defmt::info!` and friends write
//! frames to COM2 (0x2f8), kept apart from the text on COM1, for
//! `defmt-print -e <kernel ELF>` on the host. `DEFMT_LOG` (set to `info` in
//! `.cargo/config.toml`) chooses the levels at compile time.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod apic;
mod boot;
mod cpu;
#[cfg(feature = "defmt")]
mod defmt_log;
mod exit;
mod frames;
mod interrupts;
pub mod iommu;
pub mod machine;
mod paging;
mod percpu;
pub mod platform;
pub mod serial;
pub mod smp;
mod sync;

pub use apic::{map_mmio, tsc_per_ms};
pub use boot::{accel, cmdline, cmdline_option, filter, Accel};
pub use cpu::rdtsc;
pub use exit::{exit_failure, exit_success, EXIT_FAILURE_STATUS, EXIT_SUCCESS_STATUS};
pub use frames::{alloc_frame, alloc_frames_aligned, frames_in_use, free_frame, FRAME_SIZE};
pub use interrupts::{
    probe_read, probe_write, Fault, PF_INSTR, PF_PRESENT, PF_RESERVED, PF_USER, PF_WRITE,
};
pub use mmu_notifier_kernel_harness::{
    cases, ensure, entry, fail, Case, Failure, Outcome, SpinLock,
};
pub use paging::{
    activate, activate_view, current_root, deactivate, invlpg, kernel_root, pte, refresh_view,
    reload_cr3, viewed_root, MapError, Pte, TestSpace, TEST_WINDOW, TEST_WINDOW_END,
};
pub use percpu::{cpu_id, MAX_CPUS};
pub use platform::{Kernel, BUILD};

/// The harness's runner with this kernel's hooks.
pub type Runner = mmu_notifier_kernel_harness::Runner<Kernel>;

/// Runs the kernel's own cases (see [`cases!`]) and ends the run.
pub fn run_cases(cases: impl IntoIterator<Item = Case<()>>) -> ! {
    mmu_notifier_kernel_harness::run_cases::<Kernel>(cases)
}

/// Runs the conformance suite's demo on `m`, told in `words`, and ends the run.
pub fn run_demo(m: &machine::KernelMachine, words: &mmu_notifier_conformance::demo::Words) -> ! {
    mmu_notifier_kernel_harness::run_demo::<Kernel, _>(m, words)
}
