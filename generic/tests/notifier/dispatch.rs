//! Who is called for what: every hook reaches exactly the notifiers that
//! implement it, answers are OR-ed, and nothing is called for nobody.

use super::support::*;

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
    /// Implements only `invalidate_page`.
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
    head.release().unwrap();

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
