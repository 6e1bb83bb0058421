//! The cases on one CPU: one behaviour each, named after it; and the
//! fixtures every case uses ([`new_space`], [`va`], [`pages`], ...), also
//! for a kernel's own cases.

use core::pin::pin;

use mmu_notifier_core::{
    AddressSpace, Arch, CopyMode, Error, Event, PageRange, PhysAddr, Prot, Reusable, Subscription,
    VirtAddr,
};

use crate::shadow::{Call, ShadowMmu, Style, LOG};
use crate::{ensure, fail, CpuFault, Machine, Outcome};

/// The address space a case builds on machine `M`.
pub type Space<'m, M> =
    AddressSpace<'m, <M as Machine>::Arch, <M as Machine>::Frames, <M as Machine>::Kernel>;

/// The arch's base page size.
pub fn page<M: Machine>() -> u64 {
    <M::Arch as Arch>::PAGE_SIZE
}

/// The address of page `page_index` of the test window.
pub fn va<M: Machine>(m: &M, page_index: u64) -> VirtAddr {
    VirtAddr(m.test_base().0 + page_index * page::<M>())
}

/// `count` pages of the test window from page `first`.
pub fn pages<M: Machine>(m: &M, first: u64, count: u64) -> PageRange {
    PageRange::from_pages(va(m, first), count, page::<M>()).expect("test ranges are valid")
}

fn marker(i: u64) -> u64 {
    0x6d6d_755f_0000_0000 | i
}

/// A fresh address space on `m`'s arch and frames.
///
/// # Errors
/// The core could not create one (no frame for the root table).
pub fn new_space<M: Machine>(m: &M) -> Result<Space<'_, M>, crate::Failure> {
    match AddressSpace::for_kernel(m.arch(), m.frames()) {
        Ok(mm) => Ok(mm),
        Err(e) => Err(crate::Failure::new(format_args!(
            "cannot create an address space: {e}"
        ))),
    }
}

/// Maps `count` pages from page index `first`, each to a fresh frame
/// holding `marker(i)`, and makes the CPU use the address space.
fn map_pages<M: Machine>(m: &M, mm: &Space<'_, M>, first: u64, count: u64, prot: Prot) -> Outcome {
    for i in first..first + count {
        let Some(frame) = m.alloc_frame() else {
            fail!("out of frames");
        };
        m.write_phys(frame, marker(i));
        if let Err(e) = mm.map(va(m, i), frame, prot) {
            m.free_frame(frame);
            fail!("map page {i}: {e}");
        }
    }
    // SAFETY: `mm` outlives every use of the CPU in the case: cases
    // deactivate before tearing down (and `run` deactivates after each).
    unsafe { m.activate(mm.root()) };
    Ok(())
}

/// Reads every page on the CPU (filling its TLB) and checks the markers.
fn touch<M: Machine>(m: &M, first: u64, count: u64) -> Outcome {
    for i in first..first + count {
        let got = m.cpu_read(va(m, i));
        ensure!(
            got == Ok(marker(i)),
            "CPU read of page {i} gave {got:?}, expected its marker"
        );
    }
    Ok(())
}

fn fault_in_all<M: Machine>(
    shadow: &ShadowMmu,
    mm: &Space<'_, M>,
    m: &M,
    first: u64,
    count: u64,
    write: bool,
) -> Outcome {
    for i in first..first + count {
        let r = shadow.fault_in(mm, va(m, i), write);
        ensure!(
            r.is_ok(),
            "secondary MMU could not fault in page {i}: {r:?}"
        );
    }
    Ok(())
}

fn coherent<A: Arch, F: mmu_notifier_core::TableMemory, K: mmu_notifier_core::Kernel>(
    shadow: &ShadowMmu,
    mm: &AddressSpace<'_, A, F, K>,
    after: &str,
) -> Outcome {
    if let Err(stale) = shadow.check_coherent(mm) {
        fail!("secondary MMU stale after {after}: {stale}");
    }
    Ok(())
}

/// Switches the CPU away and tears `mm` down, freeing its frames.
pub(crate) fn finish<M: Machine>(m: &M, mm: &Space<'_, M>) -> Outcome {
    m.deactivate();
    let r = mm.teardown(&mut |r: Reusable| m.free_frame(r.into_frame()));
    ensure!(r.is_ok(), "teardown failed: {r:?}");
    Ok(())
}

fn log(shadow: &ShadowMmu) -> ([Option<Call>; LOG], usize) {
    shadow.calls()
}

pub(crate) fn zap_faults_on_cpu_and_invalidates_secondary_before_frame_reuse<M: Machine>(
    m: &M,
) -> Outcome {
    let mm = new_space(m)?;
    let sub = pin!(Subscription::new(ShadowMmu::new(
        Style::PerPage,
        page::<M>()
    )));
    ensure!(
        mm.notifiers().register(sub.as_ref()).is_ok(),
        "register failed"
    );
    let shadow = sub.notifier();
    map_pages(m, &mm, 0, 4, Prot::WRITE)?;
    touch(m, 0, 4)?;
    fault_in_all(shadow, &mm, m, 0, 4, true)?;

    let mut freed = 0;
    let mut stale_at_free = None;
    let r = mm.zap_range(pages(m, 1, 2), &mut |r: Reusable| {
        // The frame must be unreachable from the secondary MMU already.
        if shadow.cached(VirtAddr(0)).is_none() {
            for i in 1..3 {
                if shadow.cached(va(m, i)).is_some_and(|(f, _)| f == r.frame()) {
                    stale_at_free = Some(i);
                }
            }
        }
        freed += 1;
        m.free_frame(r.into_frame());
    });
    ensure!(r == Ok(2), "zap of 2 mapped pages returned {r:?}");
    ensure!(freed == 2, "zap handed back {freed} frames, expected 2");
    ensure!(
        stale_at_free.is_none(),
        "frame of page {stale_at_free:?} handed back while the secondary MMU still mapped it"
    );
    for i in 1..3 {
        let got = m.cpu_read(va(m, i));
        ensure!(
            got == Err(CpuFault::NotMapped),
            "CPU read of unmapped page {i} gave {got:?}: missing TLB flush?"
        );
    }
    touch(m, 0, 1)?;
    touch(m, 3, 1)?;
    coherent(shadow, &mm, "zap")?;
    ensure!(
        shadow.cached(va(m, 0)).is_some() && shadow.cached(va(m, 3)).is_some(),
        "zap dropped secondary translations outside its range"
    );
    finish(m, &mm)
}

pub(crate) fn zap_calls_invalidate_page_per_page_inside_one_range_pair<M: Machine>(
    m: &M,
) -> Outcome {
    let mm = new_space(m)?;
    let sub = pin!(Subscription::new(ShadowMmu::new(
        Style::PerPage,
        page::<M>()
    )));
    ensure!(
        mm.notifiers().register(sub.as_ref()).is_ok(),
        "register failed"
    );
    let shadow = sub.notifier();
    map_pages(m, &mm, 0, 8, Prot::WRITE)?;
    shadow.clear_log();
    let range = pages(m, 0, 8);
    let r = mm.zap_range(range, &mut |r: Reusable| m.free_frame(r.into_frame()));
    ensure!(r == Ok(8), "zap returned {r:?}");
    let (calls, n) = log(shadow);
    ensure!(
        n == 10,
        "expected start + 8 invalidate_page + end, got {n} calls"
    );
    ensure!(
        calls[0] == Some(Call::RangeStart(range, Event::Unmap)),
        "first call {:?}, expected range start (unmap)",
        calls[0]
    );
    for i in 0..8u64 {
        let want = Some(Call::InvalidatePage(va(m, i)));
        ensure!(
            calls[1 + i as usize] == want,
            "call {} was {:?}, expected {want:?}",
            1 + i,
            calls[1 + i as usize]
        );
    }
    ensure!(
        calls[9] == Some(Call::RangeEnd(range, Event::Unmap)),
        "last call {:?}, expected range end",
        calls[9]
    );
    finish(m, &mm)
}

pub(crate) fn ptep_clear_flush_young_reports_cpu_access<M: Machine>(m: &M) -> Outcome {
    let mm = new_space(m)?;
    let sub = pin!(Subscription::new(ShadowMmu::new(
        Style::PerPage,
        page::<M>()
    )));
    ensure!(
        mm.notifiers().register(sub.as_ref()).is_ok(),
        "register failed"
    );
    map_pages(m, &mm, 0, 1, Prot::WRITE)?;
    // Setting the page up may have touched it: start from "old".
    let _ = mm.clear_flush_young(va(m, 0));
    m.deactivate();
    // SAFETY: as in `map_pages`.
    unsafe { m.activate(mm.root()) };
    touch(m, 0, 1)?;
    let young = mm.clear_flush_young(va(m, 0));
    ensure!(
        young == Ok(true),
        "page read by the CPU aged as {young:?}, expected young"
    );
    let (calls, n) = log(sub.notifier());
    ensure!(
        calls[..n]
            .iter()
            .any(|c| *c == Some(Call::AgePage(va(m, 0), false))),
        "age_page was not asked although the CPU already said young"
    );
    finish(m, &mm)
}

pub(crate) fn ptep_clear_flush_young_reports_secondary_access<M: Machine>(m: &M) -> Outcome {
    let mm = new_space(m)?;
    let sub = pin!(Subscription::new(ShadowMmu::new(
        Style::PerPage,
        page::<M>()
    )));
    ensure!(
        mm.notifiers().register(sub.as_ref()).is_ok(),
        "register failed"
    );
    let shadow = sub.notifier();
    map_pages(m, &mm, 0, 1, Prot::WRITE)?;
    ensure!(
        shadow.fault_in(&mm, va(m, 0), false).is_ok(),
        "secondary fault-in failed"
    );
    let _ = mm.clear_flush_young(va(m, 0));
    let again = mm.clear_flush_young(va(m, 0));
    ensure!(
        again == Ok(false),
        "page nobody used since the last aging is {again:?}, expected old"
    );
    ensure!(
        shadow.access(va(m, 0), false).is_some(),
        "secondary lost a valid translation"
    );
    let young = mm.clear_flush_young(va(m, 0));
    ensure!(
        young == Ok(true),
        "page used only by the secondary MMU aged as {young:?}, expected young"
    );
    finish(m, &mm)
}

pub(crate) fn fork_cow_write_protects_parent_and_invalidates_its_range<M: Machine>(
    m: &M,
) -> Outcome {
    let parent = new_space(m)?;
    let child = new_space(m)?;
    let sub = pin!(Subscription::new(ShadowMmu::new(
        Style::PerPage,
        page::<M>()
    )));
    ensure!(
        parent.notifiers().register(sub.as_ref()).is_ok(),
        "register failed"
    );
    let shadow = sub.notifier();
    map_pages(m, &parent, 0, 4, Prot::WRITE)?;
    for i in 0..4 {
        ensure!(
            m.cpu_write(va(m, i), marker(i)).is_ok(),
            "CPU write before fork failed"
        );
    }
    fault_in_all(shadow, &parent, m, 0, 4, true)?;
    shadow.clear_log();
    let range = pages(m, 0, 4);
    let r = parent.copy_range(&child, range, CopyMode::Cow);
    ensure!(r.is_ok(), "fork copy failed: {r:?}");
    for i in 0..4 {
        let w = m.cpu_write(va(m, i), 1);
        ensure!(
            w == Err(CpuFault::Protection),
            "CPU write to COW page {i} after fork gave {w:?}, expected a protection fault"
        );
    }
    touch(m, 0, 4)?;
    coherent(shadow, &parent, "fork")?;
    let (calls, n) = log(shadow);
    ensure!(
        calls[..n].contains(&Some(Call::InvalidatePages(range))),
        "parent's secondary MMU was not told invalidate_pages({range:?})"
    );
    for i in 0..4 {
        let c = child
            .translate(va(m, i))
            .map(|(l, _)| (l.frame, l.prot.writable()));
        let p = parent.translate(va(m, i)).map(|(l, _)| l.frame);
        ensure!(
            c.is_some_and(|(f, w)| Some(f) == p && !w),
            "child page {i} is {c:?}, expected the parent's frame read-only"
        );
    }
    m.deactivate();
    let _ = child.teardown(&mut |_| {});
    finish(m, &parent)
}

pub(crate) fn fork_of_shared_mapping_calls_no_notifier<M: Machine>(m: &M) -> Outcome {
    let parent = new_space(m)?;
    let child = new_space(m)?;
    let sub = pin!(Subscription::new(ShadowMmu::new(
        Style::PerPage,
        page::<M>()
    )));
    ensure!(
        parent.notifiers().register(sub.as_ref()).is_ok(),
        "register failed"
    );
    map_pages(m, &parent, 0, 2, Prot::WRITE)?;
    sub.notifier().clear_log();
    let r = parent.copy_range(&child, pages(m, 0, 2), CopyMode::Shared);
    ensure!(r.is_ok(), "shared copy failed: {r:?}");
    let (_, n) = log(sub.notifier());
    ensure!(
        n == 0,
        "a shared-mapping copy called {n} notifier callbacks, expected none"
    );
    ensure!(
        m.cpu_write(va(m, 0), 7).is_ok(),
        "parent lost write access on a shared copy"
    );
    m.deactivate();
    let _ = child.teardown(&mut |_| {});
    finish(m, &parent)
}

pub(crate) fn mprotect_read_only_faults_writes_and_invalidates_range<M: Machine>(m: &M) -> Outcome {
    let mm = new_space(m)?;
    let sub = pin!(Subscription::new(ShadowMmu::new(
        Style::PerPage,
        page::<M>()
    )));
    ensure!(
        mm.notifiers().register(sub.as_ref()).is_ok(),
        "register failed"
    );
    let shadow = sub.notifier();
    map_pages(m, &mm, 0, 4, Prot::WRITE)?;
    for i in 0..4 {
        ensure!(
            m.cpu_write(va(m, i), marker(i)).is_ok(),
            "CPU write before mprotect failed"
        );
    }
    fault_in_all(shadow, &mm, m, 0, 4, true)?;
    shadow.clear_log();
    let range = pages(m, 0, 4);
    let r = mm.change_protection(range, Prot::READ);
    ensure!(
        r == Ok(4),
        "mprotect returned {r:?}, expected 4 pages changed"
    );
    for i in 0..4 {
        let w = m.cpu_write(va(m, i), 1);
        ensure!(
            w == Err(CpuFault::Protection),
            "CPU write to read-only page {i} gave {w:?}: missing TLB flush?"
        );
    }
    touch(m, 0, 4)?;
    coherent(shadow, &mm, "mprotect")?;
    let (calls, n) = log(shadow);
    let expected = [
        Some(Call::RangeStart(range, Event::ProtectionVma)),
        Some(Call::InvalidatePages(range)),
        Some(Call::RangeEnd(range, Event::ProtectionVma)),
    ];
    ensure!(
        n == 3 && calls[..3] == expected,
        "mprotect calls were {:?}, expected start, invalidate_pages, end",
        &calls[..n.min(4)]
    );
    finish(m, &mm)
}

pub(crate) fn remap_pfn_range_maps_frames_and_invalidates_range<M: Machine>(m: &M) -> Outcome {
    let mm = new_space(m)?;
    let sub = pin!(Subscription::new(ShadowMmu::new(
        Style::PerPage,
        page::<M>()
    )));
    ensure!(
        mm.notifiers().register(sub.as_ref()).is_ok(),
        "register failed"
    );
    let Some(first) = m.alloc_contiguous(4, page::<M>()) else {
        fail!("out of frames");
    };
    for i in 0..4 {
        m.write_phys(PhysAddr(first.0 + i * page::<M>()), marker(i));
    }
    let range = pages(m, 0, 4);
    let r = mm.remap_pfn_range(range, first, Prot::READ);
    ensure!(r.is_ok(), "remap failed: {r:?}");
    // SAFETY: as in `map_pages`.
    unsafe { m.activate(mm.root()) };
    touch(m, 0, 4)?;
    let (calls, n) = log(sub.notifier());
    ensure!(
        calls[..n].contains(&Some(Call::InvalidatePages(range))),
        "remap did not call invalidate_pages({range:?})"
    );
    let again = mm.remap_pfn_range(range, first, Prot::READ);
    ensure!(
        again
            == Err(Error::AlreadyMapped {
                addr: range.start().0
            }),
        "remapping a mapped range gave {again:?}"
    );
    m.deactivate();
    let _ = mm.teardown(&mut |_| {});
    for i in 0..4 {
        m.free_frame(PhysAddr(first.0 + i * page::<M>()));
    }
    Ok(())
}

pub(crate) fn huge_unmap_faults_and_invalidates_each_huge_entry<M: Machine>(m: &M) -> Outcome {
    let level = match m.huge_level() {
        Ok(level) => level,
        Err(why) => fail!("no huge pages on this machine: {why}"),
    };
    let span = level.entry_span();
    let mm = new_space(m)?;
    let sub = pin!(Subscription::new(ShadowMmu::new(
        Style::PerPage,
        page::<M>()
    )));
    ensure!(
        mm.notifiers().register(sub.as_ref()).is_ok(),
        "register failed"
    );
    let shadow = sub.notifier();
    let per = (span / page::<M>()) as usize;
    let Some(frames) = m.alloc_contiguous(2 * per, span) else {
        fail!("no contiguous huge frames");
    };
    let base = VirtAddr((m.test_base().0 + span - 1) & !(span - 1));
    for h in 0..2u64 {
        let f = PhysAddr(frames.0 + h * span);
        m.write_phys(f, marker(h));
        let r = mm.map_huge(level, VirtAddr(base.0 + h * span), f, Prot::WRITE);
        ensure!(r.is_ok(), "map_huge {h} failed: {r:?}");
    }
    // SAFETY: as in `map_pages`.
    unsafe { m.activate(mm.root()) };
    for h in 0..2u64 {
        let got = m.cpu_read(VirtAddr(base.0 + h * span));
        ensure!(
            got == Ok(marker(h)),
            "CPU read of huge page {h} gave {got:?}"
        );
        ensure!(
            shadow
                .fault_in(&mm, VirtAddr(base.0 + h * span + page::<M>()), false)
                .is_ok(),
            "secondary fault-in inside huge page failed"
        );
    }
    shadow.clear_log();
    let range = PageRange::new(base, VirtAddr(base.0 + 2 * span), span).expect("aligned");
    let mut freed = 0;
    let r = mm.unmap_huge_range(level, range, &mut |_| freed += 1);
    ensure!(
        r == Ok(2) && freed == 2,
        "huge unmap returned {r:?} with {freed} frames"
    );
    for h in 0..2u64 {
        let got = m.cpu_read(VirtAddr(base.0 + h * span));
        ensure!(
            got == Err(CpuFault::NotMapped),
            "CPU read of unmapped huge page {h} gave {got:?}"
        );
        let at = VirtAddr(base.0 + h * span);
        let (calls, n) = log(shadow);
        ensure!(
            calls[..n].contains(&Some(Call::InvalidatePage(at))),
            "no invalidate_page for huge entry {h}"
        );
    }
    coherent(shadow, &mm, "huge unmap")?;
    finish(m, &mm)?;
    for i in 0..2 * per as u64 {
        m.free_frame(PhysAddr(frames.0 + i * page::<M>()));
    }
    Ok(())
}

pub(crate) fn teardown_releases_secondaries_before_any_frame_is_freed<M: Machine>(
    m: &M,
) -> Outcome {
    let mm = new_space(m)?;
    let sub = pin!(Subscription::new(ShadowMmu::new(
        Style::PerPage,
        page::<M>()
    )));
    ensure!(
        mm.notifiers().register(sub.as_ref()).is_ok(),
        "register failed"
    );
    let shadow = sub.notifier();
    map_pages(m, &mm, 0, 4, Prot::WRITE)?;
    fault_in_all(shadow, &mm, m, 0, 4, false)?;
    m.deactivate();
    let mut freed = 0;
    let mut freed_before_release = 0;
    let r = mm.teardown(&mut |r: Reusable| {
        if shadow.releases() == 0 || shadow.cached_count() != 0 {
            freed_before_release += 1;
        }
        freed += 1;
        m.free_frame(r.into_frame());
    });
    ensure!(r.is_ok(), "teardown failed: {r:?}");
    ensure!(
        freed == 4,
        "teardown handed back {freed} frames, expected 4"
    );
    ensure!(
        freed_before_release == 0,
        "{freed_before_release} frames freed before the secondary MMU was released"
    );
    ensure!(
        shadow.releases() == 1,
        "release called {} times, expected exactly once",
        shadow.releases()
    );
    ensure!(sub.is_released(), "subscription not marked released");
    Ok(())
}

pub(crate) fn unregistered_notifier_is_not_called<M: Machine>(m: &M) -> Outcome {
    let mm = new_space(m)?;
    let sub = pin!(Subscription::new(ShadowMmu::new(
        Style::PerPage,
        page::<M>()
    )));
    ensure!(
        mm.notifiers().register(sub.as_ref()).is_ok(),
        "register failed"
    );
    map_pages(m, &mm, 0, 2, Prot::WRITE)?;
    let r = mm.notifiers().unregister(sub.as_ref());
    ensure!(r.is_ok(), "unregister failed: {r:?}");
    ensure!(
        mm.notifiers().unregister(sub.as_ref()) == Err(Error::NotRegistered),
        "second unregister was not refused"
    );
    sub.notifier().clear_log();
    let _ = mm.zap_range(pages(m, 0, 2), &mut |r: Reusable| {
        m.free_frame(r.into_frame())
    });
    let (_, n) = log(sub.notifier());
    ensure!(n == 0, "unregistered notifier received {n} calls");
    finish(m, &mm)
}

pub(crate) fn range_style_secondary_stays_coherent_through_every_call_site<M: Machine>(
    m: &M,
) -> Outcome {
    let mm = new_space(m)?;
    let child = new_space(m)?;
    let sub = pin!(Subscription::new(ShadowMmu::new(Style::Range, page::<M>())));
    ensure!(
        mm.notifiers().register(sub.as_ref()).is_ok(),
        "register failed"
    );
    let shadow = sub.notifier();
    map_pages(m, &mm, 0, 8, Prot::WRITE)?;
    fault_in_all(shadow, &mm, m, 0, 8, true)?;
    let r = mm.change_protection(pages(m, 0, 2), Prot::READ);
    ensure!(r.is_ok(), "mprotect: {r:?}");
    coherent(shadow, &mm, "mprotect")?;
    fault_in_all(shadow, &mm, m, 0, 8, false)?;
    let r = mm.copy_range(&child, pages(m, 2, 2), CopyMode::Cow);
    ensure!(r.is_ok(), "fork: {r:?}");
    coherent(shadow, &mm, "fork")?;
    fault_in_all(shadow, &mm, m, 0, 8, false)?;
    let r = mm.zap_range(pages(m, 4, 4), &mut |r: Reusable| {
        m.free_frame(r.into_frame())
    });
    ensure!(r == Ok(4), "zap: {r:?}");
    coherent(shadow, &mm, "zap")?;
    let (calls, n) = log(shadow);
    let per_page = calls[..n]
        .iter()
        .filter(|c| matches!(c, Some(Call::InvalidatePage(_))))
        .count();
    let starts = calls[..n]
        .iter()
        .filter(|c| matches!(c, Some(Call::RangeStart(..))))
        .count();
    let ends = calls[..n]
        .iter()
        .filter(|c| matches!(c, Some(Call::RangeEnd(..))))
        .count();
    ensure!(
        starts == 3 && ends == 3,
        "expected 3 start/end pairs, got {starts} starts and {ends} ends"
    );
    ensure!(
        per_page == 4,
        "expected 4 per-page calls from the zap, got {per_page}"
    );
    m.deactivate();
    let _ = child.teardown(&mut |_| {});
    finish(m, &mm)
}

pub(crate) fn bad_input_is_refused_and_changes_nothing<M: Machine>(m: &M) -> Outcome {
    let mm = new_space(m)?;
    map_pages(m, &mm, 0, 2, Prot::WRITE)?;
    let p = page::<M>();
    let base = m.test_base();
    let r = PageRange::new(VirtAddr(base.0 + 1), VirtAddr(base.0 + p), p);
    ensure!(
        r == Err(Error::Unaligned {
            addr: base.0 + 1,
            align: p
        }),
        "unaligned range gave {r:?}"
    );
    let r = PageRange::new(base, base, p);
    ensure!(
        r == Err(Error::EmptyRange { at: base.0 }),
        "empty range gave {r:?}"
    );
    let r = PageRange::new(VirtAddr(base.0 + p), base, p);
    ensure!(
        r == Err(Error::ReversedRange {
            start: base.0 + p,
            end: base.0
        }),
        "reversed range gave {r:?}"
    );
    let Some(frame) = m.alloc_frame() else {
        fail!("out of frames");
    };
    let r = mm.map(va(m, 0), frame, Prot::READ);
    ensure!(
        r == Err(Error::AlreadyMapped { addr: va(m, 0).0 }),
        "mapping a mapped page gave {r:?}"
    );
    let r = mm.map(VirtAddr(base.0 + 8), frame, Prot::READ);
    ensure!(
        matches!(r, Err(Error::Unaligned { .. })),
        "unaligned map gave {r:?}"
    );
    let r = mm.map(va(m, 5), PhysAddr(frame.0 + 8), Prot::READ);
    ensure!(
        matches!(r, Err(Error::Unaligned { .. })),
        "unaligned frame gave {r:?}"
    );
    // The top page: beyond x86-64's user half; on s390x, whose addresses
    // all translate, the end of its half-open range does not fit in 64
    // bits. Either way it is refused, so the frame is still ours.
    let top = VirtAddr(!(p - 1));
    let r = mm.map(top, frame, Prot::READ);
    ensure!(
        matches!(
            r,
            Err(Error::NonCanonical { .. } | Error::OutOfRange { .. })
        ),
        "mapping the top page {top} gave {r:?}"
    );
    m.free_frame(frame);
    // A remap over a range whose second page is mapped changes nothing.
    let Some(first) = m.alloc_contiguous(2, p) else {
        fail!("out of frames");
    };
    let r = mm.remap_pfn_range(pages(m, 1, 2), first, Prot::READ);
    ensure!(
        r == Err(Error::AlreadyMapped { addr: va(m, 1).0 }),
        "remap over a mapped page gave {r:?}"
    );
    ensure!(
        mm.translate(va(m, 2)).is_none(),
        "a refused remap left page 2 mapped"
    );
    m.free_frame(first);
    m.free_frame(PhysAddr(first.0 + p));
    touch(m, 0, 2)?;
    finish(m, &mm)
}

pub(crate) fn operations_after_teardown_are_refused<M: Machine>(m: &M) -> Outcome {
    let mm = new_space(m)?;
    map_pages(m, &mm, 0, 1, Prot::WRITE)?;
    finish(m, &mm)?;
    let sub = pin!(Subscription::new(ShadowMmu::new(
        Style::PerPage,
        page::<M>()
    )));
    let r = mm.notifiers().register(sub.as_ref());
    ensure!(
        r == Err(Error::Released),
        "register on a released address space gave {r:?}"
    );
    let r = mm.zap_range(pages(m, 0, 1), &mut |_| {});
    ensure!(r == Err(Error::Released), "zap after teardown gave {r:?}");
    let r = mm.teardown(&mut |_| {});
    ensure!(r == Err(Error::Released), "second teardown gave {r:?}");
    let r = mm.clear_flush_young(va(m, 0));
    ensure!(r == Err(Error::Released), "aging after teardown gave {r:?}");
    Ok(())
}
