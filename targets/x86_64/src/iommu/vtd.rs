//! The VT-d remapping unit's registers: capabilities, enabling translation,
//! the queued-invalidation interface, and the fault-recording registers.
//!
//! Owns the register page (on q35 at [`VTD_BASE`], no ACPI needed) and the
//! invalidation queue. Every invalidation goes through the queue followed
//! by a wait descriptor whose status write this code polls, so
//! [`Vtd::invalidate`] returns only once the hardware has dropped the
//! translations (QEMU processes the queue when the tail is written; the
//! wait descriptor is what a real unit needs, and is checked here too).
//!
//! Global-command writes repeat the persistent bits that are on (TE, QIE,
//! IRE), as the architecture asks and QEMU's model checks: it compares the
//! written value with the status register.

use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};

use super::Platform;
use crate::SpinLock;

/// Where q35 puts the remapping unit's registers.
pub const VTD_BASE: u64 = 0xfed9_0000;

const REG_VER: usize = 0x00;
const REG_CAP: usize = 0x08;
const REG_ECAP: usize = 0x10;
const REG_GCMD: usize = 0x18;
const REG_GSTS: usize = 0x1c;
const REG_RTADDR: usize = 0x20;
const REG_FSTS: usize = 0x34;
const REG_IQH: usize = 0x80;
const REG_IQT: usize = 0x88;
const REG_IQA: usize = 0x90;

/// GCMD/GSTS: translation enable.
const GCMD_TE: u32 = 1 << 31;
/// GCMD: set root table pointer (one-shot); GSTS: root table pointer set.
const GCMD_SRTP: u32 = 1 << 30;
/// GCMD/GSTS: queued invalidation enable.
const GCMD_QIE: u32 = 1 << 26;
/// GSTS: interrupt remapping enabled (persistent, repeated in GCMD).
const GSTS_IRES: u32 = 1 << 25;
/// The persistent command bits a GCMD write must repeat.
const PERSISTENT: u32 = GCMD_TE | GCMD_QIE | GSTS_IRES;

/// RTADDR: the root table is in scalable-mode format.
const RTADDR_SMT: u64 = 1 << 10;

/// IQA: 256-bit descriptors.
const IQA_DW: u64 = 1 << 11;

/// FSTS: primary fault overflow.
const FSTS_PFO: u32 = 1 << 0;
/// FSTS: primary pending fault.
const FSTS_PPF: u32 = 1 << 1;
/// FSTS: invalidation queue error.
const FSTS_IQE: u32 = 1 << 4;

/// ECAP: queued invalidation.
const ECAP_QI: u64 = 1 << 1;
/// ECAP: scalable-mode translation.
const ECAP_SMTS: u64 = 1 << 43;
/// ECAP: first-stage translation (in scalable mode).
const ECAP_FLTS: u64 = 1 << 47;

/// How long a register handshake or an invalidation may take.
const TIMEOUT_MS: u64 = 1_000;

/// Why the remapping unit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VtdError {
    /// No remapping unit answers at the base (all-ones registers).
    Absent,
    /// It lacks queued invalidation.
    NoQueuedInvalidation,
    /// Scalable mode with first-stage tables was asked for and is not
    /// offered (QEMU: `x-scalable-mode=on,x-flts=on,aw-bits=48`).
    NoFirstStage,
    /// No page-table depth both sides support (we walk 3 or 4 levels).
    NoAddressWidth,
    /// Out of table memory.
    OutOfMemory,
    /// A status bit did not follow a command (the GSTS bit named).
    Handshake(u32),
    /// The queue refused a descriptor (FSTS.IQE), at this queue head.
    QueueError(u64),
    /// A wait descriptor's status write never came.
    QueueTimeout,
}

/// A fault the unit recorded (one fault-recording register).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The faulting page (the request's address, page-aligned).
    pub addr: u64,
    /// The requester (bus << 8 | devfn).
    pub source: u16,
    /// The fault reason code (5: write to a read-only or absent-write
    /// translation, 6: read not allowed; see the VT-d specification).
    pub reason: u8,
    /// Whether the request was a write (T = 0) rather than a read.
    pub write: bool,
}

/// One queued-invalidation descriptor (the low 128 bits; with 256-bit
/// descriptors the upper half is zero for every type used here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    lo: u64,
    hi: u64,
}

impl Desc {
    /// Context-cache invalidation, global (type 1).
    pub const fn context_global() -> Self {
        Self {
            lo: 1 | 1 << 4,
            hi: 0,
        }
    }

    /// IOTLB invalidation, global (type 2, granularity 1).
    pub const fn iotlb_global() -> Self {
        Self {
            lo: 2 | 1 << 4,
            hi: 0,
        }
    }

    /// IOTLB invalidation of everything domain `did` cached (type 2,
    /// granularity 2: domain-selective).
    pub const fn iotlb_domain(did: u16) -> Self {
        Self {
            lo: 2 | 2 << 4 | (did as u64) << 16,
            hi: 0,
        }
    }

    /// IOTLB invalidation of `2^am` pages from `addr` in domain `did`
    /// (type 2, granularity 3: page-selective). `addr` is aligned to the
    /// span.
    pub const fn iotlb_pages(did: u16, addr: u64, am: u8) -> Self {
        Self {
            lo: 2 | 3 << 4 | (did as u64) << 16,
            hi: (addr & !0xfff) | (am as u64 & 0x3f),
        }
    }

    /// PASID-cache invalidation of one PASID in domain `did` (type 7,
    /// granularity 1: PASID-selective).
    pub const fn pasid_cache(did: u16, pasid: u32) -> Self {
        Self {
            lo: 7 | 1 << 4 | (did as u64) << 16 | (pasid as u64 & 0xf_ffff) << 32,
            hi: 0,
        }
    }

    /// PASID-based IOTLB invalidation of `2^am` pages from `addr`, for
    /// `pasid` in domain `did` (type 6, granularity 3: page-selective
    /// within the PASID).
    pub const fn piotlb_pages(did: u16, pasid: u32, addr: u64, am: u8) -> Self {
        Self {
            lo: 6 | 3 << 4 | (did as u64) << 16 | (pasid as u64 & 0xf_ffff) << 32,
            hi: (addr & !0xfff) | (am as u64 & 0x3f),
        }
    }

    /// PASID-based IOTLB invalidation of every non-global translation of
    /// `pasid` in domain `did` (type 6, granularity 2).
    pub const fn piotlb_pasid(did: u16, pasid: u32) -> Self {
        Self {
            lo: 6 | 2 << 4 | (did as u64) << 16 | (pasid as u64 & 0xf_ffff) << 32,
            hi: 0,
        }
    }

    /// Invalidation wait (type 5) with a status write of `data` to the
    /// 4-byte aligned physical address `status`.
    const fn wait(status: u64, data: u32) -> Self {
        Self {
            lo: 5 | 1 << 5 | 1 << 6 | (data as u64) << 32,
            hi: status,
        }
    }

    /// The descriptor type (low 4 bits).
    pub const fn kind(&self) -> u8 {
        (self.lo & 0xf) as u8
    }
}

/// The invalidation queue: one 4 KiB page of descriptors, and a status
/// word for the wait descriptors.
struct Queue {
    base: u64,
    status: u64,
    /// Index of the next free slot.
    tail: u64,
    /// The next wait descriptor's status value.
    seq: u32,
}

/// The remapping unit.
pub struct Vtd<'p> {
    regs: *mut u8,
    platform: &'p dyn Platform,
    cap: u64,
    ecap: u64,
    /// 256-bit descriptors (scalable mode).
    wide: bool,
    queue: SpinLock<Queue>,
    /// Invalidation descriptors submitted, by type (0..16), for reports.
    submitted: [AtomicU32; 16],
}

// SAFETY: the registers are MMIO accessed with volatile loads and stores;
// the queue (the only state several CPUs could change) is behind a lock;
// the fault registers are read and cleared by whoever holds the queue lock
// too (see `take_fault`).
unsafe impl Sync for Vtd<'_> {}

impl<'p> Vtd<'p> {
    /// The unit whose registers are mapped at `regs`, not yet enabled.
    ///
    /// # Safety
    /// `regs` maps the unit's 4 KiB register page (uncached) for as long as
    /// the value lives, and nothing else programs the unit.
    ///
    /// # Errors
    /// [`VtdError::Absent`], [`VtdError::NoQueuedInvalidation`].
    pub unsafe fn new(regs: *mut u8, platform: &'p dyn Platform) -> Result<Self, VtdError> {
        let mut vtd = Self {
            regs,
            platform,
            cap: 0,
            ecap: 0,
            wide: false,
            queue: SpinLock::new(Queue {
                base: 0,
                status: 0,
                tail: 0,
                seq: 0,
            }),
            submitted: [const { AtomicU32::new(0) }; 16],
        };
        if vtd.read32(REG_VER) == u32::MAX {
            return Err(VtdError::Absent);
        }
        vtd.cap = vtd.read64(REG_CAP);
        vtd.ecap = vtd.read64(REG_ECAP);
        if vtd.ecap & ECAP_QI == 0 {
            return Err(VtdError::NoQueuedInvalidation);
        }
        Ok(vtd)
    }

    fn read32(&self, reg: usize) -> u32 {
        // SAFETY: `new`'s contract: a register of the mapped page.
        unsafe { ptr::read_volatile(self.regs.add(reg).cast::<u32>()) }
    }

    fn write32(&self, reg: usize, val: u32) {
        // SAFETY: as in `read32`. Which values are safe to write is each
        // caller's business (they only program tables this module owns).
        unsafe { ptr::write_volatile(self.regs.add(reg).cast::<u32>(), val) }
    }

    fn read64(&self, reg: usize) -> u64 {
        // SAFETY: as in `read32`; these registers take 8-byte accesses.
        unsafe { ptr::read_volatile(self.regs.add(reg).cast::<u64>()) }
    }

    fn write64(&self, reg: usize, val: u64) {
        // SAFETY: as in `write32`.
        unsafe { ptr::write_volatile(self.regs.add(reg).cast::<u64>(), val) }
    }

    /// The version register (major.minor in bits 7..4 and 3..0).
    pub fn version(&self) -> u32 {
        self.read32(REG_VER)
    }

    /// The capability register.
    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// The extended capability register.
    pub fn ecap(&self) -> u64 {
        self.ecap
    }

    /// Whether scalable mode with first-stage (CPU-format) tables is offered.
    pub fn has_first_stage(&self) -> bool {
        self.ecap & (ECAP_SMTS | ECAP_FLTS) == ECAP_SMTS | ECAP_FLTS
    }

    /// The second-level table depth to use for legacy domains (4 if the
    /// unit supports 48-bit guest addresses, else 3), as the context
    /// entry's address-width code is `levels - 2`.
    ///
    /// # Errors
    /// [`VtdError::NoAddressWidth`].
    pub fn second_level_depth(&self) -> Result<u32, VtdError> {
        let sagaw = (self.cap >> 8) & 0x1f;
        if sagaw & 0b100 != 0 {
            Ok(4)
        } else if sagaw & 0b010 != 0 {
            Ok(3)
        } else {
            Err(VtdError::NoAddressWidth)
        }
    }

    /// The largest address-mask value a page-selective invalidation takes
    /// (CAP.MAMV).
    pub fn max_address_mask(&self) -> u8 {
        ((self.cap >> 48) & 0x3f) as u8
    }

    fn gcmd(&self, set: u32, wait_for: u32) -> Result<(), VtdError> {
        let keep = self.read32(REG_GSTS) & PERSISTENT;
        self.write32(REG_GCMD, keep | set);
        let start = self.platform.now_ms();
        while self.read32(REG_GSTS) & wait_for != wait_for {
            if self.platform.now_ms().saturating_sub(start) > TIMEOUT_MS {
                return Err(VtdError::Handshake(wait_for));
            }
            core::hint::spin_loop();
        }
        Ok(())
    }

    /// Turns the unit on: the invalidation queue (256-bit descriptors in
    /// scalable mode), the root table at `root` (scalable-mode format if
    /// `scalable`), a global invalidation of every cache, then translation.
    /// From then on every DMA of every function is translated.
    ///
    /// # Safety
    /// `root` is a root table (of the format `scalable` says) whose every
    /// present entry leads to valid tables, and every translation they
    /// hold maps memory the devices may touch.
    ///
    /// # Errors
    /// [`VtdError`] if a handshake fails or memory runs out.
    pub unsafe fn enable(&mut self, root: u64, scalable: bool) -> Result<(), VtdError> {
        if scalable && !self.has_first_stage() {
            return Err(VtdError::NoFirstStage);
        }
        let base = self.platform.alloc_page().ok_or(VtdError::OutOfMemory)?;
        let Some(status) = self.platform.alloc_page() else {
            // SAFETY: just allocated, not handed to the hardware.
            unsafe { self.platform.free_page(base) };
            return Err(VtdError::OutOfMemory);
        };
        self.wide = scalable;
        *self.queue.lock() = Queue {
            base,
            status,
            tail: 0,
            seq: 0,
        };
        self.write64(REG_IQT, 0);
        // Queue size code 0: one 4 KiB page.
        self.write64(REG_IQA, base | if scalable { IQA_DW } else { 0 });
        self.gcmd(GCMD_QIE, GCMD_QIE)?;
        self.write64(REG_RTADDR, root | if scalable { RTADDR_SMT } else { 0 });
        self.gcmd(GCMD_SRTP, GCMD_SRTP)?;
        self.invalidate(&[Desc::context_global(), Desc::iotlb_global()])?;
        self.gcmd(GCMD_TE, GCMD_TE)
    }

    /// Submits `descs` and a wait descriptor, and returns once the unit
    /// has written the wait's status: every invalidation is complete.
    ///
    /// # Errors
    /// [`VtdError::QueueError`] if the unit refused a descriptor (the
    /// error is cleared and the queue skipped past it), or
    /// [`VtdError::QueueTimeout`].
    pub fn invalidate(&self, descs: &[Desc]) -> Result<(), VtdError> {
        let mut q = self.queue.lock();
        let slot_bytes: u64 = if self.wide { 32 } else { 16 };
        let slots = 4096 / slot_bytes;
        assert!(
            (descs.len() as u64) < slots,
            "{} descriptors do not fit the queue",
            descs.len()
        );
        q.seq = q.seq.wrapping_add(1);
        let seq = q.seq;
        let status = self.platform.phys_to_virt(q.status).cast::<u32>();
        // SAFETY: the status page is ours (allocated in `enable`); the unit
        // writes it only through the wait descriptor below.
        unsafe { ptr::write_volatile(status, 0) };
        let wait = Desc::wait(q.status, seq);
        for d in descs.iter().chain(core::iter::once(&wait)) {
            let at = self
                .platform
                .phys_to_virt(q.base + q.tail * slot_bytes)
                .cast::<u64>();
            // SAFETY: the slot lies in the queue page, which the unit reads
            // only up to the tail we publish below (after these stores).
            unsafe {
                ptr::write_volatile(at, d.lo);
                ptr::write_volatile(at.add(1), d.hi);
                if self.wide {
                    ptr::write_volatile(at.add(2), 0);
                    ptr::write_volatile(at.add(3), 0);
                }
            }
            self.submitted[usize::from(d.kind())].fetch_add(1, Ordering::Relaxed);
            q.tail = (q.tail + 1) % slots;
        }
        core::sync::atomic::fence(Ordering::SeqCst);
        self.write64(REG_IQT, q.tail * slot_bytes);
        let start = self.platform.now_ms();
        loop {
            // SAFETY: as above.
            if unsafe { ptr::read_volatile(status) } == seq {
                return Ok(());
            }
            let fsts = self.read32(REG_FSTS);
            if fsts & FSTS_IQE != 0 {
                let head = self.read64(REG_IQH);
                // Skip what is left: clear the error and drop the queue.
                self.write32(REG_FSTS, FSTS_IQE);
                self.write64(REG_IQT, head);
                q.tail = head / slot_bytes;
                return Err(VtdError::QueueError(head));
            }
            if self.platform.now_ms().saturating_sub(start) > TIMEOUT_MS {
                return Err(VtdError::QueueTimeout);
            }
            core::hint::spin_loop();
        }
    }

    /// How many descriptors of type `kind` were submitted so far (2:
    /// IOTLB, 6: PASID-based IOTLB, 7: PASID cache, 5: wait, ...).
    pub fn submitted(&self, kind: u8) -> u32 {
        self.submitted[usize::from(kind & 0xf)].load(Ordering::Relaxed)
    }

    /// Offset of fault-recording register 0 (CAP.FRO, in 16-byte units).
    fn frcd(&self) -> usize {
        (((self.cap >> 24) & 0x3ff) * 16) as usize
    }

    /// Takes the oldest recorded fault, if any, and clears it (and an
    /// overflow flag) so the next fault can be recorded.
    pub fn take_fault(&self) -> Option<Fault> {
        let _q = self.queue.lock();
        let fsts = self.read32(REG_FSTS);
        if fsts & FSTS_PFO != 0 {
            self.write32(REG_FSTS, FSTS_PFO);
        }
        if fsts & FSTS_PPF == 0 {
            return None;
        }
        let index = ((fsts >> 8) & 0xff) as usize;
        let reg = self.frcd() + index * 16;
        let lo = self.read64(reg);
        let hi = self.read64(reg + 8);
        if hi & (1 << 63) == 0 {
            return None;
        }
        // Writing F (bit 127, bit 31 of the last dword) clears the record.
        self.write32(reg + 12, 1 << 31);
        Some(Fault {
            addr: lo & !0xfff,
            source: hi as u16,
            reason: (hi >> 32) as u8,
            write: hi & (1 << 62) == 0,
        })
    }
}
