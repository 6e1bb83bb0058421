//! The DMA cases' machine on this kernel: the conformance suite's
//! `Machine` and `Cpus` (`KernelMachine`: the real MMU, the harness's
//! frames, the CPUs) with QEMU's VT-d unit and `edu` device beside them
//! ([`Iommu`], the machine's devices: [`DmaKernel`]).
//!
//! # One IOMMU mode per boot
//! VT-d runs in legacy or in scalable mode, for the whole unit. The kernel
//! takes what QEMU offers: with `x-scalable-mode=on,x-flts=on` it builds
//! the scalable-mode structures and offers the shared-tables driver
//! ([`Style::Shared`]); otherwise legacy structures and the shadow driver
//! ([`Style::Shadow`]). The runner boots the kernel once per mode.
//!
//! # The device's own buffer
//! `edu` copies between its 4 KiB buffer and memory. At setup the buffer
//! is filled with distinct stamps (one DMA from a kernel page), so every
//! later device write of 8 bytes takes the next stamp and the cases know
//! what it wrote. Reading memory back (legacy mode only) goes through that
//! kernel page too, mapped at [`BOUNCE_IOVA`] in the legacy domain, outside
//! every driver's window. In scalable mode the only translation the device
//! has is PASID 0, i.e. the bound address space, so there a device read
//! stays in the device ([`ReadBack::Hidden`]).

use core::pin::pin;
use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};

use mmu_notifier_conformance::cases::Space;
use mmu_notifier_conformance::dma::{
    shadow, Bound, DmaError, DmaFault, DmaMachine, FaultInError, InvalidationStats, IoDomain,
    ReadBack, Style,
};
use mmu_notifier_conformance::{Failure, Machine, Outcome};
use mmu_notifier_core::{AddressSpace, PageRange, PhysAddr, Prot, Subscription, VirtAddr};

use super::domain::LegacyDomain;
use super::edu::{self, Edu, EduError};
use super::pci::{self, Bdf};
use super::sva::Sva;
use super::tables::{LegacyRoot, ScalableRoot, SecondLevel};
use super::vtd::{Desc, Vtd, VtdError, VTD_BASE};
use super::Platform;
use crate::machine::KernelMachine;
use crate::{frames, SpinLock};

/// The harness as the IOMMU code's [`Platform`]: its frame allocator, the
/// identity map, the calibrated TSC.
#[derive(Debug)]
pub struct HarnessPlatform;

// SAFETY: 1. `alloc_frame` hands out zeroed, 4 KiB-aligned frames used by
// nobody else until `free_frame`; 2. they lie in the identity map (below
// 1 GiB), so the physical address is the pointer; 3. the TSC is monotonic
// (invariant TSC under QEMU).
unsafe impl Platform for HarnessPlatform {
    fn alloc_page(&self) -> Option<u64> {
        frames::alloc_frame()
    }

    unsafe fn free_page(&self, pa: u64) {
        // SAFETY: the caller's contract (`pa` came from `alloc_page`, and
        // no hardware structure refers to it).
        unsafe { frames::free_frame(pa) }
    }

    fn phys_to_virt(&self, pa: u64) -> *mut u8 {
        pa as *mut u8
    }

    fn now_ms(&self) -> u64 {
        crate::rdtsc() / crate::tsc_per_ms().max(1)
    }
}

/// The one platform.
pub static PLATFORM: HarnessPlatform = HarnessPlatform;

/// The legacy domain the shadow driver programs.
const DID_LEGACY: u16 = 1;
/// The domain of the shared-tables PASID.
const DID_SVA: u16 = 2;
/// The PASID untagged DMA uses in scalable mode (the context entry's
/// RID2PASID), and the one the shared-tables driver binds.
const PASID: u32 = 0;
/// Where the kernel's page sits in the legacy domain.
pub const BOUNCE_IOVA: u64 = 0x1000;
/// Where the shadow driver's window starts in the legacy domain (below
/// edu's default 28-bit DMA mask).
pub const SHADOW_IOVA_BASE: u64 = 0x10_0000;
/// Where edu's BAR 0 is placed if the firmware left it unassigned: free
/// PCI space in the fourth GiB, mapped with `map_mmio`.
const EDU_BAR: u32 = 0xfe00_0000;
/// The device-buffer slot `dma_read` reads into (never a stamp's slot).
const READ_SLOT: u32 = edu::BUFFER_SIZE - 8;
/// Stamps in the device buffer: slots 1..STAMPS (slot 0 and the read
/// slot are never written to memory as stamps).
const STAMPS: u32 = READ_SLOT / 8;

/// Stamp `i`: what a device write from buffer slot `i` writes.
fn stamp(i: u32) -> u64 {
    0x6564_755f_7374_0000 | u64::from(i)
}

/// Why the DMA machine could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupError {
    /// The VT-d unit refused.
    Vtd(VtdError),
    /// No `edu` device on bus 0 (`-device edu`).
    NoEdu,
    /// `edu` sits in the upper half of bus 0, beyond the context table we
    /// build in scalable mode.
    EduSlot(u8),
    /// The device's preload transfer failed.
    Preload(DmaError),
    /// The address space for the scalable-mode preload.
    Core(mmu_notifier_core::Error),
}

impl From<VtdError> for SetupError {
    fn from(e: VtdError) -> Self {
        SetupError::Vtd(e)
    }
}

/// The IOMMU mode the kernel runs in.
enum Mode<'k> {
    Legacy(&'k LegacyDomain<'k, 'static>),
    Scalable(&'k ScalableRoot<'static>),
}

/// The machine's devices: the remapping unit in its mode, and `edu`.
pub struct Iommu<'k> {
    vtd: &'k Vtd<'static>,
    edu: &'k Edu,
    bdf: Bdf,
    mode: Mode<'k>,
    bounce: u64,
    /// The next stamp; also serialises the device's transfers.
    next_stamp: SpinLock<u32>,
    /// Device transfers run, and how many of them faulted.
    transfers: AtomicU32,
    faults: AtomicU32,
}

/// The DMA machine: the kernel's machine with the IOMMU beside its CPUs.
pub type DmaKernel<'k> = KernelMachine<Iommu<'k>>;

/// Sets the machine up (VT-d in whatever mode QEMU offers, `edu` behind
/// it, the device buffer stamped) and hands it to `f`, which runs the
/// cases and ends the run.
pub fn with_dma_kernel<R>(f: impl FnOnce(Result<&DmaKernel<'_>, SetupError>) -> R) -> R {
    let regs = crate::map_mmio(VTD_BASE) as *mut u8;
    // SAFETY: `map_mmio` mapped the unit's register page uncached, for
    // good; nothing else in the kernel programs the unit.
    let vtd = match unsafe { Vtd::new(regs, &PLATFORM) } {
        Ok(v) => v,
        Err(e) => return f(Err(e.into())),
    };
    let Some(bdf) = pci::find(edu::VENDOR, edu::DEVICE) else {
        return f(Err(SetupError::NoEdu));
    };
    let Some(bounce) = PLATFORM.alloc_page() else {
        return f(Err(SetupError::Vtd(VtdError::OutOfMemory)));
    };
    for i in 0..edu::BUFFER_SIZE / 8 {
        // SAFETY: our own fresh page, identity-mapped.
        unsafe { ptr::write_volatile((bounce as *mut u64).add(i as usize), stamp(i)) };
    }
    if vtd.has_first_stage() {
        scalable(vtd, bdf, bounce, f)
    } else {
        legacy(vtd, bdf, bounce, f)
    }
}

/// Places BAR 0 and turns the device on (after the unit is on, so its
/// first DMA is already translated).
fn start_edu(bdf: Bdf) -> Edu {
    let bar = bdf.read32(0x10) & !0xf;
    let bar = if (0xc000_0000..0xfec0_0000).contains(&bar) {
        bar
    } else {
        EDU_BAR
    };
    // SAFETY: the BAR stays where the firmware put it, or goes to free PCI
    // space in the fourth GiB; the unit translates every DMA of the
    // function, through structures that map only pages set aside for it.
    unsafe { bdf.enable_bar0(bar) };
    let regs = crate::map_mmio(u64::from(bar)) as *mut u8;
    // SAFETY: BAR 0 (1 MiB, inside one 2 MiB page since it is aligned to
    // its size) is mapped uncached for good; only this machine drives it.
    unsafe { Edu::new(regs) }
}

fn legacy<R>(
    mut vtd: Vtd<'static>,
    bdf: Bdf,
    bounce: u64,
    f: impl FnOnce(Result<&DmaKernel<'_>, SetupError>) -> R,
) -> R {
    let setup = || -> Result<(LegacyRoot<'static>, SecondLevel<'static>), SetupError> {
        let table = SecondLevel::new(&PLATFORM, vtd.second_level_depth()?)?;
        let root = LegacyRoot::new(&PLATFORM)?;
        Ok((root, table))
    };
    let (root, mut table) = match setup() {
        Ok(x) => x,
        Err(e) => return f(Err(e)),
    };
    // The shadow driver's window gets its tables now: the domain keeps
    // them, and the cases count every frame they take.
    let window = mmu_notifier_conformance::dma::cases::WINDOW_PAGES * 4096;
    if table.map(BOUNCE_IOVA, bounce, true).is_err()
        || table.populate(SHADOW_IOVA_BASE, window).is_err()
    {
        return f(Err(SetupError::Vtd(VtdError::OutOfMemory)));
    }
    root.attach(bdf.devfn(), &table, DID_LEGACY);
    // SAFETY: the root table's only present entry leads to edu's context
    // entry, whose table maps only the bounce page (ours, set aside).
    if let Err(e) = unsafe { vtd.enable(root.root(), false) } {
        return f(Err(e.into()));
    }
    let domain = LegacyDomain::new(&vtd, DID_LEGACY, table);
    let edu = start_edu(bdf);
    let k = KernelMachine::with_devices(Iommu::new(&vtd, &edu, bdf, Mode::Legacy(&domain), bounce));
    let r = match k
        .devices()
        .transfer(|e| e.from_ram(&PLATFORM, BOUNCE_IOVA, 0, edu::BUFFER_SIZE))
    {
        Ok(()) => f(Ok(&k)),
        Err(e) => f(Err(SetupError::Preload(e))),
    };
    // The unit keeps translating through these tables: they live on.
    core::mem::forget(domain);
    core::mem::forget(root);
    r
}

fn scalable<R>(
    mut vtd: Vtd<'static>,
    bdf: Bdf,
    bounce: u64,
    f: impl FnOnce(Result<&DmaKernel<'_>, SetupError>) -> R,
) -> R {
    if bdf.devfn() >= 128 {
        return f(Err(SetupError::EduSlot(bdf.devfn())));
    }
    let root = match ScalableRoot::new(&PLATFORM) {
        Ok(r) => r,
        Err(e) => return f(Err(e.into())),
    };
    root.attach(bdf.devfn(), PASID);
    // SAFETY: edu's context entry leads to a PASID table with no present
    // entry: every DMA faults until a driver binds PASID 0.
    if let Err(e) = unsafe { vtd.enable(root.root(), true) } {
        return f(Err(e.into()));
    }
    let edu = start_edu(bdf);
    let k = KernelMachine::with_devices(Iommu::new(&vtd, &edu, bdf, Mode::Scalable(&root), bounce));
    // The preload goes through the shared-tables driver too: a kernel
    // address space that maps only the bounce page, bound to PASID 0.
    let preload = || -> Result<(), SetupError> {
        let mm: Space<'_, DmaKernel<'_>> =
            AddressSpace::for_kernel(k.arch(), k.frames()).map_err(SetupError::Core)?;
        let at = VirtAddr(crate::TEST_WINDOW);
        mm.map(at, PhysAddr(bounce), Prot::WRITE | Prot::USER)
            .map_err(SetupError::Core)?;
        let sub = pin!(Subscription::new(Sva::new(&vtd, &root, PASID, DID_SVA)));
        mm.notifiers()
            .register(sub.as_ref())
            .map_err(SetupError::Core)?;
        sub.notifier().attach(mm.root())?;
        let r = k
            .devices()
            .transfer(|e| e.from_ram(&PLATFORM, at.0, 0, edu::BUFFER_SIZE));
        sub.notifier().detach(None);
        // The bounce page stays ours: teardown hands it back, we keep it.
        mm.teardown(&mut |_| {}).map_err(SetupError::Core)?;
        r.map_err(SetupError::Preload)
    };
    let r = match preload() {
        Ok(()) => f(Ok(&k)),
        Err(e) => f(Err(e)),
    };
    // The unit keeps walking these structures: they live on.
    core::mem::forget(root);
    r
}

impl<'k> Iommu<'k> {
    fn new(vtd: &'k Vtd<'static>, edu: &'k Edu, bdf: Bdf, mode: Mode<'k>, bounce: u64) -> Self {
        Self {
            vtd,
            edu,
            bdf,
            mode,
            bounce,
            next_stamp: SpinLock::new(0),
            transfers: AtomicU32::new(0),
            faults: AtomicU32::new(0),
        }
    }

    /// Which mode the unit runs in, for the banner.
    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            Mode::Legacy(_) => "legacy mode, second-level tables (shadow driver)",
            Mode::Scalable(_) => {
                "scalable mode, first-stage tables through PASID 0 (shared-tables driver)"
            }
        }
    }

    /// The remapping unit.
    pub fn vtd(&self) -> &Vtd<'static> {
        self.vtd
    }

    /// Device transfers run so far, and how many the unit refused (each
    /// with a fault record).
    pub fn transfers(&self) -> (u32, u32) {
        (
            self.transfers.load(Ordering::Relaxed),
            self.faults.load(Ordering::Relaxed),
        )
    }

    /// The device's requester ID.
    pub fn source_id(&self) -> u16 {
        self.bdf.source_id()
    }

    /// Runs one device transfer (under the device lock) and reports the
    /// fault the unit recorded for it, if any.
    fn transfer(&self, t: impl FnOnce(&Edu) -> Result<(), EduError>) -> Result<(), DmaError> {
        let _device = self.next_stamp.lock();
        self.transfer_locked(t)
    }

    fn transfer_locked(
        &self,
        t: impl FnOnce(&Edu) -> Result<(), EduError>,
    ) -> Result<(), DmaError> {
        // Faults from earlier accesses are not this transfer's.
        while self.vtd.take_fault().is_some() {}
        t(self.edu).map_err(|e| match e {
            EduError::Timeout => DmaError::Device("edu transfer timed out"),
            EduError::OutsideBuffer { .. } => DmaError::Device("edu buffer range"),
        })?;
        self.transfers.fetch_add(1, Ordering::Relaxed);
        let mut first = None;
        while let Some(f) = self.vtd.take_fault() {
            if f.source == self.source_id() && first.is_none() {
                first = Some(DmaFault {
                    iova: f.addr,
                    write: f.write,
                    reason: u32::from(f.reason),
                });
            }
        }
        if first.is_some() {
            self.faults.fetch_add(1, Ordering::Relaxed);
        }
        first.map_or(Ok(()), |f| Err(DmaError::Fault(f)))
    }
}

/// The shared-tables driver bound to an address space.
struct SvaBound<'s, 'v> {
    sva: &'s Sva<'v, 'static>,
}

impl Bound for SvaBound<'_, '_> {
    fn style(&self) -> Style {
        Style::Shared
    }
    fn iova(&self, va: VirtAddr) -> u64 {
        va.0
    }
    fn fault_in(&self, _va: VirtAddr, _write: bool) -> Result<(), FaultInError> {
        // The unit walks the CPU tables: nothing to program.
        Ok(())
    }
    fn stats(&self) -> InvalidationStats {
        self.sva.stats()
    }
}

impl DmaMachine for DmaKernel<'_> {
    fn styles(&self) -> &[Style] {
        match self.devices().mode {
            Mode::Legacy(_) => &[Style::Shadow],
            Mode::Scalable(_) => &[Style::Shared],
        }
    }

    fn bind(
        &self,
        style: Style,
        mm: &Space<'_, Self>,
        window: PageRange,
        f: &mut dyn FnMut(&dyn Bound) -> Outcome,
    ) -> Outcome {
        let io = self.devices();
        match (style, &io.mode) {
            (Style::Shadow, Mode::Legacy(domain)) => {
                // Every binding starts from an empty IOTLB for the domain, so
                // a driver that skips an invalidation is caught by the case
                // whose call site needed it, not by a later one.
                if let Err(e) = io.vtd.invalidate(&[Desc::iotlb_domain(domain.did())]) {
                    return Err(Failure::new(format_args!(
                        "domain flush before binding: {e:?}"
                    )));
                }
                shadow::bind(*domain, mm, window, SHADOW_IOVA_BASE, f)
            }
            (Style::Shared, Mode::Scalable(root)) => {
                let sub = pin!(Subscription::new(Sva::new(io.vtd, root, PASID, DID_SVA)));
                if let Err(e) = mm.notifiers().register(sub.as_ref()) {
                    return Err(Failure::new(format_args!(
                        "cannot register the SVA notifier: {e}"
                    )));
                }
                if let Err(e) = sub.notifier().attach(mm.root()) {
                    return Err(Failure::new(format_args!(
                        "cannot bind PASID {PASID}: {e:?}"
                    )));
                }
                let r = f(&SvaBound {
                    sva: sub.notifier(),
                });
                sub.notifier().detach(None);
                r
            }
            _ => Err(Failure::new(format_args!(
                "this boot's IOMMU mode has no {style:?} driver"
            ))),
        }
    }

    fn read_phys(&self, pa: PhysAddr) -> u64 {
        assert!(pa.0.is_multiple_of(8), "read_phys({pa}): misaligned");
        // SAFETY: a data frame in the identity map; no Rust reference
        // covers data frames, and a read has no effect.
        unsafe { (pa.0 as *const u64).read_volatile() }
    }

    fn dma_write(&self, iova: u64) -> Result<Option<u64>, DmaError> {
        let io = self.devices();
        let mut next = io.next_stamp.lock();
        *next = *next % (STAMPS - 1) + 1;
        let slot = *next;
        io.transfer_locked(|e| e.to_ram(&PLATFORM, slot * 8, iova, 8))?;
        Ok(Some(stamp(slot)))
    }

    fn dma_read(&self, iova: u64) -> Option<Result<ReadBack, DmaError>> {
        let io = self.devices();
        let _device = io.next_stamp.lock();
        let read = io.transfer_locked(|e| e.from_ram(&PLATFORM, iova, READ_SLOT, 8));
        let Mode::Legacy(_) = io.mode else {
            return Some(read.map(|()| ReadBack::Hidden));
        };
        let r = read.and_then(|()| {
            io.transfer_locked(|e| {
                e.to_ram(&PLATFORM, READ_SLOT, BOUNCE_IOVA + u64::from(READ_SLOT), 8)
            })
        });
        Some(
            r.map(|()| ReadBack::Value(self.read_phys(PhysAddr(io.bounce + u64::from(READ_SLOT))))),
        )
    }

    fn dma_prot(&self) -> Prot {
        Prot::WRITE | Prot::USER
    }
}

/// The legacy domain, when the unit runs in legacy mode (for reports).
impl Iommu<'_> {
    /// The shadow driver's domain, if in legacy mode.
    pub fn legacy_domain(&self) -> Option<&dyn IoDomain> {
        match self.mode {
            Mode::Legacy(d) => Some(d),
            Mode::Scalable(_) => None,
        }
    }
}
