//! Release: every registered notifier is released exactly once, after
//! every other callback, and nothing is called afterwards.

use super::support::*;

#[test]
fn release_calls_each_release_exactly_once() {
    let head = NotifierHead::new();
    let a = pin!(Subscription::new(Recorder::default()));
    let b = pin!(Subscription::new(Recorder::default()));
    head.register(a.as_ref()).unwrap();
    head.register(b.as_ref()).unwrap();

    head.release().unwrap();
    head.release().unwrap();

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

    head.release().unwrap();

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

    head.release().unwrap();
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
    head.release().unwrap();

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
    head.release().unwrap();

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
        head.release().unwrap();
    } // Must not hang or touch the head's (empty) list.
    assert!(head.is_released(), "the head stays released");
}

#[test]
fn released_subscription_may_register_on_another_head() {
    let old = NotifierHead::new();
    let new = NotifierHead::new();
    let sub = pin!(Subscription::new(Recorder::default()));
    old.register(sub.as_ref()).unwrap();
    old.release().unwrap();

    new.register(sub.as_ref()).unwrap();
    new.invalidate_page(va(5));

    assert_eq!(
        sub.notifier().calls(),
        [Call::Release, Call::Page(va(5))],
        "after release the notifier is free to follow a new address space"
    );
}

/// Waits inside `release` until told to return, then records that it did.
struct SlowRelease {
    entered: std::sync::Barrier,
    leave: std::sync::Barrier,
    returned: AtomicBool,
}

impl MmuNotifier for SlowRelease {
    fn release(&self) {
        self.entered.wait();
        self.leave.wait();
        self.returned.store(true, SeqCst);
    }
}

/// A kernel that calls `release` while `teardown` runs must not get its
/// call back before the secondary MMUs let go: teardown would otherwise
/// hand out frames they still map.
#[test]
fn a_second_concurrent_release_returns_only_after_every_release_callback() {
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(SlowRelease {
        entered: std::sync::Barrier::new(2),
        leave: std::sync::Barrier::new(2),
        returned: AtomicBool::new(false),
    }));
    head.register(sub.as_ref()).unwrap();
    let notifier = sub.notifier();
    thread::scope(|s| {
        let first = s.spawn(|| head.release());
        notifier.entered.wait();
        let second = s.spawn(|| {
            let r = head.release();
            (r, notifier.returned.load(SeqCst))
        });
        pause();
        assert!(!second.is_finished(), "the second release waits");
        notifier.leave.wait();
        let (r, callbacks_done) = second.join().unwrap();
        assert_eq!(r, Ok(()));
        assert!(
            callbacks_done,
            "the second release returned before the release callback had"
        );
        assert_eq!(first.join().unwrap(), Ok(()));
    });
    assert!(sub.is_released());
}
