//! What the s390x host tests share: table memory from the heap, a walker
//! that reads raw entries back, and the storage-key stand-in.
//!
//! On the host the instructions are replaced by their memory effect (IPTE
//! sets the invalid bit; the software young bit stands for the storage
//! key's R), so every path but the instructions themselves runs, also under
//! Miri on the big-endian `s390x-unknown-linux-gnu` target. These tests are
//! the only place 1 MiB large segments are exercised: QEMU's TCG CPU has no
//! EDAT.
#![allow(
    dead_code,
    unused_imports,
    reason = "each test file uses part of the helpers"
)]

use std::alloc::{alloc_zeroed, dealloc, Layout};
pub use std::pin::pin;
use std::ptr::NonNull;
pub use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
pub use std::sync::Mutex;
pub use std::vec::Vec;

pub use mmu_notifier_core::{
    Arch, CopyMode, Entry, Error, Leaf, Level, MmuNotifier, PageRange, PhysAddr, Prot, PteSlot,
    Subscription, TableMemory, VirtAddr,
};
pub use mmu_notifier_s390::{PageTableEntry as Pte, S390x, SegmentTableEntry as Ste};
pub use proptest::prelude::*;

pub type AddressSpace<'a> = mmu_notifier_core::AddressSpace<'a, S390x, Arena>;

pub const PAGE: Level<S390x> = S390x::PAGE;
pub const SEGMENT: Level<S390x> = S390x::SEGMENT;
pub const MIB: u64 = 1 << 20;

/// Table memory from the host heap, aligned to its size; the pointer value
/// is the "physical address".
#[derive(Default)]
pub struct Arena {
    live: Mutex<Vec<(u64, usize)>>,
}

impl Arena {
    pub fn live_tables(&self) -> usize {
        self.live.lock().unwrap().len()
    }
}

// SAFETY: 1. each table is a fresh zeroed heap block of `bytes`, aligned to
// `bytes`, used by nothing else until `free_table`; 2. its address (exposed)
// is its "physical address", and `phys_to_virt` gives the block back; 3. no
// hardware walker reads host memory.
unsafe impl TableMemory for Arena {
    fn phys_to_virt(&self, pa: PhysAddr) -> NonNull<u8> {
        NonNull::new(std::ptr::with_exposed_provenance_mut(pa.0 as usize)).unwrap()
    }

    fn alloc_table(&self, bytes: usize) -> Option<PhysAddr> {
        let layout = Layout::from_size_align(bytes, bytes).ok()?;
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc_zeroed(layout) };
        if p.is_null() {
            return None;
        }
        let pa = p.expose_provenance() as u64;
        self.live.lock().unwrap().push((pa, bytes));
        Some(PhysAddr(pa))
    }

    unsafe fn free_table(&self, pa: PhysAddr, bytes: usize) {
        let mut live = self.live.lock().unwrap();
        let i = live
            .iter()
            .position(|&e| e == (pa.0, bytes))
            .expect("freeing a table that was not allocated");
        live.swap_remove(i);
        // SAFETY: allocated above with this very layout and not yet freed
        // (it was still in `live`).
        unsafe {
            dealloc(
                std::ptr::with_exposed_provenance_mut(pa.0 as usize),
                Layout::from_size_align(bytes, bytes).unwrap(),
            )
        };
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        assert_eq!(
            self.live_tables(),
            0,
            "every table must be freed by teardown and drop"
        );
    }
}

pub static ARCH: S390x = S390x::new();

/// The raw word of the entry of `level` that translates `va`, walking from
/// the root like the CPU would; `None` if a table on the way is missing.
pub fn raw_entry(mm: &AddressSpace<'_>, va: u64, level: Level<S390x>) -> Option<u64> {
    let mut table = mm.root();
    for l in (0..=level.index()).map(Level::<S390x>::new) {
        let desc = l.geometry();
        let ptr = std::ptr::with_exposed_provenance::<AtomicU64>(table.0 as usize);
        // SAFETY: `table` is a live table of this level (found by walking
        // the tree), holding 2^index_bits atomic words.
        let raw = unsafe { &*ptr.add(desc.index(VirtAddr(va))) }.load(Ordering::Acquire);
        if l == level {
            return Some(raw);
        }
        match S390x::decode(l, raw) {
            Entry::Table(next) => table = next,
            _ => return None,
        }
    }
    None
}

/// Marks the leaf translating `va` as accessed, as the storage key's
/// reference bit would be on s390x (host stand-in: the software young bit).
pub fn touch(mm: &AddressSpace<'_>, va: u64, level: Level<S390x>) {
    let young = if level == PAGE {
        Pte::YOUNG.bits()
    } else {
        Ste::YOUNG.bits()
    };
    let mut table = mm.root();
    for l in (0..=level.index()).map(Level::<S390x>::new) {
        let ptr = std::ptr::with_exposed_provenance::<AtomicU64>(table.0 as usize);
        // SAFETY: as in `raw_entry`.
        let e = unsafe { &*ptr.add(l.index_of(VirtAddr(va))) };
        if l == level {
            e.fetch_or(young, Ordering::AcqRel);
            return;
        }
        let Entry::Table(next) = S390x::decode(l, e.load(Ordering::Acquire)) else {
            panic!("no table")
        };
        table = next;
    }
}

pub fn range(start: u64, len: u64) -> PageRange {
    PageRange::new(VirtAddr(start), VirtAddr(start + len), 4096).unwrap()
}

pub fn prot_strategy() -> impl Strategy<Value = Prot> {
    (0u8..8).prop_map(|b| {
        let mut p = Prot::READ;
        for (bit, flag) in [(1, Prot::WRITE), (2, Prot::EXEC), (4, Prot::USER)] {
            if b & bit != 0 {
                p = p | flag;
            }
        }
        p
    })
}

pub fn config() -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { 8 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
