//! A legacy VT-d domain (second-level tables, one domain ID) as the
//! arch-neutral shadow driver's hardware: programming one IO entry is a
//! store into [`SecondLevel`]; invalidating a range is one page-selective
//! IOTLB descriptor (type 2) per naturally aligned block of the range, then
//! a wait descriptor, through the queued-invalidation interface.
//!
//! The driver logic (fault path, interval notifier, which call site
//! invalidates what) is in `tests/conformance/src/dma/shadow.rs`; this
//! module only says what "clear one entry" and "invalidate" are on VT-d.
//! QEMU's unit reports no caching mode (CAP.CM = 0), so a newly present
//! entry needs no invalidation ([`IoDomain::publish`] does nothing).

use mmu_notifier_conformance::dma::{IoDomain, IoError};
use mmu_notifier_core::PhysAddr;

use super::aligned_blocks;
use super::tables::{MapError, SecondLevel};
use super::vtd::{Desc, Vtd, VtdError};
use crate::SpinLock;

/// A domain: its second-level table, its domain ID, and the unit.
pub struct LegacyDomain<'v, 'p> {
    vtd: &'v Vtd<'p>,
    did: u16,
    table: SpinLock<SecondLevel<'p>>,
}

impl<'v, 'p> LegacyDomain<'v, 'p> {
    /// Domain `did` over `table` (attached to a function's context entry
    /// by the caller).
    pub fn new(vtd: &'v Vtd<'p>, did: u16, table: SecondLevel<'p>) -> Self {
        Self {
            vtd,
            did,
            table: SpinLock::new(table),
        }
    }

    /// The domain ID.
    pub fn did(&self) -> u16 {
        self.did
    }

    /// Runs `f` on the second-level table (to attach it).
    pub fn with_table<R>(&self, f: impl FnOnce(&SecondLevel<'p>) -> R) -> R {
        f(&self.table.lock())
    }
}

fn io_error(e: VtdError) -> IoError {
    match e {
        VtdError::OutOfMemory => IoError::OutOfMemory,
        VtdError::QueueError(head) => IoError::Hardware {
            what: "invalidation queue error",
            code: head,
        },
        VtdError::QueueTimeout => IoError::Hardware {
            what: "invalidation wait timed out",
            code: 0,
        },
        _ => IoError::Hardware {
            what: "VT-d",
            code: 0,
        },
    }
}

impl IoDomain for LegacyDomain<'_, '_> {
    fn name(&self) -> &'static str {
        "VT-d legacy second-level table"
    }

    fn invalidation_name(&self) -> &'static str {
        "page-selective IOTLB invalidation (queued, type 2)"
    }

    fn set_pte(&self, iova: u64, frame: PhysAddr, writable: bool) -> Result<(), IoError> {
        match self.table.lock().map(iova, frame.0, writable) {
            Ok(_) => Ok(()),
            Err(MapError::OutOfMemory) => Err(IoError::OutOfMemory),
            Err(MapError::BadAddress(a)) => Err(IoError::BadAddress(a)),
        }
    }

    fn clear_pte(&self, iova: u64) -> bool {
        self.table.lock().unmap(iova) != 0
    }

    fn invalidate(&self, iova: u64, len: u64) -> Result<(), IoError> {
        let mut descs = [Desc::iotlb_global(); 32];
        let mut n = 0;
        for (addr, am) in aligned_blocks(iova, len, self.vtd.max_address_mask()) {
            if n == descs.len() {
                self.vtd.invalidate(&descs[..n]).map_err(io_error)?;
                n = 0;
            }
            descs[n] = Desc::iotlb_pages(self.did, addr, am);
            n += 1;
        }
        self.vtd.invalidate(&descs[..n]).map_err(io_error)
    }
}
