//! The live-entry primitives on plain words: what IPTE/IDTE leave behind
//! (their memory effect, on the host), what they return, and aging.

mod common;
use common::*;

/// A slot over a stand-alone word (no table around it: the host stand-ins
/// touch only the word itself).
fn with_slot<R>(
    raw: u64,
    level: Level<S390x>,
    va: u64,
    f: impl FnOnce(&PteSlot<'_, S390x>) -> R,
) -> (R, u64) {
    let word = AtomicU64::new(raw);
    let pa = PhysAddr(std::ptr::from_ref(&word).addr() as u64);
    // SAFETY: 1. a private word no CPU translates through, at its own
    // address; 2. nothing else changes it while `slot` lives.
    let slot = unsafe { PteSlot::new(&word, pa, VirtAddr(va), level) }.unwrap();
    let r = f(&slot);
    (r, word.load(Ordering::Relaxed))
}

#[test]
fn ptep_clear_flush_empties_the_entry_and_returns_the_valid_old_word() {
    let raw = S390x::encode_leaf(PAGE, PhysAddr(0x3000), Prot::WRITE) | Pte::DIRTY.bits();
    let (old, now) = with_slot(raw, PAGE, 0x7000, |s| {
        // SAFETY: a valid leaf in a private word.
        unsafe { ARCH.ptep_clear_flush(s) }.old()
    });
    assert_eq!(now, 0x400, "the entry is the empty PTE afterwards");
    assert_eq!(
        old, raw,
        "the old word is the valid leaf (IPTE's invalid bit removed), software dirty kept"
    );
}

#[test]
fn ptep_get_and_clear_of_a_large_segment_leaves_the_empty_segment_entry() {
    let raw = S390x::encode_leaf(SEGMENT, PhysAddr(0x4000_0000), Prot::READ);
    let (old, now) = with_slot(raw, SEGMENT, 0x4000_0000, |s| {
        // SAFETY: a valid leaf in a private word.
        unsafe { ARCH.ptep_get_and_clear(s) }.flush().old()
    });
    assert_eq!((old, now), (raw, 0x20));
}

#[test]
fn ptep_modify_stores_the_new_word_and_reports_the_old() {
    let raw = S390x::encode_leaf(PAGE, PhysAddr(0x3000), Prot::WRITE) | Pte::YOUNG.bits();
    let new = S390x::leaf_with_prot(PAGE, raw, Prot::READ);
    let (old, now) = with_slot(raw, PAGE, 0x7000, |s| {
        // SAFETY: a valid leaf, downgraded to read-only.
        unsafe { ARCH.ptep_modify(s, new) }.flush().old()
    });
    assert_eq!(old, raw);
    assert_eq!(
        now, new,
        "after the IPTE, the new entry is stored (not left invalid)"
    );
    assert_eq!(now & 0x600, 0x200, "valid and protected");
}

#[test]
fn clear_flush_young_tests_and_clears_without_touching_anything_else() {
    let raw = S390x::encode_leaf(PAGE, PhysAddr(0x3000), Prot::WRITE);
    // SAFETY: valid leaves in private words.
    let (young, now) = with_slot(raw | Pte::YOUNG.bits(), PAGE, 0, |s| unsafe {
        ARCH.ptep_clear_flush_young(s)
    });
    assert!(young);
    assert_eq!(
        now, raw,
        "only the young bit changes; the entry stays valid"
    );
    // SAFETY: as above.
    let (young, _) = with_slot(raw, PAGE, 0, |s| unsafe { ARCH.ptep_clear_flush_young(s) });
    assert!(!young);
}

/// The last page of the 64-bit address space has no end address a
/// `PageRange` can hold, so the notifiers could not be told its span: a
/// slot for it is refused (the top page was cleared and handed back
/// without telling the secondary TLBs before).
#[test]
fn a_slot_for_the_top_page_is_refused() {
    let word = AtomicU64::new(S390x::encode_leaf(PAGE, PhysAddr(0x5000), Prot::WRITE));
    let pa = PhysAddr(std::ptr::from_ref(&word).addr() as u64);
    let top = VirtAddr(0xffff_ffff_ffff_f000);
    // SAFETY: 1. a private word standing for the PTE of `top`; 2. nobody
    // else touches it.
    let r = unsafe { PteSlot::new(&word, pa, top, PAGE) };
    assert_eq!(
        r.err(),
        Some(Error::OutOfRange {
            addr: top.0,
            limit: u64::MAX
        })
    );
    // SAFETY: as above.
    let r = unsafe { PteSlot::new(&word, pa, VirtAddr(top.0 - 4096), PAGE) };
    assert!(r.is_ok(), "the page below it is fine");
}
