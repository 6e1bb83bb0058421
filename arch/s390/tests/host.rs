//! Host tests of the s390x arch layer: the encodings as the hardware reads
//! them, and the generic address space driven through [`S390x`].
//!
//! The instructions are replaced by their memory effect here (IPTE sets the
//! invalid bit; the software young bit stands for the storage key's R), so
//! every path but the instructions themselves runs, also under Miri on the
//! big-endian `s390x-unknown-linux-gnu` target. This is the only place
//! 1 MiB large segments are exercised: QEMU's TCG CPU has no EDAT.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::vec::Vec;

use mmu_notifier_core::{
    Arch, CopyMode, Entry, Error, FrameAllocator, Leaf, MmuNotifier, PageRange, PhysAddr, Prot,
    PteSlot, Subscription, VirtAddr,
};
use mmu_notifier_s390::{PageTableEntry as Pte, S390x, SegmentTableEntry as Ste};
use proptest::prelude::*;

type AddressSpace<'a> = mmu_notifier_core::AddressSpace<'a, S390x, Arena>;

const PAGE: usize = S390x::PAGE;
const SEGMENT: usize = S390x::SEGMENT;
const MIB: u64 = 1 << 20;

/// Table memory from the host heap, aligned to its size; the pointer value
/// is the "physical address" ([`S390x::identity`]).
#[derive(Default)]
struct Arena {
    live: Mutex<Vec<(u64, usize)>>,
}

impl Arena {
    fn live_tables(&self) -> usize {
        self.live.lock().unwrap().len()
    }
}

// SAFETY: each table is a fresh zeroed heap block of `bytes`, aligned to
// `bytes`, used by nothing else until `free_table`; with an identity
// S390x, `phys_to_virt` of its address is the block itself.
unsafe impl FrameAllocator for Arena {
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

static ARCH: S390x = S390x::identity();

/// The raw word of the entry of `level` that translates `va`, walking from
/// the root like the CPU would; `None` if a table on the way is missing.
fn raw_entry(mm: &AddressSpace<'_>, va: u64, level: usize) -> Option<u64> {
    let mut table = mm.root();
    for l in 0..=level {
        let desc = S390x::LEVELS[l];
        let ptr = ARCH.phys_to_virt(table).cast::<AtomicU64>();
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
fn touch(mm: &AddressSpace<'_>, va: u64, level: usize) {
    let young = if level == PAGE {
        Pte::YOUNG.bits()
    } else {
        Ste::YOUNG.bits()
    };
    let mut table = mm.root();
    for l in 0..=level {
        let ptr = ARCH.phys_to_virt(table).cast::<AtomicU64>();
        // SAFETY: as in `raw_entry`.
        let e = unsafe { &*ptr.add(S390x::LEVELS[l].index(VirtAddr(va))) };
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

fn range(start: u64, len: u64) -> PageRange {
    PageRange::new(VirtAddr(start), VirtAddr(start + len), 4096).unwrap()
}

fn prot_strategy() -> impl Strategy<Value = Prot> {
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

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { 8 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------- geometry

#[test]
fn levels_are_region_first_to_page_table_with_s390_shifts() {
    let shape: Vec<_> = S390x::LEVELS
        .iter()
        .map(|l| (l.shift, l.index_bits, l.table_bytes, l.leaf))
        .collect();
    assert_eq!(
        shape,
        [(53, 11, 16384, false), (42, 11, 16384, false), (31, 11, 16384, false), (20, 11, 16384, true), (12, 8, 2048, true)],
        "region-first/second/third and segment tables are 2048 x 8 B; page tables 256 x 8 B; segments may be 1 MiB leaves"
    );
    assert_eq!(S390x::PAGE_SIZE, 4096);
    let top: u32 = S390x::LEVELS.iter().map(|l| l.index_bits).sum::<u32>() + 12;
    assert_eq!(
        top, 64,
        "a region-first root translates all 64 address bits"
    );
}

#[test]
fn every_address_is_translatable_there_is_no_canonical_form() {
    for va in [0, 0x0000_8000_0000_0000, 0x8000_0000_0000_0000, u64::MAX] {
        assert_eq!(
            S390x::check_addr(VirtAddr(va)),
            Ok(()),
            "{va:#x} must be accepted"
        );
    }
}

#[test]
fn empty_entries_are_the_invalid_pattern_of_their_table_never_zero() {
    assert_eq!(S390x::invalid_entry(0), 0x2c, "region-first: I | TT=11");
    assert_eq!(S390x::invalid_entry(1), 0x28, "region-second: I | TT=10");
    assert_eq!(S390x::invalid_entry(2), 0x24, "region-third: I | TT=01");
    assert_eq!(S390x::invalid_entry(3), 0x20, "segment: I | TT=00");
    assert_eq!(S390x::invalid_entry(4), 0x400, "page: I (IBM bit 53)");
    for l in 0..S390x::LEVELS.len() {
        assert_eq!(S390x::decode(l, S390x::invalid_entry(l)), Entry::Invalid);
    }
}

// ---------------------------------------------------------------- encodings

#[test]
fn pte_encoding_bit_by_bit() {
    let f = PhysAddr(0x1234_5000);
    assert_eq!(
        S390x::encode_leaf(PAGE, f, Prot::READ),
        0x1234_5000 | 0x200 | 0x010 | 0x001,
        "frame | PROTECT | READ | PRESENT"
    );
    assert_eq!(
        S390x::encode_leaf(PAGE, f, Prot::READ | Prot::WRITE),
        0x1234_5000 | 0x020 | 0x010 | 0x001,
        "writable: WRITE, no PROTECT"
    );
    assert_eq!(
        S390x::encode_leaf(PAGE, f, Prot::READ | Prot::EXEC) & 0x140,
        0x040,
        "EXEC is the software bit 57, never IEP bit 55"
    );
    assert_eq!(
        S390x::encode_leaf(PAGE, f, Prot::READ | Prot::USER) & 0x080,
        0x080,
        "USER is software bit 56"
    );
    for prot in [Prot::READ, Prot::WRITE | Prot::EXEC | Prot::USER] {
        let raw = S390x::encode_leaf(PAGE, f, prot);
        assert_eq!(raw & 0xc00, 0, "a valid PTE has I (53) and bit 52 clear");
        assert_eq!(
            raw & Pte::NOEXEC.bits(),
            0,
            "no IEP facility assumed: bit 55 stays zero"
        );
    }
}

#[test]
fn large_segment_encoding_bit_by_bit() {
    let f = PhysAddr(0x4030_0000);
    assert_eq!(
        S390x::encode_leaf(SEGMENT, f, Prot::READ),
        0x4030_0000 | 0x400 | 0x200 | 0x1,
        "frame | FC | PROTECT | READ"
    );
    assert_eq!(
        S390x::encode_leaf(SEGMENT, f, Prot::READ | Prot::WRITE),
        0x4030_0000 | 0x400 | 0x2 | 0x1,
        "frame | FC | WRITE | READ"
    );
    let raw = S390x::encode_leaf(SEGMENT, f, Prot::WRITE | Prot::EXEC | Prot::USER);
    assert_eq!(raw & 0xc, 0, "TT of a segment entry is 00");
    assert_eq!(raw & 0x20, 0, "valid");
    assert_eq!(
        raw & 0x1_0000,
        0,
        "ACCF-validity (bit 47) stays clear so the ACC software bits are ignored"
    );
}

#[test]
fn table_entries_bit_by_bit() {
    let t = PhysAddr(0x7654_4000);
    assert_eq!(
        S390x::encode_table(0, t),
        0x7654_4000 | 0xc | 0x3,
        "region-first: origin | TT=11 | TL=3"
    );
    assert_eq!(
        S390x::encode_table(1, t),
        0x7654_4000 | 0x8 | 0x3,
        "region-second: TT=10"
    );
    assert_eq!(
        S390x::encode_table(2, t),
        0x7654_4000 | 0x4 | 0x3,
        "region-third: TT=01"
    );
    assert_eq!(
        S390x::encode_table(3, PhysAddr(0x7654_4800)),
        0x7654_4800,
        "segment: 2 KiB page-table origin, TT=00"
    );
}

#[test]
fn words_the_cpu_would_reject_decode_as_invalid() {
    let table = 0x10_0000;
    assert_eq!(
        S390x::decode(0, table | 0x8 | 0x3),
        Entry::Invalid,
        "region-second TT in a region-first table"
    );
    assert_eq!(
        S390x::decode(3, table | 0x4),
        Entry::Invalid,
        "region TT in a segment table"
    );
    assert_eq!(
        S390x::decode(PAGE, 0x5000 | 0x800 | 0x1),
        Entry::Invalid,
        "PTE bit 52 set"
    );
    assert_eq!(
        S390x::decode(PAGE, 0x5000 | 0x400 | 0x31),
        Entry::Invalid,
        "hardware-invalid PTE"
    );
    assert_eq!(
        S390x::decode(3, 0x10_0000 | 0x400 | 0x20),
        Entry::Invalid,
        "invalid large segment"
    );
}

#[test]
fn decode_reports_software_young_and_dirty_and_hardware_write_protection() {
    let raw = 0x9000 | 0x001 | 0x010 | 0x020 | 0x004 | 0x008;
    assert_eq!(
        S390x::decode(PAGE, raw),
        Entry::Leaf(Leaf {
            frame: PhysAddr(0x9000),
            prot: Prot::READ | Prot::WRITE,
            young: true,
            dirty: true
        })
    );
    let protected = raw | Pte::PROTECT.bits();
    let Entry::Leaf(leaf) = S390x::decode(PAGE, protected) else {
        panic!()
    };
    assert!(
        !leaf.prot.writable(),
        "PROTECT (the bit the CPU enforces) wins over the software WRITE bit"
    );
    let iep = 0x9000 | 0x001 | 0x040 | 0x100;
    let Entry::Leaf(leaf) = S390x::decode(PAGE, iep) else {
        panic!()
    };
    assert!(
        !leaf.prot.contains(Prot::EXEC),
        "an IEP-protected word is not executable"
    );
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn pte_round_trips(frame in 0u64..(1 << 52), prot in prot_strategy()) {
        let frame = PhysAddr(frame << 12);
        let raw = S390x::encode_leaf(PAGE, frame, prot);
        prop_assert_eq!(S390x::decode(PAGE, raw), Entry::Leaf(Leaf { frame, prot, young: false, dirty: false }));
    }

    #[test]
    fn large_segment_round_trips(frame in 0u64..(1 << 44), prot in prot_strategy()) {
        let frame = PhysAddr(frame << 20);
        let raw = S390x::encode_leaf(SEGMENT, frame, prot);
        prop_assert_eq!(S390x::decode(SEGMENT, raw), Entry::Leaf(Leaf { frame, prot, young: false, dirty: false }));
    }

    #[test]
    fn table_pointers_round_trip(level in 0usize..4, table in 0u64..(1 << 52)) {
        let table = if level == SEGMENT { PhysAddr((table << 11) & !0x7ff) } else { PhysAddr(table << 12) };
        prop_assert_eq!(S390x::decode(level, S390x::encode_table(level, table)), Entry::Table(table));
    }

    #[test]
    fn leaf_with_prot_keeps_frame_and_young_dirty(
        level in (3usize..5), frame in 0u64..(1 << 44), from in prot_strategy(), to in prot_strategy(),
        young in any::<bool>(), dirty in any::<bool>(),
    ) {
        let frame = PhysAddr(frame << 20);
        let (y, d) = if level == PAGE { (Pte::YOUNG.bits(), Pte::DIRTY.bits()) } else { (Ste::YOUNG.bits(), Ste::DIRTY.bits()) };
        let raw = S390x::encode_leaf(level, frame, from) | if young { y } else { 0 } | if dirty { d } else { 0 };
        let new = S390x::leaf_with_prot(level, raw, to);
        prop_assert_eq!(S390x::decode(level, new), Entry::Leaf(Leaf { frame, prot: to, young, dirty }));
    }
}

// ------------------------------------------------------------- primitives

/// A slot over a stand-alone word (no table around it: the host stand-ins
/// touch only the word itself).
fn with_slot<R>(raw: u64, level: usize, va: u64, f: impl FnOnce(&PteSlot<'_>) -> R) -> (R, u64) {
    let word = AtomicU64::new(raw);
    // SAFETY: a private word no CPU translates through; nothing else
    // changes it while `slot` lives.
    let slot = unsafe { PteSlot::new(&word, VirtAddr(va), level) };
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

// ------------------------------------------------------------ end to end

#[derive(Default)]
struct Recorder {
    pages: AtomicUsize,
    ranges: AtomicUsize,
    aged: AtomicUsize,
}

impl MmuNotifier for Recorder {
    fn invalidate_page(&self, _addr: VirtAddr) {
        self.pages.fetch_add(1, Ordering::Relaxed);
    }
    fn invalidate_pages(&self, _range: PageRange) {
        self.ranges.fetch_add(1, Ordering::Relaxed);
    }
    fn age_page(&self, _addr: VirtAddr) -> bool {
        self.aged.fetch_add(1, Ordering::Relaxed);
        true
    }
}

#[test]
fn map_translate_and_zap_at_both_ends_of_the_address_space() {
    let arena = Arena::default();
    {
        let mm = AddressSpace::new(&ARCH, &arena).unwrap();
        let root = mm.root();
        // The top page is unreachable through the core's half-open PageRange
        // (its end would be 2^64), though s390x translates it.
        assert!(matches!(
            mm.map(
                VirtAddr(0xffff_ffff_ffff_f000),
                PhysAddr(0x9000),
                Prot::READ
            ),
            Err(Error::OutOfRange { .. })
        ));
        for (va, frame) in [(0x1000u64, 0x8000u64), (0xffff_ffff_ffff_e000, 0x9000)] {
            mm.map(VirtAddr(va), PhysAddr(frame), Prot::WRITE).unwrap();
            let (leaf, level) = mm.translate(VirtAddr(va)).unwrap();
            assert_eq!(
                (leaf.frame, leaf.prot, level),
                (PhysAddr(frame), Prot::READ | Prot::WRITE, PAGE)
            );
            assert_eq!(
                raw_entry(&mm, va, PAGE),
                Some(frame | 0x31),
                "frame | WRITE | READ | PRESENT"
            );
            assert_eq!(
                raw_entry(&mm, va, 0).unwrap() & 0xfff,
                0xc | 0x3,
                "region-first entry: TT=11, TL=3"
            );
            assert_eq!(raw_entry(&mm, va, 1).unwrap() & 0xfff, 0x8 | 0x3);
            assert_eq!(raw_entry(&mm, va, 2).unwrap() & 0xfff, 0x4 | 0x3);
            assert_eq!(
                raw_entry(&mm, va, 3).unwrap() & 0x7ff,
                0,
                "segment entry: page-table origin, TT=00"
            );
        }
        assert_eq!(mm.root(), root);
        assert_eq!(
            raw_entry(&mm, 0x2000, PAGE),
            Some(0x400),
            "a fresh page table is filled with the invalid PTE, not zero"
        );
        assert_eq!(
            raw_entry(&mm, 1 << 53, 0),
            Some(0x2c),
            "a fresh region-first table holds I | TT=11, not zero"
        );

        let mut freed = Vec::new();
        let n = mm
            .zap_range(range(0, 0x4000), &mut |r| freed.push(r.into_frame()))
            .unwrap();
        assert_eq!((n, freed), (1, vec![PhysAddr(0x8000)]));
        assert_eq!(
            raw_entry(&mm, 0x1000, PAGE),
            Some(0x400),
            "zapped: the empty PTE"
        );
        assert_eq!(mm.translate(VirtAddr(0x1000)), None);
        assert!(
            mm.translate(VirtAddr(0xffff_ffff_ffff_e000)).is_some(),
            "the other mapping is untouched"
        );
    }
    assert_eq!(arena.live_tables(), 0);
}

#[test]
fn zap_notifies_each_cleared_page_after_ipte() {
    let arena = Arena::default();
    let mm = AddressSpace::new(&ARCH, &arena).unwrap();
    let sub = pin!(Subscription::new(Recorder::default()));
    mm.notifiers().register(sub.as_ref()).unwrap();
    for i in 0..3u64 {
        mm.map(
            VirtAddr(0x10_0000 + i * 4096),
            PhysAddr(0x20_0000 + i * 4096),
            Prot::WRITE,
        )
        .unwrap();
    }
    let n = mm
        .zap_range(range(0x10_0000, 3 * 4096), &mut |_| {})
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(
        sub.notifier().pages.load(Ordering::Relaxed),
        3,
        "the s390 ptep_clear_flush override must not lose invalidate_page"
    );
    mm.notifiers().unregister(sub.as_ref()).unwrap();
}

#[test]
fn aging_reaches_the_notifiers_even_though_s390_overrides_clear_flush_young() {
    let arena = Arena::default();
    let mm = AddressSpace::new(&ARCH, &arena).unwrap();
    mm.map(VirtAddr(0x5000), PhysAddr(0x6000), Prot::READ)
        .unwrap();
    assert!(
        !mm.clear_flush_young(VirtAddr(0x5000)).unwrap(),
        "a new mapping is old"
    );
    touch(&mm, 0x5000, PAGE);
    assert!(
        mm.clear_flush_young(VirtAddr(0x5000)).unwrap(),
        "accessed since the last call"
    );
    assert!(
        !mm.clear_flush_young(VirtAddr(0x5000)).unwrap(),
        "the reference state was reset"
    );
    assert_eq!(
        raw_entry(&mm, 0x5000, PAGE).unwrap() & 0x400,
        0,
        "aging never invalidates (storage-key design)"
    );

    let sub = pin!(Subscription::new(Recorder::default()));
    mm.notifiers().register(sub.as_ref()).unwrap();
    assert!(
        mm.clear_flush_young(VirtAddr(0x5000)).unwrap(),
        "young because the secondary MMU used it (the 2008 s390 hole)"
    );
    assert_eq!(sub.notifier().aged.load(Ordering::Relaxed), 1);
    mm.notifiers().unregister(sub.as_ref()).unwrap();
}

#[test]
fn huge_segment_map_translate_and_unmap() {
    let arena = Arena::default();
    let mm = AddressSpace::new(&ARCH, &arena).unwrap();
    let va = 0x0123_4560_0000u64 & !(MIB - 1);
    let frame = 0x4030_0000u64;
    mm.map_huge(SEGMENT, VirtAddr(va), PhysAddr(frame), Prot::WRITE)
        .unwrap();
    assert_eq!(
        raw_entry(&mm, va, SEGMENT),
        Some(frame | 0x400 | 0x2 | 0x1),
        "frame | FC | WRITE | READ"
    );
    let (leaf, level) = mm.translate(VirtAddr(va + 0xabcde)).unwrap();
    assert_eq!(
        (leaf.frame, level),
        (PhysAddr(frame), SEGMENT),
        "any address in the segment hits the large leaf"
    );
    assert_eq!(
        mm.map(VirtAddr(va + 4096), PhysAddr(0x1000), Prot::READ),
        Err(Error::PageSizeMismatch { addr: va + 4096 })
    );
    assert_eq!(
        mm.zap_range(range(va, MIB), &mut |_| {}),
        Err(Error::PageSizeMismatch { addr: va })
    );
    assert_eq!(
        mm.map_huge(S390x::REGION_THIRD, VirtAddr(0), PhysAddr(0), Prot::READ),
        Err(Error::HugePagesUnsupported)
    );

    touch(&mm, va, SEGMENT);
    assert!(
        mm.clear_flush_young(VirtAddr(va + 0x5000)).unwrap(),
        "aging a large leaf"
    );

    let sub = pin!(Subscription::new(Recorder::default()));
    mm.notifiers().register(sub.as_ref()).unwrap();
    let mut freed = Vec::new();
    let huge = PageRange::new(VirtAddr(va), VirtAddr(va + 2 * MIB), MIB).unwrap();
    let n = mm
        .unmap_huge_range(SEGMENT, huge, &mut |r| freed.push(r.leaf()))
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(freed[0].frame, PhysAddr(frame));
    assert_eq!(
        raw_entry(&mm, va, SEGMENT),
        Some(0x20),
        "the empty segment entry"
    );
    assert_eq!(sub.notifier().pages.load(Ordering::Relaxed), 1);
    assert_eq!(
        sub.notifier().ranges.load(Ordering::Relaxed),
        1,
        "the whole 1 MiB span is invalidated too"
    );
    mm.notifiers().unregister(sub.as_ref()).unwrap();
    assert_eq!(mm.translate(VirtAddr(va)), None);
}

#[test]
fn change_protection_sets_protect_and_keeps_software_state() {
    let arena = Arena::default();
    let mm = AddressSpace::new(&ARCH, &arena).unwrap();
    for i in 0..4u64 {
        mm.map(
            VirtAddr(0x40_0000 + i * 4096),
            PhysAddr(0x80_0000 + i * 4096),
            Prot::WRITE | Prot::EXEC,
        )
        .unwrap();
    }
    touch(&mm, 0x40_1000, PAGE);
    let n = mm
        .change_protection(range(0x40_0000, 4 * 4096), Prot::READ)
        .unwrap();
    assert_eq!(n, 4);
    for i in 0..4u64 {
        let raw = raw_entry(&mm, 0x40_0000 + i * 4096, PAGE).unwrap();
        assert_eq!(
            raw & 0x600,
            0x200,
            "valid and PROTECT (IBM 54) after mprotect"
        );
        assert_eq!(
            raw & (Pte::WRITE | Pte::SW_EXEC).bits(),
            0,
            "software WRITE and EXEC dropped"
        );
        assert_eq!(raw & !0xfff, 0x80_0000 + i * 4096, "same frame");
    }
    assert_ne!(
        raw_entry(&mm, 0x40_1000, PAGE).unwrap() & Pte::YOUNG.bits(),
        0,
        "young survives the IPTE + store"
    );
    assert_eq!(
        mm.change_protection(range(0x40_0000, 4 * 4096), Prot::READ),
        Ok(0),
        "nothing left to change"
    );
}

#[test]
fn copy_range_cow_write_protects_both_sides() {
    let arena = Arena::default();
    let parent = AddressSpace::new(&ARCH, &arena).unwrap();
    let child = AddressSpace::new(&ARCH, &arena).unwrap();
    parent
        .map(VirtAddr(0x7000), PhysAddr(0xa000), Prot::WRITE)
        .unwrap();
    parent
        .map(VirtAddr(0x8000), PhysAddr(0xb000), Prot::READ)
        .unwrap();
    let sub = pin!(Subscription::new(Recorder::default()));
    parent.notifiers().register(sub.as_ref()).unwrap();
    parent
        .copy_range(&child, range(0x7000, 0x2000), CopyMode::Cow)
        .unwrap();
    for (va, frame) in [(0x7000, 0xa000), (0x8000, 0xb000)] {
        for mm in [&parent, &child] {
            assert_eq!(
                raw_entry(mm, va, PAGE),
                Some(frame | 0x200 | 0x10 | 0x1),
                "COW: frame | PROTECT | READ | PRESENT on both sides"
            );
        }
    }
    assert_eq!(
        sub.notifier().ranges.load(Ordering::Relaxed),
        1,
        "the parent's secondary MMUs hear of the write-protection"
    );
    parent.notifiers().unregister(sub.as_ref()).unwrap();
    assert_eq!(
        parent.copy_range(&child, range(0x7000, 0x1000), CopyMode::Cow),
        Err(Error::AlreadyMapped { addr: 0x7000 })
    );

    let other = AddressSpace::new(&ARCH, &arena).unwrap();
    parent
        .map(VirtAddr(0x9000), PhysAddr(0xc000), Prot::WRITE)
        .unwrap();
    parent
        .copy_range(&other, range(0x9000, 0x1000), CopyMode::Shared)
        .unwrap();
    assert_eq!(
        raw_entry(&parent, 0x9000, PAGE),
        Some(0xc000 | 0x31),
        "shared: the parent keeps write access"
    );
    assert_eq!(raw_entry(&other, 0x9000, PAGE), Some(0xc000 | 0x31));
}

#[test]
fn teardown_clears_every_leaf_and_frees_every_table() {
    let arena = Arena::default();
    {
        let mm = AddressSpace::new(&ARCH, &arena).unwrap();
        mm.map(VirtAddr(0x1000), PhysAddr(0x2000), Prot::WRITE)
            .unwrap();
        mm.map_huge(
            SEGMENT,
            VirtAddr(0x4000_0000),
            PhysAddr(0x10_0000),
            Prot::READ,
        )
        .unwrap();
        mm.map(
            VirtAddr(0x8000_0000_0000_0000),
            PhysAddr(0x3000),
            Prot::READ,
        )
        .unwrap();
        assert!(arena.live_tables() > 5);
        let mut freed = Vec::new();
        mm.teardown(&mut |r| freed.push(r.into_frame())).unwrap();
        freed.sort();
        assert_eq!(
            freed,
            [PhysAddr(0x2000), PhysAddr(0x3000), PhysAddr(0x10_0000)]
        );
        assert_eq!(arena.live_tables(), 1, "only the root is left until drop");
        assert_eq!(
            mm.map(VirtAddr(0x1000), PhysAddr(0x2000), Prot::READ),
            Err(Error::Released)
        );
    }
    assert_eq!(arena.live_tables(), 0);
}

#[test]
fn a_phys_offset_moves_table_access_only() {
    let arch = S390x::with_phys_offset(0x1000);
    assert_eq!(arch.phys_to_virt(PhysAddr(0x2000)) as u64, 0x3000);
    assert_eq!(arch.phys_offset(), 0x1000);
    assert_eq!(S390x::default(), S390x::identity());
}
