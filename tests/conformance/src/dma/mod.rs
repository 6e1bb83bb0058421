//! DMA through a real IOMMU, kept coherent by the notifiers: the
//! arch-neutral half.
//!
//! Every other secondary MMU of the suite is software checked by an oracle
//! we also wrote. Here the secondary MMU is hardware that caches
//! translations (QEMU's VT-d IOTLB, zPCI's IOTLB), driven by a device that
//! really does DMA. A table change that is not followed by the right
//! invalidation leaves a stale IOTLB entry, the next DMA goes through it,
//! and lands in a frame the kernel handed back. The cases poison every
//! handed-back frame and read it back through the CPU after the device's
//! next access: it must either fault (the IOMMU's fault record says so)
//! or reach the frame the CPU tables now map, never the old one.
//!
//! # What lives where
//! - this module: the [`DmaMachine`] trait a kernel implements, the
//!   hardware trait [`IoDomain`] (program or clear one IO page-table entry,
//!   invalidate the IOTLB for a range) and the [`Bound`] view of a driver
//!   attached to an address space;
//! - [`shadow`]: the shadow-style driver, written once over [`IoDomain`]:
//!   an interval notifier that fills the IOMMU's own tables from a fault
//!   path following the `read_begin`/`read_retry` protocol and empties
//!   them, with an IOTLB invalidation, from its range callback;
//! - [`cases`]: the cases, one per call site, as harness cases over a
//!   [`cases::Binding`] (the machine and a driver style), run once for
//!   every driver style the machine offers;
//! - [`demo`]: the step-by-step story the `iommu` kernels tell with
//!   `mode=demo`.
//!
//! The hardware halves (VT-d registers and tables, the SVA driver that lets
//! VT-d walk the CPU's own tables, zPCI's instructions and DMA tables, the
//! devices) live with their arch, in each kernel's `iommu`/`zpci` module.

pub mod cases;
pub mod demo;
pub mod shadow;

use core::fmt;

use mmu_notifier_core::{Event, PageRange, PhysAddr, Prot, VirtAddr};

use crate::cases::Space;
use crate::{Cpus, Machine, Outcome};

/// How a driver keeps an IOMMU coherent with an address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// The driver owns the IOMMU's tables (VT-d legacy second-level tables,
    /// zPCI DMA tables): it fills them from its device-fault path and
    /// empties them, then invalidates the IOTLB, from its interval
    /// notifier's range callback ([`shadow`]).
    Shadow,
    /// The IOMMU walks the CPU's own tables (VT-d first-stage tables
    /// through a PASID entry, Linux's SVA): the driver only invalidates the
    /// IOTLB from `invalidate_secondary_tlbs`, and detaches on `release`.
    Shared,
}

impl Style {
    /// A short name for verdict lines.
    pub const fn name(self) -> &'static str {
        match self {
            Style::Shadow => "shadow",
            Style::Shared => "shared",
        }
    }
}

/// A fault the IOMMU recorded for a device access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaFault {
    /// The bus address that faulted (page-aligned where the hardware
    /// records only the page).
    pub iova: u64,
    /// Whether the blocked access was a write.
    pub write: bool,
    /// The hardware's reason code (VT-d fault reason, zPCI event code).
    pub reason: u32,
}

/// Why a DMA did not complete normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmaError {
    /// The IOMMU blocked it and recorded this fault.
    Fault(DmaFault),
    /// The device or the machine failed (a timeout, a device error).
    Device(&'static str),
}

/// What a device read brought back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBack {
    /// The 8 bytes read.
    Value(u64),
    /// The read happened, but its data stays in the device (the machine
    /// has no way to bring it back through the current translations).
    Hidden,
}

/// Why an IO page-table change or an invalidation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoError {
    /// No memory for an IO page table.
    OutOfMemory,
    /// The bus address cannot be translated by this domain.
    BadAddress(u64),
    /// The hardware refused, with its own code.
    Hardware {
        /// What was refused.
        what: &'static str,
        /// The hardware's status or error code.
        code: u64,
    },
}

/// One IOMMU translation domain as a shadow-style driver programs it: its
/// own IO page table and its IOTLB, with base pages of [`IO_PAGE`] bytes.
///
/// Implementations lock internally: the driver calls them from its fault
/// path and from notifier callbacks, on any CPU.
pub trait IoDomain: Sync {
    /// What kind of table this is, for reports.
    fn name(&self) -> &'static str;
    /// The invalidation [`invalidate`](Self::invalidate) issues, for
    /// reports ("page-selective IOTLB invalidation", "RPCIT").
    fn invalidation_name(&self) -> &'static str;
    /// Sets the IO page-table entry of `iova` to `frame`, writable or
    /// read-only.
    ///
    /// # Errors
    /// [`IoError`].
    fn set_pte(&self, iova: u64, frame: PhysAddr, writable: bool) -> Result<(), IoError>;
    /// Clears the IO page-table entry of `iova`; whether it was set. The
    /// IOTLB may still hold it until [`invalidate`](Self::invalidate).
    fn clear_pte(&self, iova: u64) -> bool;
    /// Drops every IOTLB translation of `[iova, iova + len)` and returns
    /// once the hardware has.
    ///
    /// # Errors
    /// [`IoError::Hardware`].
    fn invalidate(&self, iova: u64, len: u64) -> Result<(), IoError>;
    /// Makes entries just set in `[iova, iova + len)` usable by the device.
    /// Nothing on VT-d without caching mode (a not-present entry is never
    /// cached); zPCI refreshes its IOTLB only through RPCIT, so there this
    /// is an RPCIT too.
    ///
    /// # Errors
    /// [`IoError::Hardware`].
    fn publish(&self, iova: u64, len: u64) -> Result<(), IoError> {
        let _ = (iova, len);
        Ok(())
    }
}

/// The IO page size of every domain here (both IOMMUs translate 4 KiB
/// pages; a CPU huge page is mirrored page by page).
pub const IO_PAGE: u64 = 4096;

/// One invalidation a driver issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalidation {
    /// The call site's event (`None`: a synchronous secondary-TLB flush,
    /// which carries none).
    pub event: Option<Event>,
    /// First bus address invalidated.
    pub iova: u64,
    /// Bytes invalidated.
    pub len: u64,
    /// What the hardware was told (the domain's invalidation name).
    pub kind: &'static str,
}

impl Invalidation {
    /// Which callback issued it, for reports.
    pub fn source(&self) -> &'static str {
        match self.event {
            None => "invalidate_secondary_tlbs",
            Some(Event::Unmap) => "invalidate_range_start (Unmap)",
            Some(Event::Clear) => "invalidate_range_start (Clear)",
            Some(Event::ProtectionVma) => "invalidate_range_start (ProtectionVma)",
            Some(Event::ProtectionPage) => "invalidate_range_start (ProtectionPage)",
            Some(Event::Release) => "release",
            Some(_) => "invalidate_range_start",
        }
    }
}

/// The invalidations a driver issued so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InvalidationStats {
    /// How many.
    pub count: u32,
    /// Bytes they covered, together.
    pub bytes: u64,
    /// The last one.
    pub last: Option<Invalidation>,
}

impl InvalidationStats {
    /// Counts `inv`.
    pub fn record(&mut self, inv: Invalidation) {
        self.count += 1;
        self.bytes += inv.len;
        self.last = Some(inv);
    }
}

/// Why the device's fault path could not map an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultInError {
    /// The CPU tables do not map it (or only read-only, for a write).
    NotMapped,
    /// It lies outside the window the driver mirrors.
    OutsideWindow,
    /// Invalidations kept colliding with the fault.
    TooManyRetries,
    /// The IO page table refused.
    Io(IoError),
}

/// A driver attached to one address space, as the cases see it.
pub trait Bound {
    /// Its style.
    fn style(&self) -> Style;
    /// The bus address the device uses for `va`.
    fn iova(&self, va: VirtAddr) -> u64;
    /// Makes `va` reachable by the device, as its fault path would after a
    /// device page fault: a shadow driver reads the CPU tables and programs
    /// its own; a shared-tables driver has nothing to do (the IOMMU walks
    /// the CPU tables).
    ///
    /// # Errors
    /// [`FaultInError`].
    fn fault_in(&self, va: VirtAddr, write: bool) -> Result<(), FaultInError>;
    /// The invalidations it issued so far.
    fn stats(&self) -> InvalidationStats;
}

/// What the DMA cases need from a kernel: everything [`Machine`] and
/// [`Cpus`] give, plus a device that does DMA through an IOMMU, and
/// drivers to bind. Report lines (what was issued, what faulted) go to
/// [`Machine::log`].
pub trait DmaMachine: Machine + Cpus {
    /// The driver styles this machine (this IOMMU mode) offers.
    fn styles(&self) -> &[Style];
    /// Binds a driver of `style` to `mm` for `window` (the range a shadow
    /// driver mirrors), runs `f` with it, and unbinds it (the device's
    /// translations are gone afterwards).
    ///
    /// # Errors
    /// `f`'s failure, or why binding failed.
    fn bind(
        &self,
        style: Style,
        mm: &Space<'_, Self>,
        window: PageRange,
        f: &mut dyn FnMut(&dyn Bound) -> Outcome,
    ) -> Outcome;
    /// Reads 8 bytes of physical memory through the CPU (how the cases
    /// look at a frame that nothing maps any more).
    fn read_phys(&self, pa: PhysAddr) -> u64;
    /// The device writes 8 bytes at bus address `iova` (8-byte aligned).
    /// Returns the value written if the device's data is known (`None`:
    /// random data, e.g. virtio-rng), or how the DMA failed.
    ///
    /// # Errors
    /// [`DmaError`].
    fn dma_write(&self, iova: u64) -> Result<Option<u64>, DmaError>;
    /// The device reads 8 bytes at `iova`: `None` if this device cannot
    /// read memory it is pointed at.
    ///
    /// # Errors
    /// [`DmaError`] inside the `Some`.
    fn dma_read(&self, iova: u64) -> Option<Result<ReadBack, DmaError>>;
    /// The permissions DMA cases map pages with (x86 first-stage tables
    /// need user pages).
    fn dma_prot(&self) -> Prot {
        Prot::WRITE
    }
}

/// Prints one line of a DMA case's report (what was issued, what
/// faulted), indented under the case's verdict.
pub fn note<M: Machine + ?Sized>(m: &M, args: fmt::Arguments<'_>) {
    m.log(format_args!("     {args}"));
}

/// Runs `f` on CPU 1 while CPU 0 (the caller) waits, and returns once it
/// has returned.
///
/// # Panics
/// If the machine has one CPU.
pub fn on_other_cpu<M: Cpus + ?Sized>(m: &M, f: &(dyn Fn() + Sync)) {
    assert!(m.count() > 1, "on_other_cpu on a machine with one CPU");
    m.run_on_each(&|cpu| {
        if cpu == 1 {
            f();
        }
    });
}

/// Whether the drivers skip their IOTLB invalidations: only in the
/// deliberately broken build `--cfg mmu_notifier_broken="no-iotlb"`, which
/// the DMA cases must catch.
pub const IOTLB_INVALIDATION: bool = !cfg!(mmu_notifier_broken = "no-iotlb");

impl fmt::Display for DmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DmaError::Fault(x) => write!(
                f,
                "IOMMU fault: {} at {:#x}, reason {:#x}",
                if x.write { "write" } else { "read" },
                x.iova,
                x.reason
            ),
            DmaError::Device(what) => write!(f, "device error: {what}"),
        }
    }
}
