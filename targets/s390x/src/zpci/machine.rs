//! The DMA cases' machine on this kernel: the conformance suite's
//! `Machine` and `Cpus` (`KernelMachine`: QEMU's DAT, the harness's pool,
//! the CPUs) with a zPCI function (virtio-rng, `iommu_platform=on`) behind
//! DMA tables this kernel owns beside them ([`Zpci`], the machine's
//! devices: [`DmaKernel`]).
//!
//! # Bus addresses
//! The function may use DMA addresses from its CLP-reported start (QEMU:
//! 4 GiB); the translation is registered for [`DMA_BASE`]..=[`DMA_LIMIT`].
//! The virtqueue's page sits at [`RING_IOVA`]; the shadow driver mirrors
//! its window from [`SHADOW_IOVA_BASE`]. Tables for both are built at
//! setup, so the cases allocate none.
//!
//! # A device write, and its fault record
//! virtio-rng fills the buffer it is given with random bytes, so
//! [`DmaMachine::dma_write`] cannot say what it wrote (`Ok(None)`); the
//! cases check that the target changed instead (a random 8-byte value
//! equal to the old one, or to the poison, has probability 2^-64). A
//! refused DMA puts the function in the error state; the fault record is
//! the error event CHSC hands out (PCI event code and address), after
//! which the function is reset (MPCIFC reset-error) and the virtio device
//! set up again. The event does not say whether the access was a read or
//! a write; the only DMA virtio-rng does to an address a case chose is the
//! buffer write. virtio-rng reads no buffer, so `dma_read` is `None`.

use core::sync::atomic::{AtomicU32, Ordering};

use mmu_notifier_conformance::cases::Space;
use mmu_notifier_conformance::dma::{
    cases::WINDOW_PAGES, shadow, Bound, DmaError, DmaFault, DmaMachine, ReadBack, Style,
};
use mmu_notifier_conformance::{Failure, Outcome};
use mmu_notifier_core::{PageRange, PhysAddr};

use super::domain::ZpciDomain;
use super::function::{ErrorEvent, Function, ZpciError};
use super::tables::{DmaTables, MapError};
use super::virtio::{Virtio, VirtioError};
use super::Platform;
use crate::machine::KernelMachine;
use crate::SpinLock;
use crate::{clock, frame};

/// The harness as the zPCI code's [`Platform`]: its pool (table blocks for
/// 16 and 2 KiB, frames for 4 KiB), the identity map, the TOD clock.
#[derive(Debug)]
pub struct HarnessPlatform;

// SAFETY: 1. `alloc_frame` and `alloc_table_block` hand out zeroed memory
// of the size asked for, aligned to it, used by nobody else until freed;
// 2. the pool lies in the identity map; 3. the TOD clock is monotonic.
unsafe impl Platform for HarnessPlatform {
    fn alloc_block(&self, bytes: u64) -> Option<u64> {
        match bytes {
            4096 => frame::alloc_frame(),
            _ => frame::alloc_table_block(bytes),
        }
    }

    unsafe fn free_block(&self, pa: u64, bytes: u64) {
        // SAFETY: the caller's contract: `pa` came from `alloc_block(bytes)`
        // and nothing refers to it.
        unsafe {
            match bytes {
                4096 => frame::free_frame(pa),
                _ => frame::free_table_block(pa, bytes),
            }
        }
    }

    fn phys_to_virt(&self, pa: u64) -> *mut u8 {
        pa as *mut u8
    }

    fn now_us(&self) -> u64 {
        clock::now_us()
    }
}

/// The one platform.
pub static PLATFORM: HarnessPlatform = HarnessPlatform;

/// The function ID the runner gives the zPCI device (`-device zpci,fid=1`).
pub const FID: u32 = 1;
/// First DMA address registered (QEMU's zPCI start of DMA: 4 GiB).
pub const DMA_BASE: u64 = 1 << 32;
/// Last DMA address registered.
pub const DMA_LIMIT: u64 = DMA_BASE + (64 << 20) - 1;
/// Where the virtqueue's page sits.
pub const RING_IOVA: u64 = DMA_BASE;
/// Where the shadow driver's window starts.
pub const SHADOW_IOVA_BASE: u64 = DMA_BASE + (16 << 20);

/// Why the machine could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupError {
    /// The function refused (CLP, an instruction).
    Zpci(ZpciError),
    /// Table memory.
    Tables(MapError),
    /// The virtio device.
    Virtio(VirtioError),
    /// The function's DMA range does not cover ours.
    DmaRange(u64, u64),
}

/// The machine's devices: the zPCI function, its DMA tables as the shadow
/// driver's domain, and the virtio-rng device.
pub struct Zpci<'k> {
    f: &'k Function<'static>,
    domain: &'k ZpciDomain<'k, 'static>,
    rng: SpinLock<Virtio<'k, 'static>>,
    /// Device requests run, and how many of them were refused.
    requests: AtomicU32,
    faults: AtomicU32,
}

/// The DMA machine: the kernel's machine with the zPCI function beside
/// its CPUs.
pub type DmaKernel<'k> = KernelMachine<Zpci<'k>>;

/// Sets the machine up (the function enabled, its tables registered, the
/// virtio device running) and hands it to `f`.
pub fn with_dma_kernel<R>(f: impl FnOnce(Result<&DmaKernel<'_>, SetupError>) -> R) -> R {
    let func = match Function::enable(&PLATFORM, FID) {
        Ok(func) => func,
        Err(e) => return f(Err(SetupError::Zpci(e))),
    };
    let q = func.query();
    if q.sdma > DMA_BASE || q.edma < DMA_LIMIT {
        return f(Err(SetupError::DmaRange(q.sdma, q.edma)));
    }
    let setup = || -> Result<(DmaTables<'static>, u64), SetupError> {
        let mut tables = DmaTables::new(&PLATFORM).map_err(SetupError::Tables)?;
        let ring = PLATFORM
            .alloc_block(4096)
            .ok_or(SetupError::Tables(MapError::OutOfMemory))?;
        tables
            .populate(RING_IOVA, 4096)
            .map_err(SetupError::Tables)?;
        tables
            .populate(SHADOW_IOVA_BASE, WINDOW_PAGES * 4096)
            .map_err(SetupError::Tables)?;
        tables
            .map(RING_IOVA, ring, true)
            .map_err(SetupError::Tables)?;
        Ok((tables, ring))
    };
    let (tables, ring) = match setup() {
        Ok(x) => x,
        Err(e) => return f(Err(e)),
    };
    // SAFETY: the tables map only the ring page, set aside for the device;
    // they stay registered, and alive, for the whole run.
    let registered = unsafe { func.register_translation(tables.origin(), DMA_BASE, DMA_LIMIT) }
        // SAFETY: as above.
        .and_then(|()| unsafe { func.refresh(RING_IOVA, 4096) });
    if let Err(e) = registered {
        return f(Err(SetupError::Zpci(e)));
    }
    let domain = ZpciDomain::new(&func, tables);
    // SAFETY: the ring page is ours, mapped at RING_IOVA and refreshed.
    let rng = match unsafe { Virtio::new(&func, &PLATFORM, ring, RING_IOVA) } {
        Ok(v) => v,
        Err(e) => return f(Err(SetupError::Virtio(e))),
    };
    let k = KernelMachine::with_devices(Zpci {
        f: &func,
        domain: &domain,
        rng: SpinLock::new(rng),
        requests: AtomicU32::new(0),
        faults: AtomicU32::new(0),
    });
    let r = f(Ok(&k));
    // The function keeps its translation registered: the tables live on.
    core::mem::forget(domain);
    r
}

impl Zpci<'_> {
    /// The zPCI function.
    pub fn function(&self) -> &Function<'static> {
        self.f
    }

    /// Device requests run so far, and how many were refused (each with an
    /// error event).
    pub fn requests(&self) -> (u32, u32) {
        (
            self.requests.load(Ordering::Relaxed),
            self.faults.load(Ordering::Relaxed),
        )
    }
}

impl DmaMachine for DmaKernel<'_> {
    fn styles(&self) -> &[Style] {
        &[Style::Shadow]
    }

    fn bind(
        &self,
        style: Style,
        mm: &Space<'_, Self>,
        window: PageRange,
        f: &mut dyn FnMut(&dyn Bound) -> Outcome,
    ) -> Outcome {
        let io = self.devices();
        match style {
            Style::Shadow => {
                // Every binding starts from an IOTLB that matches the
                // (empty) window, so a driver that skips an RPCIT is caught
                // by the case whose call site needed it, not by a later one.
                // SAFETY: the registered tables are valid (setup), mapping
                // only the ring page and what the shadow driver set.
                if let Err(e) = unsafe { io.f.refresh(SHADOW_IOVA_BASE, WINDOW_PAGES * 4096) } {
                    return Err(Failure::new(format_args!(
                        "RPCIT of the window before binding: {e:?}"
                    )));
                }
                shadow::bind(io.domain, mm, window, SHADOW_IOVA_BASE, f)
            }
            Style::Shared => Err(Failure::new(format_args!("zPCI has no shared-tables mode"))),
        }
    }

    fn read_phys(&self, pa: PhysAddr) -> u64 {
        assert!(pa.0 % 8 == 0, "read_phys({pa}): misaligned");
        // SAFETY: a data frame in the identity map; no Rust reference covers
        // data frames, and a read has no effect.
        unsafe { (pa.0 as *const u64).read_volatile() }
    }

    fn dma_write(&self, iova: u64) -> Result<Option<u64>, DmaError> {
        let io = self.devices();
        let mut rng = io.rng.lock();
        // Events of earlier accesses are not this one's.
        while io.f.take_event().is_some() {}
        io.requests.fetch_add(1, Ordering::Relaxed);
        match rng.fill(iova, 8) {
            Ok(()) => Ok(None),
            Err(VirtioError::DmaError) => {
                io.faults.fetch_add(1, Ordering::Relaxed);
                let event = io.f.take_event();
                let recovered =
                    io.f.reset_error()
                        .map_err(VirtioError::Zpci)
                        .and_then(|()| rng.reset());
                if recovered.is_err() {
                    return Err(DmaError::Device(
                        "the function did not recover from its error state",
                    ));
                }
                match event {
                    Some(ErrorEvent { pec, addr, .. }) => Err(DmaError::Fault(DmaFault {
                        iova: addr,
                        write: true,
                        reason: u32::from(pec),
                    })),
                    None => Err(DmaError::Device("error state without an error event")),
                }
            }
            Err(VirtioError::Timeout) => Err(DmaError::Device("virtio-rng did not answer")),
            Err(_) => Err(DmaError::Device("virtio-rng request refused")),
        }
    }

    fn dma_read(&self, _iova: u64) -> Option<Result<ReadBack, DmaError>> {
        None
    }
}
