//! PCI configuration space through the legacy I/O ports (`0xcf8` address,
//! `0xcfc` data: mechanism #1, which q35 keeps), and the few operations the
//! DMA kernels need: find a function by vendor and device ID, program a
//! memory BAR, turn on memory decoding and bus mastering.
//!
//! Owns ports `0xcf8..=0xcff`; nothing else in the harness uses them.

use core::arch::asm;

/// Config-space register offsets.
const VENDOR_ID: u16 = 0x00;
const COMMAND: u16 = 0x04;
const BAR0: u16 = 0x10;

/// COMMAND: respond to memory-space accesses.
const COMMAND_MEMORY: u16 = 1 << 1;
/// COMMAND: the function may master the bus (issue DMA). QEMU routes a
/// function's DMA through its IOMMU only while this bit is set.
const COMMAND_BUS_MASTER: u16 = 1 << 2;

/// A PCI function: bus, device, function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bdf {
    /// Bus number.
    pub bus: u8,
    /// Device number (0..32).
    pub dev: u8,
    /// Function number (0..8).
    pub func: u8,
}

impl Bdf {
    /// The 16-bit requester ID (source ID) the function's DMA carries:
    /// `bus << 8 | devfn`.
    pub const fn source_id(self) -> u16 {
        (self.bus as u16) << 8 | self.devfn() as u16
    }

    /// `dev << 3 | func`: the index of the function's context entry.
    pub const fn devfn(self) -> u8 {
        self.dev << 3 | self.func
    }

    fn address(self, offset: u16) -> u32 {
        0x8000_0000
            | u32::from(self.bus) << 16
            | u32::from(self.dev) << 11
            | u32::from(self.func) << 8
            | u32::from(offset & 0xfc)
    }

    /// Reads the config dword at `offset` (rounded down to 4).
    pub fn read32(self, offset: u16) -> u32 {
        let val: u32;
        // SAFETY: mechanism #1: the address port selects a config dword of
        // this function, the data port reads it. Config reads of the
        // registers we use have no side effects; no memory is touched.
        unsafe {
            asm!("out dx, eax", in("dx") 0xcf8u16, in("eax") self.address(offset), options(nomem, nostack, preserves_flags));
            asm!("in eax, dx", in("dx") 0xcfcu16, out("eax") val, options(nomem, nostack, preserves_flags));
        }
        val
    }

    /// Writes the config dword at `offset` (rounded down to 4).
    ///
    /// # Safety
    /// The write must not make the function decode addresses or master the
    /// bus in a way that touches memory Rust code owns (a BAR over RAM the
    /// kernel uses, DMA before its IOMMU domain is set up).
    pub unsafe fn write32(self, offset: u16, val: u32) {
        // SAFETY: as in `read32`; what the write does to the device is the
        // caller's contract.
        unsafe {
            asm!("out dx, eax", in("dx") 0xcf8u16, in("eax") self.address(offset), options(nomem, nostack, preserves_flags));
            asm!("out dx, eax", in("dx") 0xcfcu16, in("eax") val, options(nomem, nostack, preserves_flags));
        }
    }

    /// Vendor and device ID, `None` if no function answers.
    pub fn ids(self) -> Option<(u16, u16)> {
        let v = self.read32(VENDOR_ID);
        (v & 0xffff != 0xffff).then_some((v as u16, (v >> 16) as u16))
    }

    /// Places 32-bit memory BAR 0 at `addr` (aligned to its size) and
    /// turns on memory decoding and bus mastering. Returns the BAR's size.
    ///
    /// # Safety
    /// `[addr, addr + size)` is free physical address space (no RAM, no
    /// other device), and the function's DMA goes through an IOMMU domain
    /// that maps only memory set aside for the device (or nothing yet).
    pub unsafe fn enable_bar0(self, addr: u32) -> u32 {
        // SAFETY: sizing the BAR with memory decoding off, as the PCI
        // specification describes; the final address is the caller's.
        unsafe {
            let cmd = self.read32(COMMAND);
            self.write32(
                COMMAND,
                cmd & !u32::from(COMMAND_MEMORY | COMMAND_BUS_MASTER),
            );
            self.write32(BAR0, 0xffff_ffff);
            let size = !(self.read32(BAR0) & !0xf) + 1;
            self.write32(BAR0, addr);
            self.write32(
                COMMAND,
                (cmd & 0xffff_0000) | u32::from(COMMAND_MEMORY | COMMAND_BUS_MASTER),
            );
            size
        }
    }
}

/// The first function on bus 0 with these IDs.
pub fn find(vendor: u16, device: u16) -> Option<Bdf> {
    (0..32u8)
        .flat_map(|dev| (0..8u8).map(move |func| Bdf { bus: 0, dev, func }))
        .find(|f| f.ids() == Some((vendor, device)))
}
