//! Self-tests of the harness: each case shows that one piece of machinery
//! the conformance tests will rely on is real under QEMU (DAT exceptions
//! reach the probe with the right code and address, IPTE invalidates, a
//! missing IPTE leaves a stale TLB entry, storage keys record references).
//!
//! The page tables here are built by hand with the harness's raw helpers,
//! independent of the code under test elsewhere in the project.

#![no_std]
#![no_main]

use mmu_notifier_kernel_s390x::dat::{
    self, alloc_page_table, alloc_table, pt_index, Level, PTE_INVALID, PTE_PROTECT,
};
use mmu_notifier_kernel_s390x::probe::code;
use mmu_notifier_kernel_s390x::skey::{self, KEY_CHANGE, KEY_REFERENCE};
use mmu_notifier_kernel_s390x::{
    activate, alloc_frame, cases, ensure, entry, ipte, probe_read, probe_write, run_cases, Outcome,
    TEST_WINDOW,
};

entry!(main);

fn main() -> ! {
    run_cases(cases![
        probe_unmapped_faults,
        probe_mapped_reads,
        write_to_protected_faults,
        ipte_invalidates,
        ipte_local_invalidates,
        stale_tlb_without_ipte,
        storage_key_reference_bit,
        storage_key_change_bit,
    ])
}

/// A page in the test window, away from its first region/segment so
/// every index along the walk is non-zero.
const VA: u64 = TEST_WINDOW + (3 << 42) + (5 << 31) + (7 << 20) + (9 << 12);

const OOM: &str = "frame pool exhausted";

fn read_entry(table: u64, index: usize) -> u64 {
    // SAFETY: `table` is a DAT table from the frame pool (identity mapped)
    // and `index` is within it (at most 2047 for region/segment tables,
    // 255 for page tables, by construction of the indices).
    unsafe { (table as *const u64).add(index).read_volatile() }
}

fn write_entry(table: u64, index: usize, value: u64) {
    // SAFETY: as in `read_entry`; the tables belong to this test, and
    // changing a live entry without a flush is exactly what some cases
    // want to observe (the harness keeps no Rust object in the test window).
    unsafe { (table as *mut u64).add(index).write_volatile(value) }
}

/// Makes sure `va` has tables down to a page table in `root` (creating the
/// missing ones, all-invalid) and returns the address of its PTE.
fn pte_slot(root: u64, va: u64) -> Result<u64, &'static str> {
    let mut table = root;
    for (level, lower) in [
        (Level::RegionFirst, Some(Level::RegionSecond)),
        (Level::RegionSecond, Some(Level::RegionThird)),
        (Level::RegionThird, Some(Level::Segment)),
        (Level::Segment, None),
    ] {
        let index = level.index(va);
        let entry = read_entry(table, index);
        table = if entry & dat::TABLE_INVALID == 0 {
            match level {
                Level::Segment => entry & !0x7ff,
                _ => entry & !0xfff,
            }
        } else {
            let next = match lower {
                Some(lower) => alloc_table(lower).ok_or(OOM)?,
                None => alloc_page_table().ok_or(OOM)?,
            };
            write_entry(table, index, level.entry(next));
            next
        };
    }
    Ok(table + 8 * pt_index(va) as u64)
}

/// A fresh address space with `va` mapped to `frame` with `flags`; returns
/// (root, PTE address). Not yet active.
fn space_with_page(va: u64, frame: u64, flags: u64) -> Result<(u64, u64), &'static str> {
    let root = alloc_table(Level::RegionFirst).ok_or(OOM)?;
    let pte = pte_slot(root, va)?;
    write_pte(pte, frame | flags);
    Ok((root, pte))
}

fn write_pte(pte: u64, value: u64) {
    // SAFETY: `pte` is an entry of a page table this test built.
    unsafe { (pte as *mut u64).write_volatile(value) }
}

fn read_pte(pte: u64) -> u64 {
    // SAFETY: as in `write_pte`.
    unsafe { (pte as *const u64).read_volatile() }
}

/// Activates a space built by this file.
fn switch_to(root: u64) {
    // SAFETY: `root` comes from `alloc_table(RegionFirst)` and every entry
    // below it was written by `pte_slot`/`write_pte`: valid DAT tables that
    // stay allocated (the pool never reuses them) for the rest of the run.
    // No Rust reference points into any test window.
    unsafe { activate(root) }
}

/// A frame holding `value` at offset 0 and `!value` at offset 0xff8.
fn frame_with(value: u64) -> Result<u64, &'static str> {
    let frame = alloc_frame().ok_or(OOM)?;
    // SAFETY: a fresh, identity-mapped frame owned by this test.
    unsafe {
        (frame as *mut u64).write_volatile(value);
        ((frame + 0xff8) as *mut u64).write_volatile(!value);
    }
    Ok(frame)
}

fn read_phys(pa: u64) -> u64 {
    // SAFETY: `pa` is in a frame this test allocated (identity mapped).
    unsafe { (pa as *const u64).read_volatile() }
}

fn probe_unmapped_faults() -> Outcome {
    // Nothing at all: region-first entry 1 is invalid.
    let root = alloc_table(Level::RegionFirst).ok_or(OOM)?;
    switch_to(root);
    let f = probe_read(VA)
        .err()
        .ok_or("a read with an invalid region-first entry succeeded")?;
    ensure!(
        f.code == code::REGION_FIRST_TRANSLATION,
        "invalid region-first entry: expected code 0x39: got {:#x}",
        f.code
    );
    ensure!(
        f.addr == VA & !0xfff,
        "region-first fault: TEID does not hold the address: got {:#x}",
        f.addr
    );

    // Tables down to the segment, but this segment's entry invalid.
    let pte = pte_slot(root, VA)?;
    let other_segment = VA + (1 << 20);
    let f = probe_read(other_segment)
        .err()
        .ok_or("a read with an invalid segment entry succeeded")?;
    ensure!(
        f.code == code::SEGMENT_TRANSLATION,
        "invalid segment entry: expected code 0x10: got {:#x}",
        f.code
    );
    ensure!(
        f.addr == other_segment & !0xfff,
        "segment fault: TEID does not hold the address: got {:#x}",
        f.addr
    );

    // A page table whose entry is invalid.
    ensure!(
        read_pte(pte) & PTE_INVALID != 0,
        "a new page table must start invalid"
    );
    let f = probe_read(VA + 0x10)
        .err()
        .ok_or("a read of an invalid PTE succeeded")?;
    ensure!(
        f.code == code::PAGE_TRANSLATION,
        "invalid PTE: expected code 0x11: got {:#x}",
        f.code
    );
    ensure!(
        f.addr == VA,
        "page fault: TEID does not hold the address: got {:#x}",
        f.addr
    );
    Ok(())
}

fn probe_mapped_reads() -> Outcome {
    let value = 0x0123_4567_89ab_cdef;
    let frame = frame_with(value)?;
    let (root, _) = space_with_page(VA, frame, 0)?;
    switch_to(root);
    ensure!(
        dat::lra(VA) == Some(frame),
        "LRAG does not translate VA to the frame: lra {:x?}, frame {frame:#x}",
        dat::lra(VA)
    );
    let got = probe_read(VA).map_err(|_| "a read of a mapped page faulted")?;
    ensure!(
        got == value,
        "the read did not return the frame's first doubleword: got {got:#x}"
    );
    let got = probe_read(VA + 0xff8).map_err(|_| "a read at the end of a mapped page faulted")?;
    ensure!(
        got == !value,
        "the read did not return the frame's last doubleword: got {got:#x}"
    );
    ensure!(
        probe_read(VA + 0x1000).is_err(),
        "the next, unmapped page is readable"
    );
    Ok(())
}

fn write_to_protected_faults() -> Outcome {
    let value = 0x5a5a_0000_0000_a5a5;
    let frame = frame_with(value)?;
    let (root, _) = space_with_page(VA, frame, PTE_PROTECT)?;
    // Control: a writable page next to it takes the store.
    let writable = alloc_frame().ok_or(OOM)?;
    write_pte(pte_slot(root, VA + 0x1000)?, writable);
    switch_to(root);
    probe_write(VA + 0x1000, 42).map_err(|_| "a store to a writable page faulted")?;
    ensure!(
        read_phys(writable) == 42,
        "a store through DAT did not reach the frame"
    );

    let f = probe_write(VA, 1)
        .err()
        .ok_or("a store to a protected page succeeded")?;
    ensure!(
        f.code == code::PROTECTION,
        "store to a protected PTE: expected code 0x04: got {:#x}",
        f.code
    );
    ensure!(
        f.addr == VA,
        "protection fault: TEID does not hold the address: got {:#x}",
        f.addr
    );
    ensure!(
        read_phys(frame) == value,
        "the faulting store modified the frame"
    );
    ensure!(
        probe_read(VA) == Ok(value),
        "a protected page must stay readable"
    );
    Ok(())
}

fn ipte_invalidates() -> Outcome {
    let value = 0x1111_2222_3333_4444;
    let frame = frame_with(value)?;
    let (root, pte) = space_with_page(VA, frame, 0)?;
    switch_to(root);
    ensure!(
        probe_read(VA) == Ok(value),
        "the mapped page is not readable before IPTE"
    );
    // SAFETY: `pte` is the PTE of VA in the active space; nothing refers
    // to VA; a global IPTE is always allowed.
    unsafe { ipte(pte, VA, false) };
    ensure!(
        read_pte(pte) & PTE_INVALID != 0,
        "IPTE did not set the PTE's invalid bit: pte {:#x}",
        read_pte(pte)
    );
    let f = probe_read(VA + 8)
        .err()
        .ok_or("a read after IPTE still succeeded")?;
    ensure!(
        f.code == code::PAGE_TRANSLATION,
        "read after IPTE: expected code 0x11: got {:#x}",
        f.code
    );
    ensure!(
        f.addr == VA,
        "read after IPTE: TEID does not hold the address: got {:#x}",
        f.addr
    );
    Ok(())
}

fn ipte_local_invalidates() -> Outcome {
    let value = 0x4444_3333_2222_1111;
    let frame = frame_with(value)?;
    // The PTE address itself (not the table origin) as R1: IPTE ignores
    // its low 11 bits, as `dat::ipte` documents.
    let (root, pte) = space_with_page(VA, frame, 0)?;
    switch_to(root);
    ensure!(
        probe_read(VA) == Ok(value),
        "the mapped page is not readable before IPTE"
    );
    // SAFETY: as in `ipte_invalidates`; local clearing is allowed because
    // this space is only attached to this CPU.
    unsafe { ipte(pte, VA, true) };
    let f = probe_read(VA)
        .err()
        .ok_or("a read after a local IPTE still succeeded")?;
    ensure!(
        f.code == code::PAGE_TRANSLATION && f.addr == VA,
        "read after local IPTE: expected 0x11 at VA: got {:#x} at {:#x}",
        f.code,
        f.addr
    );
    Ok(())
}

fn stale_tlb_without_ipte() -> Outcome {
    let value = 0x5555_6666_7777_8888;
    let frame = frame_with(value)?;
    let (root, pte) = space_with_page(VA, frame, 0)?;
    switch_to(root);
    ensure!(
        probe_read(VA) == Ok(value),
        "the mapped page is not readable"
    );
    // Invalidate with a plain store: the TLB entry from the read survives.
    write_pte(pte, read_pte(pte) | PTE_INVALID);
    ensure!(
        probe_read(VA) == Ok(value),
        "a read after a plain PTE store faulted: QEMU dropped the stale TLB entry, so a missing flush would go unnoticed"
    );
    // SAFETY: as in `ipte_invalidates`.
    unsafe { ipte(pte, VA, false) };
    let f = probe_read(VA)
        .err()
        .ok_or("a read after IPTE still used the stale entry")?;
    ensure!(
        f.code == code::PAGE_TRANSLATION && f.addr == VA,
        "read after IPTE: expected 0x11 at VA: got {:#x} at {:#x}",
        f.code,
        f.addr
    );
    Ok(())
}

fn storage_key_reference_bit() -> Outcome {
    let value = 0x9999_aaaa_bbbb_cccc;
    let frame = frame_with(value)?;
    let (root, _) = space_with_page(VA, frame, 0)?;
    switch_to(root);
    skey::sske(frame, 0); // R = C = 0
    let cc = skey::rrbe(frame);
    ensure!(
        cc == 0,
        "RRBE right after SSKE 0 must report R0 C0 (cc 0): cc {cc}"
    );
    ensure!(
        probe_read(VA) == Ok(value),
        "the mapped page is not readable"
    );
    let cc = skey::rrbe(frame);
    ensure!(
        cc == 2,
        "RRBE after a read through DAT must report R1 C0 (cc 2): cc {cc}"
    );
    let cc = skey::rrbe(frame);
    ensure!(
        cc == 0,
        "RRBE after a reset must report R0 C0 (cc 0): cc {cc}"
    );
    Ok(())
}

fn storage_key_change_bit() -> Outcome {
    let frame = frame_with(0)?;
    let (root, _) = space_with_page(VA, frame, 0)?;
    switch_to(root);
    skey::sske(frame, 0);
    ensure!(probe_read(VA) == Ok(0), "the mapped page is not readable");
    let key = skey::iske(frame);
    ensure!(
        key & (KEY_REFERENCE | KEY_CHANGE) == KEY_REFERENCE,
        "after a read: R set, C clear: key {key:#x}"
    );
    probe_write(VA, 7).map_err(|_| "a store to a writable page faulted")?;
    let key = skey::iske(frame);
    ensure!(
        key & KEY_CHANGE != 0,
        "a store through DAT must set the change bit: key {key:#x}"
    );
    Ok(())
}
