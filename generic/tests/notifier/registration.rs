//! Registering and unregistering: what is refused, when it waits, and that
//! a subscription is never called once it is gone.

use super::support::*;

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

#[test]
fn a_released_subscription_registered_elsewhere_is_not_unregistered_by_its_old_head() {
    let (a, b) = (NotifierHead::new(), NotifierHead::new());
    let sub = pin!(Subscription::new(Recorder::default()));
    a.register(sub.as_ref()).unwrap();
    a.release().unwrap();
    b.register(sub.as_ref()).unwrap();
    assert_eq!(
        a.unregister(sub.as_ref()),
        Err(Error::NotRegistered),
        "the node now belongs to B"
    );
    assert!(sub.is_registered(), "and is still on B's list");
    b.invalidate_page(va(1));
    assert_eq!(sub.notifier().calls(), [Call::Release, Call::Page(va(1))]);
    b.unregister(sub.as_ref()).unwrap();
}

#[test]
fn two_unregisters_of_one_subscription_unregister_it_once() {
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Recorder::default()));
    head.register(sub.as_ref()).unwrap();
    let results: Vec<_> = thread::scope(|s| {
        let sub = sub.as_ref();
        let head = &head;
        let a = s.spawn(move || head.unregister(sub));
        let b = s.spawn(move || head.unregister(sub));
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "exactly one unregister did it: {results:?}"
    );
    assert!(results.contains(&Err(Error::NotRegistered)));
    assert!(!sub.is_registered());
    assert!(!head.has_notifiers());
}

#[test]
fn a_notifier_chosen_at_run_time_registers_as_a_trait_object() {
    static LOG: Mutex<Vec<VirtAddr>> = Mutex::new(Vec::new());
    struct Iotlb;
    impl MmuNotifier for Iotlb {
        fn callbacks(&self) -> mmu_notifier_core::Callbacks {
            mmu_notifier_core::Callbacks::PER_PAGE
        }
        fn invalidate_page(&self, addr: VirtAddr) {
            LOG.lock().unwrap().push(addr);
        }
    }
    static DRIVER: Iotlb = Iotlb;
    let table: &'static dyn MmuNotifier = &DRIVER;
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(table));
    head.register(sub.as_ref()).unwrap();
    assert!(
        !head.wants(mmu_notifier_core::Callbacks::RANGE),
        "its declared callbacks are read through the object"
    );
    head.invalidate_page(va(3));
    assert_eq!(*LOG.lock().unwrap(), [va(3)]);
}
