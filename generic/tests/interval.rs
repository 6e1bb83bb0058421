//! Interval notifiers as a specification: who is called for an
//! invalidation, what the collision-retry sequence tells a fault path, and
//! when an interval may be freed.
//!
//! Each test checks one behaviour and is named after it. The threaded
//! tests use `sleep` only to give a wrong implementation the chance to
//! fail: no assertion depends on a sleep being long enough for a correct
//! one to pass. Iteration counts shrink under Miri.
#![cfg(feature = "notifier")]

use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use mmu_notifier_core::interval::{IntervalNotifiers, IntervalOps, IntervalSub};
use mmu_notifier_core::{
    Error, Event, InvalidateRange, MmuNotifier, NotifierHead, PageRange, Subscription, VirtAddr,
};
use proptest::prelude::*;

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

fn pause() {
    thread::sleep(Duration::from_millis(if cfg!(miri) { 5 } else { 50 }));
}

/// One `invalidate` as an interval saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    range: PageRange,
    event: Event,
    cur_seq: u64,
    may_block: bool,
}

/// Ops that follow the protocol (driver lock, `set_seq`) and write down
/// every call.
#[derive(Default)]
struct Rec {
    /// The driver lock; holds the calls.
    calls: Mutex<Vec<Seen>>,
    /// Fails (`false`) when it may not block, as a contended driver would.
    would_sleep: bool,
}

impl Rec {
    fn would_sleep() -> Self {
        Self {
            would_sleep: true,
            ..Self::default()
        }
    }
    fn calls(&self) -> Vec<Seen> {
        self.calls.lock().unwrap().clone()
    }
    fn ranges(&self) -> Vec<PageRange> {
        self.calls().iter().map(|s| s.range).collect()
    }
}

impl IntervalOps for Rec {
    fn invalidate(
        &self,
        sub: &IntervalSub<'_, Self>,
        range: &InvalidateRange,
        cur_seq: u64,
    ) -> bool {
        if self.would_sleep && !range.may_block() {
            return false;
        }
        let mut calls = self.calls.lock().unwrap();
        sub.set_seq(cur_seq);
        calls.push(Seen {
            range: range.range,
            event: range.event,
            cur_seq,
            may_block: range.may_block(),
        });
        true
    }
}

type Sub<'a> = IntervalSub<'a, Rec>;

fn new_sub<'a>() -> Pin<Box<Sub<'a>>> {
    Box::pin(IntervalSub::new(Rec::default()))
}

/// Inserts `sub` for pages `[first, first + count)`.
fn insert<'a>(mgr: &'a IntervalNotifiers, sub: Pin<&Sub<'a>>, first: u64, count: u64) {
    mgr.insert(sub, va(first), count * PAGE)
        .expect("inserting an idle interval succeeds");
}

/// A manager registered on a head, as a driver sets it up.
fn with_head(f: impl FnOnce(&NotifierHead, &IntervalNotifiers)) {
    let head = NotifierHead::new();
    let mgr = pin!(Subscription::new(IntervalNotifiers::new()));
    head.register(mgr.as_ref()).unwrap();
    f(&head, mgr.notifier());
}

// ---------------------------------------------------------------------------
// Dispatch

#[test]
fn invalidation_visits_only_overlapping_intervals_with_its_range() {
    with_head(|head, mgr| {
        let subs: Vec<_> = (0..4).map(|_| new_sub()).collect();
        for (s, (first, count)) in subs.iter().zip([(0, 4), (4, 4), (6, 4), (20, 1)]) {
            insert(mgr, s.as_ref(), first, count);
        }
        let r = unmap(5, 2);
        head.invalidate_range_start(r).end();

        assert_eq!(subs[0].ops().calls(), [], "[0,4) does not overlap [5,7)");
        assert_eq!(subs[3].ops().calls(), [], "[20,21) does not overlap [5,7)");
        for s in &subs[1..3] {
            let calls = s.ops().calls();
            assert_eq!(calls.len(), 1, "an overlapping interval is called once");
            assert_eq!(
                calls[0].range, r.range,
                "it sees the whole invalidated range"
            );
            assert_eq!(calls[0].event, Event::Unmap, "and its event");
            assert!(calls[0].may_block, "a blockable start says so");
            assert_eq!(calls[0].cur_seq & 1, 1, "cur_seq is odd while invalidating");
        }
        assert!(!mgr.is_invalidating(), "the sequence is even after the end");
    });
}

#[test]
fn interval_bounds_are_half_open() {
    with_head(|head, mgr| {
        let sub = new_sub();
        insert(mgr, sub.as_ref(), 4, 4);
        head.invalidate_range_start(unmap(3, 1)).end();
        head.invalidate_range_start(unmap(8, 1)).end();
        assert_eq!(
            sub.ops().calls(),
            [],
            "the pages just outside are not its own"
        );
        head.invalidate_range_start(unmap(7, 1)).end();
        head.invalidate_range_start(unmap(0, 5)).end();
        assert_eq!(
            sub.ops().ranges(),
            [pages(7, 1), pages(0, 5)],
            "its first and last page are"
        );
    });
}

#[test]
fn invalidation_overlapping_nothing_leaves_the_sequence_even() {
    with_head(|head, mgr| {
        let sub = new_sub();
        insert(mgr, sub.as_ref(), 0, 1);
        let seq = sub.read_begin();
        let guard = head.invalidate_range_start(unmap(10, 1));
        assert!(!mgr.is_invalidating(), "nobody collides, nobody waits");
        assert_eq!(sub.try_read_begin(), Some(seq), "a fault elsewhere goes on");
        guard.end();
        assert!(!sub.read_retry(seq), "and does not retry");
    });
}

#[test]
fn release_invalidates_every_interval_once_with_release_event() {
    let head = NotifierHead::new();
    let mgr = pin!(Subscription::new(IntervalNotifiers::new()));
    head.register(mgr.as_ref()).unwrap();
    let subs: Vec<_> = (0..3).map(|_| new_sub()).collect();
    for (i, s) in subs.iter().enumerate() {
        insert(mgr.notifier(), s.as_ref(), 100 * i as u64, 3);
    }
    head.release().unwrap();
    for (i, s) in subs.iter().enumerate() {
        let calls = s.ops().calls();
        assert_eq!(calls.len(), 1, "release reaches each interval once");
        assert_eq!(calls[0].event, Event::Release);
        for p in 100 * i as u64..100 * i as u64 + 3 {
            assert!(
                calls[0].range.contains(va(p)),
                "the range covers every page"
            );
        }
    }
    assert!(!mgr.notifier().is_invalidating(), "and it ends");
}

#[test]
fn non_blocking_failure_returns_again_and_ends_what_it_started() {
    with_head(|head, mgr| {
        let first = new_sub();
        let blocker = pin!(IntervalSub::new(Rec::would_sleep()));
        insert(mgr, first.as_ref(), 0, 1);
        insert(mgr, blocker.as_ref(), 1, 1);
        let r = head.try_invalidate_range_start_nonblock(unmap(0, 2));
        assert_eq!(
            r.err(),
            Some(Error::Again),
            "an interval that would sleep fails the start"
        );
        assert_eq!(
            first.ops().calls().len(),
            1,
            "intervals before it were called"
        );
        assert!(
            !first.ops().calls()[0].may_block,
            "without permission to sleep"
        );
        assert!(!mgr.is_invalidating(), "the failed start ended itself");

        // The manager is idle again: a new interval goes straight in.
        let late = new_sub();
        insert(mgr, late.as_ref(), 0, 1);
        assert!(
            late.try_read_begin().is_some(),
            "no invalidation is left running"
        );
        head.invalidate_range_start(unmap(0, 1)).end();
        assert_eq!(late.ops().calls().len(), 1, "and it is in the tree");
    });
}

/// A sub whose interval is `pages[first, first + count)` and whether it is
/// inserted, for the linear-scan oracle.
#[derive(Debug, Clone, Copy)]
enum Op {
    Insert(usize, u64, u64),
    Remove(usize),
    Invalidate(u64, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..12, 0u64..64, 1u64..16).prop_map(|(i, f, c)| Op::Insert(i, f, c)),
        (0usize..12).prop_map(Op::Remove),
        (0u64..80, 1u64..16).prop_map(|(f, c)| Op::Invalidate(f, c)),
    ]
}

/// Cases and operations per case: Miri interprets each one, so it gets a
/// smaller sample.
const CASES: u32 = if cfg!(miri) { 8 } else { 256 };
const MAX_OPS: usize = if cfg!(miri) { 32 } else { 80 };

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES,
        // Persisting failures needs the working directory, which Miri's
        // isolation hides.
        failure_persistence: if cfg!(miri) {
            None
        } else {
            ProptestConfig::default().failure_persistence
        },
        ..ProptestConfig::default()
    })]

    /// Random inserts, removes and invalidations: an invalidation calls
    /// exactly the inserted intervals a linear scan says overlap it.
    #[test]
    fn dispatch_agrees_with_a_linear_scan(ops in prop::collection::vec(op(), 1..MAX_OPS)) {
        let head = NotifierHead::new();
        let manager = pin!(Subscription::new(IntervalNotifiers::new()));
        head.register(manager.as_ref()).unwrap();
        let mgr = manager.notifier();
        let subs: Vec<_> = (0..12).map(|_| new_sub()).collect();
        let mut inserted: Vec<Option<(u64, u64)>> = vec![None; subs.len()];
        let mut expected: Vec<usize> = vec![0; subs.len()];
        for op in ops {
            match op {
                Op::Insert(i, first, count) => {
                    let r = mgr.insert(subs[i].as_ref(), va(first), count * PAGE);
                    prop_assert_eq!(r.is_ok(), inserted[i].is_none());
                    if r.is_ok() {
                        inserted[i] = Some((first, first + count));
                    }
                }
                Op::Remove(i) => {
                    let r = mgr.remove(subs[i].as_ref());
                    prop_assert_eq!(r.is_ok(), inserted[i].is_some());
                    inserted[i] = None;
                }
                Op::Invalidate(first, count) => {
                    head.invalidate_range_start(unmap(first, count)).end();
                    for (i, iv) in inserted.iter().enumerate() {
                        if iv.is_some_and(|(s, e)| s < first + count && first < e) {
                            expected[i] += 1;
                        }
                    }
                    for (i, s) in subs.iter().enumerate() {
                        prop_assert_eq!(s.ops().calls().len(), expected[i], "interval {}", i);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The sequence

#[test]
fn read_retry_after_a_colliding_invalidation() {
    with_head(|head, mgr| {
        let sub = new_sub();
        insert(mgr, sub.as_ref(), 0, 4);
        let seq = sub.read_begin();
        assert!(!sub.read_retry(seq), "nothing happened yet");
        head.invalidate_range_start(unmap(2, 1)).end();
        assert!(
            sub.read_retry(seq),
            "a colliding invalidation forces a retry"
        );
        assert!(sub.check_retry(seq), "the lock-free check agrees");
        let again = sub.read_begin();
        assert!(
            !sub.read_retry(again),
            "a read begun after it does not retry"
        );
    });
}

#[test]
fn no_retry_after_a_non_colliding_invalidation() {
    with_head(|head, mgr| {
        let sub = new_sub();
        let other = new_sub();
        insert(mgr, sub.as_ref(), 0, 4);
        insert(mgr, other.as_ref(), 8, 4);
        let seq = sub.read_begin();
        head.invalidate_range_start(unmap(8, 2)).end();
        assert_eq!(
            other.ops().calls().len(),
            1,
            "the other interval was invalidated"
        );
        assert!(
            !sub.read_retry(seq),
            "an invalidation elsewhere does not force a retry"
        );
    });
}

#[test]
fn read_begin_waits_while_a_colliding_invalidation_runs() {
    with_head(|head, mgr| {
        let sub = new_sub();
        insert(mgr, sub.as_ref(), 0, 4);
        let guard = head.invalidate_range_start(unmap(1, 1));
        assert!(mgr.is_invalidating(), "the sequence is odd while it runs");
        assert_eq!(sub.try_read_begin(), None, "a fault may not begin now");
        let ended = AtomicBool::new(false);
        thread::scope(|s| {
            let reader = s.spawn(|| {
                let seq = sub.read_begin();
                assert!(
                    ended.load(SeqCst),
                    "read_begin returned before the invalidation ended"
                );
                seq
            });
            pause();
            ended.store(true, SeqCst);
            guard.end();
            let seq = reader.join().unwrap();
            assert!(
                !sub.read_retry(seq),
                "the read begun after it need not retry"
            );
        });
    });
}

#[test]
fn read_begin_does_not_wait_for_an_invalidation_elsewhere() {
    with_head(|head, mgr| {
        let sub = new_sub();
        let other = new_sub();
        insert(mgr, sub.as_ref(), 0, 4);
        insert(mgr, other.as_ref(), 8, 4);
        let guard = head.invalidate_range_start(unmap(8, 1));
        assert!(mgr.is_invalidating());
        let seq = sub.read_begin();
        assert_eq!(other.try_read_begin(), None, "the colliding one waits");
        guard.end();
        assert!(!sub.read_retry(seq));
    });
}

/// Real threads: a device fault path following the protocol against an
/// invalidating thread that changes the "primary" translation. After each
/// change the device holds either nothing or the new translation.
#[test]
fn fault_path_never_keeps_a_translation_an_invalidation_replaced() {
    let rounds = if cfg!(miri) { 20 } else { 5_000 };
    with_head(|head, mgr| {
        let primary = AtomicU64::new(1);
        let device: Pin<Box<IntervalSub<'_, Dev>>> = Box::pin(IntervalSub::new(Dev::default()));
        mgr.insert(device.as_ref(), va(0), PAGE).unwrap();
        let done = AtomicBool::new(false);
        thread::scope(|s| {
            s.spawn(|| {
                while !done.load(SeqCst) {
                    loop {
                        let seq = device.read_begin();
                        let value = primary.load(SeqCst);
                        let mut entry = device.ops().entry.lock().unwrap();
                        if device.read_retry(seq) {
                            continue;
                        }
                        *entry = Some(value);
                        break;
                    }
                }
            });
            for v in 2..rounds {
                let guard = head.invalidate_range_start(unmap(0, 1));
                primary.store(v, SeqCst);
                guard.end();
                let entry = *device.ops().entry.lock().unwrap();
                assert!(
                    entry.is_none() || entry == Some(v),
                    "device kept {entry:?} after the primary changed to {v}"
                );
            }
            done.store(true, SeqCst);
        });
    });
}

#[derive(Default)]
struct Dev {
    entry: Mutex<Option<u64>>,
}

impl IntervalOps for Dev {
    fn invalidate(&self, sub: &IntervalSub<'_, Self>, _: &InvalidateRange, cur_seq: u64) -> bool {
        let mut entry = self.entry.lock().unwrap();
        sub.set_seq(cur_seq);
        *entry = None;
        true
    }
}

// ---------------------------------------------------------------------------
// Inserting and removing during an invalidation

#[test]
fn insert_during_an_invalidation_is_deferred_to_its_end() {
    with_head(|head, mgr| {
        let old = new_sub();
        insert(mgr, old.as_ref(), 0, 4);
        let first = head.invalidate_range_start(unmap(0, 4));
        let new = new_sub();
        insert(mgr, new.as_ref(), 2, 4);
        assert!(new.is_inserted(), "insert returns at once");
        assert_eq!(
            new.try_read_begin(),
            None,
            "but its readers wait: it missed the running invalidation"
        );
        let second = head.invalidate_range_start(unmap(3, 1));
        assert_eq!(
            new.ops().calls(),
            [],
            "it is not in the tree while invalidations walk it"
        );
        first.end();
        assert_eq!(
            new.try_read_begin(),
            None,
            "still invalidating: the second one runs"
        );
        second.end();
        assert!(
            new.try_read_begin().is_some(),
            "after the last end it is usable"
        );
        head.invalidate_range_start(unmap(3, 1)).end();
        assert_eq!(new.ops().ranges(), [pages(3, 1)], "and in the tree");
    });
}

#[test]
fn insert_during_an_invalidation_that_found_nothing_still_waits_for_it() {
    with_head(|head, mgr| {
        let guard = head.invalidate_range_start(unmap(0, 4));
        assert!(!mgr.is_invalidating(), "no interval yet");
        let sub = new_sub();
        insert(mgr, sub.as_ref(), 2, 1);
        assert_eq!(
            sub.try_read_begin(),
            None,
            "the running invalidation may cover it: readers wait for its end"
        );
        guard.end();
        let seq = sub.try_read_begin().expect("usable after the end");
        head.invalidate_range_start(unmap(2, 1)).end();
        assert!(sub.read_retry(seq), "and it is in the tree");
    });
}

#[test]
fn remove_during_an_invalidation_waits_and_the_interval_is_called_until_then() {
    with_head(|head, mgr| {
        let sub = new_sub();
        insert(mgr, sub.as_ref(), 0, 4);
        let first = head.invalidate_range_start(unmap(0, 1));
        let removed = AtomicBool::new(false);
        thread::scope(|s| {
            s.spawn(|| {
                mgr.remove(sub.as_ref()).unwrap();
                removed.store(true, SeqCst);
            });
            pause();
            assert!(
                !removed.load(SeqCst),
                "remove returned while an invalidation could reach it"
            );
            let second = head.invalidate_range_start(unmap(1, 1));
            assert_eq!(
                sub.ops().calls().len(),
                2,
                "until removed, it is still invalidated"
            );
            first.end();
            pause();
            assert!(!removed.load(SeqCst), "one invalidation still runs");
            second.end();
        });
        assert!(removed.load(SeqCst));
        assert!(!sub.is_inserted());
        head.invalidate_range_start(unmap(0, 4)).end();
        assert_eq!(
            sub.ops().calls().len(),
            2,
            "a removed interval is not called"
        );
    });
}

#[test]
fn removing_a_deferred_insert_cancels_it_without_waiting() {
    with_head(|head, mgr| {
        let old = new_sub();
        insert(mgr, old.as_ref(), 0, 4);
        let guard = head.invalidate_range_start(unmap(0, 4));
        let new = new_sub();
        insert(mgr, new.as_ref(), 0, 4);
        mgr.remove(new.as_ref())
            .expect("a pending insert can be cancelled");
        assert!(!new.is_inserted());
        drop(new);
        guard.end();
        head.invalidate_range_start(unmap(0, 4)).end();
        assert_eq!(old.ops().calls().len(), 2);
    });
}

#[test]
fn drop_waits_until_no_invalidation_can_reach_the_interval() {
    with_head(|head, mgr| {
        let sub = new_sub();
        insert(mgr, sub.as_ref(), 0, 4);
        let guard = head.invalidate_range_start(unmap(0, 4));
        let dropped = AtomicBool::new(false);
        thread::scope(|s| {
            s.spawn(|| {
                drop(sub);
                dropped.store(true, SeqCst);
            });
            pause();
            assert!(
                !dropped.load(SeqCst),
                "drop returned while the interval is in a walked tree"
            );
            guard.end();
        });
        assert!(dropped.load(SeqCst));
        head.invalidate_range_start(unmap(0, 4)).end();
    });
}

#[test]
fn dropping_a_never_inserted_interval_does_not_wait() {
    with_head(|head, mgr| {
        let sub = new_sub();
        insert(mgr, sub.as_ref(), 0, 4);
        let other = new_sub();
        insert(mgr, other.as_ref(), 10, 1);
        let guard = head.invalidate_range_start(unmap(10, 1));
        // `sub` is not reached by the running invalidation, but the tree is
        // frozen: its removal is deferred, so drop waits for the end. A
        // never-inserted interval drops at once.
        drop(new_sub());
        guard.end();
        drop(sub);
    });
}

/// Several removes (by `remove` and by drop) and inserts queued behind one
/// invalidation are applied together by its end: the tree rebalances
/// through the links of intervals that stay, and the new ones are called.
#[test]
fn deferred_removes_and_inserts_are_applied_together_at_the_end() {
    with_head(|head, mgr| {
        let subs: Vec<_> = (0..8).map(|_| new_sub()).collect();
        for (i, s) in subs.iter().enumerate() {
            insert(mgr, s.as_ref(), 2 * i as u64, 2);
        }
        let dropped = new_sub();
        insert(mgr, dropped.as_ref(), 5, 2);
        let late: Vec<_> = (0..3).map(|_| new_sub()).collect();
        // Reaches `subs[0]` only, but freezes the whole tree.
        let guard = head.invalidate_range_start(unmap(0, 1));
        thread::scope(|s| {
            for victim in [&subs[1], &subs[4], &subs[6]] {
                s.spawn(move || mgr.remove(victim.as_ref()).unwrap());
            }
            s.spawn(move || drop(dropped));
            for (i, l) in late.iter().enumerate() {
                insert(mgr, l.as_ref(), 3 + 4 * i as u64, 1);
            }
            pause();
            guard.end();
        });
        head.invalidate_range_start(unmap(0, 20)).end();
        let calls: Vec<usize> = subs.iter().map(|s| s.ops().calls().len()).collect();
        assert_eq!(
            calls,
            [2, 0, 1, 1, 0, 1, 0, 1],
            "removed intervals are not called, the others are"
        );
        for l in &late {
            assert_eq!(l.ops().ranges(), [pages(0, 20)], "inserted at the end");
        }
    });
}

/// Moving the `Pin<Box<_>>` of an inserted interval moves the pointer, not
/// the interval: the tree's pointers to it stay valid, for calls and for
/// the rebalancing of later removals.
#[test]
fn inserted_intervals_may_move_with_their_boxes() {
    with_head(|head, mgr| {
        let subs: Vec<_> = (0..8).map(|_| new_sub()).collect();
        for (i, s) in subs.iter().enumerate() {
            insert(mgr, s.as_ref(), 2 * i as u64, 3);
        }
        let mut moved: Vec<_> = subs.into_iter().rev().collect();
        head.invalidate_range_start(unmap(0, 17)).end();
        for s in moved.drain(..4) {
            mgr.remove(s.as_ref()).unwrap();
        }
        head.invalidate_range_start(unmap(0, 17)).end();
        for s in &moved {
            assert_eq!(s.ops().calls().len(), 2);
        }
    });
}

/// Ops that insert another interval from inside their first callback,
/// while the invalidation walks the tree.
struct InsertsChild<'a, 'c> {
    mgr: &'a IntervalNotifiers,
    child: Pin<&'c Sub<'a>>,
    calls: AtomicU64,
}

impl IntervalOps for InsertsChild<'_, '_> {
    fn invalidate(&self, sub: &IntervalSub<'_, Self>, _: &InvalidateRange, cur_seq: u64) -> bool {
        sub.set_seq(cur_seq);
        assert_eq!(
            sub.interval(),
            Some((va(0), 4 * PAGE)),
            "a callback may read its own interval"
        );
        if self.calls.fetch_add(1, SeqCst) == 0 {
            self.mgr
                .insert(self.child, va(2), PAGE)
                .expect("a callback may insert");
        }
        true
    }
}

#[test]
fn a_callback_may_insert_an_interval_which_enters_after_the_walk() {
    with_head(|head, mgr| {
        let child = new_sub();
        let others: Vec<_> = (0..6).map(|_| new_sub()).collect();
        for (i, s) in others.iter().enumerate() {
            insert(mgr, s.as_ref(), i as u64, 1);
        }
        let parent = pin!(IntervalSub::new(InsertsChild {
            mgr,
            child: child.as_ref(),
            calls: AtomicU64::new(0),
        }));
        mgr.insert(parent.as_ref(), va(0), 4 * PAGE).unwrap();
        head.invalidate_range_start(unmap(0, 8)).end();
        assert!(child.is_inserted());
        assert_eq!(
            child.ops().calls(),
            [],
            "it missed the walk it was inserted in"
        );
        for s in &others {
            assert_eq!(
                s.ops().calls().len(),
                1,
                "the walk went on after the insert"
            );
        }
        head.invalidate_range_start(unmap(2, 1)).end();
        assert_eq!(
            child.ops().ranges(),
            [pages(2, 1)],
            "then it is in the tree"
        );
        assert_eq!(parent.ops().calls.load(SeqCst), 2);
    });
}

// ---------------------------------------------------------------------------
// Errors

#[test]
fn bad_intervals_and_double_inserts_are_refused() {
    let mgr = IntervalNotifiers::new();
    let other = IntervalNotifiers::new();
    let sub = new_sub();
    assert_eq!(
        mgr.insert(sub.as_ref(), va(1), 0),
        Err(Error::EmptyRange { at: PAGE })
    );
    assert!(matches!(
        mgr.insert(sub.as_ref(), VirtAddr(u64::MAX), 2),
        Err(Error::OutOfRange { .. })
    ));
    assert_eq!(
        mgr.remove(sub.as_ref()),
        Err(Error::NotRegistered),
        "not inserted yet"
    );
    mgr.insert(sub.as_ref(), VirtAddr(u64::MAX - PAGE + 1), PAGE)
        .expect("an interval ending at the top of the address space");
    assert_eq!(sub.interval(), Some((VirtAddr(u64::MAX - PAGE + 1), PAGE)));
    assert_eq!(
        mgr.insert(sub.as_ref(), va(0), PAGE),
        Err(Error::AlreadyRegistered),
        "inserted twice"
    );
    assert_eq!(
        other.remove(sub.as_ref()),
        Err(Error::NotRegistered),
        "wrong manager"
    );
    mgr.remove(sub.as_ref()).unwrap();
    assert_eq!(sub.interval(), None);
    assert_eq!(
        mgr.remove(sub.as_ref()),
        Err(Error::NotRegistered),
        "removed twice"
    );
    mgr.insert(sub.as_ref(), va(3), PAGE)
        .expect("a removed interval can be inserted again");
    assert_eq!(sub.interval(), Some((va(3), PAGE)));
}

#[test]
fn an_interval_at_the_top_of_the_address_space_is_invalidated() {
    with_head(|head, mgr| {
        let sub = new_sub();
        let top = VirtAddr(u64::MAX - PAGE + 1);
        mgr.insert(sub.as_ref(), top, PAGE).unwrap();
        let range = InvalidateRange::new(
            PageRange::new(top, VirtAddr(u64::MAX), 1).unwrap(),
            Event::Unmap,
        );
        head.invalidate_range_start(range).end();
        assert_eq!(sub.ops().calls().len(), 1);
    });
}

/// `IntervalNotifiers` is an `MmuNotifier`, so safe code can call its
/// trait methods; the range pair and release reach the manager only from
/// the core, so such calls change nothing. (Before, an `end` without a
/// `start` underflowed the count of running invalidations, and the next
/// start let `insert` change the tree under its walk.)
#[test]
fn direct_trait_calls_cannot_unbalance_the_manager() {
    with_head(|head, mgr| {
        let sub = new_sub();
        insert(mgr, sub.as_ref(), 0, 1);
        let r = unmap(0, 1);
        mgr.invalidate_range_end(&r);
        mgr.invalidate_range_end(&r);
        assert!(
            !mgr.is_invalidating(),
            "a direct end does not touch the manager"
        );
        assert_eq!(mgr.invalidate_range_start(&r), Ok(()));
        assert!(
            !mgr.is_invalidating(),
            "a direct start does not freeze the tree"
        );
        mgr.release();
        assert_eq!(sub.ops().calls(), [], "no interval was called");
        // The manager still works as the core drives it.
        let guard = head.invalidate_range_start(r);
        assert!(mgr.is_invalidating(), "the core's start reaches it");
        let late = new_sub();
        insert(mgr, late.as_ref(), 0, 1);
        guard.end();
        assert!(!mgr.is_invalidating(), "and its end");
        assert_eq!(sub.ops().calls().len(), 1);
        assert!(late.is_inserted());
    });
}
