//! Bad input gets a typed error and changes nothing, in release builds too
//! (`cargo xtask test` runs this file with `--release` as well): running
//! out of table memory at every allocation point, frames the arch cannot
//! map, and per-page helpers given entries they must not touch.

use std::pin::pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};

use mmu_notifier::{
    ptep_clear_flush_notify, ptep_modify_flush_notify, AddressSpace, Arch, Callbacks, CopyMode,
    Error, Event, InvalidateRange, Level, MmuNotifier, NotifierHead, PageRange, PhysAddr, Prot,
    PteSlot, Subscription, TableMemory, VirtAddr,
};
use mmu_notifier_emu::Emu;

const PAGE: u64 = 4096;
const BASE: u64 = 0x0000_0080_0000_0000;

fn va(page: u64) -> VirtAddr {
    VirtAddr(BASE + page * PAGE)
}

fn pages(first: u64, count: u64) -> PageRange {
    PageRange::from_pages(va(first), count, PAGE).unwrap()
}

/// The emulator's table memory, refusing every allocation from the
/// `fail_at`-th on (counting from 0), and counting what is live.
struct Scarce<'e> {
    emu: &'e Emu,
    fail_at: usize,
    allocated: AtomicUsize,
    live: AtomicUsize,
}

impl<'e> Scarce<'e> {
    fn new(emu: &'e Emu, fail_at: usize) -> Self {
        Self {
            emu,
            fail_at,
            allocated: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
        }
    }
}

// SAFETY: 1.-3. are the emulator's own `TableMemory` promises: this only
// refuses some allocations and counts the rest.
unsafe impl TableMemory for Scarce<'_> {
    fn alloc_table(&self, bytes: usize) -> Option<PhysAddr> {
        if self.allocated.fetch_add(1, SeqCst) >= self.fail_at {
            return None;
        }
        self.live.fetch_add(1, SeqCst);
        self.emu.alloc_table(bytes)
    }
    unsafe fn free_table(&self, pa: PhysAddr, bytes: usize) {
        self.live.fetch_sub(1, SeqCst);
        // SAFETY: our caller's contract, passed on.
        unsafe { self.emu.free_table(pa, bytes) };
    }
    fn phys_to_virt(&self, pa: PhysAddr) -> NonNull<u8> {
        self.emu.phys_to_virt(pa)
    }
}

#[test]
fn new_without_memory_for_the_root_is_out_of_memory_and_nothing_else() {
    let emu = Emu::new(1);
    let none = Scarce::new(&emu, 0);
    let r = AddressSpace::new(&emu, &none);
    assert_eq!(
        r.err(),
        Some(Error::OutOfMemory),
        "no root table: OutOfMemory"
    );
    assert_eq!(
        none.live.load(SeqCst),
        0,
        "nothing was allocated, nothing freed"
    );
}

/// An operation on `mm` (the address space short of memory), with a
/// parent that maps page 0 for `copy_range`.
type Op = fn(
    &Emu,
    &AddressSpace<'_, Emu, Scarce<'_>>,
    &AddressSpace<'_, Emu, Scarce<'_>>,
) -> Result<(), Error>;

/// Every operation that allocates tables, given memory for `budget`
/// tables (the root included), for every budget until it succeeds: each
/// failure is `OutOfMemory`, changed no translation, and every table the
/// address space got is freed when it is dropped.
#[test]
fn running_out_of_table_memory_at_any_point_is_out_of_memory_and_changes_no_translation() {
    let huge = VirtAddr(BASE + (1 << 30));
    let ops: [(&str, Op); 4] = [
        ("map", |emu, mm, _| {
            mm.map(va(0), emu.alloc_frame(), Prot::WRITE)
        }),
        ("map_huge", |emu, mm, _| {
            let f = emu.alloc_contiguous(512, 1 << 21).unwrap();
            mm.map_huge(Level::new(2), VirtAddr(BASE + (1 << 30)), f, Prot::WRITE)
        }),
        ("remap_pfn_range", |emu, mm, _| {
            let f = emu.alloc_contiguous(3, PAGE).unwrap();
            mm.remap_pfn_range(pages(510, 3), f, Prot::WRITE)
        }),
        ("copy_range into it", |_, mm, parent| {
            parent.copy_range(mm, pages(0, 1), CopyMode::Cow)
        }),
    ];
    for (name, op) in ops {
        for budget in 1.. {
            assert!(budget < 16, "{name} never succeeded");
            let emu = Emu::new(1);
            let plenty = Scarce::new(&emu, usize::MAX);
            let parent = AddressSpace::new(&emu, &plenty).unwrap();
            parent.map(va(0), emu.alloc_frame(), Prot::WRITE).unwrap();
            let tight = Scarce::new(&emu, budget);
            let mm = AddressSpace::new(&emu, &tight).unwrap();
            let result = op(&emu, &mm, &parent);
            if result.is_err() {
                assert_eq!(
                    result,
                    Err(Error::OutOfMemory),
                    "{name} with {budget} tables"
                );
                for at in [va(0), va(510), va(511), va(512), huge] {
                    assert_eq!(
                        mm.translate(at),
                        None,
                        "{name} with {budget} tables mapped {at:?}"
                    );
                }
            }
            drop(mm);
            assert_eq!(
                tight.live.load(SeqCst),
                0,
                "{name}: every table is freed on drop"
            );
            if result.is_ok() {
                break;
            }
        }
    }
}

#[test]
fn frames_beyond_the_physical_address_width_are_refused_before_anything_changes() {
    let emu = Emu::new(1);
    let mm = AddressSpace::new(&emu, &emu).unwrap();
    let beyond = PhysAddr(1 << 52);
    let limit = 1 << Emu::PHYS_ADDR_BITS;
    assert_eq!(
        mm.map(va(0), beyond, Prot::READ),
        Err(Error::PhysOutOfRange {
            addr: 1 << 52,
            limit
        }),
        "an entry cannot hold bit 52: mapping it would map another frame"
    );
    assert_eq!(mm.translate(va(0)), None);
    assert_eq!(
        mm.remap_pfn_range(pages(0, 2), PhysAddr(limit - PAGE), Prot::READ),
        Err(Error::PhysOutOfRange {
            addr: limit - PAGE,
            limit
        }),
        "the range's last frame would cross the limit"
    );
    assert_eq!(mm.translate(va(0)), None, "remap changed nothing");
    assert_eq!(
        mm.map_huge(
            Level::new(2),
            VirtAddr(BASE),
            PhysAddr(limit - (1 << 21)),
            Prot::READ
        ),
        Ok(()),
        "the last huge frame below the limit is fine"
    );
}

#[test]
fn levels_that_do_not_exist_are_not_representable() {
    assert_eq!(Level::<Emu>::from_index(Emu::LEVELS.len()), None);
    assert!(Level::<Emu>::from_index(3).is_some_and(|l| l.is_last()));
    assert_eq!(Level::<Emu>::LAST, Level::new(3));
    assert_eq!(
        AddressSpace::new(&Emu::new(1), &Emu::new(1)).map(|mm| mm.map_huge(
            Level::new(1),
            VirtAddr(0),
            PhysAddr(0),
            Prot::READ
        )),
        Ok(Err(Error::HugePagesUnsupported)),
        "a level without leaves is refused"
    );
}

/// A notifier that hears only ranges, and counts them.
#[derive(Default)]
struct RangeOnly(AtomicUsize);

impl MmuNotifier for RangeOnly {
    fn callbacks(&self) -> Callbacks {
        Callbacks::RANGE
    }
    fn invalidate_range_start(&self, _: &InvalidateRange) -> Result<(), mmu_notifier::Again> {
        self.0.fetch_add(1, SeqCst);
        Ok(())
    }
}

/// A kernel with its own walker: one PT-level word, found under its lock.
fn slot<'t>(word: &'t AtomicU64, va: VirtAddr, level: Level<Emu>) -> PteSlot<'t, Emu> {
    let pa = PhysAddr(std::ptr::from_ref(word).addr() as u64);
    // SAFETY: 1. a private word standing for the entry of `level` for `va`,
    // at its own address (no hardware walks it); 2. nobody else touches it.
    unsafe { PteSlot::new(word, pa, va, level) }.unwrap()
}

#[test]
fn a_per_page_helper_frees_nothing_outside_the_announced_range() {
    let emu = Emu::new(1);
    let head = NotifierHead::new();
    let ranges = pin!(Subscription::new(RangeOnly::default()));
    head.register(ranges.as_ref()).unwrap();
    let frame = emu.alloc_frame();
    let leaf = Emu::encode_leaf(Level::LAST, frame, Prot::WRITE);
    let word = AtomicU64::new(leaf);
    let s = slot(&word, va(5), Level::LAST);
    let guard = head.invalidate_range_start(InvalidateRange::new(pages(0, 4), Event::Unmap));
    // SAFETY: 1. nothing runs from the page; 2. `guard` is open on `head`.
    let r = unsafe { ptep_clear_flush_notify(&emu, &guard, &s) };
    assert_eq!(
        r,
        Err(Error::NotAnnounced { addr: va(5).0 }),
        "page 5 is not in [0, 4)"
    );
    assert_eq!(word.load(SeqCst), leaf, "nothing changed");
    // SAFETY: as above.
    let r = unsafe { ptep_modify_flush_notify(&emu, &guard, &s, Prot::READ) };
    assert_eq!(r.err(), Some(Error::NotAnnounced { addr: va(5).0 }));
    assert_eq!(word.load(SeqCst), leaf, "nothing changed");
    guard.end();
    let guard = head.invalidate_range_start(InvalidateRange::new(pages(5, 1), Event::Unmap));
    // SAFETY: as above.
    let r = unsafe { ptep_clear_flush_notify(&emu, &guard, &s) }.map(|f| f.frame());
    assert_eq!(r, Ok(frame), "inside its range the frame comes back");
    assert_eq!(
        ranges.notifier().0.load(SeqCst),
        2,
        "and the range notifier heard of both ranges"
    );
    guard.end();
}

#[test]
fn a_per_page_helper_refuses_a_table_entry_or_an_empty_one() {
    let emu = Emu::new(1);
    let head = NotifierHead::new();
    let table = emu.alloc_frame();
    let entry = Emu::encode_table(Level::new(2), table);
    let word = AtomicU64::new(entry);
    let s = slot(&word, VirtAddr(BASE), Level::new(2));
    let guard = head.invalidate_range_start(InvalidateRange::new(
        PageRange::from_pages(VirtAddr(BASE), 1, 1 << 21).unwrap(),
        Event::Unmap,
    ));
    // SAFETY: 1. nothing runs from there; 2. `guard` is open on `head`.
    let r = unsafe { ptep_clear_flush_notify(&emu, &guard, &s) };
    assert_eq!(
        r,
        Err(Error::NotALeaf { addr: BASE }),
        "a table is not a page"
    );
    assert_eq!(
        word.load(SeqCst),
        entry,
        "the table entry is still there (its table not leaked)"
    );
    let empty = AtomicU64::new(0);
    let s = slot(&empty, VirtAddr(BASE), Level::new(2));
    // SAFETY: as above.
    let r = unsafe { ptep_clear_flush_notify(&emu, &guard, &s) };
    assert_eq!(
        r,
        Err(Error::NotALeaf { addr: BASE }),
        "clearing twice is refused too"
    );
    guard.end();
}

#[test]
fn a_slot_must_be_aligned_to_its_level_and_inside_the_address_space() {
    let word = AtomicU64::new(0);
    let pa = PhysAddr(std::ptr::from_ref(&word).addr() as u64);
    // SAFETY: 1. a private word; 2. nobody else touches it.
    let r = unsafe { PteSlot::<Emu>::new(&word, pa, VirtAddr(BASE + PAGE), Level::new(2)) };
    assert_eq!(
        r.err(),
        Some(Error::Unaligned {
            addr: BASE + PAGE,
            align: 1 << 21
        })
    );
    // SAFETY: as above.
    let r = unsafe { PteSlot::<Emu>::new(&word, pa, VirtAddr(1 << 47), Level::LAST) };
    assert!(
        matches!(r.err(), Some(Error::OutOfRange { .. })),
        "beyond the emulator's 47 bits"
    );
}
