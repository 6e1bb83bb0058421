//! The harness's own tests: they show that faults, the accessed and dirty
//! bits, write protection and the TLB are real, so that later suites can
//! trust a probe's answer.
#![no_std]
#![no_main]

use mmu_notifier_kernel_x86_64::{
    self as h, alloc_frame, cases, ensure, fail, free_frame, invlpg, probe_read, probe_write, pte,
    Accel, Outcome, TestSpace, PF_PRESENT, PF_WRITE, TEST_WINDOW,
};

h::entry!(main);

fn main() -> ! {
    h::println!(
        "selftest: command line {:?}, accelerator {:?}",
        h::cmdline(),
        h::accel()
    );
    h::run_cases(cases![
        probe_unmapped_faults,
        probe_noncanonical_faults,
        probe_mapped_reads,
        write_to_readonly_faults,
        stale_tlb_without_invlpg,
        frames_are_zeroed_and_recycled,
    ])
}

/// A value unlikely to be in memory by chance.
const MAGIC: u64 = 0x5eed_cafe_f00d_d00d;

/// One data frame, holding `MAGIC` in its first word, mapped at `va` in a
/// fresh address space with the leaf flags `flags`; calls `body` with the
/// space, then frees everything (space first, so no translation outlives the
/// frame).
fn with_one_page(va: u64, flags: u64, body: impl FnOnce(&TestSpace) -> Outcome) -> Outcome {
    let Some(frame) = alloc_frame() else {
        fail!("out of frames")
    };
    // SAFETY: a fresh frame, identity-mapped, ours alone.
    unsafe { (frame as *mut u64).write_volatile(MAGIC) };
    let outcome = match TestSpace::new() {
        Some(space) => {
            // SAFETY: the frame is freed only after `space` is dropped (end
            // of this arm); no Rust reference covers it.
            match unsafe { space.map_4k(va, frame, flags) } {
                Ok(_) => body(&space),
                Err(e) => Err(e.into()),
            }
        }
        None => Err("out of frames".into()),
    };
    // SAFETY: 1. from `alloc_frame`; 2. freed here only; 3. the space that
    // mapped it is dropped and was switched away from (CR3 reload), so
    // nothing maps or caches it any more.
    unsafe { free_frame(frame) };
    outcome
}

fn probe_unmapped_faults() -> Outcome {
    let va = TEST_WINDOW + 0x3000;
    match probe_read(va) {
        Ok(v) => fail!("read of unmapped {va:#x} returned {v:#x}"),
        Err(f) => ensure!(
            f.is_page_fault(va, 0),
            "read of unmapped {va:#x}: expected #PF code 0, got {f}"
        ),
    }
    match probe_write(va + 8, 1) {
        Ok(()) => fail!("write to unmapped {:#x} succeeded", va + 8),
        Err(f) => ensure!(
            f.is_page_fault(va + 8, PF_WRITE),
            "write to unmapped: expected #PF code 2, got {f}"
        ),
    }
    Ok(())
}

fn probe_noncanonical_faults() -> Outcome {
    let va = 0x0000_8000_0000_0000;
    match probe_read(va) {
        Ok(v) => fail!("read of non-canonical {va:#x} returned {v:#x}"),
        Err(f) => ensure!(f.vector == 13, "non-canonical read: expected #GP, got {f}"),
    }
    Ok(())
}

fn probe_mapped_reads() -> Outcome {
    let va = TEST_WINDOW + 0x20_0000 + 0x5000;
    with_one_page(
        va,
        pte::PRESENT | pte::WRITABLE | pte::NO_EXECUTE,
        |space| {
            let Some(leaf) = space.pte(va) else {
                fail!("no leaf entry after map_4k")
            };
            ensure!(
                leaf.get() & (pte::ACCESSED | pte::DIRTY) == 0,
                "fresh PTE already has A or D: {:#x}",
                leaf.get()
            );
            space.activate();
            let read = probe_read(va);
            let after_read = leaf.get();
            let wrote = probe_write(va + 8, 77);
            let after_write = leaf.get();
            let reread = probe_read(va + 8);
            h::deactivate();
            ensure!(
                read == Ok(MAGIC),
                "read through the new mapping: {read:x?}, expected {MAGIC:#x}"
            );
            ensure!(
                after_read & pte::ACCESSED != 0,
                "a read did not set the accessed bit: PTE {after_read:#x}"
            );
            ensure!(
                after_read & pte::DIRTY == 0,
                "a read set the dirty bit: PTE {after_read:#x}"
            );
            ensure!(
                wrote.is_ok(),
                "write through a writable mapping faulted: {wrote:?}"
            );
            ensure!(
                after_write & pte::DIRTY != 0,
                "a write did not set the dirty bit: PTE {after_write:#x}"
            );
            ensure!(reread == Ok(77), "read back after write: {reread:?}");
            Ok(())
        },
    )
}

fn write_to_readonly_faults() -> Outcome {
    let va = TEST_WINDOW + 0x7000;
    with_one_page(va, pte::PRESENT | pte::NO_EXECUTE, |space| {
        space.activate();
        let read = probe_read(va);
        let wrote = probe_write(va, 1);
        let after = probe_read(va);
        h::deactivate();
        ensure!(read == Ok(MAGIC), "read of a read-only page: {read:x?}");
        match wrote {
            Ok(()) => fail!("ring-0 write to a read-only page succeeded (CR0.WP off?)"),
            Err(f) => ensure!(
                f.is_page_fault(va, PF_PRESENT | PF_WRITE),
                "write to read-only page: expected #PF code 3, got {f}"
            ),
        }
        ensure!(
            after == Ok(MAGIC),
            "the faulting write changed memory: {after:x?}"
        );
        Ok(())
    })
}

fn stale_tlb_without_invlpg() -> Outcome {
    let va = TEST_WINDOW + 0x40_0000;
    let tcg = h::accel() == Accel::Tcg;
    with_one_page(va, pte::PRESENT | pte::WRITABLE, |space| {
        let Some(leaf) = space.pte(va) else {
            fail!("no leaf entry after map_4k")
        };
        space.activate();
        let first = probe_read(va); // fills the TLB
        leaf.clear(); // a plain store: the TLB is not told
        let stale = probe_read(va);
        invlpg(va);
        let flushed = probe_read(va);
        h::deactivate();
        ensure!(first == Ok(MAGIC), "first read: {first:x?}");
        // Architecturally either outcome is allowed; TCG keeps the entry, so
        // there a fault would mean the TLB is not really being used.
        if tcg {
            ensure!(
                stale == Ok(MAGIC),
                "TCG: read after clearing the PTE without invlpg was not stale: {stale:x?}"
            );
        }
        match flushed {
            Ok(v) => fail!("read after clear + invlpg succeeded ({v:#x}): the flush did not flush"),
            Err(f) => ensure!(
                f.is_page_fault(va, 0),
                "read after clear + invlpg: expected #PF code 0, got {f}"
            ),
        }
        Ok(())
    })
}

fn frames_are_zeroed_and_recycled() -> Outcome {
    let before = h::frames_in_use();
    let Some(a) = alloc_frame() else {
        fail!("out of frames")
    };
    // SAFETY: a fresh frame, identity-mapped, ours alone.
    unsafe { (a as *mut u64).add(100).write_volatile(MAGIC) };
    // SAFETY: 1. from `alloc_frame`; 2. freed once; 3. never mapped, no
    // references into it.
    unsafe { free_frame(a) };
    let Some(b) = alloc_frame() else {
        fail!("out of frames")
    };
    // SAFETY: as above.
    let word = unsafe { (b as *const u64).add(100).read_volatile() };
    // SAFETY: 1.-3. as for `a`.
    unsafe { free_frame(b) };
    ensure!(
        b == a,
        "a freed frame was not reused first ({a:#x} then {b:#x})"
    );
    ensure!(word == 0, "a recycled frame was not zeroed: {word:#x}");
    ensure!(
        h::frames_in_use() == before,
        "frame count leaked: {} -> {}",
        before,
        h::frames_in_use()
    );
    Ok(())
}
