//! virtio 1.0 ("modern") over a zPCI function: the capabilities in config
//! space, the common configuration and notification structures in a BAR
//! (reached with PCILG/PCISTG), and one split virtqueue whose three parts
//! sit in one page at a bus address: the device reads the descriptors and
//! the available ring, and writes the used ring, through the function's
//! DMA translation like any other DMA. For virtio-rng a request is one
//! device-writable buffer, which the device fills with random bytes.
//!
//! Owns the device's configuration (reset, features, the queue) and the
//! ring page's contents. Everything virtio puts in memory is
//! little-endian.

use core::ptr;
use core::sync::atomic::{fence, Ordering};

use super::function::{Function, ZpciError};
use super::insn::Space;
use super::Platform;

/// Config space: status register, capability list pointer.
const PCI_STATUS: u64 = 0x06;
const PCI_CAP_PTR: u64 = 0x34;
const PCI_COMMAND: u64 = 0x04;
/// COMMAND: memory space and bus master.
const COMMAND_MEMORY_MASTER: u32 = 0x6;
/// Capability ID of the virtio structures.
const CAP_VENDOR: u8 = 0x09;
/// virtio capability types.
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;

/// Common configuration registers.
const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0c;
const DEVICE_STATUS: u64 = 0x14;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE: u64 = 0x18;
const QUEUE_ENABLE: u64 = 0x1c;
const QUEUE_NOTIFY_OFF: u64 = 0x1e;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;

/// Device status bits.
const ACKNOWLEDGE: u64 = 1;
const DRIVER: u64 = 2;
const DRIVER_OK: u64 = 4;
const FEATURES_OK: u64 = 8;

/// Feature bits 32 and 33 (in the upper feature word): VERSION_1, and
/// ACCESS_PLATFORM, without which the device's DMA would bypass the
/// IOMMU.
const FEATURES_HI: u32 = 0b11;

/// Descriptor flag: the device writes the buffer.
const DESC_WRITE: u16 = 2;

/// Where the parts of the queue sit in the ring page.
const AVAIL_OFF: u64 = 0x400;
const USED_OFF: u64 = 0x800;
/// The largest queue we set up (fits the page layout above).
const MAX_QUEUE: u16 = 64;

/// How long a request may take (the device answers from QEMU's main loop).
const REQUEST_TIMEOUT_US: u64 = 2_000_000;

/// Why a request did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtioError {
    /// A zPCI instruction refused.
    Zpci(ZpciError),
    /// The function lacks a virtio capability, or a feature we need.
    Unsupported(&'static str),
    /// The function entered the error state: a DMA was refused.
    DmaError,
    /// No answer in time.
    Timeout,
}

impl From<ZpciError> for VirtioError {
    fn from(e: ZpciError) -> Self {
        VirtioError::Zpci(e)
    }
}

/// A BAR region: (BAR, offset).
#[derive(Debug, Clone, Copy)]
struct Region {
    bar: u8,
    offset: u64,
}

/// The device and its one queue.
pub struct Virtio<'f, 'p> {
    f: &'f Function<'p>,
    platform: &'p dyn Platform,
    common: Region,
    notify: Region,
    /// The ring page: physical address and bus address.
    ring: u64,
    ring_iova: u64,
    size: u16,
    next_avail: u16,
    seen_used: u16,
}

impl<'f, 'p> Virtio<'f, 'p> {
    /// Finds the virtio structures of `f` and sets the device up with one
    /// queue in the page `ring` (physical), which the function's DMA
    /// translation maps at `ring_iova` (read and write).
    ///
    /// # Safety
    /// `ring` is a page set aside for the device, and the function's
    /// translation maps it at `ring_iova` (refreshed with RPCIT): the
    /// device will read and write it.
    ///
    /// # Errors
    /// [`VirtioError`].
    pub unsafe fn new(
        f: &'f Function<'p>,
        platform: &'p dyn Platform,
        ring: u64,
        ring_iova: u64,
    ) -> Result<Self, VirtioError> {
        let (mut common, mut notify, mut mult) = (None, None, 0);
        if f.config_read(PCI_STATUS, 2)? & 0x10 == 0 {
            return Err(VirtioError::Unsupported("no capability list"));
        }
        let mut cap = f.config_read(PCI_CAP_PTR, 1)? as u64 & 0xfc;
        while cap != 0 {
            let head = f.config_read(cap, 4)?;
            if head as u8 == CAP_VENDOR {
                let kind = (head >> 24) as u8;
                let bar = f.config_read(cap + 4, 1)? as u8;
                let offset = u64::from(f.config_read(cap + 8, 4)?);
                match kind {
                    CFG_COMMON if common.is_none() => common = Some(Region { bar, offset }),
                    CFG_NOTIFY if notify.is_none() => {
                        notify = Some(Region { bar, offset });
                        mult = u64::from(f.config_read(cap + 16, 4)?);
                    }
                    _ => {}
                }
            }
            cap = u64::from((head >> 8) as u8 & 0xfc);
        }
        let (Some(common), Some(mut notify)) = (common, notify) else {
            return Err(VirtioError::Unsupported(
                "no virtio common or notify capability",
            ));
        };
        let cmd = f.config_read(PCI_COMMAND, 2)?;
        // SAFETY: the function's DMA goes through its registered
        // translation, which maps only the pages the caller set aside.
        unsafe { f.config_write(PCI_COMMAND, 2, cmd | COMMAND_MEMORY_MASTER)? };
        let mut v = Self {
            f,
            platform,
            common,
            notify,
            ring,
            ring_iova,
            size: 0,
            next_avail: 0,
            seen_used: 0,
        };
        v.setup()?;
        let off = v.load(QUEUE_NOTIFY_OFF, 2)?;
        notify.offset += off * mult;
        v.notify = notify;
        Ok(v)
    }

    fn load(&self, reg: u64, len: u8) -> Result<u64, ZpciError> {
        self.f
            .load(Space::Bar(self.common.bar), self.common.offset + reg, len)
    }

    fn store(&self, reg: u64, len: u8, val: u64) -> Result<(), ZpciError> {
        // SAFETY: common-configuration registers: the queue addresses we
        // write point into the ring page (the caller of `new` set it
        // aside and mapped it); the rest configures the device.
        unsafe {
            self.f.store(
                Space::Bar(self.common.bar),
                self.common.offset + reg,
                len,
                val,
            )
        }
    }

    fn ring_word(&self, off: u64) -> *mut u8 {
        // SAFETY: (pointer only) `off` lies inside the ring page.
        unsafe { self.platform.phys_to_virt(self.ring).add(off as usize) }
    }

    /// Resets the device and sets features, the queue and DRIVER_OK, with
    /// an empty ring.
    fn setup(&mut self) -> Result<(), VirtioError> {
        self.store(DEVICE_STATUS, 1, 0)?;
        let start = self.platform.now_us();
        while self.load(DEVICE_STATUS, 1)? != 0 {
            if self.platform.now_us() - start > REQUEST_TIMEOUT_US {
                return Err(VirtioError::Timeout);
            }
        }
        self.store(DEVICE_STATUS, 1, ACKNOWLEDGE | DRIVER)?;
        self.store(DEVICE_FEATURE_SELECT, 4, 1)?;
        let hi = self.load(DEVICE_FEATURE, 4)? as u32;
        if hi & FEATURES_HI != FEATURES_HI {
            return Err(VirtioError::Unsupported(
                "VERSION_1 or ACCESS_PLATFORM not offered (iommu_platform=on?)",
            ));
        }
        self.store(DRIVER_FEATURE_SELECT, 4, 0)?;
        self.store(DRIVER_FEATURE, 4, 0)?;
        self.store(DRIVER_FEATURE_SELECT, 4, 1)?;
        self.store(DRIVER_FEATURE, 4, u64::from(FEATURES_HI))?;
        self.store(DEVICE_STATUS, 1, ACKNOWLEDGE | DRIVER | FEATURES_OK)?;
        if self.load(DEVICE_STATUS, 1)? & FEATURES_OK == 0 {
            return Err(VirtioError::Unsupported("features refused"));
        }
        self.store(QUEUE_SELECT, 2, 0)?;
        let size = (self.load(QUEUE_SIZE, 2)? as u16).min(MAX_QUEUE);
        if size == 0 || !size.is_power_of_two() {
            return Err(VirtioError::Unsupported("no usable queue 0"));
        }
        self.store(QUEUE_SIZE, 2, u64::from(size))?;
        // SAFETY: the ring page is ours (the caller of `new` set it aside).
        unsafe { ptr::write_bytes(self.ring_word(0), 0, 4096) };
        for (reg, at) in [
            (QUEUE_DESC, 0),
            (QUEUE_DRIVER, AVAIL_OFF),
            (QUEUE_DEVICE, USED_OFF),
        ] {
            let iova = self.ring_iova + at;
            self.store(reg, 4, iova & 0xffff_ffff)?;
            self.store(reg + 4, 4, iova >> 32)?;
        }
        self.store(QUEUE_ENABLE, 2, 1)?;
        self.store(
            DEVICE_STATUS,
            1,
            ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
        )?;
        self.size = size;
        self.next_avail = 0;
        self.seen_used = 0;
        Ok(())
    }

    /// Sets the device up again after the function left the error state
    /// (the device dropped the request it could not complete).
    ///
    /// # Errors
    /// [`VirtioError`].
    pub fn reset(&mut self) -> Result<(), VirtioError> {
        self.setup()
    }

    fn put16(&self, off: u64, v: u16) {
        // SAFETY: inside the ring page, 2-byte aligned.
        unsafe { ptr::write_volatile(self.ring_word(off).cast::<u16>(), v.to_le()) }
    }

    /// Asks the device for `len` random bytes at bus address `iova`, and
    /// waits until it answered or the function entered the error state
    /// (a refused DMA: [`VirtioError::DmaError`]).
    ///
    /// # Errors
    /// [`VirtioError`].
    pub fn fill(&mut self, iova: u64, len: u32) -> Result<(), VirtioError> {
        // Descriptor 0: one device-writable buffer.
        // SAFETY: inside the ring page, aligned.
        unsafe {
            ptr::write_volatile(self.ring_word(0).cast::<u64>(), iova.to_le());
            ptr::write_volatile(self.ring_word(8).cast::<u32>(), len.to_le());
        }
        self.put16(12, DESC_WRITE);
        self.put16(14, 0);
        let slot = u64::from(self.next_avail % self.size);
        self.put16(AVAIL_OFF + 4 + 2 * slot, 0);
        fence(Ordering::SeqCst);
        self.next_avail = self.next_avail.wrapping_add(1);
        self.put16(AVAIL_OFF + 2, self.next_avail);
        fence(Ordering::SeqCst);
        // SAFETY: the queue notification: the device then reads the ring
        // and writes the buffer, all through the function's translation.
        unsafe {
            self.f
                .store(Space::Bar(self.notify.bar), self.notify.offset, 2, 0)?
        };
        let start = self.platform.now_us();
        loop {
            // SAFETY: inside the ring page; the device writes it.
            let used = u16::from_le(unsafe {
                ptr::read_volatile(self.ring_word(USED_OFF + 2).cast::<u16>())
            });
            if used != self.seen_used {
                self.seen_used = used;
                return Ok(());
            }
            if self.f.in_error()? {
                return Err(VirtioError::DmaError);
            }
            if self.platform.now_us() - start > REQUEST_TIMEOUT_US {
                return Err(VirtioError::Timeout);
            }
        }
    }
}
