//! Loom models of interval notifiers: every interleaving (up to the
//! preemption bound) of the races the collision-retry sequence and the
//! deferred list exist for.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p mmu-notifier-core --test loom_interval --release
//! ```
//!
//! Under `--cfg loom` the manager's atomics, its spin lock and its plain
//! cells (tree links, deferred list, counters) are loom's, so the real
//! code is explored and an unsynchronised access to a tree node is a
//! reported data race. The "primary page table" is one loom atomic; the
//! device's page table is one entry behind a loom mutex (the driver lock).
//! An interval's memory is a loom `UnsafeCell`: callbacks read it, the
//! owner writes "freed" into it once `remove` (or drop) returned, so a
//! callback not ordered before the free fails the model.
//!
//! Managers and subscriptions are leaked (`Box::leak`) so loom threads,
//! which need `'static`, can share them. `LOOM_PREEMPTION_BOUND` overrides
//! each model's bound; each prints its interleavings and time
//! (`--nocapture`).
#![cfg(loom)]

mod loom_common;

use std::pin::Pin;

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicU64, Ordering::SeqCst};
use loom::sync::Mutex;
use loom::thread;

use mmu_notifier_core::interval::{IntervalNotifiers, IntervalOps, IntervalSub};
use mmu_notifier_core::{Event, InvalidateRange, PageRange, VirtAddr};
use mmu_notifier_core::{NotifierHead, Subscription};

const PAGE: u64 = 4096;
const ALIVE: u32 = 0xa11e;
const FREED: u32 = 0xf7ee;

fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

fn page0() -> InvalidateRange {
    InvalidateRange::new(
        PageRange::from_pages(VirtAddr(0), 1, PAGE).unwrap(),
        Event::Unmap,
    )
}

/// Interval models: three threads whose spin-waits (the manager's lock,
/// `remove`, `read_begin`) each yield to loom need more than loom's
/// default 1 000 branches.
fn check(name: &str, bound: usize, model: impl Fn() + Sync + Send + 'static) {
    loom_common::check_with(name, bound, Some(20_000), model);
}

/// A device with one page-table entry behind its driver lock, and memory
/// that callbacks touch.
struct Dev {
    entry: Mutex<Option<u64>>,
    memory: &'static UnsafeCell<u32>,
}

impl Dev {
    fn new() -> Self {
        Self {
            entry: Mutex::new(None),
            memory: leak(UnsafeCell::new(ALIVE)),
        }
    }
}

// SAFETY: the only non-`Sync` field is the loom `UnsafeCell`, whose every
// access goes through loom's race detector.
unsafe impl Sync for Dev {}

impl IntervalOps for Dev {
    fn invalidate(&self, sub: &IntervalSub<'_, Self>, _: &InvalidateRange, cur_seq: u64) -> bool {
        // SAFETY: loom checks this read against the owner's free.
        let state = self.memory.with(|p| unsafe { *p });
        assert_eq!(state, ALIVE, "invalidate called on a freed interval");
        let mut entry = self.entry.lock().unwrap();
        sub.set_seq(cur_seq);
        *entry = None;
        true
    }
}

fn free(memory: &UnsafeCell<u32>) {
    // SAFETY: loom checks the write against every callback's read.
    memory.with_mut(|p| unsafe { *p = FREED });
}

type Sub = IntervalSub<'static, Dev>;

fn leak_sub() -> Pin<&'static Sub> {
    Pin::static_ref(leak(IntervalSub::new(Dev::new())))
}

/// Two subscriptions in one allocation, the first at the lower address.
/// The tree orders intervals with equal starts by address: two separate
/// allocations could swap order between executions (other tests allocate
/// concurrently), and loom, which replays each execution's prefix, needs
/// a model that is the same every time.
fn leak_two_subs() -> [Pin<&'static Sub>; 2] {
    let [a, b] = leak([IntervalSub::new(Dev::new()), IntervalSub::new(Dev::new())]).each_ref();
    [Pin::static_ref(a), Pin::static_ref(b)]
}

/// The device's fault path: the sequence protocol, or (`protocol: false`)
/// the classic bug of programming the device without `read_retry`.
fn fault(sub: &Sub, primary: &AtomicU64, protocol: bool) {
    loop {
        let seq = sub.read_begin();
        let value = primary.load(SeqCst);
        let mut entry = sub.ops().entry.lock().unwrap();
        if protocol && sub.read_retry(seq) {
            continue;
        }
        *entry = Some(value);
        return;
    }
}

/// The address space's side: bracket a change of the primary entry with a
/// range on the head.
fn change_primary(head: &NotifierHead, primary: &AtomicU64, to: u64) {
    let guard = head.invalidate_range_start(page0());
    primary.store(to, SeqCst);
    guard.end();
}

/// A manager registered on a head, as a driver sets it up: the manager
/// hears invalidations from the head only.
fn registered_manager() -> (&'static NotifierHead, &'static IntervalNotifiers) {
    let head: &'static NotifierHead = leak(NotifierHead::new());
    let mgr = Pin::static_ref(leak(Subscription::new(IntervalNotifiers::new())));
    head.register(mgr).unwrap();
    (head, mgr.get_ref().notifier())
}

fn fault_vs_invalidation(protocol: bool) {
    let (head, mgr) = registered_manager();
    let sub = leak_sub();
    mgr.insert(sub, VirtAddr(0), PAGE).unwrap();
    let primary: &'static AtomicU64 = leak(AtomicU64::new(1));

    let device = thread::spawn(move || fault(&sub, primary, protocol));
    change_primary(head, primary, 2);
    device.join().unwrap();

    let entry = *sub.ops().entry.lock().unwrap();
    assert!(
        entry.is_none() || entry == Some(2),
        "the device kept {entry:?}, a translation the invalidation replaced"
    );
}

/// (1) A device PTE established during an overlapping invalidation: the
/// fault either retries or programs before the invalidation clears it.
#[test]
fn fault_racing_invalidation_never_keeps_a_replaced_translation() {
    check("fault vs invalidation", 3, || fault_vs_invalidation(true));
}

/// Set in the child process that runs a model which must fail.
const MUST_FAIL_CHILD: &str = "MMU_NOTIFIER_LOOM_MUST_FAIL_CHILD";

/// (1') The same model without `read_retry` fails, for the reason the
/// protocol exists: the model can see the bug. It runs in a child process
/// (this test binary, re-run on this test alone): a panic inside a loom
/// model leaves loom's process-wide state unusable for the models after
/// it.
#[test]
fn fault_without_read_retry_keeps_a_replaced_translation() {
    const NAME: &str = "fault_without_read_retry_keeps_a_replaced_translation";
    if std::env::var_os(MUST_FAIL_CHILD).is_some() {
        check("fault without read_retry (must fail)", 2, || {
            fault_vs_invalidation(false)
        });
        return;
    }
    let child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", NAME, "--test-threads=1", "--nocapture"])
        .env(MUST_FAIL_CHILD, "1")
        .output()
        .expect("re-run the test binary");
    let output = String::from_utf8_lossy(&child.stdout) + String::from_utf8_lossy(&child.stderr);
    assert!(
        !child.status.success(),
        "the model missed a fault path that ignores read_retry:\n{output}"
    );
    assert!(
        output.contains("a translation the invalidation replaced"),
        "the model failed, but not on the stale translation:\n{output}"
    );
}

/// (2) Use after free of a deferred removal: the owner removes an interval
/// while an invalidation may be walking the tree, then frees its memory
/// and reuses the node (inserts it in another manager, whose lock orders
/// nothing with the first one's). Every callback, and every access of the
/// first manager to the node, happens before.
#[test]
fn deferred_removal_is_never_used_after_free() {
    check("remove vs invalidation", 3, || {
        let (head, mgr) = registered_manager();
        let other: &'static IntervalNotifiers = leak(IntervalNotifiers::new());
        let sub = leak_sub();
        mgr.insert(sub, VirtAddr(0), PAGE).unwrap();

        let invalidator = thread::spawn(move || head.invalidate_range_start(page0()).end());

        mgr.remove(sub).unwrap();
        assert!(!sub.is_inserted());
        free(sub.ops().memory);
        // Reuse: writes the node's tree cells under another lock.
        other.insert(sub, VirtAddr(PAGE), PAGE).unwrap();

        invalidator.join().unwrap();
    });
}

/// (2') The same through `Drop`, with the invalidation's start and end on
/// one thread and the drop on another.
#[test]
fn dropped_interval_is_never_used_after_free() {
    check("drop vs invalidation", 3, || {
        let (head, mgr) = registered_manager();
        let sub: Pin<Box<Sub>> = Box::pin(IntervalSub::new(Dev::new()));
        let memory = sub.ops().memory;
        mgr.insert(sub.as_ref(), VirtAddr(0), PAGE).unwrap();

        let owner = thread::spawn(move || {
            drop(sub);
            free(memory);
        });
        head.invalidate_range_start(page0()).end();

        owner.join().unwrap();
    });
}

/// (3) A subscription published before it is initialised: one thread
/// inserts an interval and faults through it while another invalidates
/// the same page, walking the tree (a neighbour already overlaps). The
/// walker must never read a node, or links, while the insert writes them
/// (loom reports the race), and an interval inserted during the
/// invalidation must not program the translation that invalidation
/// replaces.
#[test]
fn interval_inserted_during_invalidation_is_initialised_and_coherent() {
    check("insert + fault vs invalidation", 3, || {
        let (head, mgr) = registered_manager();
        let [neighbour, sub] = leak_two_subs();
        mgr.insert(neighbour, VirtAddr(0), 2 * PAGE).unwrap();
        let primary: &'static AtomicU64 = leak(AtomicU64::new(1));

        let device = thread::spawn(move || {
            mgr.insert(sub, VirtAddr(0), PAGE).unwrap();
            fault(&sub, primary, true);
        });
        change_primary(head, primary, 2);
        device.join().unwrap();

        let entry = *sub.ops().entry.lock().unwrap();
        assert!(
            entry.is_none() || entry == Some(2),
            "an interval inserted during the invalidation kept {entry:?}"
        );
    });
}

/// (4) Two overlapping invalidations on two CPUs, and a removal after
/// the first one ended while the second may still walk the tree: only the
/// last end may make the sequence even and apply the removal, so the
/// removal is deferred and waits; the walker never reads a node or link
/// being unlinked, and nothing reaches the interval after its free.
#[test]
fn removal_waits_for_the_last_of_two_invalidations() {
    check("remove vs two invalidations", 3, || {
        let (head, mgr) = registered_manager();
        let other: &'static IntervalNotifiers = leak(IntervalNotifiers::new());
        let sub = leak_sub();
        mgr.insert(sub, VirtAddr(0), PAGE).unwrap();

        let second = thread::spawn(move || head.invalidate_range_start(page0()).end());

        head.invalidate_range_start(page0()).end();
        mgr.remove(sub).unwrap();
        free(sub.ops().memory);
        other.insert(sub, VirtAddr(PAGE), PAGE).unwrap();

        second.join().unwrap();
        assert!(
            !mgr.is_invalidating(),
            "the last end makes the sequence even"
        );
    });
}

/// (5) The whole stack: the manager registered on a `NotifierHead`, a
/// range operation through the head (SRCU read side, snapshot) racing with
/// the owner dropping the interval and freeing its memory.
#[test]
fn interval_dropped_during_a_head_range_operation_is_never_used_after_free() {
    check("head range vs drop", 3, || {
        let (head, manager) = registered_manager();
        let sub: Pin<Box<Sub>> = Box::pin(IntervalSub::new(Dev::new()));
        let memory = sub.ops().memory;
        manager.insert(sub.as_ref(), VirtAddr(0), PAGE).unwrap();

        let owner = thread::spawn(move || {
            drop(sub);
            free(memory);
        });
        head.invalidate_range_start(page0()).end();

        owner.join().unwrap();
    });
}

/// (6) Issue 11, item 3: an interval removed from m1 is inserted into m2
/// while m1 removes it again (a stale handle). The manager and the state
/// are one word, claimed by compare-and-swap: m1 sees m2's word and leaves
/// the node alone, so it neither unlinks m2's node from its own tree nor
/// marks it idle while m2's invalidations can reach it.
#[test]
fn an_interval_moving_between_managers_is_never_half_moved() {
    check("insert into m2 vs remove from m1", 3, || {
        let m1: &'static IntervalNotifiers = leak(IntervalNotifiers::new());
        let m2: &'static IntervalNotifiers = leak(IntervalNotifiers::new());
        let sub = leak_sub();
        m1.insert(sub, VirtAddr(0), PAGE).unwrap();
        m1.remove(sub).unwrap();
        let inserter = thread::spawn(move || m2.insert(sub, VirtAddr(0), PAGE));
        let stale = m1.remove(sub);
        let interval = sub.interval();
        let inserted = inserter.join().unwrap();
        assert_eq!(stale, Err(mmu_notifier_core::Error::NotRegistered));
        assert_eq!(
            inserted.is_ok(),
            sub.is_inserted(),
            "inserted into m2, but m1's remove took it out and marked it idle"
        );
        assert!(interval.is_none() || interval == Some((VirtAddr(0), PAGE)));
        m2.remove(sub).unwrap();
    });
}
