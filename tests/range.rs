//! What Linux learned after its first notifiers (per-page callbacks), on
//! the emulated MMU: range batching, non-blocking callers, the synchronous
//! secondary-TLB hook, and aging beyond `age_page`.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use mmu_notifier::{
    AddressSpace, Again, Callbacks, Error, InvalidateRange, MmuNotifier, PageRange, Prot,
    Subscription, VirtAddr,
};
use mmu_notifier_emu::Emu;

const BASE: u64 = 0x0000_0080_0000_0000;
const PAGE: u64 = 4096;

fn va(i: u64) -> VirtAddr {
    VirtAddr(BASE + i * PAGE)
}

fn map(emu: &Emu, mm: &AddressSpace<'_, Emu, Emu>, pages: u64) {
    for i in 0..pages {
        mm.map(va(i), emu.alloc_frame(), Prot::WRITE).expect("map");
    }
}

/// Counts every call it gets.
#[derive(Default)]
struct Counter {
    per_page: AtomicUsize,
    starts: AtomicUsize,
    ends: AtomicUsize,
    secondary_tlbs: Mutex<Vec<PageRange>>,
    young: AtomicBool,
    refuse_nonblock: bool,
}

impl MmuNotifier for Counter {
    fn invalidate_page(&self, _: VirtAddr) {
        self.per_page.fetch_add(1, Ordering::Relaxed);
    }
    fn invalidate_pages(&self, _: PageRange) {
        self.per_page.fetch_add(1, Ordering::Relaxed);
    }
    fn invalidate_range_start(&self, range: &InvalidateRange) -> Result<(), Again> {
        if self.refuse_nonblock && !range.may_block() {
            return Err(Again);
        }
        self.starts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn invalidate_range_end(&self, _: &InvalidateRange) {
        self.ends.fetch_add(1, Ordering::Relaxed);
    }
    fn clear_young(&self, _: PageRange) -> bool {
        self.young.swap(false, Ordering::Relaxed)
    }
    fn test_young(&self, _: VirtAddr) -> bool {
        self.young.load(Ordering::Relaxed)
    }
}

/// Implements only range start/end, and says so.
#[derive(Default)]
struct RangeOnly(Counter);

impl MmuNotifier for RangeOnly {
    fn callbacks(&self) -> Callbacks {
        Callbacks::RANGE.union(Callbacks::RELEASE)
    }
    fn invalidate_page(&self, a: VirtAddr) {
        self.0.invalidate_page(a);
    }
    fn invalidate_range_start(&self, r: &InvalidateRange) -> Result<(), Again> {
        self.0.invalidate_range_start(r)
    }
    fn invalidate_range_end(&self, r: &InvalidateRange) {
        self.0.invalidate_range_end(r);
    }
}

/// A device that walks the CPU tables: wants only the synchronous hook.
#[derive(Default)]
struct SharedTables(Counter);

impl MmuNotifier for SharedTables {
    fn callbacks(&self) -> Callbacks {
        Callbacks::SECONDARY_TLB
    }
    fn invalidate_secondary_tlbs(&self, range: PageRange) {
        self.0.secondary_tlbs.lock().unwrap().push(range);
    }
}

/// Declares both the synchronous hook and start/end: refused.
struct Both;

impl MmuNotifier for Both {
    fn callbacks(&self) -> Callbacks {
        Callbacks::SECONDARY_TLB.union(Callbacks::RANGE)
    }
}

#[test]
fn range_batching_costs_one_pair_per_zap_not_one_call_per_page() {
    let emu = Emu::new(1);
    let mm = AddressSpace::new(&emu, &emu).unwrap();
    let per_page = pin!(Subscription::new(Counter::default()));
    let range_only = pin!(Subscription::new(RangeOnly::default()));
    mm.notifiers().register(per_page.as_ref()).unwrap();
    mm.notifiers().register(range_only.as_ref()).unwrap();
    map(&emu, &mm, 64);
    let n = mm
        .zap_range(PageRange::from_pages(va(0), 64, PAGE).unwrap(), &mut |r| {
            emu.free_frame(r.into_frame())
        })
        .unwrap();
    assert_eq!(n, 64);
    assert_eq!(
        per_page.notifier().per_page.load(Ordering::Relaxed),
        64,
        "the notifier with per-page callbacks gets one call per page"
    );
    let r = &range_only.notifier().0;
    assert_eq!(
        r.per_page.load(Ordering::Relaxed),
        0,
        "a range-only notifier must not be called per page"
    );
    assert_eq!(
        (
            r.starts.load(Ordering::Relaxed),
            r.ends.load(Ordering::Relaxed)
        ),
        (1, 1),
        "one start/end pair per zap"
    );
}

#[test]
fn nonblocking_zap_backs_out_when_a_notifier_would_sleep() {
    let emu = Emu::new(1);
    let mm = AddressSpace::new(&emu, &emu).unwrap();
    let ok = pin!(Subscription::new(Counter::default()));
    let sleepy = pin!(Subscription::new(Counter {
        refuse_nonblock: true,
        ..Counter::default()
    }));
    mm.notifiers().register(ok.as_ref()).unwrap();
    mm.notifiers().register(sleepy.as_ref()).unwrap();
    map(&emu, &mm, 4);
    let range = PageRange::from_pages(va(0), 4, PAGE).unwrap();
    let r = mm.zap_range_nonblock(range, &mut |_| {
        panic!("no frame may be freed when the zap backs out")
    });
    assert_eq!(r, Err(Error::Again));
    for i in 0..4 {
        assert!(
            mm.translate(va(i)).is_some(),
            "page {i} was unmapped by a zap that backed out"
        );
    }
    let (s, e) = (
        ok.notifier().starts.load(Ordering::Relaxed),
        ok.notifier().ends.load(Ordering::Relaxed),
    );
    assert_eq!(
        s, e,
        "every start that succeeded got its end ({s} starts, {e} ends)"
    );
    assert_eq!(
        sleepy.notifier().ends.load(Ordering::Relaxed),
        0,
        "the refusing notifier got an end"
    );
    // From a blockable context the same zap goes through.
    assert_eq!(
        mm.zap_range(range, &mut |r| emu.free_frame(r.into_frame())),
        Ok(4)
    );
}

#[test]
fn secondary_tlb_hook_runs_after_every_cpu_flush() {
    let emu = Emu::new(1);
    let mm = AddressSpace::new(&emu, &emu).unwrap();
    let dev = pin!(Subscription::new(SharedTables::default()));
    mm.notifiers().register(dev.as_ref()).unwrap();
    map(&emu, &mm, 3);
    let flushes_before = emu.flush_count();
    mm.change_protection(PageRange::from_pages(va(0), 1, PAGE).unwrap(), Prot::READ)
        .unwrap();
    mm.zap_range(PageRange::from_pages(va(1), 2, PAGE).unwrap(), &mut |r| {
        emu.free_frame(r.into_frame())
    })
    .unwrap();
    let seen = dev.notifier().0.secondary_tlbs.lock().unwrap().clone();
    let expected: Vec<_> = (0..3)
        .map(|i| PageRange::from_pages(va(i), 1, PAGE).unwrap())
        .collect();
    assert_eq!(
        seen, expected,
        "one secondary flush per CPU flush, same page, same order"
    );
    assert_eq!(emu.flush_count() - flushes_before, 3);
}

#[test]
fn notifier_wanting_secondary_tlb_and_range_is_refused() {
    let emu = Emu::new(1);
    let mm = AddressSpace::new(&emu, &emu).unwrap();
    let both = pin!(Subscription::new(Both));
    assert_eq!(
        mm.notifiers().register(both.as_ref()),
        Err(Error::ConflictingCallbacks)
    );
    assert!(!both.is_registered());
}

#[test]
fn clear_young_and_test_young_or_the_secondary_state_in() {
    let emu = Emu::new(1);
    let mm = AddressSpace::new(&emu, &emu).unwrap();
    let dev = pin!(Subscription::new(Counter::default()));
    mm.notifiers().register(dev.as_ref()).unwrap();
    map(&emu, &mm, 1);
    assert_eq!(mm.test_young(va(0)), Ok(false), "nobody used the page");
    dev.notifier().young.store(true, Ordering::Relaxed);
    assert_eq!(
        mm.test_young(va(0)),
        Ok(true),
        "test_young must report the secondary's access"
    );
    assert_eq!(mm.test_young(va(0)), Ok(true), "test_young must not clear");
    assert_eq!(
        mm.clear_young(va(0)),
        Ok(true),
        "clear_young must report the secondary's access"
    );
    assert_eq!(mm.clear_young(va(0)), Ok(false), "clear_young must clear");
    emu.activate(0, mm.root());
    emu.read(0, va(0)).unwrap();
    assert_eq!(
        mm.test_young(va(0)),
        Ok(true),
        "a CPU access must read as young"
    );
}
