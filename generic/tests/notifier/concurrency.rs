//! Several threads at once: no call after unregister, no lost list update,
//! release racing invalidation and drop.

use super::support::*;

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
fn no_call_after_unregister_under_concurrent_invalidation<K: Kernel>() {
    let head = NotifierHead::<K>::for_kernel();
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
        // Registrations begin once the invalidators run, so every one of
        // them overlaps invalidations.
        while invalidations.load(SeqCst) < STRESS_INVALIDATORS {
            thread::yield_now();
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
fn concurrent_registrations_keep_the_list_consistent<K: Kernel>() {
    let head = NotifierHead::<K>::for_kernel();
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
fn release_races_with_invalidation_and_drop<K: Kernel>() {
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
        let head = NotifierHead::<K>::for_kernel();
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
            head.release().unwrap();
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

/// Each scenario runs on the default kernel (shared counters), on host
/// threads with fence-free readers ordered by `membarrier`, and on host
/// threads whose readers fence: `cargo test concurrency::` runs them all.
macro_rules! on_every_kernel {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[test]
            fn portable() {
                super::$scenario::<mmu_notifier_core::Portable>();
            }
            #[cfg(feature = "std")]
            #[test]
            fn std_threads_membarrier() {
                super::$scenario::<mmu_notifier_core::kernel::StdThreads>();
            }
            #[cfg(feature = "std")]
            #[test]
            fn std_threads_fenced() {
                super::$scenario::<mmu_notifier_core::kernel::StdThreadsFenced>();
            }
        }
    )*};
}

on_every_kernel!(
    no_call_after_unregister_under_concurrent_invalidation,
    concurrent_registrations_keep_the_list_consistent,
    release_races_with_invalidation_and_drop,
);
