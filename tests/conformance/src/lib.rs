//! The conformance suite: one specification of what MMU notifiers must
//! guarantee, run unchanged on the host's emulated MMU and inside the QEMU
//! test kernels of every arch.
//!
//! A [`Machine`] gives the suite its arch, physical frames and CPUs. Each
//! case builds an address space, attaches a reference secondary MMU
//! ([`shadow::ShadowMmu`] through the plain notifier, [`device::Device`]
//! through interval notifiers), runs one call site, and checks three
//! things:
//! 1. the CPU: a removed mapping faults, a write-protected one faults on
//!    write (a missing TLB flush shows up as a stale hit);
//! 2. the notifier calls: which, in what order, with what ranges;
//! 3. the oracle ([`oracle::check_coherent`]): no secondary translation is
//!    stale.
//!
//! The cases that need several CPUs ([`smp`]) also need [`smp::Cpus`]: how
//! many CPUs there are, and a way to run work on all of them at once (the
//! kernels' secondary CPUs, threads on the host). [`demo`] tells the same
//! story to a person, one call site after the other.
//!
//! # The case list
//! [`suite!`] lists every case once. The crate builds [`one_cpu_cases`] and
//! [`several_cpu_cases`] from it (what the kernels run), and the host test
//! binary expands it into one `#[test]` per case, so `cargo test
//! <case_name>` runs one case on the host. A new case is a function in its
//! module and one line in [`suite!`].
#![no_std]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod cases;
pub mod demo;
pub mod device;
pub mod dma;
mod failure;
pub mod interval_cases;
pub mod oracle;
pub mod shadow;
pub mod smp;
pub mod sync;

use core::fmt;

use mmu_notifier_core::{Arch, PhysAddr, TableMemory, VirtAddr};

pub use failure::Failure;
pub use smp::Cpus;

/// How a CPU access failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuFault {
    /// No valid translation (x86 #PF with P = 0, s390 translation
    /// exception).
    NotMapped,
    /// Write to a read-only translation.
    Protection,
    /// Anything else, with a machine-specific code.
    Other(u64),
}

/// The machine under test: its arch and table allocator, its physical
/// memory, and its CPUs' accesses. Implemented by the host's emulator and
/// by each QEMU kernel.
///
/// The CPU methods ([`activate`](Self::activate), [`cpu_read`](Self::cpu_read),
/// ...) act on the CPU that calls them, with that CPU's TLB: on a machine
/// with several CPUs ([`Cpus`]), each CPU runs its own address space.
pub trait Machine {
    /// The arch under test.
    type Arch: Arch;
    /// Its table allocator.
    type Frames: TableMemory;
    /// The kernel the address spaces run on: its CPU ids and grace periods
    /// (host threads on the host, per-CPU data in the QEMU kernels).
    type Kernel: mmu_notifier_core::Kernel;
    /// The arch instance.
    fn arch(&self) -> &Self::Arch;
    /// The table allocator.
    fn frames(&self) -> &Self::Frames;
    /// A zeroed data frame (base page size).
    fn alloc_frame(&self) -> Option<PhysAddr>;
    /// `count` physically contiguous data frames aligned to `align`.
    fn alloc_contiguous(&self, count: usize, align: u64) -> Option<PhysAddr>;
    /// Gives a data frame back.
    fn free_frame(&self, frame: PhysAddr);
    /// Writes 8 bytes of physical memory.
    fn write_phys(&self, pa: PhysAddr, value: u64);
    /// Makes the calling CPU translate through the tree at `root`.
    ///
    /// # Safety
    /// 1. `root` is the root table of a live address space built on this
    ///    machine's arch and table allocator;
    /// 2. that address space stays live until this CPU calls
    ///    [`deactivate`](Self::deactivate).
    unsafe fn activate(&self, root: PhysAddr);
    /// Switches the calling CPU back to the machine's own address space.
    fn deactivate(&self);
    /// Reads 8 bytes at `va` on the calling CPU.
    ///
    /// # Errors
    /// The fault the access took.
    fn cpu_read(&self, va: VirtAddr) -> Result<u64, CpuFault>;
    /// Writes 8 bytes at `va` on the calling CPU.
    ///
    /// # Errors
    /// The fault the access took.
    fn cpu_write(&self, va: VirtAddr, value: u64) -> Result<(), CpuFault>;
    /// First address of the window the suite may map.
    fn test_base(&self) -> VirtAddr;
    /// The level whose leaves are huge pages.
    ///
    /// # Errors
    /// Why this machine cannot run huge leaves (s390x under TCG: no EDAT);
    /// the huge-page case is then skipped with this reason.
    fn huge_level(&self) -> Result<mmu_notifier_core::Level<Self::Arch>, &'static str>;
    /// Prints one line of narration (the demo, the figures of a stress
    /// case) on the machine's console; the host's test output by default
    /// goes nowhere.
    fn log(&self, line: fmt::Arguments<'_>) {
        let _ = line;
    }
}

/// The result of one case.
pub type Outcome = Result<(), Failure>;

/// Fails the case with a formatted message: `fail!("read {:#x}", v)`.
#[macro_export]
macro_rules! fail {
    ($($fmt:tt)+) => {
        return ::core::result::Result::Err($crate::Failure::new(format_args!($($fmt)+)))
    };
}

/// Fails the case with a formatted message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            $crate::fail!($($fmt)+);
        }
    };
}

/// A named case that runs with a context `C` (a [`Machine`], or `()` for
/// a kernel's own cases, see [`cases!`]).
pub struct Case<C> {
    /// Its name: the behaviour it checks.
    pub name: &'static str,
    /// Runs it.
    pub run: fn(&C) -> Outcome,
    /// Why it cannot run with this context, if it cannot (huge pages on a
    /// machine without them, several CPUs on one): it is then skipped and
    /// counts neither way.
    pub skip: fn(&C) -> Option<&'static str>,
}

impl<C> Case<C> {
    /// A case that always applies.
    pub const fn new(name: &'static str, run: fn(&C) -> Outcome) -> Self {
        Self {
            name,
            run,
            skip: requires::nothing::<C>,
        }
    }

    /// The case, skipped where `requirement` (one of [`requires`]) says
    /// why the context lacks what it needs.
    pub const fn requiring(self, requirement: fn(&C) -> Option<&'static str>) -> Self {
        Self {
            skip: requirement,
            ..self
        }
    }
}

/// Cases named after their functions, each a `fn() -> Outcome` (a
/// kernel's own cases, which need no [`Machine`]): `cases![a, b]` is
/// `[Case<()>; 2]`.
#[macro_export]
macro_rules! cases {
    ($($f:ident),* $(,)?) => {
        [$($crate::Case::<()>::new(stringify!($f), |_: &()| $f())),*]
    };
}

/// The suite, written once: expands to `$callback! { one_cpu { ... }
/// several_cpus { ... } }`, each entry `module::case_name`, optionally
/// followed by `if requirement` (a function of [`requires`]). The
/// kernels run the lists this crate builds from it; the host expands it
/// into its tests.
#[macro_export]
macro_rules! suite {
    ($callback:ident) => {
        $callback! {
            one_cpu {
                cases::zap_faults_on_cpu_and_invalidates_secondary_before_frame_reuse,
                cases::zap_calls_invalidate_page_per_page_inside_one_range_pair,
                cases::ptep_clear_flush_young_reports_cpu_access,
                cases::ptep_clear_flush_young_reports_secondary_access,
                cases::fork_cow_write_protects_parent_and_invalidates_its_range,
                cases::fork_of_shared_mapping_calls_no_notifier,
                cases::mprotect_read_only_faults_writes_and_invalidates_range,
                cases::remap_pfn_range_maps_frames_and_invalidates_range,
                cases::huge_unmap_faults_and_invalidates_each_huge_entry if huge_pages,
                cases::teardown_releases_secondaries_before_any_frame_is_freed,
                cases::unregistered_notifier_is_not_called,
                cases::range_style_secondary_stays_coherent_through_every_call_site,
                cases::bad_input_is_refused_and_changes_nothing,
                cases::operations_after_teardown_are_refused,
                interval_cases::interval_device_stays_coherent_through_every_call_site,
                interval_cases::interval_invalidation_visits_only_overlapping_subscriptions,
                interval_cases::device_fault_during_invalidation_retries,
                interval_cases::device_fault_racing_an_invalidation_elsewhere_does_not_retry,
                interval_cases::device_cannot_fault_while_a_colliding_invalidation_runs,
                interval_cases::interval_inserted_during_invalidation_waits_for_its_end,
                interval_cases::removed_interval_is_not_invalidated,
            }
            several_cpus {
                smp::concurrent_zap_and_fault_in_stay_coherent if several_cpus,
                smp::register_unregister_races_invalidation if several_cpus,
                smp::unregister_from_callback_refused_and_waits_for_other_cpu if several_cpus,
                smp::release_exactly_once_under_concurrency if several_cpus,
            }
        }
    };
}

/// What a case may need of the machine, for the `if` clauses of
/// [`suite!`]: each says why the machine does not have it.
pub mod requires {
    use crate::{Cpus, Machine};

    /// Nothing: the case runs everywhere.
    pub fn nothing<C>(_: &C) -> Option<&'static str> {
        None
    }

    /// Huge leaves ([`Machine::huge_level`]).
    pub fn huge_pages<M: Machine>(m: &M) -> Option<&'static str> {
        m.huge_level().err()
    }

    /// At least two CPUs.
    pub fn several_cpus<M: Cpus>(m: &M) -> Option<&'static str> {
        (m.count() < 2).then_some("needs at least 2 CPUs")
    }
}

/// The skip function of a [`suite!`] entry: its `if` requirement, or none.
macro_rules! requirement {
    ($m:ident) => {
        requires::nothing::<$m>
    };
    ($m:ident, $needs:ident) => {
        requires::$needs::<$m>
    };
}

macro_rules! build_lists {
    (
        one_cpu { $($om:ident :: $on:ident $(if $oc:ident)?),* $(,)? }
        several_cpus { $($sm:ident :: $sn:ident $(if $sc:ident)?),* $(,)? }
    ) => {
        /// The cases that run on one CPU, in the order the kernels print them.
        pub fn one_cpu_cases<M: Machine>() -> impl Iterator<Item = Case<M>> {
            [$(Case {
                name: stringify!($on),
                run: $om::$on::<M>,
                skip: requirement!(M $(, $oc)?),
            }),*]
            .into_iter()
        }

        /// The cases that need several CPUs, in the order the kernels print
        /// them.
        pub fn several_cpu_cases<M: Machine + Cpus>() -> impl Iterator<Item = Case<M>> {
            [$(Case {
                name: stringify!($sn),
                run: $sm::$sn::<M>,
                skip: requirement!(M $(, $sc)?),
            }),*]
            .into_iter()
        }
    };
}

suite!(build_lists);
