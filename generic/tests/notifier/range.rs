//! Range invalidations: start and end are paired, reach the same notifiers,
//! carry their event, and registration waits for ranges in flight.

use super::support::*;

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
fn register_does_not_wait_for_ranges_of_another_kernel() {
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Recorder::default()));
    // Heads of one kernel share a grace-period domain (as Linux's MMU
    // notifiers share one SRCU); a head of another kernel does not.
    let elsewhere = NotifierHead::<OtherKernel>::for_kernel();
    let _guard = elsewhere.invalidate_range_start(unmap(0, 1));

    head.register(sub.as_ref()).unwrap();
    assert!(
        sub.is_registered(),
        "a range open in another kernel's domain does not hold up registration"
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
