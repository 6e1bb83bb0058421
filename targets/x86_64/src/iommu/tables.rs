//! The in-memory structures the VT-d unit walks: the root and context
//! tables (legacy and scalable-mode formats), legacy second-level page
//! tables, and the PASID directory and table of scalable mode.
//!
//! Owns every table page it allocates (from the [`Platform`]) and frees
//! them when dropped. Entries are written with volatile stores, the
//! present bit last, because the unit reads them behind the compiler's
//! back; none of these types flushes a cache: which invalidation a change
//! needs is the caller's business (the drivers' module docs say which).

use core::ptr;

use super::vtd::VtdError;
use super::Platform;

/// A 4 KiB table page, by physical address.
#[derive(Clone, Copy)]
struct Page(u64);

impl Page {
    fn alloc(p: &dyn Platform) -> Result<Page, VtdError> {
        p.alloc_page().map(Page).ok_or(VtdError::OutOfMemory)
    }

    fn word(self, p: &dyn Platform, i: usize) -> *mut u64 {
        debug_assert!(i < 512);
        // SAFETY: (the pointer is only formed here) `i` < 512 keeps it in
        // the page, which `phys_to_virt` maps.
        unsafe { p.phys_to_virt(self.0).cast::<u64>().add(i) }
    }

    fn read(self, p: &dyn Platform, i: usize) -> u64 {
        // SAFETY: a table page we own (allocated by `alloc`, not freed).
        unsafe { ptr::read_volatile(self.word(p, i)) }
    }

    fn write(self, p: &dyn Platform, i: usize, val: u64) {
        // SAFETY: as in `read`; what the value means to the unit is the
        // caller's business.
        unsafe { ptr::write_volatile(self.word(p, i), val) }
    }

    /// # Safety
    /// No table the unit may walk points to this page any more, and no
    /// cache of the unit holds entries read from it.
    unsafe fn free(self, p: &dyn Platform) {
        // SAFETY: the caller's contract; the page came from `alloc`.
        unsafe { p.free_page(self.0) }
    }
}

/// Second-level entry: read allowed.
const SL_READ: u64 = 1 << 0;
/// Second-level entry: write allowed.
const SL_WRITE: u64 = 1 << 1;
/// Bits 12..=51: the next table or the frame.
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// A legacy second-level page table (the IOMMU's own format: bit 0 read,
/// bit 1 write, no accessed or dirty bits), `depth` levels of 512
/// entries, 4 KiB leaves only.
pub struct SecondLevel<'p> {
    platform: &'p dyn Platform,
    root: Page,
    depth: u32,
}

/// Why a second-level change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// The address is beyond what `depth` levels translate, or not page
    /// aligned.
    BadAddress(u64),
    /// Out of table memory.
    OutOfMemory,
}

impl<'p> SecondLevel<'p> {
    /// An empty table of `depth` (3 or 4) levels.
    ///
    /// # Errors
    /// [`VtdError::OutOfMemory`].
    pub fn new(platform: &'p dyn Platform, depth: u32) -> Result<Self, VtdError> {
        assert!(matches!(depth, 3 | 4), "second-level depth {depth}");
        Ok(Self {
            platform,
            root: Page::alloc(platform)?,
            depth,
        })
    }

    /// The top table's physical address (for the context entry).
    pub fn root(&self) -> u64 {
        self.root.0
    }

    /// The address-width code of the context entry (`depth - 2`).
    pub fn aw_code(&self) -> u64 {
        u64::from(self.depth) - 2
    }

    fn index(&self, iova: u64, level: u32) -> usize {
        ((iova >> (12 + 9 * level)) & 0x1ff) as usize
    }

    fn check(&self, iova: u64) -> Result<(), MapError> {
        if iova & 0xfff != 0 || iova >> (12 + 9 * self.depth) != 0 {
            return Err(MapError::BadAddress(iova));
        }
        Ok(())
    }

    /// Walks to the leaf table of `iova`, allocating on the way if `alloc`.
    fn leaf_table(&mut self, iova: u64, alloc: bool) -> Result<Option<Page>, MapError> {
        let p = self.platform;
        let mut table = self.root;
        for level in (1..self.depth).rev() {
            let i = self.index(iova, level);
            let e = table.read(p, i);
            table = if e & (SL_READ | SL_WRITE) != 0 {
                Page(e & ADDR_MASK)
            } else if alloc {
                let next = Page::alloc(p).map_err(|_| MapError::OutOfMemory)?;
                table.write(p, i, next.0 | SL_READ | SL_WRITE);
                next
            } else {
                return Ok(None);
            };
        }
        Ok(Some(table))
    }

    /// Allocates every table down to the leaves for `[iova, iova + len)`,
    /// so that later changes there allocate nothing (a domain's tables
    /// live as long as the domain).
    ///
    /// # Errors
    /// [`MapError`].
    pub fn populate(&mut self, iova: u64, len: u64) -> Result<(), MapError> {
        let mut at = iova & !0x1f_ffff;
        while at < iova + len {
            self.check(at)?;
            self.leaf_table(at, true)?;
            at += 0x20_0000;
        }
        Ok(())
    }

    /// Sets the leaf of `iova` to `frame`, read-only or writable. The old
    /// entry (returned, 0 if none) may still be cached in the IOTLB.
    ///
    /// # Errors
    /// [`MapError`].
    pub fn map(&mut self, iova: u64, frame: u64, writable: bool) -> Result<u64, MapError> {
        self.check(iova)?;
        let table = self.leaf_table(iova, true)?.ok_or(MapError::OutOfMemory)?;
        let i = self.index(iova, 0);
        let old = table.read(self.platform, i);
        let w = if writable { SL_WRITE } else { 0 };
        table.write(self.platform, i, (frame & ADDR_MASK) | SL_READ | w);
        Ok(old)
    }

    /// Clears the leaf of `iova`, returning the old entry (0 if none). The
    /// IOTLB may still hold it.
    pub fn unmap(&mut self, iova: u64) -> u64 {
        if self.check(iova).is_err() {
            return 0;
        }
        match self.leaf_table(iova, false) {
            Ok(Some(table)) => {
                let i = self.index(iova, 0);
                let old = table.read(self.platform, i);
                table.write(self.platform, i, 0);
                old
            }
            _ => 0,
        }
    }

    fn free_below(&self, table: Page, level: u32) {
        if level > 0 {
            for i in 0..512 {
                let e = table.read(self.platform, i);
                if e & (SL_READ | SL_WRITE) != 0 {
                    self.free_below(Page(e & ADDR_MASK), level - 1);
                }
            }
        }
        // SAFETY: `Drop`'s caller contract (see there): the tree is no
        // longer reachable by the unit.
        unsafe { table.free(self.platform) };
    }
}

impl Drop for SecondLevel<'_> {
    /// Frees every table. The owner detaches the table from its context
    /// entry and invalidates the caches before dropping it.
    fn drop(&mut self) {
        self.free_below(self.root, self.depth - 1);
    }
}

/// A legacy root table with one context table, for bus 0.
pub struct LegacyRoot<'p> {
    platform: &'p dyn Platform,
    root: Page,
    context: Page,
}

impl<'p> LegacyRoot<'p> {
    /// Bus 0 present, every function's context entry absent (its DMA
    /// faults with reason 2).
    ///
    /// # Errors
    /// [`VtdError::OutOfMemory`].
    pub fn new(platform: &'p dyn Platform) -> Result<Self, VtdError> {
        let root = Page::alloc(platform)?;
        let context = match Page::alloc(platform) {
            Ok(c) => c,
            Err(e) => {
                // SAFETY: just allocated, never shown to the unit.
                unsafe { root.free(platform) };
                return Err(e);
            }
        };
        root.write(platform, 0, context.0 | 1);
        Ok(Self {
            platform,
            root,
            context,
        })
    }

    /// The root table's physical address (RTADDR).
    pub fn root(&self) -> u64 {
        self.root.0
    }

    /// Points function `devfn` of bus 0 at second-level table `sl` in
    /// domain `did` (translation type 0: untranslated requests only).
    /// A context entry that was present must be invalidated (context
    /// cache) by the caller.
    pub fn attach(&self, devfn: u8, sl: &SecondLevel<'_>, did: u16) {
        let i = usize::from(devfn) * 2;
        self.context.write(self.platform, i, 0);
        self.context
            .write(self.platform, i + 1, sl.aw_code() | u64::from(did) << 8);
        self.context.write(self.platform, i, sl.root() | 1);
    }
}

impl Drop for LegacyRoot<'_> {
    fn drop(&mut self) {
        // SAFETY: the unit is never turned off in these kernels, so a root
        // table in use is never dropped: the machine setup forgets it once
        // the unit runs on it (this only runs if enabling failed).
        unsafe {
            self.context.free(self.platform);
            self.root.free(self.platform);
        }
    }
}

/// PASID-table entry: first-stage translation only (PGTT = 001b).
const PGTT_FIRST_STAGE: u64 = 1 << 6;
/// PASID-table entry: address-width code 2 (48 bits, 4-level tables).
const PASID_AW_48: u64 = 2 << 2;

/// Scalable-mode structures for bus 0: a root table whose lower context
/// table holds the functions 0..128, one PASID directory per attached
/// function sharing one PASID table (PASIDs 0..64).
pub struct ScalableRoot<'p> {
    platform: &'p dyn Platform,
    root: Page,
    /// Lower context table: 128 entries of 256 bits, functions 0..128.
    context: Page,
    directory: Page,
    /// 64 entries of 512 bits.
    pasids: Page,
}

impl<'p> ScalableRoot<'p> {
    /// Bus 0 present, every context entry absent.
    ///
    /// # Errors
    /// [`VtdError::OutOfMemory`].
    pub fn new(platform: &'p dyn Platform) -> Result<Self, VtdError> {
        let mut pages = [Page(0); 4];
        for n in 0..4 {
            match Page::alloc(platform) {
                Ok(page) => pages[n] = page,
                Err(e) => {
                    for page in &pages[..n] {
                        // SAFETY: just allocated, never shown to the unit.
                        unsafe { page.free(platform) };
                    }
                    return Err(e);
                }
            }
        }
        let [root, context, directory, pasids] = pages;
        // Lower context-table pointer, present.
        root.write(platform, 0, context.0 | 1);
        // Directory entry 0 (PASIDs 0..64), present.
        directory.write(platform, 0, pasids.0 | 1);
        Ok(Self {
            platform,
            root,
            context,
            directory,
            pasids,
        })
    }

    /// The root table's physical address (RTADDR, with the SMT bit).
    pub fn root(&self) -> u64 {
        self.root.0
    }

    /// Makes function `devfn` (< 128) use the PASID directory, with
    /// untagged DMA translated as PASID `rid_pasid`. Caller invalidates the
    /// context cache if the entry was present.
    pub fn attach(&self, devfn: u8, rid_pasid: u32) {
        assert!(devfn < 128, "only the lower context table is built");
        let i = usize::from(devfn) * 4;
        let p = self.platform;
        self.context.write(p, i, 0);
        self.context
            .write(p, i + 1, u64::from(rid_pasid & 0xf_ffff));
        self.context.write(p, i + 2, 0);
        self.context.write(p, i + 3, 0);
        // PDTS 0 (128 directory entries), present.
        self.context.write(p, i, self.directory.0 | 1);
    }

    /// Points `pasid` (< 64) at the 4-level first-stage (x86-64 format)
    /// table `root`, in domain `did`. A present entry must be invalidated
    /// (PASID cache, then PASID-based IOTLB) by the caller.
    pub fn set_first_stage(&self, pasid: u32, root: u64, did: u16) {
        let i = pasid_slot(pasid);
        let p = self.platform;
        for w in 0..8 {
            self.pasids.write(p, i + w, 0);
        }
        self.pasids.write(p, i + 1, u64::from(did));
        // FLPM 0: 4-level first-stage table.
        self.pasids.write(p, i + 2, root & ADDR_MASK);
        self.pasids.write(p, i, PGTT_FIRST_STAGE | PASID_AW_48 | 1);
    }

    /// Makes `pasid` not present: its DMA faults. The caller invalidates
    /// the PASID cache and the PASID-based IOTLB.
    pub fn clear(&self, pasid: u32) {
        self.pasids.write(self.platform, pasid_slot(pasid), 0);
    }
}

fn pasid_slot(pasid: u32) -> usize {
    assert!(pasid < 64, "only PASID table 0 (PASIDs 0..64) is built");
    pasid as usize * 8
}

impl Drop for ScalableRoot<'_> {
    fn drop(&mut self) {
        // SAFETY: as for `LegacyRoot`: only dropped if enabling failed.
        unsafe {
            for page in [self.pasids, self.directory, self.context, self.root] {
                page.free(self.platform);
            }
        }
    }
}
