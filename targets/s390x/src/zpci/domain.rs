//! A zPCI function's DMA tables as the arch-neutral shadow driver's
//! `IoDomain`: programming one IO entry is a store into a zPCI page table;
//! clearing it stores the invalid bit; the IOTLB invalidation is RPCIT
//! over the range, and so is publishing a new entry (zPCI's IOTLB is
//! filled by RPCIT only, so a valid entry is unusable until then).
//!
//! The driver logic is in `tests/conformance/src/dma/shadow.rs`.

use mmu_notifier_conformance::dma::{IoDomain, IoError};
use mmu_notifier_core::PhysAddr;

use super::function::{Function, ZpciError};
use super::tables::{DmaTables, MapError};
use crate::SpinLock;

/// The domain: the function and its tables.
pub struct ZpciDomain<'f, 'p> {
    f: &'f Function<'p>,
    tables: SpinLock<DmaTables<'p>>,
}

impl<'f, 'p> ZpciDomain<'f, 'p> {
    /// The tables of `f` (registered for it by the caller).
    pub fn new(f: &'f Function<'p>, tables: DmaTables<'p>) -> Self {
        Self {
            f,
            tables: SpinLock::new(tables),
        }
    }
}

fn hw(e: ZpciError) -> IoError {
    match e {
        ZpciError::Insn(what, st) => IoError::Hardware {
            what,
            code: u64::from(st.cc) << 8 | u64::from(st.status),
        },
        _ => IoError::Hardware {
            what: "zPCI",
            code: 0,
        },
    }
}

impl IoDomain for ZpciDomain<'_, '_> {
    fn name(&self) -> &'static str {
        "zPCI DMA tables"
    }

    fn invalidation_name(&self) -> &'static str {
        "RPCIT"
    }

    fn set_pte(&self, iova: u64, frame: PhysAddr, writable: bool) -> Result<(), IoError> {
        match self.tables.lock().map(iova, frame.0, writable) {
            Ok(_) => Ok(()),
            Err(MapError::OutOfMemory) => Err(IoError::OutOfMemory),
            Err(MapError::BadAddress(a)) => Err(IoError::BadAddress(a)),
        }
    }

    fn clear_pte(&self, iova: u64) -> bool {
        self.tables.lock().unmap(iova)
    }

    fn invalidate(&self, iova: u64, len: u64) -> Result<(), IoError> {
        // SAFETY: the tables are the ones registered for the function (the
        // machine's setup), and every valid entry maps a frame the shadow
        // driver took from the address space's tables or the ring page.
        unsafe { self.f.refresh(iova, len) }.map_err(hw)
    }

    fn publish(&self, iova: u64, len: u64) -> Result<(), IoError> {
        // SAFETY: as in `invalidate`.
        unsafe { self.f.refresh(iova, len) }.map_err(hw)
    }
}
