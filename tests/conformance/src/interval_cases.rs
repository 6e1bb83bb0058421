//! The interval-notifier cases: the reference [`Device`] attached through
//! [`IntervalNotifiers`], one behaviour each, named after it. They use only
//! the [`Machine`] trait, so they run on the host and in the QEMU kernels.

use core::pin::pin;

use mmu_notifier_core::interval::{IntervalNotifiers, IntervalSub};
use mmu_notifier_core::{
    AddressSpace, Arch, CopyMode, Event, InvalidateRange, PhysAddr, Prot, Reusable, Subscription,
};

use crate::cases::{finish, new_space, page, pages, va, Space};
use crate::device::{Device, DeviceFault, Invalidation, LOG};
use crate::{ensure, fail, Machine, Outcome};

type Dev<'a> = IntervalSub<'a, Device>;

/// Maps `count` pages from page index `first`, each to a fresh frame.
fn map_pages<M: Machine>(m: &M, mm: &Space<'_, M>, first: u64, count: u64, prot: Prot) -> Outcome {
    for i in first..first + count {
        let Some(frame) = m.alloc_frame() else {
            fail!("out of frames");
        };
        if let Err(e) = mm.map(va(m, i), frame, prot) {
            m.free_frame(frame);
            fail!("map page {i}: {e}");
        }
    }
    Ok(())
}

fn insert<'a, M: Machine>(
    m: &M,
    mgr: &'a IntervalNotifiers,
    sub: core::pin::Pin<&Dev<'a>>,
    first: u64,
    count: u64,
) -> Outcome {
    let r = mgr.insert(sub, va(m, first), count * page::<M>());
    ensure!(r.is_ok(), "inserting an interval failed: {r:?}");
    Ok(())
}

fn fault_all<M: Machine>(
    sub: &Dev<'_>,
    mm: &Space<'_, M>,
    m: &M,
    first: u64,
    count: u64,
    write: bool,
) -> Outcome {
    for i in first..first + count {
        let r = Device::fault_in(sub, mm, va(m, i), write);
        ensure!(r.is_ok(), "device could not fault in page {i}: {r:?}");
    }
    Ok(())
}

fn coherent<A: Arch, F: mmu_notifier_core::TableMemory, K: mmu_notifier_core::Kernel>(
    dev: &Device,
    mm: &AddressSpace<'_, A, F, K>,
    after: &str,
) -> Outcome {
    if let Err(stale) = dev.check_coherent(mm) {
        fail!("device stale after {after}: {stale}");
    }
    Ok(())
}

fn log(dev: &Device) -> ([Option<Invalidation>; LOG], usize) {
    dev.invalidations()
}

fn free_all<M: Machine>(m: &M) -> impl FnMut(Reusable) + '_ {
    move |r: Reusable| m.free_frame(r.into_frame())
}

pub(crate) fn interval_device_stays_coherent_through_every_call_site<M: Machine>(m: &M) -> Outcome {
    let mm = new_space(m)?;
    let child = new_space(m)?;
    let mgr = pin!(Subscription::new(IntervalNotifiers::new()));
    ensure!(
        mm.notifiers().register(mgr.as_ref()).is_ok(),
        "register failed"
    );
    let sub = pin!(IntervalSub::new(Device::new(page::<M>())));
    insert(m, mgr.notifier(), sub.as_ref(), 0, 16)?;
    let dev = sub.ops();
    map_pages(m, &mm, 0, 8, Prot::WRITE)?;
    fault_all(&sub, &mm, m, 0, 8, true)?;
    coherent(dev, &mm, "fault-in")?;

    let r = mm.change_protection(pages(m, 0, 2), Prot::READ);
    ensure!(r == Ok(2), "mprotect: {r:?}");
    coherent(dev, &mm, "mprotect")?;
    ensure!(
        dev.cached(va(m, 2)).is_some(),
        "mprotect dropped a page outside its range"
    );
    let w = Device::fault_in(&sub, &mm, va(m, 0), true);
    ensure!(
        w == Err(DeviceFault::NotMapped),
        "device write fault on a read-only page gave {w:?}"
    );
    fault_all(&sub, &mm, m, 0, 8, false)?;

    let r = mm.copy_range(&child, pages(m, 2, 2), CopyMode::Cow);
    ensure!(r.is_ok(), "fork: {r:?}");
    coherent(dev, &mm, "fork")?;
    fault_all(&sub, &mm, m, 0, 8, false)?;

    let r = mm.zap_range(pages(m, 4, 4), &mut free_all(m));
    ensure!(r == Ok(4), "zap: {r:?}");
    coherent(dev, &mm, "zap")?;
    ensure!(
        dev.cached(va(m, 4)).is_none(),
        "zapped page still cached by the device"
    );

    let Some(first) = m.alloc_contiguous(4, page::<M>()) else {
        fail!("out of frames");
    };
    let r = mm.remap_pfn_range(pages(m, 8, 4), first, Prot::READ);
    ensure!(r.is_ok(), "remap: {r:?}");
    fault_all(&sub, &mm, m, 8, 4, false)?;
    coherent(dev, &mm, "remap")?;
    ensure!(
        dev.cached(va(m, 9)) == Some((PhysAddr(first.0 + page::<M>()), false)),
        "device translates a remapped page to {:?}",
        dev.cached(va(m, 9))
    );

    let (calls, n) = log(dev);
    let events = [
        Event::ProtectionVma,
        Event::Clear,
        Event::Unmap,
        Event::Clear,
    ];
    ensure!(
        n == events.len(),
        "expected {} invalidations, got {n}",
        events.len()
    );
    for (i, e) in events.iter().enumerate() {
        ensure!(
            calls[i].is_some_and(|c| c.event == *e && c.cur_seq & 1 == 1),
            "invalidation {i} was {:?}, expected {e:?} with an odd sequence",
            calls[i]
        );
    }

    dev.clear_log();
    let _ = child.teardown(&mut |_| {});
    let mut freed_while_cached = 0;
    let r = mm.teardown(&mut |r: Reusable| {
        if dev.cached_count() != 0 {
            freed_while_cached += 1;
        }
        let frame = r.into_frame();
        if frame.0 < first.0 || frame.0 >= first.0 + 4 * page::<M>() {
            m.free_frame(frame);
        }
    });
    ensure!(r.is_ok(), "teardown: {r:?}");
    ensure!(
        freed_while_cached == 0,
        "{freed_while_cached} frames freed while the device still cached translations"
    );
    let (calls, n) = log(dev);
    ensure!(
        n == 1 && calls[0].is_some_and(|c| c.event == Event::Release),
        "teardown should invalidate the device once with Release, got {n}: {:?}",
        calls[0]
    );
    for i in 0..4 {
        m.free_frame(PhysAddr(first.0 + i * page::<M>()));
    }
    Ok(())
}

pub(crate) fn interval_invalidation_visits_only_overlapping_subscriptions<M: Machine>(
    m: &M,
) -> Outcome {
    let mm = new_space(m)?;
    let mgr = pin!(Subscription::new(IntervalNotifiers::new()));
    ensure!(
        mm.notifiers().register(mgr.as_ref()).is_ok(),
        "register failed"
    );
    let a = pin!(IntervalSub::new(Device::new(page::<M>())));
    let b = pin!(IntervalSub::new(Device::new(page::<M>())));
    let c = pin!(IntervalSub::new(Device::new(page::<M>())));
    insert(m, mgr.notifier(), a.as_ref(), 0, 4)?;
    insert(m, mgr.notifier(), b.as_ref(), 4, 4)?;
    insert(m, mgr.notifier(), c.as_ref(), 12, 4)?;
    map_pages(m, &mm, 0, 16, Prot::WRITE)?;
    fault_all(&a, &mm, m, 0, 4, false)?;
    fault_all(&b, &mm, m, 4, 4, false)?;
    fault_all(&c, &mm, m, 12, 4, false)?;
    let outside = Device::fault_in(&a, &mm, va(m, 5), false);
    ensure!(
        outside == Err(DeviceFault::OutsideInterval),
        "a device faulted in a page outside its interval: {outside:?}"
    );

    let range = pages(m, 3, 2);
    let r = mm.zap_range(range, &mut free_all(m));
    ensure!(r == Ok(2), "zap: {r:?}");
    for (name, dev) in [("[0,4)", a.ops()), ("[4,8)", b.ops())] {
        let (calls, n) = log(dev);
        ensure!(
            n == 1 && calls[0].is_some_and(|c| c.range == range && c.event == Event::Unmap),
            "interval {name} overlapping the zap got {n} invalidations: {:?}",
            calls[0]
        );
        coherent(dev, &mm, "zap")?;
    }
    let (_, n) = log(c.ops());
    ensure!(
        n == 0,
        "interval [12,16) outside the zap got {n} invalidations"
    );
    ensure!(
        c.ops().cached_count() == 4,
        "a non-overlapping device lost translations"
    );
    ensure!(
        a.ops().cached_count() == 3 && b.ops().cached_count() == 3,
        "overlapping devices should keep the pages outside the zap"
    );
    finish(m, &mm)
}

pub(crate) fn device_fault_during_invalidation_retries<M: Machine>(m: &M) -> Outcome {
    let mm = new_space(m)?;
    let mgr = pin!(Subscription::new(IntervalNotifiers::new()));
    ensure!(
        mm.notifiers().register(mgr.as_ref()).is_ok(),
        "register failed"
    );
    let sub = pin!(IntervalSub::new(Device::new(page::<M>())));
    insert(m, mgr.notifier(), sub.as_ref(), 0, 4)?;
    map_pages(m, &mm, 0, 4, Prot::WRITE)?;
    // The fault reads a writable translation; before it takes its lock,
    // the page becomes read-only (the invalidation the device races with).
    let mut changed = None;
    let r = Device::fault_in_with(&sub, &mm, va(m, 1), false, &mut |attempt| {
        if attempt == 1 {
            changed = Some(mm.change_protection(pages(m, 1, 1), Prot::READ));
        }
    });
    ensure!(
        changed == Some(Ok(1)),
        "mprotect in the fault window: {changed:?}"
    );
    ensure!(
        r.is_ok_and(|f| f.attempts == 2),
        "a fault that read the tables before a colliding invalidation must retry once: {r:?}"
    );
    ensure!(
        sub.ops().cached(va(m, 1)).is_some_and(|(_, w)| !w),
        "the device installed the stale writable translation"
    );
    coherent(sub.ops(), &mm, "a fault racing mprotect")?;

    // The same with an unmap: the retry finds nothing to map.
    let r = Device::fault_in_with(&sub, &mm, va(m, 2), true, &mut |attempt| {
        if attempt == 1 {
            let _ = mm.zap_range(pages(m, 2, 1), &mut free_all(m));
        }
    });
    ensure!(
        r == Err(DeviceFault::NotMapped),
        "a fault racing an unmap of its page gave {r:?}"
    );
    ensure!(
        sub.ops().cached(va(m, 2)).is_none(),
        "the device mapped an unmapped page"
    );
    ensure!(
        sub.ops().retries() == 2,
        "expected 2 retries, saw {}",
        sub.ops().retries()
    );
    coherent(sub.ops(), &mm, "a fault racing zap")?;
    finish(m, &mm)
}

pub(crate) fn device_fault_racing_an_invalidation_elsewhere_does_not_retry<M: Machine>(
    m: &M,
) -> Outcome {
    let mm = new_space(m)?;
    let mgr = pin!(Subscription::new(IntervalNotifiers::new()));
    ensure!(
        mm.notifiers().register(mgr.as_ref()).is_ok(),
        "register failed"
    );
    let sub = pin!(IntervalSub::new(Device::new(page::<M>())));
    insert(m, mgr.notifier(), sub.as_ref(), 0, 4)?;
    map_pages(m, &mm, 0, 8, Prot::WRITE)?;
    let r = Device::fault_in_with(&sub, &mm, va(m, 1), true, &mut |_| {
        let _ = mm.change_protection(pages(m, 6, 1), Prot::READ);
    });
    ensure!(
        r.is_ok_and(|f| f.attempts == 1),
        "an invalidation outside the interval forced a retry: {r:?}"
    );
    coherent(sub.ops(), &mm, "an unrelated mprotect")?;
    finish(m, &mm)
}

pub(crate) fn device_cannot_fault_while_a_colliding_invalidation_runs<M: Machine>(
    m: &M,
) -> Outcome {
    let mm = new_space(m)?;
    let mgr = pin!(Subscription::new(IntervalNotifiers::new()));
    ensure!(
        mm.notifiers().register(mgr.as_ref()).is_ok(),
        "register failed"
    );
    let near = pin!(IntervalSub::new(Device::new(page::<M>())));
    let far = pin!(IntervalSub::new(Device::new(page::<M>())));
    insert(m, mgr.notifier(), near.as_ref(), 0, 4)?;
    insert(m, mgr.notifier(), far.as_ref(), 8, 4)?;
    map_pages(m, &mm, 0, 12, Prot::WRITE)?;
    // An invalidation of page 1 is in progress (between start and end).
    let guard = mm
        .notifiers()
        .invalidate_range_start(InvalidateRange::new(pages(m, 1, 1), Event::Unmap));
    let r = Device::try_fault_in(&near, &mm, va(m, 2), false);
    ensure!(
        r == Err(DeviceFault::Invalidating),
        "a device faulted in while an invalidation of its interval ran: {r:?}"
    );
    let r = Device::try_fault_in(&far, &mm, va(m, 9), false);
    ensure!(
        r.is_ok(),
        "an invalidation elsewhere blocked a fault: {r:?}"
    );
    guard.end();
    let r = Device::try_fault_in(&near, &mm, va(m, 2), false);
    ensure!(
        r.is_ok(),
        "the fault still fails after the invalidation ended: {r:?}"
    );
    coherent(near.ops(), &mm, "the invalidation")?;
    finish(m, &mm)
}

pub(crate) fn interval_inserted_during_invalidation_waits_for_its_end<M: Machine>(
    m: &M,
) -> Outcome {
    let mm = new_space(m)?;
    let mgr = pin!(Subscription::new(IntervalNotifiers::new()));
    ensure!(
        mm.notifiers().register(mgr.as_ref()).is_ok(),
        "register failed"
    );
    let old = pin!(IntervalSub::new(Device::new(page::<M>())));
    insert(m, mgr.notifier(), old.as_ref(), 0, 2)?;
    map_pages(m, &mm, 0, 4, Prot::WRITE)?;
    let guard = mm
        .notifiers()
        .invalidate_range_start(InvalidateRange::new(pages(m, 0, 4), Event::Unmap));
    let new = pin!(IntervalSub::new(Device::new(page::<M>())));
    insert(m, mgr.notifier(), new.as_ref(), 2, 2)?;
    let r = Device::try_fault_in(&new, &mm, va(m, 3), false);
    ensure!(
        r == Err(DeviceFault::Invalidating),
        "an interval inserted during an invalidation it missed faulted in: {r:?}"
    );
    guard.end();
    let r = Device::try_fault_in(&new, &mm, va(m, 3), false);
    ensure!(
        r.is_ok(),
        "the new interval cannot fault after the end: {r:?}"
    );
    let z = mm.zap_range(pages(m, 3, 1), &mut free_all(m));
    ensure!(z == Ok(1), "zap: {z:?}");
    ensure!(
        new.ops().cached(va(m, 3)).is_none(),
        "the interval inserted during an invalidation is not invalidated afterwards"
    );
    coherent(new.ops(), &mm, "zap")?;
    finish(m, &mm)
}

pub(crate) fn removed_interval_is_not_invalidated<M: Machine>(m: &M) -> Outcome {
    let mm = new_space(m)?;
    let mgr = pin!(Subscription::new(IntervalNotifiers::new()));
    ensure!(
        mm.notifiers().register(mgr.as_ref()).is_ok(),
        "register failed"
    );
    let sub = pin!(IntervalSub::new(Device::new(page::<M>())));
    insert(m, mgr.notifier(), sub.as_ref(), 0, 2)?;
    map_pages(m, &mm, 0, 2, Prot::WRITE)?;
    fault_all(&sub, &mm, m, 0, 2, false)?;
    let r = mgr.notifier().remove(sub.as_ref());
    ensure!(r.is_ok(), "remove failed: {r:?}");
    ensure!(!sub.is_inserted(), "a removed interval reports inserted");
    let z = mm.zap_range(pages(m, 0, 2), &mut free_all(m));
    ensure!(z == Ok(2), "zap: {z:?}");
    let (_, n) = log(sub.ops());
    ensure!(n == 0, "a removed interval got {n} invalidations");
    let r = Device::fault_in(&sub, &mm, va(m, 0), false);
    ensure!(
        r == Err(DeviceFault::OutsideInterval),
        "a removed device faulted in: {r:?}"
    );
    finish(m, &mm)
}
