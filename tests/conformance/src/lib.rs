//! The conformance suite: one specification of what MMU notifiers must
//! guarantee, run unchanged on the host's emulated MMU and inside the QEMU
//! test kernels of every arch.
//!
//! A [`Machine`] gives the suite a CPU (accesses that can fault), physical
//! frames, and the arch. Each case builds an address space, attaches the
//! reference secondary MMU ([`shadow::ShadowMmu`]) through the notifiers,
//! runs one call site, and checks three things:
//! 1. the CPU: a removed mapping faults, a write-protected one faults on
//!    write (a missing TLB flush shows up as a stale hit);
//! 2. the notifier calls: which, in what order, with what ranges;
//! 3. the oracle: no secondary translation is stale.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod cases;
pub mod device;
pub mod dma;
pub mod interval_cases;
pub mod shadow;

use core::fmt::{self, Write};

use mmu_notifier_core::{Arch, FrameAllocator, PhysAddr, VirtAddr};

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

/// What the suite needs from a machine.
pub trait Machine {
    /// The arch under test.
    type Arch: Arch;
    /// Its table allocator.
    type Frames: FrameAllocator;
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
    /// Makes this CPU translate through the tree at `root`.
    ///
    /// # Safety
    /// `root` is the root table of a live address space whose tables stay
    /// valid until [`deactivate`](Self::deactivate).
    unsafe fn activate(&self, root: PhysAddr);
    /// Switches back to the machine's own address space.
    fn deactivate(&self);
    /// Reads 8 bytes at `va` on this CPU.
    ///
    /// # Errors
    /// The fault the access took.
    fn cpu_read(&self, va: VirtAddr) -> Result<u64, CpuFault>;
    /// Writes 8 bytes at `va` on this CPU.
    ///
    /// # Errors
    /// The fault the access took.
    fn cpu_write(&self, va: VirtAddr, value: u64) -> Result<(), CpuFault>;
    /// First address of the window the suite may map.
    fn test_base(&self) -> VirtAddr;
    /// The level whose leaves are huge pages, if this machine can run them
    /// (s390x under TCG cannot: no EDAT).
    fn huge_level(&self) -> Option<usize>;
}

/// Why a case failed: a short message, formatted without allocation.
#[derive(Clone, Copy)]
pub struct Failure {
    buf: [u8; 112],
    len: u8,
}

impl Failure {
    /// A failure with a formatted message (cut at 112 bytes, so a
    /// `Result` carrying it stays small enough to return cheaply).
    pub fn new(args: fmt::Arguments<'_>) -> Self {
        let mut f = Failure {
            buf: [0; 112],
            len: 0,
        };
        let _ = f.write_fmt(args);
        f
    }
    /// The message.
    pub fn as_str(&self) -> &str {
        // The writer only copies whole UTF-8 characters.
        core::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("<message>")
    }
}

impl Write for Failure {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for ch in s.chars() {
            let mut tmp = [0u8; 4];
            let enc = ch.encode_utf8(&mut tmp);
            let at = usize::from(self.len);
            if at + enc.len() > self.buf.len() {
                return Ok(());
            }
            self.buf[at..at + enc.len()].copy_from_slice(enc.as_bytes());
            self.len += enc.len() as u8;
        }
        Ok(())
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one case.
pub type Outcome = Result<(), Failure>;

/// Fails the case with a formatted message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::Failure::new(format_args!($($fmt)+)));
        }
    };
}

/// A named case.
pub struct Case<M: Machine> {
    /// Its name: the behaviour it checks.
    pub name: &'static str,
    /// Runs it.
    pub run: fn(&M) -> Outcome,
    /// Whether it can run on this machine (huge pages need EDAT on s390x).
    pub applies: fn(&M) -> bool,
}

/// Every case of the suite: the call sites, then the interval notifiers.
pub fn every_case<M: Machine>() -> impl Iterator<Item = Case<M>> {
    cases::all::<M>()
        .into_iter()
        .chain(interval_cases::all::<M>())
}

/// Runs every case whose name contains `filter`, calling `report` once per
/// case run (`None` for a case that does not apply to this machine).
/// Returns (passed, failed).
pub fn run<M: Machine>(
    m: &M,
    filter: &str,
    report: &mut dyn FnMut(&'static str, Option<&Outcome>),
) -> (u32, u32) {
    let (mut passed, mut failed) = (0, 0);
    for case in every_case::<M>() {
        if !case.name.contains(filter) {
            continue;
        }
        if !(case.applies)(m) {
            report(case.name, None);
            continue;
        }
        let outcome = (case.run)(m);
        m.deactivate();
        match outcome {
            Ok(()) => passed += 1,
            Err(_) => failed += 1,
        }
        report(case.name, Some(&outcome));
    }
    (passed, failed)
}
