//! The zPCI DMA tables: a region-third table (2048 entries, 16 KiB),
//! segment tables (2048 entries of 1 MiB, 16 KiB), page tables (256
//! entries of 4 KiB, 2 KiB). Not the CPU's DAT format: only the
//! region-third designation exists, every table type sits in the entry
//! (region-third 0x4, segment 0x0), and a literally zero entry is an
//! error, so empty entries carry the invalid bit.
//!
//! Owns every table it allocates and frees them when dropped. Entries are
//! written with volatile stores; none of this refreshes the function's
//! IOTLB (RPCIT is the caller's).

use core::ptr;

use super::Platform;

/// Region-third entry: table type (points to a segment table).
const RTE_TYPE: u64 = 0x4;
/// Region-third entry: table length (a full segment table).
const RTE_LEN: u64 = 0x3;
/// Region or segment entry: invalid.
const TABLE_INVALID: u64 = 0x20;
/// Page-table entry: invalid.
pub const PTE_INVALID: u64 = 0x400;
/// Page-table entry: protected (the device may only read).
pub const PTE_PROTECT: u64 = 0x200;

const TABLE_BYTES: u64 = 16 << 10;
const PT_BYTES: u64 = 2 << 10;
/// Bus addresses the tables can translate: 2048 region-third entries of
/// 2 GiB.
pub const IOVA_LIMIT: u64 = 1 << 42;

/// Why an entry could not be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// Beyond [`IOVA_LIMIT`] or not page-aligned.
    BadAddress(u64),
    /// No memory for a table.
    OutOfMemory,
}

/// A table of `bytes`, every entry `empty`.
fn new_table(platform: &dyn Platform, bytes: u64, empty: u64) -> Result<u64, MapError> {
    let t = platform.alloc_block(bytes).ok_or(MapError::OutOfMemory)?;
    let words = platform.phys_to_virt(t).cast::<u64>();
    for i in 0..(bytes / 8) as usize {
        // SAFETY: the block is ours, `bytes` long.
        unsafe { ptr::write_volatile(words.add(i), empty) };
    }
    Ok(t)
}

/// The tables of one function's DMA address space.
pub struct DmaTables<'p> {
    platform: &'p dyn Platform,
    rto: u64,
}

impl<'p> DmaTables<'p> {
    /// An empty region-third table: every DMA faults.
    ///
    /// # Errors
    /// [`MapError::OutOfMemory`].
    pub fn new(platform: &'p dyn Platform) -> Result<Self, MapError> {
        let rto = new_table(platform, TABLE_BYTES, TABLE_INVALID)?;
        Ok(Self { platform, rto })
    }

    /// The region-third table's origin (for the function's IOTA).
    pub fn origin(&self) -> u64 {
        self.rto
    }

    fn slot(&self, table: u64, i: usize) -> *mut u64 {
        // SAFETY: (pointer only) tables come from `new_table`, `i` is an
        // index below the table's entry count (callers mask it).
        unsafe { self.platform.phys_to_virt(table).cast::<u64>().add(i) }
    }

    fn read(&self, table: u64, i: usize) -> u64 {
        // SAFETY: a live table of ours (see `slot`).
        unsafe { ptr::read_volatile(self.slot(table, i)) }
    }

    fn write(&self, table: u64, i: usize, v: u64) {
        // SAFETY: as in `read`; what the entry means to the machine is the
        // caller's business.
        unsafe { ptr::write_volatile(self.slot(table, i), v) }
    }

    fn new_table(&self, bytes: u64, empty: u64) -> Result<u64, MapError> {
        new_table(self.platform, bytes, empty)
    }

    fn indices(iova: u64) -> (usize, usize, usize) {
        (
            ((iova >> 31) & 0x7ff) as usize,
            ((iova >> 20) & 0x7ff) as usize,
            ((iova >> 12) & 0xff) as usize,
        )
    }

    /// The page table of `iova`, allocating tables on the way if `alloc`.
    fn page_table(&self, iova: u64, alloc: bool) -> Result<Option<u64>, MapError> {
        if iova >= IOVA_LIMIT || iova & 0xfff != 0 {
            return Err(MapError::BadAddress(iova));
        }
        let (rx, sx, _) = Self::indices(iova);
        let rte = self.read(self.rto, rx);
        let st = if rte & TABLE_INVALID == 0 {
            rte & !0x3fff
        } else if alloc {
            let st = self.new_table(TABLE_BYTES, TABLE_INVALID)?;
            self.write(self.rto, rx, st | RTE_TYPE | RTE_LEN);
            st
        } else {
            return Ok(None);
        };
        let ste = self.read(st, sx);
        let pt = if ste & TABLE_INVALID == 0 {
            ste & !0x7ff
        } else if alloc {
            let pt = self.new_table(PT_BYTES, PTE_INVALID)?;
            self.write(st, sx, pt);
            pt
        } else {
            return Ok(None);
        };
        Ok(Some(pt))
    }

    /// Builds every table down to the page tables for `[iova, iova + len)`,
    /// so that later changes allocate nothing.
    ///
    /// # Errors
    /// [`MapError`].
    pub fn populate(&mut self, iova: u64, len: u64) -> Result<(), MapError> {
        let mut at = iova & !0xf_ffff;
        while at < iova + len {
            self.page_table(at, true)?;
            at += 1 << 20;
        }
        Ok(())
    }

    /// Sets the entry of `iova` to `frame`, read-only unless `writable`;
    /// returns the old entry. The IOTLB knows nothing until RPCIT.
    ///
    /// # Errors
    /// [`MapError`].
    pub fn map(&mut self, iova: u64, frame: u64, writable: bool) -> Result<u64, MapError> {
        let pt = self.page_table(iova, true)?.ok_or(MapError::OutOfMemory)?;
        let i = Self::indices(iova).2;
        let old = self.read(pt, i);
        self.write(
            pt,
            i,
            (frame & !0xfff) | if writable { 0 } else { PTE_PROTECT },
        );
        Ok(old)
    }

    /// Invalidates the entry of `iova`; returns whether it was valid. The
    /// IOTLB keeps it until RPCIT.
    pub fn unmap(&mut self, iova: u64) -> bool {
        match self.page_table(iova, false) {
            Ok(Some(pt)) => {
                let i = Self::indices(iova).2;
                let old = self.read(pt, i);
                self.write(pt, i, PTE_INVALID);
                old & PTE_INVALID == 0
            }
            _ => false,
        }
    }
}

impl Drop for DmaTables<'_> {
    /// Frees every table. The owner deregisters the translation (or keeps
    /// the tables for the whole run, as the kernels do) first.
    fn drop(&mut self) {
        for rx in 0..2048 {
            let rte = self.read(self.rto, rx);
            if rte & TABLE_INVALID != 0 {
                continue;
            }
            let st = rte & !0x3fff;
            for sx in 0..2048 {
                let ste = self.read(st, sx);
                if ste & TABLE_INVALID == 0 {
                    // SAFETY: a page table of ours, unreachable once the
                    // translation is gone (the owner's duty, see above).
                    unsafe { self.platform.free_block(ste & !0x7ff, PT_BYTES) };
                }
            }
            // SAFETY: as above, a segment table of ours.
            unsafe { self.platform.free_block(st, TABLE_BYTES) };
        }
        // SAFETY: as above, the region-third table.
        unsafe { self.platform.free_block(self.rto, TABLE_BYTES) };
    }
}
