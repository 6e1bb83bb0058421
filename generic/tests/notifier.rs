//! The notifier core as a specification: who is called, for what, and when
//! it is safe to forget a notifier.
//!
//! Each test checks one behaviour of [`NotifierHead`] and [`Subscription`]
//! and is named after it. The concurrent tests use real threads; their
//! iteration counts are small under Miri (`cfg(miri)`) and are stated in
//! each test's docs. Timing (`sleep`) is used only to give a wrong
//! implementation the chance to fail: no assertion depends on a sleep being
//! long enough for a correct one to pass.
#![cfg(feature = "notifier")]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use mmu_notifier_core::{
    Again, Error, Event, InvalidateRange, MmuNotifier, NotifierHead, Owner, PageRange,
    Subscription, VirtAddr,
};

const PAGE: u64 = 4096;

fn va(page: u64) -> VirtAddr {
    VirtAddr(page * PAGE)
}

fn pages(first: u64, count: u64) -> PageRange {
    PageRange::from_pages(va(first), count, PAGE).expect("a valid page range")
}

fn unmap(first: u64, count: u64) -> InvalidateRange {
    InvalidateRange::new(pages(first, count), Event::Unmap)
}

/// Long enough for a thread that should be blocked to have run on, had it
/// not been.
fn pause() {
    thread::sleep(Duration::from_millis(if cfg!(miri) { 5 } else { 50 }));
}

/// One callback as a notifier saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Release,
    Page(VirtAddr),
    Pages(PageRange),
    Age(VirtAddr),
    Start {
        range: PageRange,
        event: Event,
        owner: Option<Owner>,
        may_block: bool,
    },
    End(PageRange),
}

/// A notifier that implements every operation and writes down each call.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<Call>>,
    /// What `age_page` answers.
    young: bool,
    /// Whether `invalidate_range_start` fails with `Again` when it may not block.
    would_sleep: bool,
}

impl Recorder {
    fn young(young: bool) -> Self {
        Self {
            young,
            ..Self::default()
        }
    }

    fn would_sleep() -> Self {
        Self {
            would_sleep: true,
            ..Self::default()
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn count(&self, pred: impl Fn(&Call) -> bool) -> usize {
        self.calls().iter().filter(|c| pred(c)).count()
    }

    fn push(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }
}

impl MmuNotifier for Recorder {
    fn release(&self) {
        self.push(Call::Release);
    }
    fn invalidate_page(&self, addr: VirtAddr) {
        self.push(Call::Page(addr));
    }
    fn invalidate_pages(&self, range: PageRange) {
        self.push(Call::Pages(range));
    }
    fn age_page(&self, addr: VirtAddr) -> bool {
        self.push(Call::Age(addr));
        self.young
    }
    fn invalidate_range_start(&self, range: &InvalidateRange) -> Result<(), Again> {
        self.push(Call::Start {
            range: range.range,
            event: range.event,
            owner: range.owner,
            may_block: range.may_block(),
        });
        if self.would_sleep && !range.may_block() {
            Err(Again)
        } else {
            Ok(())
        }
    }
    fn invalidate_range_end(&self, range: &InvalidateRange) {
        self.push(Call::End(range.range));
    }
}

fn is_start(c: &Call) -> bool {
    matches!(c, Call::Start { .. })
}

fn is_end(c: &Call) -> bool {
    matches!(c, Call::End(_))
}

/// Counts calls in a counter it does not own, so the count can be read
/// after the subscription is gone.
struct Counter<'a>(&'a AtomicUsize);

impl MmuNotifier for Counter<'_> {
    fn invalidate_page(&self, _: VirtAddr) {
        self.0.fetch_add(1, SeqCst);
    }
}

/// Calls every hook once on `head`.
fn call_every_hook(head: &NotifierHead) {
    head.invalidate_page(va(1));
    head.invalidate_pages(pages(2, 3));
    let _ = head.age_page(va(5));
    head.invalidate_range_start(unmap(6, 2)).end();
    if let Ok(guard) = head.try_invalidate_range_start_nonblock(unmap(8, 1)) {
        guard.end();
    }
}

// ---------------------------------------------------------------------------
// Calls

#[test]
fn nobody_registered_calls_nothing() {
    let head = NotifierHead::new();
    let bystander = pin!(Subscription::new(Recorder::default()));

    assert!(!head.has_notifiers(), "a new head has no notifiers");
    call_every_hook(&head);
    assert!(
        !head.age_page(va(1)),
        "with nobody registered no page is young"
    );

    assert_eq!(
        bystander.notifier().calls(),
        [],
        "an unregistered subscription is never called"
    );
}

#[test]
fn registered_notifier_receives_invalidate_page() {
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Recorder::default()));
    head.register(sub.as_ref()).unwrap();

    assert!(
        head.has_notifiers(),
        "a registration makes the head non-empty"
    );
    head.invalidate_page(va(7));

    assert_eq!(
        sub.notifier().calls(),
        [Call::Page(va(7))],
        "invalidate_page reaches the notifier with its address"
    );
}

#[test]
fn registered_notifier_receives_invalidate_pages() {
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Recorder::default()));
    head.register(sub.as_ref()).unwrap();

    head.invalidate_pages(pages(3, 4));

    assert_eq!(
        sub.notifier().calls(),
        [Call::Pages(pages(3, 4))],
        "invalidate_pages reaches the notifier with its range"
    );
}

#[test]
fn every_registered_notifier_is_called() {
    let head = NotifierHead::new();
    let a = pin!(Subscription::new(Recorder::default()));
    let b = pin!(Subscription::new(Recorder::default()));
    let c = pin!(Subscription::new(Recorder::default()));
    for sub in [a.as_ref(), b.as_ref(), c.as_ref()] {
        head.register(sub).unwrap();
    }

    head.invalidate_page(va(9));

    for (name, sub) in [("a", &a), ("b", &b), ("c", &c)] {
        assert_eq!(
            sub.notifier().calls(),
            [Call::Page(va(9))],
            "notifier {name} is called exactly once per invalidation"
        );
    }
}

#[test]
fn missing_ops_are_skipped() {
    /// Implements only the seed's `invalidate_page`.
    struct PageOnly(AtomicUsize);
    impl MmuNotifier for PageOnly {
        fn invalidate_page(&self, _: VirtAddr) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(PageOnly(AtomicUsize::new(0))));
    head.register(sub.as_ref()).unwrap();

    call_every_hook(&head);
    assert!(
        !head.age_page(va(1)),
        "a notifier without age_page never reports a page young"
    );
    head.release();

    assert_eq!(
        sub.notifier().0.load(SeqCst),
        1,
        "only the implemented op runs; the missing ones are skipped without effect"
    );
    assert!(
        sub.is_released(),
        "release completes for a notifier without a release op"
    );
}

#[test]
fn age_page_results_are_ored_and_every_notifier_is_asked() {
    let head = NotifierHead::new();
    let young = pin!(Subscription::new(Recorder::young(true)));
    let old_a = pin!(Subscription::new(Recorder::young(false)));
    let old_b = pin!(Subscription::new(Recorder::young(false)));
    // Young in the middle of the list, whatever order the list walks in.
    head.register(old_a.as_ref()).unwrap();
    head.register(young.as_ref()).unwrap();
    head.register(old_b.as_ref()).unwrap();

    assert!(
        head.age_page(va(4)),
        "one young notifier makes the page young"
    );
    for (name, sub) in [("young", &young), ("old_a", &old_a), ("old_b", &old_b)] {
        assert_eq!(
            sub.notifier().calls(),
            [Call::Age(va(4))],
            "notifier {name} is asked even after a `true` answer"
        );
    }
}

#[test]
fn age_page_is_false_when_no_notifier_saw_an_access() {
    let head = NotifierHead::new();
    let a = pin!(Subscription::new(Recorder::young(false)));
    let b = pin!(Subscription::new(Recorder::young(false)));
    head.register(a.as_ref()).unwrap();
    head.register(b.as_ref()).unwrap();

    assert!(
        !head.age_page(va(4)),
        "the OR of all-false answers is false"
    );
    assert_eq!(
        a.notifier().count(|c| *c == Call::Age(va(4))),
        1,
        "every notifier is asked"
    );
    assert_eq!(
        b.notifier().count(|c| *c == Call::Age(va(4))),
        1,
        "every notifier is asked"
    );
}

// ---------------------------------------------------------------------------
// Registration

#[test]
fn double_registration_is_refused() {
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Recorder::default()));
    head.register(sub.as_ref()).unwrap();

    assert_eq!(
        head.register(sub.as_ref()),
        Err(Error::AlreadyRegistered),
        "a subscription is on a head at most once"
    );
    head.invalidate_page(va(1));
    assert_eq!(
        sub.notifier().calls(),
        [Call::Page(va(1))],
        "the refused registration did not link it twice"
    );
}

#[test]
fn registration_on_another_head_is_refused() {
    let first = NotifierHead::new();
    let second = NotifierHead::new();
    let sub = pin!(Subscription::new(Recorder::default()));
    first.register(sub.as_ref()).unwrap();

    assert_eq!(
        second.register(sub.as_ref()),
        Err(Error::AlreadyRegistered),
        "a subscription is on one head at a time"
    );
    assert!(!second.has_notifiers(), "the refused head stays empty");
    second.invalidate_page(va(1));
    assert_eq!(
        sub.notifier().calls(),
        [],
        "the refused head does not call it"
    );
}

#[test]
fn unregister_of_unregistered_is_refused() {
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Recorder::default()));

    assert_eq!(
        head.unregister(sub.as_ref()),
        Err(Error::NotRegistered),
        "a never-registered subscription cannot be unregistered"
    );
    head.register(sub.as_ref()).unwrap();
    head.unregister(sub.as_ref()).unwrap();
    assert_eq!(
        head.unregister(sub.as_ref()),
        Err(Error::NotRegistered),
        "a second unregister is refused"
    );
}

#[test]
fn unregister_from_another_head_is_refused() {
    let home = NotifierHead::new();
    let other = NotifierHead::new();
    let sub = pin!(Subscription::new(Recorder::default()));
    home.register(sub.as_ref()).unwrap();

    assert_eq!(
        other.unregister(sub.as_ref()),
        Err(Error::NotRegistered),
        "only the head it is on can unregister it"
    );
    assert!(
        sub.is_registered(),
        "the refused unregister left it registered"
    );
    home.invalidate_page(va(2));
    assert_eq!(
        sub.notifier().calls(),
        [Call::Page(va(2))],
        "it is still called by its own head"
    );
}

#[test]
fn unregister_then_no_more_calls() {
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Recorder::default()));
    head.register(sub.as_ref()).unwrap();
    head.invalidate_page(va(1));

    head.unregister(sub.as_ref()).unwrap();
    assert!(!sub.is_registered(), "unregister clears the registration");
    assert!(!head.has_notifiers(), "the list is empty again");
    call_every_hook(&head);

    assert_eq!(
        sub.notifier().calls(),
        [Call::Page(va(1))],
        "nothing is called after unregister returned"
    );
}

#[test]
fn unregistered_subscription_can_register_again() {
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Recorder::default()));
    head.register(sub.as_ref()).unwrap();
    head.unregister(sub.as_ref()).unwrap();
    head.invalidate_page(va(1));

    head.register(sub.as_ref()).unwrap();
    head.invalidate_page(va(2));

    assert_eq!(
        sub.notifier().calls(),
        [Call::Page(va(2))],
        "a re-registered notifier is called again, and only from then on"
    );
}

#[test]
fn dropping_subscription_unregisters() {
    let head = NotifierHead::new();
    let calls = AtomicUsize::new(0);
    {
        let sub = pin!(Subscription::new(Counter(&calls)));
        head.register(sub.as_ref()).unwrap();
        head.invalidate_page(va(1));
    }

    assert!(
        !head.has_notifiers(),
        "dropping the subscription took it off the list"
    );
    head.invalidate_page(va(2));
    assert_eq!(
        calls.load(SeqCst),
        1,
        "a dropped subscription is not called"
    );
}

#[test]
fn dropping_a_boxed_subscription_frees_it_only_after_unregistering() {
    let head = NotifierHead::new();
    let calls = AtomicUsize::new(0);
    let sub = Box::pin(Subscription::new(Counter(&calls)));
    head.register(sub.as_ref()).unwrap();
    head.invalidate_page(va(1));

    drop(sub);
    // Under Miri a call into the freed box would be reported as a use after free.
    head.invalidate_page(va(2));

    assert_eq!(
        calls.load(SeqCst),
        1,
        "the freed subscription is not called"
    );
}

#[test]
fn unregistering_one_notifier_leaves_the_others_called() {
    let head = NotifierHead::new();
    let a = pin!(Subscription::new(Recorder::default()));
    let b = pin!(Subscription::new(Recorder::default()));
    let c = pin!(Subscription::new(Recorder::default()));
    for sub in [a.as_ref(), b.as_ref(), c.as_ref()] {
        head.register(sub).unwrap();
    }

    head.unregister(b.as_ref()).unwrap();
    head.invalidate_page(va(3));

    assert_eq!(
        a.notifier().calls(),
        [Call::Page(va(3))],
        "a stays on the list"
    );
    assert_eq!(b.notifier().calls(), [], "b is gone");
    assert_eq!(
        c.notifier().calls(),
        [Call::Page(va(3))],
        "c stays on the list"
    );
}

// ---------------------------------------------------------------------------
// Release

#[test]
fn release_calls_each_release_exactly_once() {
    let head = NotifierHead::new();
    let a = pin!(Subscription::new(Recorder::default()));
    let b = pin!(Subscription::new(Recorder::default()));
    head.register(a.as_ref()).unwrap();
    head.register(b.as_ref()).unwrap();

    head.release();
    head.release();

    for (name, sub) in [("a", &a), ("b", &b)] {
        assert_eq!(
            sub.notifier().calls(),
            [Call::Release],
            "{name}: release is called once, even if the head is released twice"
        );
        assert!(
            sub.is_released(),
            "{name}: the subscription knows it was released"
        );
        assert!(
            !sub.is_registered(),
            "{name}: a released subscription is not registered"
        );
    }
    assert!(head.is_released(), "the head knows it was released");
}

#[test]
fn release_skips_unregistered_notifiers() {
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Recorder::default()));
    head.register(sub.as_ref()).unwrap();
    head.unregister(sub.as_ref()).unwrap();

    head.release();

    assert_eq!(
        sub.notifier().calls(),
        [],
        "a notifier unregistered before release is not released"
    );
    assert!(!sub.is_released(), "and it does not count as released");
}

#[test]
fn nothing_is_called_after_release() {
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Recorder::default()));
    head.register(sub.as_ref()).unwrap();

    head.release();
    call_every_hook(&head);

    assert_eq!(
        sub.notifier().calls(),
        [Call::Release],
        "release is the last call a notifier gets"
    );
    assert!(!head.has_notifiers(), "a released head has an empty list");
}

#[test]
fn register_after_release_is_refused() {
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Recorder::default()));
    head.release();

    assert_eq!(
        head.register(sub.as_ref()),
        Err(Error::Released),
        "a torn-down address space takes no notifier"
    );
    assert!(
        !head.has_notifiers(),
        "the refused registration did not link it"
    );
}

#[test]
fn unregister_after_release_reports_released() {
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Recorder::default()));
    head.register(sub.as_ref()).unwrap();
    head.release();

    assert_eq!(
        head.unregister(sub.as_ref()),
        Err(Error::Released),
        "the head already let go of it"
    );
}

#[test]
fn dropping_a_released_subscription_returns() {
    let head = NotifierHead::new();
    let calls = AtomicUsize::new(0);
    {
        let sub = pin!(Subscription::new(Counter(&calls)));
        head.register(sub.as_ref()).unwrap();
        head.release();
    } // Must not hang or touch the head's (empty) list.
    assert!(head.is_released(), "the head stays released");
}

#[test]
fn released_subscription_may_register_on_another_head() {
    let old = NotifierHead::new();
    let new = NotifierHead::new();
    let sub = pin!(Subscription::new(Recorder::default()));
    old.register(sub.as_ref()).unwrap();
    old.release();

    new.register(sub.as_ref()).unwrap();
    new.invalidate_page(va(5));

    assert_eq!(
        sub.notifier().calls(),
        [Call::Release, Call::Page(va(5))],
        "after release the notifier is free to follow a new address space"
    );
}

// ---------------------------------------------------------------------------
// Range invalidations

#[test]
fn range_start_and_end_are_paired() {
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Recorder::default()));
    head.register(sub.as_ref()).unwrap();

    let guard = head.invalidate_range_start(unmap(4, 2));
    assert_eq!(
        sub.notifier().calls(),
        [Call::Start {
            range: pages(4, 2),
            event: Event::Unmap,
            owner: None,
            may_block: true
        }],
        "start runs before invalidate_range_start returns"
    );
    assert_eq!(
        guard.range().range,
        pages(4, 2),
        "the guard carries its range"
    );
    guard.end();

    assert_eq!(sub.notifier().count(is_start), 1, "one start");
    assert_eq!(
        sub.notifier().calls().last(),
        Some(&Call::End(pages(4, 2))),
        "the end follows with the same range"
    );
    assert_eq!(sub.notifier().count(is_end), 1, "exactly one end per start");
}

#[test]
fn range_carries_event_and_owner() {
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Recorder::default()));
    head.register(sub.as_ref()).unwrap();

    let range = InvalidateRange::new(pages(1, 1), Event::ProtectionVma).with_owner(Owner(0xd0));
    head.invalidate_range_start(range).end();

    assert_eq!(
        sub.notifier().calls()[0],
        Call::Start {
            range: pages(1, 1),
            event: Event::ProtectionVma,
            owner: Some(Owner(0xd0)),
            may_block: true
        },
        "the notifier sees why and by whom the range changes"
    );
}

#[test]
fn notifier_registered_during_a_range_gets_neither_start_nor_end() {
    let head = NotifierHead::new();
    let early = pin!(Subscription::new(Recorder::default()));
    let late = pin!(Subscription::new(Recorder::default()));
    head.register(early.as_ref()).unwrap();

    let guard = head.invalidate_range_start(unmap(0, 4));
    thread::scope(|s| {
        // Register links `late` at once, then waits for our range to end.
        let registering = s.spawn(|| head.register(late.as_ref()));
        while !late.is_registered() {
            thread::yield_now();
        }
        head.invalidate_page(va(9));
        guard.end();
        registering.join().unwrap().unwrap();
    });

    assert_eq!(
        late.notifier().count(is_start),
        0,
        "registered after the start: no start"
    );
    assert_eq!(late.notifier().count(is_end), 0, "and so no unpaired end");
    assert_eq!(
        late.notifier().calls(),
        [Call::Page(va(9))],
        "an invalidation that began after it was linked does reach it"
    );
    assert_eq!(
        early.notifier().count(is_start),
        1,
        "the earlier notifier got its start"
    );
    assert_eq!(early.notifier().count(is_end), 1, "and its end");
}

#[test]
fn register_waits_for_in_flight_range() {
    let head = NotifierHead::new();
    let bystander = pin!(Subscription::new(Recorder::default()));
    head.register(bystander.as_ref()).unwrap();
    let late = pin!(Subscription::new(Recorder::default()));
    let range_started = AtomicBool::new(false);
    let range_ended = AtomicBool::new(false);

    thread::scope(|s| {
        s.spawn(|| {
            let guard = head.invalidate_range_start(unmap(0, 1));
            range_started.store(true, SeqCst);
            pause();
            range_ended.store(true, SeqCst);
            guard.end();
        });
        s.spawn(|| {
            while !range_started.load(SeqCst) {
                thread::yield_now();
            }
            head.register(late.as_ref()).unwrap();
            assert!(
                range_ended.load(SeqCst),
                "register returned while a range invalidation was still in flight"
            );
        });
    });
}

#[test]
fn register_with_no_range_in_flight_does_not_wait_for_unrelated_callers() {
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Recorder::default()));
    let guard_elsewhere = NotifierHead::new();
    // A range on another head must not hold up registration here.
    let _guard = guard_elsewhere.invalidate_range_start(unmap(0, 1));

    head.register(sub.as_ref()).unwrap();
    assert!(
        sub.is_registered(),
        "registration completes on its own head"
    );
}

#[test]
fn unregister_waits_for_in_flight_callback() {
    /// Blocks inside `invalidate_page` until told to return.
    struct Blocking {
        entered: AtomicBool,
        may_return: AtomicBool,
        returned: AtomicBool,
    }
    impl MmuNotifier for Blocking {
        fn invalidate_page(&self, _: VirtAddr) {
            self.entered.store(true, SeqCst);
            while !self.may_return.load(SeqCst) {
                thread::yield_now();
            }
            self.returned.store(true, SeqCst);
        }
    }

    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Blocking {
        entered: AtomicBool::new(false),
        may_return: AtomicBool::new(false),
        returned: AtomicBool::new(false),
    }));
    head.register(sub.as_ref()).unwrap();
    let n = sub.notifier();

    thread::scope(|s| {
        s.spawn(|| head.invalidate_page(va(1)));
        while !n.entered.load(SeqCst) {
            thread::yield_now();
        }
        let unregistering = s.spawn(|| {
            head.unregister(sub.as_ref()).unwrap();
            assert!(
                n.returned.load(SeqCst),
                "unregister returned while a callback of the notifier was still running"
            );
        });
        pause();
        n.may_return.store(true, SeqCst);
        unregistering.join().unwrap();
    });
}

#[test]
fn unregister_waits_for_in_flight_range() {
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Recorder::default()));
    head.register(sub.as_ref()).unwrap();
    let range_started = AtomicBool::new(false);
    let range_ended = AtomicBool::new(false);

    thread::scope(|s| {
        s.spawn(|| {
            let guard = head.invalidate_range_start(unmap(0, 1));
            range_started.store(true, SeqCst);
            pause();
            range_ended.store(true, SeqCst);
            guard.end();
        });
        while !range_started.load(SeqCst) {
            thread::yield_now();
        }
        head.unregister(sub.as_ref()).unwrap();
        assert!(
            range_ended.load(SeqCst),
            "unregister returned between a start it received and its end"
        );
    });
    assert_eq!(
        sub.notifier().count(is_start),
        1,
        "the notifier got the start"
    );
    assert_eq!(
        sub.notifier().count(is_end),
        1,
        "and, before unregister returned, the end"
    );
}

#[test]
fn blockable_start_sees_may_block_true() {
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Recorder::default()));
    head.register(sub.as_ref()).unwrap();

    head.invalidate_range_start(unmap(0, 1)).end();

    assert!(
        matches!(
            sub.notifier().calls()[0],
            Call::Start {
                may_block: true,
                ..
            }
        ),
        "invalidate_range_start is the blockable entry point"
    );
}

#[test]
fn nonblocking_start_sees_may_block_false() {
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Recorder::default()));
    head.register(sub.as_ref()).unwrap();

    head.try_invalidate_range_start_nonblock(unmap(0, 1))
        .unwrap()
        .end();

    assert!(
        matches!(
            sub.notifier().calls()[0],
            Call::Start {
                may_block: false,
                ..
            }
        ),
        "try_invalidate_range_start_nonblock tells callbacks not to sleep"
    );
    assert_eq!(
        sub.notifier().count(is_end),
        1,
        "a successful non-blocking start is ended like any other"
    );
}

#[test]
fn nonblocking_start_failure_ends_only_started_notifiers() {
    let head = NotifierHead::new();
    let a = pin!(Subscription::new(Recorder::default()));
    let sleepy = pin!(Subscription::new(Recorder::would_sleep()));
    let c = pin!(Subscription::new(Recorder::default()));
    // The failing notifier sits between the other two, whichever way the list is walked.
    head.register(a.as_ref()).unwrap();
    head.register(sleepy.as_ref()).unwrap();
    head.register(c.as_ref()).unwrap();

    let result = head.try_invalidate_range_start_nonblock(unmap(0, 1));

    assert!(
        matches!(result, Err(Error::Again)),
        "a start that would sleep fails the whole non-blocking start"
    );
    assert_eq!(
        sleepy.notifier().count(is_start),
        1,
        "the failing notifier was asked"
    );
    assert_eq!(
        sleepy.notifier().count(is_end),
        0,
        "a failed start gets no end"
    );
    let (before, after) = if a.notifier().count(is_start) == 1 {
        (&a, &c)
    } else {
        (&c, &a)
    };
    assert_eq!(
        before.notifier().count(is_start),
        1,
        "the notifier walked before the failure started"
    );
    assert_eq!(
        before.notifier().count(is_end),
        1,
        "and got its end when the start failed"
    );
    assert_eq!(
        after.notifier().calls(),
        [],
        "the notifier after the failure gets neither start nor end"
    );
}

#[test]
fn blockable_start_cannot_fail() {
    let head = NotifierHead::new();
    let sleepy = pin!(Subscription::new(Recorder::would_sleep()));
    head.register(sleepy.as_ref()).unwrap();

    head.invalidate_range_start(unmap(0, 1)).end();

    assert_eq!(
        sleepy.notifier().count(is_end),
        1,
        "a notifier that may sleep starts and ends normally"
    );
}

#[test]
fn dropping_guard_on_early_return_ends_range() {
    fn operation(head: &NotifierHead) -> Result<(), Error> {
        let _guard = head.invalidate_range_start(unmap(0, 2));
        Err(Error::OutOfMemory)?;
        Ok(())
    }

    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Recorder::default()));
    head.register(sub.as_ref()).unwrap();

    assert_eq!(operation(&head), Err(Error::OutOfMemory));

    assert_eq!(sub.notifier().count(is_start), 1, "the range started");
    assert_eq!(
        sub.notifier().calls().last(),
        Some(&Call::End(pages(0, 2))),
        "an early return ends the range"
    );
}

#[test]
fn dropping_guard_during_panic_ends_range() {
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Recorder::default()));
    head.register(sub.as_ref()).unwrap();

    let unwound = catch_unwind(AssertUnwindSafe(|| {
        let _guard = head.invalidate_range_start(unmap(0, 3));
        panic!("operation failed between start and end");
    }));

    assert!(unwound.is_err(), "the operation panicked");
    assert_eq!(
        sub.notifier().calls().last(),
        Some(&Call::End(pages(0, 3))),
        "unwinding through the operation ends the range"
    );
    assert_eq!(sub.notifier().count(is_end), 1, "exactly once");
    // The read-side section ended with the guard: unregister does not hang.
    head.unregister(sub.as_ref()).unwrap();
}

#[test]
fn nested_ranges_each_end_once() {
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Recorder::default()));
    head.register(sub.as_ref()).unwrap();

    let outer = head.invalidate_range_start(unmap(0, 8));
    let inner = head.invalidate_range_start(unmap(2, 1));
    inner.end();
    outer.end();

    let calls = sub.notifier().calls();
    assert_eq!(
        calls.iter().filter(|c| is_start(c)).count(),
        2,
        "two starts"
    );
    assert_eq!(
        &calls[2..],
        [Call::End(pages(2, 1)), Call::End(pages(0, 8))],
        "each range ends once, in the order its guard ended"
    );
}

// ---------------------------------------------------------------------------
// Concurrency

/// A notifier that must never be called once its owner has set `gone`
/// (right after `unregister` returned), and whose range ends must follow
/// its starts.
struct Watched<'a> {
    gone: &'a AtomicBool,
    open_ranges: AtomicUsize,
    violations: &'a AtomicUsize,
}

impl Watched<'_> {
    fn check(&self) {
        if self.gone.load(SeqCst) {
            self.violations.fetch_add(1, SeqCst);
        }
    }
}

impl MmuNotifier for Watched<'_> {
    fn invalidate_page(&self, _: VirtAddr) {
        self.check();
    }
    fn invalidate_pages(&self, _: PageRange) {
        self.check();
    }
    fn age_page(&self, _: VirtAddr) -> bool {
        self.check();
        true
    }
    fn invalidate_range_start(&self, _: &InvalidateRange) -> Result<(), Again> {
        self.check();
        self.open_ranges.fetch_add(1, SeqCst);
        Ok(())
    }
    fn invalidate_range_end(&self, _: &InvalidateRange) {
        self.check();
        if self.open_ranges.fetch_sub(1, SeqCst) == 0 {
            // An end without a start.
            self.violations.fetch_add(1, SeqCst);
        }
    }
}

const STRESS_INVALIDATORS: usize = if cfg!(miri) { 2 } else { 3 };
const STRESS_REGISTRATIONS: usize = if cfg!(miri) { 4 } else { 300 };

/// `STRESS_INVALIDATORS` threads (3, or 2 under Miri) run
/// `invalidate_page`, `invalidate_pages`, `age_page` and a start/end range
/// in a loop while one thread registers, then unregisters and frees, a
/// fresh boxed notifier `STRESS_REGISTRATIONS` times (300, or 4 under
/// Miri). Right after each unregister returns the owner sets the
/// notifier's `gone` flag: a callback that sees it is a call after
/// unregister. An end without a start, or a start still open when
/// unregister returned, is a violation too.
#[test]
fn no_call_after_unregister_under_concurrent_invalidation() {
    let head = NotifierHead::new();
    let gone: Vec<AtomicBool> = (0..STRESS_REGISTRATIONS)
        .map(|_| AtomicBool::new(false))
        .collect();
    let violations = AtomicUsize::new(0);
    let unbalanced = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let invalidations = AtomicUsize::new(0);

    thread::scope(|s| {
        for t in 0..STRESS_INVALIDATORS {
            let (head, done, invalidations) = (&head, &done, &invalidations);
            s.spawn(move || {
                let mut i = 0u64;
                while !done.load(SeqCst) {
                    match (i + t as u64) % 4 {
                        0 => head.invalidate_page(va(i % 64)),
                        1 => head.invalidate_pages(pages(i % 64, 2)),
                        2 => {
                            let _ = head.age_page(va(i % 64));
                        }
                        _ => {
                            let guard = head.invalidate_range_start(unmap(i % 64, 1));
                            head.invalidate_page(va(i % 64));
                            guard.end();
                        }
                    }
                    i += 1;
                    invalidations.fetch_add(1, SeqCst);
                }
            });
        }
        for flag in &gone {
            let sub = Box::pin(Subscription::new(Watched {
                gone: flag,
                open_ranges: AtomicUsize::new(0),
                violations: &violations,
            }));
            head.register(sub.as_ref()).unwrap();
            thread::yield_now();
            head.unregister(sub.as_ref()).unwrap();
            flag.store(true, SeqCst);
            if sub.notifier().open_ranges.load(SeqCst) != 0 {
                unbalanced.fetch_add(1, SeqCst);
            }
            drop(sub);
        }
        done.store(true, SeqCst);
    });

    assert_eq!(
        violations.load(SeqCst),
        0,
        "a notifier was called after unregister returned, or got an end without a start"
    );
    assert_eq!(
        unbalanced.load(SeqCst),
        0,
        "unregister returned while a range the notifier had started was still open"
    );
    assert!(
        invalidations.load(SeqCst) > 0,
        "the invalidating threads ran"
    );
}

/// Two registrar threads each register and unregister their own notifier
/// `STRESS_REGISTRATIONS` times (300, or 4 under Miri) while a third keeps
/// invalidating: concurrent writers must not lose each other's list
/// updates. Afterwards the list is empty and a long-lived notifier
/// registered throughout was called for every invalidation.
#[test]
fn concurrent_registrations_keep_the_list_consistent() {
    let head = NotifierHead::new();
    let anchor_calls = AtomicUsize::new(0);
    let anchor = pin!(Subscription::new(Counter(&anchor_calls)));
    head.register(anchor.as_ref()).unwrap();
    let done = AtomicBool::new(false);
    let invalidations = AtomicUsize::new(0);

    thread::scope(|s| {
        s.spawn(|| {
            while !done.load(SeqCst) {
                head.invalidate_page(va(1));
                invalidations.fetch_add(1, SeqCst);
            }
        });
        let registrars: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let calls = AtomicUsize::new(0);
                    for _ in 0..STRESS_REGISTRATIONS {
                        let sub = pin!(Subscription::new(Counter(&calls)));
                        head.register(sub.as_ref()).unwrap();
                        head.unregister(sub.as_ref()).unwrap();
                    }
                })
            })
            .collect();
        for r in registrars {
            r.join().unwrap();
        }
        done.store(true, SeqCst);
    });

    assert_eq!(
        anchor_calls.load(SeqCst),
        invalidations.load(SeqCst),
        "a notifier registered throughout is called for every invalidation, whatever else registers"
    );
    head.unregister(anchor.as_ref()).unwrap();
    assert!(
        !head.has_notifiers(),
        "every registration was undone: the list is empty"
    );
}

/// Release races with invalidations and with the owners dropping their
/// subscriptions: each notifier is released at most once, exactly once if
/// it was still registered when release ran, and never called after its
/// release. Runs `RELEASE_ROUNDS` rounds (50, or 2 under Miri), each with
/// three notifiers, one invalidating thread and one dropping thread.
#[test]
fn release_races_with_invalidation_and_drop() {
    const RELEASE_ROUNDS: usize = if cfg!(miri) { 2 } else { 50 };

    /// Counts releases, and calls after its release.
    struct Releasable<'a> {
        releases: &'a AtomicUsize,
        after_release: &'a AtomicUsize,
    }
    impl MmuNotifier for Releasable<'_> {
        fn release(&self) {
            self.releases.fetch_add(1, SeqCst);
        }
        fn invalidate_page(&self, _: VirtAddr) {
            if self.releases.load(SeqCst) != 0 {
                self.after_release.fetch_add(1, SeqCst);
            }
        }
    }

    for _ in 0..RELEASE_ROUNDS {
        let head = NotifierHead::new();
        let releases: [AtomicUsize; 3] = Default::default();
        let after_release = AtomicUsize::new(0);
        let subs: Vec<_> = releases
            .iter()
            .map(|r| {
                Box::pin(Subscription::new(Releasable {
                    releases: r,
                    after_release: &after_release,
                }))
            })
            .collect();
        for sub in &subs {
            head.register(sub.as_ref()).unwrap();
        }
        let mut subs = subs.into_iter();
        let kept = subs.next().unwrap();
        let dropped: Vec<_> = subs.collect();

        thread::scope(|s| {
            s.spawn(|| {
                for i in 0..16 {
                    head.invalidate_page(va(i));
                }
            });
            s.spawn(move || drop(dropped));
            head.release();
        });

        assert_eq!(
            releases[0].load(SeqCst),
            1,
            "a notifier registered until release is released exactly once"
        );
        assert!(kept.is_released(), "and knows it");
        for r in &releases[1..] {
            assert!(
                r.load(SeqCst) <= 1,
                "a notifier dropped during release is released at most once"
            );
        }
        assert_eq!(
            after_release.load(SeqCst),
            0,
            "nothing is called on a notifier after its release"
        );
    }
}
