//! The live-entry primitives on plain `AtomicU64`s: what they leave in the
//! word, what they return, and that bits the hardware sets are never lost.
//!
//! On the host the flushes are no-ops, so these check the memory side
//! only; the QEMU suite checks the TLB side.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use mmu_notifier_core::{Arch, Entry, Level, PhysAddr, Prot, PteSlot, VirtAddr};
use mmu_notifier_x86::{PteFlags, X86_64};

const PT: Level<X86_64> = X86_64::PT;
const A: u64 = PteFlags::ACCESSED.bits();
const D: u64 = PteFlags::DIRTY.bits();
const VA: VirtAddr = VirtAddr(0x7000_0000);

fn slot(word: &AtomicU64) -> PteSlot<'_, X86_64> {
    // SAFETY: 1. the word stands for a PT-level entry translating VA (4 KiB
    // aligned), at its own address; 2. it is local to the test, so nobody
    // else changes it and no CPU walks it.
    unsafe { PteSlot::new(word, pa_of(word), VA, PT) }.unwrap()
}

/// A test-local word's address, standing for its physical address.
fn pa_of(word: &AtomicU64) -> PhysAddr {
    PhysAddr(std::ptr::from_ref(word).addr() as u64)
}

fn rw_leaf() -> u64 {
    X86_64::encode_leaf(PT, PhysAddr(0x1234_5000), Prot::WRITE | Prot::USER)
}

#[test]
fn set_pte_at_stores_the_entry() {
    let arch = local();
    let word = AtomicU64::new(X86_64::invalid_entry(PT));
    // SAFETY: the entry is invalid; the frame is never accessed.
    unsafe { arch.set_pte_at(&slot(&word), rw_leaf()) };
    assert_eq!(word.load(Ordering::Relaxed), rw_leaf());
}

#[test]
fn get_and_clear_leaves_zero_and_returns_the_old_entry_with_hardware_bits() {
    let arch = local();
    let word = AtomicU64::new(rw_leaf() | A | D);
    // SAFETY: a valid leaf of a test-local word.
    let pending = unsafe { arch.ptep_get_and_clear(&slot(&word)) };
    assert_eq!(
        pending.old(),
        rw_leaf() | A | D,
        "the final A/D state must come back"
    );
    assert_eq!(
        word.load(Ordering::Relaxed),
        0,
        "the entry must be not-present (0)"
    );
    let flushed = pending.flush();
    assert_eq!(flushed.old(), rw_leaf() | A | D);
    assert_eq!(flushed.va(), VA);
}

#[test]
fn clear_flush_returns_the_old_entry_once_flushed() {
    let arch = local();
    let word = AtomicU64::new(rw_leaf() | D);
    // SAFETY: a valid leaf of a test-local word.
    let flushed = unsafe { arch.ptep_clear_flush(&slot(&word)) };
    assert_eq!(flushed.old(), rw_leaf() | D);
    assert_eq!(word.load(Ordering::Relaxed), 0);
    let Entry::Leaf(leaf) = X86_64::decode(PT, flushed.old()) else {
        panic!("leaf expected")
    };
    assert!(
        leaf.dirty,
        "a dirty page must be reported dirty so it is written back"
    );
}

#[test]
fn modify_installs_the_downgrade_and_returns_the_old_entry() {
    let arch = local();
    let word = AtomicU64::new(rw_leaf());
    let ro = X86_64::leaf_with_prot(PT, rw_leaf(), Prot::USER);
    // SAFETY: a valid leaf; `ro` maps the same frame with less permission.
    let pending = unsafe { arch.ptep_modify(&slot(&word), ro) };
    assert_eq!(pending.old(), rw_leaf());
    let _ = pending.flush();
    assert_eq!(word.load(Ordering::Relaxed), ro);
    assert!(!PteFlags::from_bits_retain(ro).contains(PteFlags::WRITABLE));
}

#[test]
fn modify_keeps_accessed_and_dirty_set_after_the_caller_read_the_entry() {
    let arch = local();
    let word = AtomicU64::new(rw_leaf());
    let read = word.load(Ordering::Relaxed);
    let ro = X86_64::leaf_with_prot(PT, read, Prot::USER);
    // The hardware writes through a cached translation meanwhile.
    word.fetch_or(A | D, Ordering::Relaxed);
    // SAFETY: a valid leaf; `ro` maps the same frame with less permission.
    let pending = unsafe { arch.ptep_modify(&slot(&word), ro) };
    assert_eq!(pending.old(), rw_leaf() | A | D);
    let _ = pending.flush();
    assert_eq!(
        word.load(Ordering::Relaxed),
        ro | A | D,
        "a D set before write-protection must survive it"
    );
}

#[test]
fn modify_does_not_invent_accessed_or_dirty() {
    let arch = local();
    let word = AtomicU64::new(rw_leaf());
    let ro = X86_64::leaf_with_prot(PT, rw_leaf(), Prot::READ);
    // SAFETY: a valid leaf; `ro` maps the same frame with less permission.
    let _ = unsafe { arch.ptep_modify(&slot(&word), ro) }.flush();
    assert_eq!(word.load(Ordering::Relaxed) & (A | D), 0);
}

#[test]
fn modify_racing_a_hardware_walker_loses_no_dirty_bit() {
    // A thread plays the hardware walker, setting A and D with locked ORs,
    // while the owner flips the permissions back and forth.
    let arch = local();
    let word = AtomicU64::new(rw_leaf());
    let stop = AtomicBool::new(false);
    let rounds = if cfg!(miri) { 20 } else { 20_000 };
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                word.fetch_or(D, Ordering::AcqRel);
                word.fetch_or(A, Ordering::AcqRel);
                std::thread::yield_now();
            }
        });
        let mut prot = Prot::USER;
        for _ in 0..rounds {
            let read = word.load(Ordering::Acquire);
            let new = X86_64::leaf_with_prot(PT, read & !(A | D), prot);
            // SAFETY: a valid leaf; each change keeps the same frame.
            let _ = unsafe { arch.ptep_modify(&slot(&word), new) }.flush();
            prot = if prot.writable() {
                Prot::USER
            } else {
                Prot::USER | Prot::WRITE
            };
        }
        // Once D is in the word, no later modify may drop it.
        while word.load(Ordering::Acquire) & D == 0 {
            std::thread::yield_now();
        }
        for _ in 0..rounds {
            let new = X86_64::leaf_with_prot(PT, rw_leaf(), Prot::USER);
            // SAFETY: as above.
            let _ = unsafe { arch.ptep_modify(&slot(&word), new) }.flush();
            assert_ne!(
                word.load(Ordering::Acquire) & D,
                0,
                "ptep_modify dropped a hardware-set D"
            );
        }
        stop.store(true, Ordering::Relaxed);
    });
}

#[test]
fn test_and_clear_young_clears_only_accessed() {
    let arch = local();
    let word = AtomicU64::new(rw_leaf() | A | D);
    // SAFETY: a valid leaf of a test-local word.
    let young = unsafe { arch.ptep_test_and_clear_young(&slot(&word)) };
    assert!(young, "an accessed page is young");
    assert_eq!(
        word.load(Ordering::Relaxed),
        rw_leaf() | D,
        "D and everything else must stay"
    );
    // SAFETY: as above.
    let young = unsafe { arch.ptep_test_and_clear_young(&slot(&word)) };
    assert!(!young, "not accessed since: old");
    assert_eq!(word.load(Ordering::Relaxed), rw_leaf() | D);
}

#[test]
fn test_and_clear_young_keeps_a_dirty_bit_set_concurrently() {
    let arch = local();
    let word = AtomicU64::new(rw_leaf() | A);
    let rounds = if cfg!(miri) { 10 } else { 10_000 };
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..rounds {
                word.fetch_or(A, Ordering::AcqRel);
            }
            word.fetch_or(D, Ordering::AcqRel);
        });
        for _ in 0..rounds {
            // SAFETY: a valid leaf of a test-local word.
            let _ = unsafe { arch.ptep_test_and_clear_young(&slot(&word)) };
        }
    });
    assert_ne!(
        word.load(Ordering::Relaxed) & D,
        0,
        "aging must not lose a D set meanwhile"
    );
}

#[test]
fn clear_flush_young_on_x86_is_test_and_clear_young() {
    let arch = local();
    let word = AtomicU64::new(rw_leaf() | A | D);
    // SAFETY: a valid leaf of a test-local word.
    assert!(unsafe { arch.ptep_clear_flush_young(&slot(&word)) });
    assert_eq!(word.load(Ordering::Relaxed), rw_leaf() | D);
    // SAFETY: as above.
    assert!(!unsafe { arch.ptep_clear_flush_young(&slot(&word)) });
}

#[test]
fn huge_leaf_primitives_keep_page_size() {
    let arch = local();
    let huge = X86_64::encode_leaf(X86_64::PD, PhysAddr(0x4000_0000), Prot::WRITE);
    let word = AtomicU64::new(huge | A);
    // SAFETY: 1. a PD-level leaf for a 2 MiB-aligned address; 2. test-local.
    let s = unsafe { PteSlot::new(&word, pa_of(&word), VirtAddr(0x20_0000), X86_64::PD) }.unwrap();
    let ro = X86_64::leaf_with_prot(X86_64::PD, huge, Prot::READ);
    // SAFETY: a valid leaf; same frame, less permission.
    let _ = unsafe { arch.ptep_modify(&s, ro) }.flush();
    assert_eq!(word.load(Ordering::Relaxed), ro | A);
    assert!(PteFlags::from_bits_retain(word.load(Ordering::Relaxed)).contains(PteFlags::HUGE_PAGE));
    // SAFETY: as above.
    let flushed = unsafe { arch.ptep_clear_flush(&s) };
    assert_eq!(flushed.old(), ro | A);
    assert_eq!(word.load(Ordering::Relaxed), 0);
}

#[test]
fn flushes_are_harmless_on_the_host() {
    let arch = local();
    // On the host these are no-ops; on bare metal, safe instructions too.
    arch.flush_tlb_page(VA, PT);
    arch.flush_tlb_all();
}

/// The arch with local-only flushes.
fn local() -> X86_64 {
    // SAFETY: host tables: no CPU walks them, so there is nothing to flush
    // anywhere.
    unsafe { X86_64::local_only() }
}
