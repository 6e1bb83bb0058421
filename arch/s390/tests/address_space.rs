//! `mmu_notifier_core::AddressSpace<S390x, _>` end to end on the host: the
//! generic walker builds real DAT tables in heap memory, and the tests read
//! the raw entries back; the only place 1 MiB large segments run.

mod common;
use common::*;

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
                raw_entry(&mm, va, Level::new(0)).unwrap() & 0xfff,
                0xc | 0x3,
                "region-first entry: TT=11, TL=3"
            );
            assert_eq!(
                raw_entry(&mm, va, Level::new(1)).unwrap() & 0xfff,
                0x8 | 0x3
            );
            assert_eq!(
                raw_entry(&mm, va, Level::new(2)).unwrap() & 0xfff,
                0x4 | 0x3
            );
            assert_eq!(
                raw_entry(&mm, va, Level::new(3)).unwrap() & 0x7ff,
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
            raw_entry(&mm, 1 << 53, Level::new(0)),
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
                Some(frame | 0x200 | 0x10 | 0x2 | 0x1),
                "COW: frame | PROTECT | READ | COW | PRESENT on both sides"
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
