//! QEMU's `edu` teaching device (`-device edu`): a PCI function with a
//! 4 KiB internal buffer and a DMA engine that copies between that buffer
//! and a bus address, through the function's IOMMU domain.
//!
//! Owns the device's BAR 0 registers. One transfer at a time: the engine
//! runs a transfer about 100 ms of virtual time after it is started, and
//! a register write while it runs is ignored, so every transfer here is
//! started and then waited for.

use core::ptr;

use super::Platform;

/// PCI vendor ID of QEMU's test devices.
pub const VENDOR: u16 = 0x1234;
/// PCI device ID of `edu`.
pub const DEVICE: u16 = 0x11e8;

/// Identification register: `0x010000ed` (version 1.0).
const REG_ID: usize = 0x00;
const REG_DMA_SRC: usize = 0x80;
const REG_DMA_DST: usize = 0x88;
const REG_DMA_COUNT: usize = 0x90;
const REG_DMA_CMD: usize = 0x98;

/// CMD: start (reads back as 1 while the transfer is pending).
const CMD_RUN: u64 = 1 << 0;
/// CMD: from the device buffer to the bus address (else the other way).
const CMD_TO_RAM: u64 = 1 << 1;

/// Where the device buffer sits in the engine's own address space.
const BUFFER: u64 = 0x4_0000;
/// Its size.
pub const BUFFER_SIZE: u32 = 4096;

/// How long a transfer may take before we call it lost (it takes ~100 ms
/// of virtual time; TCG runs virtual time at about wall-clock speed).
const TRANSFER_TIMEOUT_MS: u64 = 2_000;

/// Why a transfer did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EduError {
    /// The buffer range lies outside the device's 4 KiB buffer (QEMU would
    /// abort the whole VM on such a transfer, so it is refused here).
    OutsideBuffer {
        /// Offset asked for.
        offset: u32,
        /// Length asked for.
        len: u32,
    },
    /// The engine did not finish within the timeout.
    Timeout,
}

/// The device, through its mapped BAR 0.
pub struct Edu {
    regs: *mut u8,
}

// SAFETY: the registers are MMIO; every access is a volatile read or write
// of one register, and the callers serialise transfers (the DMA machine
// holds a lock around each).
unsafe impl Sync for Edu {}
// SAFETY: as for `Sync`.
unsafe impl Send for Edu {}

impl Edu {
    /// The device whose BAR 0 is mapped at `regs`.
    ///
    /// # Safety
    /// `regs` maps the device's BAR 0 (1 MiB of MMIO) for as long as this
    /// value lives, and nothing else drives the device.
    pub unsafe fn new(regs: *mut u8) -> Self {
        Self { regs }
    }

    fn read32(&self, reg: usize) -> u32 {
        // SAFETY: `new`'s contract: a register of the mapped BAR.
        unsafe { ptr::read_volatile(self.regs.add(reg).cast::<u32>()) }
    }

    fn read64(&self, reg: usize) -> u64 {
        // SAFETY: as in `read32`; the DMA registers take 8-byte accesses.
        unsafe { ptr::read_volatile(self.regs.add(reg).cast::<u64>()) }
    }

    fn write64(&self, reg: usize, val: u64) {
        // SAFETY: as in `read64`. The DMA registers only program the
        // engine; what the transfer touches is decided by the IOMMU.
        unsafe { ptr::write_volatile(self.regs.add(reg).cast::<u64>(), val) }
    }

    /// The identification register (`0x010000ed`).
    pub fn id(&self) -> u32 {
        self.read32(REG_ID)
    }

    /// Copies `len` bytes from the device buffer at `offset` to bus
    /// address `dst` (a DMA write), and waits until the engine is done.
    /// Whether it reached memory is the IOMMU's business: a blocked
    /// transfer finishes the same way and leaves a fault record.
    ///
    /// # Errors
    /// [`EduError`].
    pub fn to_ram(
        &self,
        p: &dyn Platform,
        offset: u32,
        dst: u64,
        len: u32,
    ) -> Result<(), EduError> {
        self.transfer(p, BUFFER + u64::from(offset), dst, offset, len, CMD_TO_RAM)
    }

    /// Copies `len` bytes from bus address `src` into the device buffer at
    /// `offset` (a DMA read), and waits until the engine is done.
    ///
    /// # Errors
    /// [`EduError`].
    pub fn from_ram(
        &self,
        p: &dyn Platform,
        src: u64,
        offset: u32,
        len: u32,
    ) -> Result<(), EduError> {
        self.transfer(p, src, BUFFER + u64::from(offset), offset, len, 0)
    }

    fn transfer(
        &self,
        p: &dyn Platform,
        src: u64,
        dst: u64,
        offset: u32,
        len: u32,
        dir: u64,
    ) -> Result<(), EduError> {
        if len == 0 || offset.checked_add(len).is_none_or(|end| end > BUFFER_SIZE) {
            return Err(EduError::OutsideBuffer { offset, len });
        }
        self.wait(p)?;
        self.write64(REG_DMA_SRC, src);
        self.write64(REG_DMA_DST, dst);
        self.write64(REG_DMA_COUNT, u64::from(len));
        self.write64(REG_DMA_CMD, CMD_RUN | dir);
        self.wait(p)
    }

    fn wait(&self, p: &dyn Platform) -> Result<(), EduError> {
        let start = p.now_ms();
        while self.read64(REG_DMA_CMD) & CMD_RUN != 0 {
            if p.now_ms().saturating_sub(start) > TRANSFER_TIMEOUT_MS {
                return Err(EduError::Timeout);
            }
            core::hint::spin_loop();
        }
        Ok(())
    }
}
