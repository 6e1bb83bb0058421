//! `mmu_notifier_core::AddressSpace<X86_64, _>` end to end on the host: the
//! generic walker builds real x86-64 tables in heap pages (the "physical
//! address" of a table is its pointer, which the arena's `phys_to_virt`
//! returns), and the tests read the raw entries back.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use mmu_notifier_core::{
    AddressSpace, Arch, CopyMode, Entry, Error, Leaf, Level, MmuNotifier, PageRange, PhysAddr,
    Prot, Subscription, TableMemory, VirtAddr,
};
use mmu_notifier_x86::{PteFlags, ADDR_MASK, X86_64};

const PT: Level<X86_64> = X86_64::PT;
const PD: Level<X86_64> = X86_64::PD;
const PAGE: u64 = 4096;
const HUGE: u64 = X86_64::HUGE_PAGE_SIZE;
const P: u64 = PteFlags::PRESENT.bits();
const W: u64 = PteFlags::WRITABLE.bits();
const U: u64 = PteFlags::USER.bits();
const A: u64 = PteFlags::ACCESSED.bits();
const D: u64 = PteFlags::DIRTY.bits();
const PS: u64 = PteFlags::HUGE_PAGE.bits();
const NX: u64 = PteFlags::NO_EXECUTE.bits();
const COW: u64 = mmu_notifier_x86::COPY_ON_WRITE.bits();

// SAFETY: host tables: no CPU walks them, so there is nothing to flush
// anywhere.
static ARCH: X86_64 = unsafe { X86_64::local_only() };

/// One 4 KiB table page.
#[repr(C, align(4096))]
struct Page([u64; 512]);

/// Table memory from the heap; counts what is live so leaks show.
#[derive(Default)]
struct Arena {
    live: Mutex<Vec<usize>>,
}

impl Arena {
    fn live(&self) -> usize {
        self.live.lock().unwrap().len()
    }
}

// SAFETY: 1. each table is a fresh 4096-aligned heap page owned by the arena
// until `free_table`; 2. its "physical address" is its address (provenance
// exposed here), which `phys_to_virt` maps back to the page; 3. no hardware
// walker reads host tables.
unsafe impl TableMemory for Arena {
    fn phys_to_virt(&self, pa: PhysAddr) -> std::ptr::NonNull<u8> {
        std::ptr::NonNull::new(std::ptr::with_exposed_provenance_mut(pa.0 as usize)).unwrap()
    }

    fn alloc_table(&self, bytes: usize) -> Option<PhysAddr> {
        assert_eq!(bytes, 4096, "x86-64 tables are 4 KiB");
        let addr = Box::into_raw(Box::new(Page([0; 512]))).expose_provenance();
        self.live.lock().unwrap().push(addr);
        Some(PhysAddr(addr as u64))
    }

    unsafe fn free_table(&self, pa: PhysAddr, bytes: usize) {
        assert_eq!(bytes, 4096);
        let mut live = self.live.lock().unwrap();
        let i = live
            .iter()
            .position(|&a| a as u64 == pa.0)
            .expect("freeing a table the arena did not hand out");
        live.swap_remove(i);
        // SAFETY: allocated above by Box::into_raw and now given back.
        drop(unsafe {
            Box::from_raw(std::ptr::with_exposed_provenance_mut::<Page>(pa.0 as usize))
        });
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        for addr in self.live.get_mut().unwrap().drain(..) {
            // SAFETY: still owned by the arena; nothing uses it any more.
            drop(unsafe { Box::from_raw(std::ptr::with_exposed_provenance_mut::<Page>(addr)) });
        }
    }
}

/// Reads the raw entry of `level` translating `va`, by walking the tables
/// by hand (independently of the generic walker).
fn raw_entry(mm: &AddressSpace<'_, X86_64, Arena>, va: u64, level: Level<X86_64>) -> Option<u64> {
    let level = level.index();
    let mut table = mm.root().0;
    for l in 0..=level {
        let idx = X86_64::LEVELS[l].index(VirtAddr(va));
        let ptr = std::ptr::with_exposed_provenance::<AtomicU64>(table as usize);
        // SAFETY: `table` is a live table of `mm` (the walk only follows
        // present table entries), 512 words long.
        let raw = unsafe { &*ptr.add(idx) }.load(Ordering::Acquire);
        if l == level {
            return Some(raw);
        }
        if raw & P == 0 {
            return None;
        }
        assert_eq!(
            raw & !ADDR_MASK,
            P | W | U,
            "an upper-level table entry must be P|W|U only"
        );
        table = raw & ADDR_MASK;
    }
    unreachable!()
}

/// Sets hardware bits in a live entry, as a CPU walker would.
fn hw_set(mm: &AddressSpace<'_, X86_64, Arena>, va: u64, level: Level<X86_64>, bits: u64) {
    let level = level.index();
    let mut table = mm.root().0;
    for l in 0..level {
        let ptr = std::ptr::with_exposed_provenance::<AtomicU64>(table as usize);
        // SAFETY: as in raw_entry.
        table = unsafe { &*ptr.add(X86_64::LEVELS[l].index(VirtAddr(va))) }.load(Ordering::Acquire)
            & ADDR_MASK;
    }
    let ptr = std::ptr::with_exposed_provenance::<AtomicU64>(table as usize);
    // SAFETY: as in raw_entry; a locked OR, like the hardware's A/D update.
    unsafe { &*ptr.add(X86_64::LEVELS[level].index(VirtAddr(va))) }
        .fetch_or(bits, Ordering::AcqRel);
}

fn range(start: u64, len: u64) -> PageRange {
    PageRange::new(VirtAddr(start), VirtAddr(start + len), PAGE).unwrap()
}

#[test]
fn map_writes_a_user_leaf_and_permissive_tables() {
    let arena = Arena::default();
    let mm = AddressSpace::new(&ARCH, &arena).unwrap();
    mm.map(
        VirtAddr(0x40_1000),
        PhysAddr(0x1234_5000),
        Prot::WRITE | Prot::USER,
    )
    .unwrap();
    assert_eq!(
        raw_entry(&mm, 0x40_1000, PT),
        Some(0x1234_5000 | P | W | U | NX)
    );
    assert_eq!(arena.live(), 4, "root + PDPT + PD + PT");
    mm.map(VirtAddr(0x40_2000), PhysAddr(0x9000), Prot::EXEC)
        .unwrap();
    assert_eq!(
        raw_entry(&mm, 0x40_2000, PT),
        Some(0x9000 | P),
        "read-only, kernel, executable"
    );
    assert_eq!(arena.live(), 4, "same PT");
}

#[test]
fn translate_reads_back_frame_prot_and_level() {
    let arena = Arena::default();
    let mm = AddressSpace::new(&ARCH, &arena).unwrap();
    mm.map(VirtAddr(0x7fff_ffff_f000), PhysAddr(0x5000), Prot::USER)
        .unwrap();
    assert_eq!(
        mm.translate(VirtAddr(0x7fff_ffff_f000)),
        Some((
            Leaf {
                frame: PhysAddr(0x5000),
                prot: Prot::USER,
                young: false,
                dirty: false,
                cow: false,
            },
            PT
        ))
    );
    hw_set(&mm, 0x7fff_ffff_f000, PT, A | D);
    let (leaf, _) = mm.translate(VirtAddr(0x7fff_ffff_f000)).unwrap();
    assert!(
        leaf.young && leaf.dirty,
        "hardware A/D must read as young/dirty"
    );
    assert_eq!(mm.translate(VirtAddr(0x7fff_ffff_e000)), None);
    assert_eq!(
        mm.translate(VirtAddr(0xffff_8000_0000_0000)),
        None,
        "kernel half is not ours"
    );
}

#[test]
fn map_refuses_addresses_outside_the_user_half() {
    let arena = Arena::default();
    let mm = AddressSpace::new(&ARCH, &arena).unwrap();
    assert_eq!(
        mm.map(
            VirtAddr(0xffff_8000_0000_0000),
            PhysAddr(0x1000),
            Prot::READ
        ),
        Err(Error::OutOfRange {
            addr: 0xffff_8000_0000_0000,
            limit: 0x0000_8000_0000_0000
        })
    );
    assert_eq!(
        mm.map(
            VirtAddr(0x0000_8000_0000_0000),
            PhysAddr(0x1000),
            Prot::READ
        ),
        Err(Error::NonCanonical {
            addr: 0x0000_8000_0000_0000
        })
    );
    assert_eq!(arena.live(), 1, "a refused map allocates no table");
}

#[test]
fn zap_clears_entries_and_returns_frames_with_final_dirty_state() {
    let arena = Arena::default();
    let mm = AddressSpace::new(&ARCH, &arena).unwrap();
    for i in 0..4 {
        mm.map(
            VirtAddr(0x10_0000 + i * PAGE),
            PhysAddr(0x80_0000 + i * PAGE),
            Prot::WRITE | Prot::USER,
        )
        .unwrap();
    }
    hw_set(&mm, 0x10_1000, PT, A | D);
    let mut freed = Vec::new();
    let n = mm
        .zap_range(range(0x10_1000, 2 * PAGE), &mut |r| {
            freed.push((r.frame(), r.leaf().dirty))
        })
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        freed,
        [(PhysAddr(0x80_1000), true), (PhysAddr(0x80_2000), false)]
    );
    assert_eq!(
        raw_entry(&mm, 0x10_1000, PT),
        Some(0),
        "a zapped entry is 0"
    );
    assert_eq!(raw_entry(&mm, 0x10_2000, PT), Some(0));
    assert_eq!(
        raw_entry(&mm, 0x10_0000, PT),
        Some(0x80_0000 | P | W | U | NX),
        "outside the range: untouched"
    );
    assert_eq!(
        raw_entry(&mm, 0x10_3000, PT),
        Some(0x80_3000 | P | W | U | NX)
    );
}

#[test]
fn map_huge_at_the_pd_writes_a_2m_leaf_with_ps() {
    let arena = Arena::default();
    let mm = AddressSpace::new(&ARCH, &arena).unwrap();
    mm.map_huge(
        PD,
        VirtAddr(0x4000_0000),
        PhysAddr(0x1_0020_0000),
        Prot::WRITE | Prot::EXEC | Prot::USER,
    )
    .unwrap();
    assert_eq!(
        raw_entry(&mm, 0x4000_0000, PD),
        Some(0x1_0020_0000 | P | W | U | PS)
    );
    assert_eq!(arena.live(), 3, "root + PDPT + PD, no PT");
    let (leaf, level) = mm.translate(VirtAddr(0x4000_0000 + HUGE - PAGE)).unwrap();
    assert_eq!(
        (leaf.frame, level),
        (PhysAddr(0x1_0020_0000), PD),
        "the whole 2 MiB translates through one leaf"
    );
    assert_eq!(
        mm.map(VirtAddr(0x4000_1000), PhysAddr(0x1000), Prot::READ),
        Err(Error::PageSizeMismatch { addr: 0x4000_1000 }),
        "no 4 KiB page inside a huge one"
    );
}

#[test]
fn map_huge_needs_2m_alignment_and_refuses_1g_and_pt_levels() {
    let arena = Arena::default();
    let mm = AddressSpace::new(&ARCH, &arena).unwrap();
    assert_eq!(
        mm.map_huge(PD, VirtAddr(0x4000_1000), PhysAddr(0x20_0000), Prot::READ),
        Err(Error::Unaligned {
            addr: 0x4000_1000,
            align: HUGE
        })
    );
    assert_eq!(
        mm.map_huge(PD, VirtAddr(0x4000_0000), PhysAddr(0x20_1000), Prot::READ),
        Err(Error::Unaligned {
            addr: 0x20_1000,
            align: HUGE
        })
    );
    assert_eq!(
        mm.map_huge(
            X86_64::PDPT,
            VirtAddr(0x4000_0000),
            PhysAddr(0x4000_0000),
            Prot::READ
        ),
        Err(Error::HugePagesUnsupported),
        "1 GiB pages are not offered"
    );
    assert_eq!(
        mm.map_huge(PT, VirtAddr(0), PhysAddr(0), Prot::READ),
        Err(Error::HugePagesUnsupported)
    );
}

#[test]
fn unmap_huge_range_clears_2m_leaves() {
    let arena = Arena::default();
    let mm = AddressSpace::new(&ARCH, &arena).unwrap();
    mm.map_huge(
        PD,
        VirtAddr(0x4000_0000),
        PhysAddr(0x20_0000),
        Prot::WRITE | Prot::USER,
    )
    .unwrap();
    mm.map_huge(PD, VirtAddr(0x4020_0000), PhysAddr(0x60_0000), Prot::USER)
        .unwrap();
    hw_set(&mm, 0x4000_0000, PD, A | D);
    let huge_range = PageRange::new(VirtAddr(0x4000_0000), VirtAddr(0x4040_0000), HUGE).unwrap();
    assert_eq!(
        mm.zap_range(huge_range, &mut |_| panic!("nothing may be freed")),
        Err(Error::PageSizeMismatch { addr: 0x4000_0000 }),
        "base-page zap refuses huge pages"
    );
    let mut freed = Vec::new();
    let n = mm
        .unmap_huge_range(PD, huge_range, &mut |r| {
            freed.push((r.frame(), r.leaf().dirty))
        })
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        freed,
        [(PhysAddr(0x20_0000), true), (PhysAddr(0x60_0000), false)]
    );
    assert_eq!(raw_entry(&mm, 0x4000_0000, PD), Some(0));
    assert_eq!(raw_entry(&mm, 0x4020_0000, PD), Some(0));
    assert_eq!(mm.translate(VirtAddr(0x4000_0000)), None);
}

#[test]
fn change_protection_rewrites_permission_bits_only() {
    let arena = Arena::default();
    let mm = AddressSpace::new(&ARCH, &arena).unwrap();
    mm.map(
        VirtAddr(0x20_0000),
        PhysAddr(0xa000),
        Prot::WRITE | Prot::USER,
    )
    .unwrap();
    mm.map(VirtAddr(0x20_1000), PhysAddr(0xb000), Prot::USER)
        .unwrap();
    hw_set(&mm, 0x20_0000, PT, A | D | PteFlags::SOFTWARE_9.bits());
    let n = mm
        .change_protection(range(0x20_0000, 2 * PAGE), Prot::USER)
        .unwrap();
    assert_eq!(n, 1, "only the writable page changes");
    assert_eq!(
        raw_entry(&mm, 0x20_0000, PT),
        Some(0xa000 | P | U | A | D | NX | PteFlags::SOFTWARE_9.bits()),
        "write-protected; frame, A, D and software bits kept"
    );
    assert_eq!(raw_entry(&mm, 0x20_1000, PT), Some(0xb000 | P | U | NX));
    let n = mm
        .change_protection(range(0x20_0000, 2 * PAGE), Prot::USER | Prot::EXEC)
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        raw_entry(&mm, 0x20_1000, PT),
        Some(0xb000 | P | U),
        "executable: NX cleared"
    );
}

#[test]
fn cow_copy_write_protects_parent_and_maps_child_read_only() {
    let arena = Arena::default();
    let parent = AddressSpace::new(&ARCH, &arena).unwrap();
    let child = AddressSpace::new(&ARCH, &arena).unwrap();
    parent
        .map(
            VirtAddr(0x30_0000),
            PhysAddr(0xc000),
            Prot::WRITE | Prot::USER,
        )
        .unwrap();
    parent
        .map(
            VirtAddr(0x30_1000),
            PhysAddr(0xd000),
            Prot::USER | Prot::EXEC,
        )
        .unwrap();
    hw_set(&parent, 0x30_0000, PT, A | D);
    parent
        .copy_range(&child, range(0x30_0000, 2 * PAGE), CopyMode::Cow)
        .unwrap();
    assert_eq!(
        raw_entry(&parent, 0x30_0000, PT),
        Some(0xc000 | P | U | NX | A | D | COW),
        "parent write-protected and marked copy-on-write, A/D kept"
    );
    assert_eq!(
        raw_entry(&parent, 0x30_1000, PT),
        Some(0xd000 | P | U | COW),
        "read-only parent entry: permissions untouched, marked copy-on-write (its frame is shared now)"
    );
    assert_eq!(
        raw_entry(&child, 0x30_0000, PT),
        Some(0xc000 | P | U | NX | COW),
        "child: same frame, read-only, clean, copy-on-write"
    );
    assert_eq!(raw_entry(&child, 0x30_1000, PT), Some(0xd000 | P | U | COW));
}

#[test]
fn shared_copy_keeps_permissions_on_both_sides() {
    let arena = Arena::default();
    let parent = AddressSpace::new(&ARCH, &arena).unwrap();
    let child = AddressSpace::new(&ARCH, &arena).unwrap();
    parent
        .map(
            VirtAddr(0x30_0000),
            PhysAddr(0xc000),
            Prot::WRITE | Prot::USER,
        )
        .unwrap();
    parent
        .copy_range(&child, range(0x30_0000, PAGE), CopyMode::Shared)
        .unwrap();
    assert_eq!(
        raw_entry(&parent, 0x30_0000, PT),
        Some(0xc000 | P | W | U | NX)
    );
    assert_eq!(
        raw_entry(&child, 0x30_0000, PT),
        Some(0xc000 | P | W | U | NX)
    );
    assert_eq!(
        parent.copy_range(&parent, range(0x30_0000, PAGE), CopyMode::Shared),
        Err(Error::SameAddressSpace)
    );
}

#[test]
fn remap_pfn_range_maps_consecutive_frames() {
    let arena = Arena::default();
    let mm = AddressSpace::new(&ARCH, &arena).unwrap();
    mm.remap_pfn_range(
        range(0x50_0000, 3 * PAGE),
        PhysAddr(0xfee0_0000),
        Prot::WRITE,
    )
    .unwrap();
    for i in 0..3 {
        assert_eq!(
            raw_entry(&mm, 0x50_0000 + i * PAGE, PT),
            Some((0xfee0_0000 + i * PAGE) | P | W | NX)
        );
    }
}

/// Counts secondary-MMU callbacks; reports every page young.
#[derive(Default)]
struct Secondary {
    aged: AtomicUsize,
    invalidated: AtomicUsize,
    young: AtomicBool,
}

impl MmuNotifier for Secondary {
    fn age_page(&self, _addr: VirtAddr) -> bool {
        self.aged.fetch_add(1, Ordering::Relaxed);
        self.young.load(Ordering::Relaxed)
    }
    fn invalidate_page(&self, _addr: VirtAddr) {
        self.invalidated.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn aging_clears_accessed_and_still_asks_the_secondary_mmu() {
    let arena = Arena::default();
    let mm = AddressSpace::new(&ARCH, &arena).unwrap();
    let sub = pin!(Subscription::new(Secondary::default()));
    mm.notifiers().register(sub.as_ref()).unwrap();
    mm.map(
        VirtAddr(0x60_0000),
        PhysAddr(0xe000),
        Prot::WRITE | Prot::USER,
    )
    .unwrap();
    hw_set(&mm, 0x60_0000, PT, A | D);

    assert!(
        mm.clear_flush_young(VirtAddr(0x60_0000)).unwrap(),
        "CPU-accessed page is young"
    );
    assert_eq!(
        raw_entry(&mm, 0x60_0000, PT),
        Some(0xe000 | P | W | U | NX | D),
        "A cleared, D kept"
    );
    assert_eq!(
        sub.notifier().aged.load(Ordering::Relaxed),
        1,
        "x86's no-flush override must not skip age_page"
    );

    assert!(
        !mm.clear_flush_young(VirtAddr(0x60_0000)).unwrap(),
        "untouched since: old"
    );
    sub.notifier().young.store(true, Ordering::Relaxed);
    assert!(
        mm.clear_flush_young(VirtAddr(0x60_0000)).unwrap(),
        "young in the secondary MMU counts"
    );
    assert_eq!(sub.notifier().aged.load(Ordering::Relaxed), 3);

    let _ = mm.zap_range(range(0x60_0000, PAGE), &mut |_| {}).unwrap();
    assert_eq!(sub.notifier().invalidated.load(Ordering::Relaxed), 1);
    mm.notifiers().unregister(sub.as_ref()).unwrap();
}

#[test]
fn aging_a_huge_page_clears_its_accessed_bit() {
    let arena = Arena::default();
    let mm = AddressSpace::new(&ARCH, &arena).unwrap();
    mm.map_huge(PD, VirtAddr(0x4000_0000), PhysAddr(0x20_0000), Prot::USER)
        .unwrap();
    hw_set(&mm, 0x4000_0000, PD, A);
    assert!(mm.clear_flush_young(VirtAddr(0x4000_3000)).unwrap());
    assert_eq!(
        raw_entry(&mm, 0x4000_0000, PD),
        Some(0x20_0000 | P | U | PS | NX)
    );
}

#[test]
fn teardown_returns_every_frame_and_frees_every_table() {
    let arena = Arena::default();
    {
        let mm = AddressSpace::new(&ARCH, &arena).unwrap();
        mm.map(VirtAddr(0x1000), PhysAddr(0x1000), Prot::USER)
            .unwrap();
        mm.map(VirtAddr(0x7fff_ffff_f000), PhysAddr(0x2000), Prot::USER)
            .unwrap();
        mm.map_huge(PD, VirtAddr(0x4000_0000), PhysAddr(0x20_0000), Prot::USER)
            .unwrap();
        let mut freed = Vec::new();
        mm.teardown(&mut |r| freed.push(r.into_frame())).unwrap();
        freed.sort();
        assert_eq!(
            freed,
            [PhysAddr(0x1000), PhysAddr(0x2000), PhysAddr(0x20_0000)]
        );
        assert_eq!(arena.live(), 1, "only the root is left until drop");
        assert_eq!(
            mm.map(VirtAddr(0x1000), PhysAddr(0x1000), Prot::USER),
            Err(Error::Released)
        );
    }
    assert_eq!(arena.live(), 0, "dropping the address space frees the root");
}

#[test]
fn decode_of_what_the_walker_wrote_matches_entry_kinds() {
    let arena = Arena::default();
    let mm = AddressSpace::new(&ARCH, &arena).unwrap();
    mm.map(VirtAddr(0x1000), PhysAddr(0x3000), Prot::READ)
        .unwrap();
    for level in (0..PT.index()).map(Level::<X86_64>::new) {
        assert!(
            matches!(
                X86_64::decode(level, raw_entry(&mm, 0x1000, level).unwrap()),
                Entry::Table(_)
            ),
            "level {level:?}"
        );
    }
    assert!(matches!(
        X86_64::decode(PT, raw_entry(&mm, 0x1000, PT).unwrap()),
        Entry::Leaf(_)
    ));
}

#[test]
fn frames_at_or_above_2_pow_52_are_refused_in_release_builds_too() {
    let arena = Arena::default();
    let mm = AddressSpace::new(&ARCH, &arena).unwrap();
    for frame in [1u64 << 52, !0xfff] {
        assert_eq!(
            mm.map(VirtAddr(0x40_0000), PhysAddr(frame), Prot::READ),
            Err(Error::PhysOutOfRange {
                addr: frame,
                limit: 1 << 52
            }),
            "the address field holds 52 bits: {frame:#x} would map another frame"
        );
    }
    assert_eq!(
        mm.translate(VirtAddr(0x40_0000)),
        None,
        "nothing was mapped"
    );
    assert_eq!(
        mm.map_huge(
            PD,
            VirtAddr(0x4000_0000),
            PhysAddr((1 << 52) - HUGE / 2),
            Prot::READ
        ),
        Err(Error::Unaligned {
            addr: (1 << 52) - HUGE / 2,
            align: HUGE
        })
    );
    mm.map(VirtAddr(0x40_0000), PhysAddr((1 << 52) - PAGE), Prot::READ)
        .expect("the last frame below 2^52 maps");
}
