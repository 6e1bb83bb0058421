//! The notifier core compiled out (`--no-default-features`): the head costs
//! nothing, nothing can register, and every hook still takes the same
//! arguments and does nothing.
//!
//! Run with `cargo test -p mmu-notifier-core --no-default-features`.
#![cfg(not(feature = "notifier"))]

use std::mem::size_of;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use mmu_notifier_core::{
    Again, Error, Event, InvalidateRange, MmuNotifier, NotifierHead, PageRange, Subscription,
    VirtAddr,
};

const PAGE: u64 = 4096;

fn unmap() -> InvalidateRange {
    InvalidateRange::new(
        PageRange::from_pages(VirtAddr(0), 4, PAGE).unwrap(),
        Event::Unmap,
    )
}

/// Counts every call it gets; with notifiers compiled out it must get none.
#[derive(Default)]
struct Counting(AtomicUsize);

impl Counting {
    fn hit(&self) {
        self.0.fetch_add(1, SeqCst);
    }
}

impl MmuNotifier for Counting {
    fn release(&self) {
        self.hit();
    }
    fn invalidate_page(&self, _: VirtAddr) {
        self.hit();
    }
    fn invalidate_pages(&self, _: PageRange) {
        self.hit();
    }
    fn age_page(&self, _: VirtAddr) -> bool {
        self.hit();
        true
    }
    fn invalidate_range_start(&self, _: &InvalidateRange) -> Result<(), Again> {
        self.hit();
        Err(Again)
    }
    fn invalidate_range_end(&self, _: &InvalidateRange) {
        self.hit();
    }
}

#[test]
fn head_is_zero_sized() {
    assert_eq!(
        size_of::<NotifierHead>(),
        0,
        "without the notifier feature an address space pays nothing for its head"
    );
}

#[test]
fn range_guard_holds_only_its_range() {
    assert_eq!(
        size_of::<mmu_notifier_core::RangeGuard<'_>>(),
        size_of::<InvalidateRange>(),
        "a compiled-out guard carries no list state"
    );
}

#[test]
fn register_reports_notifiers_disabled() {
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Counting::default()));

    assert_eq!(
        head.register(sub.as_ref()),
        Err(Error::NotifiersDisabled),
        "registration says why it cannot work"
    );
    assert!(!sub.is_registered(), "the subscription is not registered");
    assert!(!head.has_notifiers(), "the head stays empty");
}

#[test]
fn unregister_reports_notifiers_disabled() {
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Counting::default()));

    assert_eq!(
        head.unregister(sub.as_ref()),
        Err(Error::NotifiersDisabled),
        "unregistration says why it cannot work"
    );
}

#[test]
fn hooks_do_nothing() {
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Counting::default()));
    let _ = head.register(sub.as_ref());
    let range = unmap();

    head.invalidate_page(VirtAddr(0x1000));
    head.invalidate_pages(range.range);
    assert!(
        !head.age_page(VirtAddr(0x1000)),
        "no notifier can report a page young"
    );
    let guard = head.invalidate_range_start(range);
    assert_eq!(guard.range(), &range, "the guard still carries its range");
    guard.end();
    let guard = head
        .try_invalidate_range_start_nonblock(range)
        .expect("a non-blocking start with nobody to ask cannot fail");
    drop(guard);
    head.release().unwrap();

    assert_eq!(
        sub.notifier().0.load(SeqCst),
        0,
        "no hook reaches a notifier"
    );
    assert!(!sub.is_released(), "release does not touch a subscription");
}

#[test]
fn blockable_flag_still_set_by_entry_point() {
    let head = NotifierHead::new();
    let range = unmap();
    let guard = head.invalidate_range_start(range);

    assert_eq!(
        guard.range().range,
        range.range,
        "the guard returns the caller's range unchanged"
    );
}

#[test]
fn release_is_not_tracked() {
    let head = NotifierHead::new();
    head.release().unwrap();
    assert!(
        !head.is_released(),
        "a compiled-out head does not remember release"
    );
}

/// The hooks keep their signatures with the feature off: a call site that
/// compiles with notifiers on compiles with them off, and one with a wrong
/// argument fails either way (see the `compile_fail` example proposed for
/// `disabled.rs`). This is the positive half, checked by the compiler.
#[test]
fn hooks_have_the_same_signatures_as_with_notifiers() {
    let _: fn(&NotifierHead, VirtAddr) = NotifierHead::invalidate_page;
    let _: fn(&NotifierHead, PageRange) = NotifierHead::invalidate_pages;
    let _: fn(&NotifierHead, VirtAddr) -> bool = NotifierHead::age_page;
    let _: for<'a> fn(&'a NotifierHead, InvalidateRange) -> mmu_notifier_core::RangeGuard<'a> =
        NotifierHead::invalidate_range_start;
    let _: for<'a> fn(
        &'a NotifierHead,
        InvalidateRange,
    ) -> Result<mmu_notifier_core::RangeGuard<'a>, Error> =
        NotifierHead::try_invalidate_range_start_nonblock;
    let _: fn(&NotifierHead) -> Result<(), Error> = NotifierHead::release;
}
