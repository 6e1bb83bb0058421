//! What the reference address space's call sites guarantee besides telling
//! the notifiers: a copy-on-write frame never becomes writable in place, a
//! released address space changes no more, two address spaces copying
//! into each other never deadlock, and a dropped flush obligation still
//! flushes.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mmu_notifier::{
    AddressSpace, Arch, CopyMode, Error, Level, PageRange, PhysAddr, Prot, PteSlot, VirtAddr,
};
use mmu_notifier_emu::{Emu, Fault};

const PAGE: u64 = 4096;
const BASE: u64 = 0x0000_0080_0000_0000;

fn va(page: u64) -> VirtAddr {
    VirtAddr(BASE + page * PAGE)
}

fn pages(first: u64, count: u64) -> PageRange {
    PageRange::from_pages(va(first), count, PAGE).unwrap()
}

#[test]
fn mprotect_to_writable_keeps_copy_on_write_frames_read_only() {
    let emu = Emu::new(1);
    let parent = AddressSpace::new(&emu, &emu).unwrap();
    let child = AddressSpace::new(&emu, &emu).unwrap();
    let frame = emu.alloc_frame();
    emu.write_phys(frame, 0x600d);
    parent.map(va(0), frame, Prot::WRITE).unwrap();
    parent
        .copy_range(&child, pages(0, 1), CopyMode::Cow)
        .unwrap();

    for mm in [&parent, &child] {
        let changed = mm.change_protection(pages(0, 1), Prot::WRITE | Prot::EXEC);
        assert_eq!(changed, Ok(1), "the execute permission is granted");
        let (leaf, _) = mm.translate(va(0)).unwrap();
        assert!(
            !leaf.prot.writable() && leaf.cow,
            "a shared copy-on-write frame must stay read-only: {leaf:?}"
        );
        emu.activate(0, mm.root());
        assert_eq!(
            emu.write(0, va(0), 0xbad),
            Err(Fault::Protection),
            "a write must fault (and copy), not reach the other side's frame"
        );
    }
    assert_eq!(
        emu.read_phys(frame),
        0x600d,
        "the shared frame is untouched"
    );

    // A page that was never shared still becomes writable.
    let private = emu.alloc_frame();
    parent.map(va(1), private, Prot::READ).unwrap();
    assert_eq!(parent.change_protection(pages(1, 1), Prot::WRITE), Ok(1));
    emu.activate(0, parent.root());
    assert_eq!(
        emu.write(0, va(1), 7),
        Ok(()),
        "an upgrade is flushed and holds"
    );
}

#[test]
fn an_address_space_whose_notifiers_were_released_changes_no_more() {
    let emu = Emu::new(1);
    let mm = AddressSpace::new(&emu, &emu).unwrap();
    mm.map(va(0), emu.alloc_frame(), Prot::WRITE).unwrap();
    mm.notifiers().release().unwrap();
    assert!(mm.is_released());
    assert_eq!(
        mm.map(va(1), emu.alloc_frame(), Prot::WRITE),
        Err(Error::Released),
        "no notifier would hear of the change"
    );
    assert_eq!(mm.zap_range(pages(0, 1), &mut |_| {}), Err(Error::Released));
    assert_eq!(
        mm.change_protection(pages(0, 1), Prot::READ),
        Err(Error::Released)
    );
    let mut freed = 0;
    assert_eq!(
        mm.teardown(&mut |_| freed += 1),
        Ok(()),
        "teardown still frees"
    );
    assert_eq!(freed, 1);
    assert_eq!(mm.teardown(&mut |_| {}), Err(Error::Released), "once");
}

#[test]
fn copy_ranges_between_two_address_spaces_in_both_directions_never_deadlock() {
    const ROUNDS: usize = if cfg!(miri) { 20 } else { 200_000 };
    let emu: &'static Emu = Box::leak(Box::new(Emu::new(1)));
    let a: &'static AddressSpace<'static, Emu, Emu> =
        Box::leak(Box::new(AddressSpace::new(emu, emu).unwrap()));
    let b: &'static AddressSpace<'static, Emu, Emu> =
        Box::leak(Box::new(AddressSpace::new(emu, emu).unwrap()));
    let done = Arc::new(AtomicUsize::new(0));
    for (from, into) in [(a, b), (b, a)] {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            for _ in 0..ROUNDS {
                let _ = from.copy_range(into, pages(0, 1), CopyMode::Shared);
            }
            done.fetch_add(1, SeqCst);
        });
    }
    let started = Instant::now();
    while done.load(SeqCst) < 2 && started.elapsed() < Duration::from_secs(60) {
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        done.load(SeqCst),
        2,
        "a.copy_range(b) racing b.copy_range(a) deadlocked (locks taken in opposite orders)"
    );
}

#[test]
fn a_dropped_flush_obligation_still_flushes() {
    let emu = Emu::new(1);
    let mm = AddressSpace::new(&emu, &emu).unwrap();
    let frame = emu.alloc_frame();
    mm.map(va(0), frame, Prot::WRITE).unwrap();
    emu.activate(0, mm.root());
    assert_eq!(emu.read(0, va(0)), Ok(0), "the CPU caches the translation");
    // A kernel walker's entry: read the root's table chain by hand.
    let word = leaf_word(&emu, &mm, va(0));
    let pa = PhysAddr(std::ptr::from_ref(word).addr() as u64);
    // SAFETY: 1. the live PT entry of `va(0)` at its own (host) address;
    // 2. no other code changes `mm` meanwhile.
    let slot = unsafe { PteSlot::new(word, pa, va(0), Level::LAST) }.unwrap();
    // SAFETY: a valid leaf; nothing runs from it.
    let pending = unsafe { emu.ptep_get_and_clear(&slot) };
    drop(pending);
    assert_eq!(
        emu.read(0, va(0)),
        Err(Fault::NotMapped),
        "dropping a PendingFlush purges the CPU TLB"
    );
}

/// The PT-level word of `va` in `mm`, walked by hand.
fn leaf_word<'m>(emu: &Emu, mm: &'m AddressSpace<'_, Emu, Emu>, va: VirtAddr) -> &'m AtomicU64 {
    let _ = emu;
    let mut table = mm.root().0;
    for level in (0..Emu::LEVELS.len()).map(Level::<Emu>::new) {
        let at = table + level.index_of(va) as u64 * 8;
        // SAFETY: a word of a live table of `mm` (host memory at its
        // address), which outlives `'m`.
        let word = unsafe { &*std::ptr::with_exposed_provenance::<AtomicU64>(at as usize) };
        if level.is_last() {
            return word;
        }
        table = word.load(SeqCst) & 0x000f_ffff_ffff_f000;
    }
    unreachable!()
}
