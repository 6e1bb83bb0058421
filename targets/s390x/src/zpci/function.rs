//! One zPCI function: found and enabled with CLP, its config space and
//! BARs reached with PCILG/PCISTG, its DMA translation registered with
//! MPCIFC and refreshed with RPCIT, its error state read with STPCIFC and
//! its error events (the DMA fault records) taken with CHSC
//! store-event-information.
//!
//! Owns the function (nothing else in the kernel drives it) and one page
//! for CLP and CHSC blocks.

use core::ptr;

use super::insn::{self, Space, Status};
use super::Platform;

/// CLP command codes.
const CLP_LIST_PCI: u16 = 0x0002;
const CLP_QUERY_PCI_FN: u16 = 0x0003;
const CLP_SET_PCI_FN: u16 = 0x0005;
/// CLP response: done.
const CLP_RC_OK: u16 = 0x0010;
/// Set PCI function: enable.
const CLP_ENABLE: u8 = 0;
/// Function handle: enabled.
const FH_ENABLED: u32 = 0x8000_0000;

/// MPCIFC operation: register I/O address translation.
const MPCIFC_REG_IOAT: u8 = 4;
/// MPCIFC operation: reset the error state.
const MPCIFC_RESET_ERROR: u8 = 7;

/// IOTA: translation on, designation type region-third table.
const IOTA_RTTO: u64 = 0x800 | (1 << 2);

/// STPCIFC function controls: loads and stores blocked, which the
/// machine reports only in the error state (with the blocked bit 0x40).
const FC_ERROR: u8 = 0x20;

/// CHSC command: store event information.
const CHSC_SEI: u16 = 0x000e;
/// SEI notification-type mask: zPCI events (type 2).
const SEI_NT2: u64 = 1 << 61;

/// Why the function could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZpciError {
    /// CLP failed (condition code, response code).
    Clp(u8, u16),
    /// No function with the wanted function ID is listed.
    NotFound(u32),
    /// A PCI load, store, MPCIFC or RPCIT refused.
    Insn(&'static str, Status),
    /// Out of memory for blocks or tables.
    OutOfMemory,
}

/// What CLP query tells of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    /// First DMA address the function may use.
    pub sdma: u64,
    /// Last DMA address.
    pub edma: u64,
    /// PCI vendor and device ID (from the list).
    pub ids: (u16, u16),
}

/// An error event of the function: a DMA fault record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorEvent {
    /// The PCI event code (0x4: translation protection, i.e. no valid
    /// translation for the access; 0x2: out of the registered range).
    pub pec: u16,
    /// The faulting DMA address.
    pub addr: u64,
    /// The function ID it names.
    pub fid: u32,
}

/// An enabled function.
pub struct Function<'p> {
    platform: &'p dyn Platform,
    fh: u32,
    fid: u32,
    block: u64,
    query: Query,
}

fn be16(p: *const u8, off: usize) -> u16 {
    // SAFETY: (callers) `p` points into the CLP/CHSC page, `off + 2` <= 4096.
    unsafe { ptr::read_volatile(p.add(off).cast::<u16>()) }
}

fn be32(p: *const u8, off: usize) -> u32 {
    // SAFETY: as in `be16`.
    unsafe { ptr::read_volatile(p.add(off).cast::<u32>()) }
}

fn be64(p: *const u8, off: usize) -> u64 {
    // SAFETY: as in `be16`.
    unsafe { ptr::read_volatile(p.add(off).cast::<u64>()) }
}

fn put16(p: *mut u8, off: usize, v: u16) {
    // SAFETY: as in `be16`.
    unsafe { ptr::write_volatile(p.add(off).cast::<u16>(), v) }
}

fn put32(p: *mut u8, off: usize, v: u32) {
    // SAFETY: as in `be16`.
    unsafe { ptr::write_volatile(p.add(off).cast::<u32>(), v) }
}

fn put64(p: *mut u8, off: usize, v: u64) {
    // SAFETY: as in `be16`.
    unsafe { ptr::write_volatile(p.add(off).cast::<u64>(), v) }
}

impl<'p> Function<'p> {
    /// Finds the function `fid` with CLP list, enables it with one DMA
    /// address space, and queries its DMA range.
    ///
    /// # Errors
    /// [`ZpciError`].
    pub fn enable(platform: &'p dyn Platform, fid: u32) -> Result<Self, ZpciError> {
        let block = platform.alloc_block(4096).ok_or(ZpciError::OutOfMemory)?;
        let mut f = Self {
            platform,
            fh: 0,
            fid,
            block,
            query: Query {
                sdma: 0,
                edma: 0,
                ids: (0, 0),
            },
        };
        let ids = f.list()?;
        f.set_enabled()?;
        f.query = f.query_fn(ids)?;
        Ok(f)
    }

    fn page(&self) -> *mut u8 {
        self.platform.phys_to_virt(self.block)
    }

    /// Runs a CLP command whose 32-byte request `fill` writes; the response
    /// (of `rsp_len` bytes) follows at offset 32.
    fn clp(
        &self,
        cmd: u16,
        rsp_len: u16,
        fill: impl FnOnce(*mut u8),
    ) -> Result<*const u8, ZpciError> {
        let p = self.page();
        // SAFETY: our own page.
        unsafe { ptr::write_bytes(p, 0, 4096) };
        put16(p, 0, 32);
        put16(p, 2, cmd);
        fill(p);
        put16(p, 32, rsp_len);
        // SAFETY: our page, nothing else uses it.
        let cc = unsafe { insn::clp(self.block) };
        let rsp = be16(p, 34);
        if cc != 0 || rsp != CLP_RC_OK {
            return Err(ZpciError::Clp(cc, rsp));
        }
        // SAFETY: the response starts 32 bytes into the page.
        Ok(unsafe { p.add(32) })
    }

    /// Lists functions; finds ours: its handle and IDs.
    fn list(&mut self) -> Result<(u16, u16), ZpciError> {
        // Header 32 bytes, then 16-byte entries: room for 8.
        let r = self.clp(CLP_LIST_PCI, 32 + 8 * 16, |_| {})?;
        let n = (usize::from(be16(r, 0)).saturating_sub(32)) / 16;
        for i in 0..n {
            let e = 32 + i * 16;
            if be32(r, e + 8) == self.fid {
                self.fh = be32(r, e + 12);
                return Ok((be16(r, e + 2), be16(r, e)));
            }
        }
        Err(ZpciError::NotFound(self.fid))
    }

    fn set_enabled(&mut self) -> Result<(), ZpciError> {
        if self.fh & FH_ENABLED != 0 {
            return Ok(());
        }
        let fh = self.fh;
        let r = self.clp(CLP_SET_PCI_FN, 32, |p| {
            put32(p, 16, fh);
            // Operation control (enable), one DMA address space.
            // SAFETY: inside the page.
            unsafe {
                ptr::write_volatile(p.add(22), CLP_ENABLE);
                ptr::write_volatile(p.add(23), 1);
            }
        })?;
        self.fh = be32(r, 16);
        Ok(())
    }

    fn query_fn(&self, ids: (u16, u16)) -> Result<Query, ZpciError> {
        let fh = self.fh;
        let r = self.clp(CLP_QUERY_PCI_FN, 192, |p| put32(p, 16, fh))?;
        Ok(Query {
            sdma: be64(r, 64),
            edma: be64(r, 72),
            ids,
        })
    }

    /// The function's handle.
    pub fn handle(&self) -> u32 {
        self.fh
    }

    /// The function ID.
    pub fn fid(&self) -> u32 {
        self.fid
    }

    /// What CLP query said.
    pub fn query(&self) -> Query {
        self.query
    }

    /// Reads `len` (1, 2 or 4) bytes of config space at `offset`, converted
    /// from PCI byte order.
    ///
    /// # Errors
    /// [`ZpciError::Insn`].
    pub fn config_read(&self, offset: u64, len: u8) -> Result<u32, ZpciError> {
        self.load(Space::Config, offset, len).map(|v| v as u32)
    }

    /// Writes `len` (1, 2 or 4) bytes of config space.
    ///
    /// # Safety
    /// As [`insn::pcistg`]: e.g. bus mastering only once the DMA
    /// translation is registered.
    ///
    /// # Errors
    /// [`ZpciError::Insn`].
    pub unsafe fn config_write(&self, offset: u64, len: u8, val: u32) -> Result<(), ZpciError> {
        // SAFETY: forwarded contract.
        unsafe { self.store(Space::Config, offset, len, u64::from(val)) }
    }

    /// Loads `len` bytes of `space` at `offset`, converted from PCI
    /// (little-endian) byte order to a number.
    ///
    /// # Errors
    /// [`ZpciError::Insn`].
    pub fn load(&self, space: Space, offset: u64, len: u8) -> Result<u64, ZpciError> {
        // SAFETY: every register this kernel reads has no read side effect
        // (virtio's ISR register, which has, is never read).
        let (raw, st) = unsafe { insn::pcilg(self.fh, space, offset, len) };
        if !st.ok() {
            return Err(ZpciError::Insn("PCILG", st));
        }
        Ok(from_pci(raw, len))
    }

    /// Stores `val` as `len` bytes of `space` at `offset`, in PCI byte
    /// order.
    ///
    /// # Safety
    /// As [`insn::pcistg`].
    ///
    /// # Errors
    /// [`ZpciError::Insn`].
    pub unsafe fn store(
        &self,
        space: Space,
        offset: u64,
        len: u8,
        val: u64,
    ) -> Result<(), ZpciError> {
        // SAFETY: forwarded contract.
        let st = unsafe { insn::pcistg(self.fh, space, offset, len, from_pci(val, len)) };
        if !st.ok() {
            return Err(ZpciError::Insn("PCISTG", st));
        }
        Ok(())
    }

    /// Registers the DMA translation: the region-third table at `rto`,
    /// for DMA addresses `[pba, pal]`.
    ///
    /// # Safety
    /// The table is a valid zPCI region-third table whose every valid
    /// entry leads to valid tables mapping memory set aside for the device.
    ///
    /// # Errors
    /// [`ZpciError`].
    pub unsafe fn register_translation(
        &self,
        rto: u64,
        pba: u64,
        pal: u64,
    ) -> Result<(), ZpciError> {
        let fib = self.page();
        // SAFETY: our page, reused as the FIB.
        unsafe { ptr::write_bytes(fib, 0, 128) };
        put64(fib, 16, pba);
        put64(fib, 24, pal);
        put64(fib, 32, rto | IOTA_RTTO);
        // SAFETY: the FIB is ours; the table is the caller's contract.
        let st = unsafe { insn::mpcifc(self.fh, MPCIFC_REG_IOAT, self.block) };
        if !st.ok() {
            return Err(ZpciError::Insn("MPCIFC register translation", st));
        }
        Ok(())
    }

    /// RPCIT over `[iova, iova + len)`.
    ///
    /// # Safety
    /// As [`insn::rpcit`].
    ///
    /// # Errors
    /// [`ZpciError::Insn`] (the function is in the error state, or a table
    /// entry is malformed: then it enters the error state).
    pub unsafe fn refresh(&self, iova: u64, len: u64) -> Result<(), ZpciError> {
        // SAFETY: forwarded contract.
        let st = unsafe { insn::rpcit(self.fh, iova, len) };
        if !st.ok() {
            return Err(ZpciError::Insn("RPCIT", st));
        }
        Ok(())
    }

    /// Whether the function is in the error state (a DMA was refused).
    ///
    /// # Errors
    /// [`ZpciError::Insn`].
    pub fn in_error(&self) -> Result<bool, ZpciError> {
        let fib = self.page();
        // SAFETY: our page, as the FIB.
        let st = unsafe { insn::stpcifc(self.fh, self.block) };
        if !st.ok() {
            return Err(ZpciError::Insn("STPCIFC", st));
        }
        // SAFETY: inside the page.
        let fc = unsafe { ptr::read_volatile(fib.add(8)) };
        Ok(fc & FC_ERROR != 0)
    }

    /// Takes the oldest pending zPCI error event, if any.
    pub fn take_event(&self) -> Option<ErrorEvent> {
        let p = self.page();
        // SAFETY: our page.
        unsafe { ptr::write_bytes(p, 0, 4096) };
        put16(p, 0, 16);
        put16(p, 2, CHSC_SEI);
        put64(p, 8, SEI_NT2);
        // SAFETY: our page, nothing else uses it.
        let cc = unsafe { insn::chsc(self.block) };
        // Response at 16: length, code (1: event stored), ..., nt at +7,
        // cc (1: error event) at +11; the event's data from +64.
        if cc != 0 || be16(p, 18) != 1 {
            return None;
        }
        // SAFETY: inside the page.
        let (nt, kind) = unsafe {
            (
                ptr::read_volatile(p.add(16 + 7)),
                ptr::read_volatile(p.add(16 + 11)),
            )
        };
        if nt != 2 || kind != 1 {
            return None;
        }
        let d = 16 + 64;
        Some(ErrorEvent {
            fid: be32(p, d + 8),
            addr: be64(p, d + 16),
            pec: be16(p, d + 30),
        })
    }

    /// Leaves the error state (MPCIFC reset-error): DMA is translated again.
    ///
    /// # Errors
    /// [`ZpciError::Insn`].
    pub fn reset_error(&self) -> Result<(), ZpciError> {
        let fib = self.page();
        // SAFETY: our page as the (ignored) FIB.
        unsafe { ptr::write_bytes(fib, 0, 128) };
        // SAFETY: resetting the error state re-enables DMA through the
        // registered translation, which `register_translation`'s caller
        // vouched for.
        let st = unsafe { insn::mpcifc(self.fh, MPCIFC_RESET_ERROR, self.block) };
        if !st.ok() {
            return Err(ZpciError::Insn("MPCIFC reset error", st));
        }
        Ok(())
    }
}

/// PCI byte order (little-endian, right-aligned in the register) to a
/// number, or back.
fn from_pci(v: u64, len: u8) -> u64 {
    match len {
        2 => u64::from((v as u16).swap_bytes()),
        4 => u64::from((v as u32).swap_bytes()),
        8 => v.swap_bytes(),
        _ => v & 0xff,
    }
}
