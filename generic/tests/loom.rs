//! Loom models of the notifier core: every interleaving (up to the
//! preemption bound) of the races the grace periods exist for.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p mmu-notifier-core --test loom --release
//! ```
//!
//! Under `--cfg loom` the core's `sync` facade uses loom's atomics, so the
//! real `NotifierHead` and `Subscription` code is explored. A notifier's
//! memory is modelled by a loom `UnsafeCell`: callbacks read it, and the
//! owner writes "freed" into it right after `unregister` (or `drop`)
//! returns. Loom reports any read not ordered before that write by
//! happens-before as a causality violation, so a callback that could run
//! after unregister returned fails the model even when the interleaving
//! happens to read the old value: that is "no use after free".
//!
//! Heads and subscriptions are created inside each model and leaked
//! (`Box::leak`) so that loom threads, which need `'static`, can share
//! them; a leak per explored interleaving is the price.
//!
//! Each model runs with preemption bound 5, except the three-thread
//! release model (2): at 3 its spin loops (`RawSpinLock`, the grace-period
//! wait, `Drop` waiting for `RELEASED`) exceed loom's branch limit even at
//! `LOOM_MAX_BRANCHES=20000`, a limit of the checker with spinning, not a
//! livelock of the code.
//! Set `LOOM_PREEMPTION_BOUND` to override the bound each model uses;
//! each model prints how many interleavings it explored and how long that
//! took (`--nocapture` to see it).
#![cfg(loom)]

mod loom_common;
use loom_common::check;

use std::pin::Pin;

use loom::cell::UnsafeCell;
use loom::sync::atomic::{
    AtomicBool, AtomicUsize,
    Ordering::{Acquire, Release, SeqCst},
};
use loom::thread;

use mmu_notifier_core::{
    Again, Event, InvalidateRange, MmuNotifier, NotifierHead, PageRange, Subscription, VirtAddr,
};

const ALIVE: u32 = 0xa11e;
const RELEASED: u32 = 0x7e1e;
const FREED: u32 = 0xf7ee;

fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

fn leak_pinned<N: MmuNotifier + 'static>(notifier: N) -> Pin<&'static Subscription<'static, N>> {
    Pin::static_ref(leak(Subscription::new(notifier)))
}

fn range() -> InvalidateRange {
    InvalidateRange::new(
        PageRange::from_pages(VirtAddr(0), 1, 4096).unwrap(),
        Event::Unmap,
    )
}

/// A notifier whose memory is a loom cell: callbacks read it and must find
/// it alive; `release` marks it released; the owner frees it.
struct Tracked {
    memory: &'static UnsafeCell<u32>,
    calls: AtomicUsize,
    releases: &'static AtomicUsize,
    open_ranges: AtomicUsize,
}

impl Tracked {
    fn new() -> Self {
        Self {
            memory: leak(UnsafeCell::new(ALIVE)),
            calls: AtomicUsize::new(0),
            releases: leak(AtomicUsize::new(0)),
            open_ranges: AtomicUsize::new(0),
        }
    }

    /// What every callback does first: touch the notifier's memory.
    fn touch(&self, what: &str) {
        // SAFETY: loom checks that this read is ordered against every write
        // (`free`, `release`); a racing write fails the model.
        let state = self.memory.with(|p| unsafe { *p });
        assert_eq!(
            state, ALIVE,
            "{what} called on a notifier that was released or freed"
        );
        self.calls.fetch_add(1, SeqCst);
    }
}

/// Frees a notifier's memory: every callback must happen-before this.
fn free(memory: &UnsafeCell<u32>) {
    // SAFETY: loom checks the write against every callback's read.
    memory.with_mut(|p| unsafe { *p = FREED });
}

impl MmuNotifier for Tracked {
    fn release(&self) {
        self.touch("release");
        // SAFETY: as in `free`: loom checks this write against other callbacks.
        self.memory.with_mut(|p| unsafe { *p = RELEASED });
        self.releases.fetch_add(1, SeqCst);
    }
    fn invalidate_page(&self, _: VirtAddr) {
        self.touch("invalidate_page");
    }
    fn invalidate_range_start(&self, _: &InvalidateRange) -> Result<(), Again> {
        self.touch("invalidate_range_start");
        self.open_ranges.fetch_add(1, SeqCst);
        Ok(())
    }
    fn invalidate_range_end(&self, _: &InvalidateRange) {
        self.touch("invalidate_range_end");
        let open = self.open_ranges.fetch_sub(1, SeqCst);
        assert!(open > 0, "invalidate_range_end without a matching start");
    }
}

// SAFETY: the only non-`Sync` field is the loom `UnsafeCell`, whose every
// access goes through loom's race detector: a data race fails the model
// instead of being undefined behaviour.
unsafe impl Sync for Tracked {}
// SAFETY: as for `Sync`: the cell is shared only through loom's checks.
unsafe impl Send for Tracked {}

/// (a) One thread invalidates a page while another unregisters the
/// notifier and then frees it: the callback, if it runs at all, happens
/// before the free.
#[test]
fn unregister_racing_invalidate_page_never_calls_freed_notifier() {
    check("unregister vs invalidate_page", 5, || {
        let head: &'static NotifierHead = leak(NotifierHead::new());
        let sub = leak_pinned(Tracked::new());
        head.register(sub).unwrap();

        let invalidator = thread::spawn(move || head.invalidate_page(VirtAddr(0)));

        head.unregister(sub).unwrap();
        free(sub.notifier().memory);

        invalidator.join().unwrap();
    });
}

/// (a') The same race through a range: a start/end pair races with
/// unregister and free; both halves happen before the free, and an end is
/// never without its start.
#[test]
fn unregister_racing_range_never_calls_freed_notifier() {
    check("unregister vs range start/end", 5, || {
        let head: &'static NotifierHead = leak(NotifierHead::new());
        let sub = leak_pinned(Tracked::new());
        head.register(sub).unwrap();

        let invalidator = thread::spawn(move || head.invalidate_range_start(range()).end());

        head.unregister(sub).unwrap();
        assert_eq!(
            sub.notifier().open_ranges.load(SeqCst),
            0,
            "unregister returned inside a range it had started"
        );
        free(sub.notifier().memory);

        invalidator.join().unwrap();
    });
}

/// (b) Register races with an invalidation. If register returned before
/// the invalidation began (the registering thread says so through a
/// release/acquire flag), the notifier is called for it.
#[test]
fn registered_before_invalidation_began_is_called() {
    check("register vs invalidate_page", 5, || {
        let head: &'static NotifierHead = leak(NotifierHead::new());
        let sub = leak_pinned(Tracked::new());
        let registered: &'static AtomicBool = leak(AtomicBool::new(false));

        let registrar = thread::spawn(move || {
            head.register(sub).unwrap();
            registered.store(true, Release);
        });

        let register_returned_first = registered.load(Acquire);
        head.invalidate_page(VirtAddr(0));
        if register_returned_first {
            assert_eq!(
                sub.notifier().calls.load(SeqCst),
                1,
                "a notifier registered before the invalidation began was not called"
            );
        }

        registrar.join().unwrap();
    });
}

/// (c) Release races with an invalidation and with the owner dropping
/// (and then freeing) a second subscription. The notifier that stays
/// registered is released exactly once and nothing reaches it after its
/// release; the dropped one is released at most once and nothing reaches
/// it after its free.
#[test]
fn release_racing_invalidate_and_drop_releases_once() {
    check("release vs invalidate_page vs drop", 2, || {
        let head: &'static NotifierHead = leak(NotifierHead::new());
        let kept = leak_pinned(Tracked::new());
        head.register(kept).unwrap();
        let dropped = Box::pin(Subscription::new(Tracked::new()));
        let (dropped_memory, dropped_releases) =
            (dropped.notifier().memory, dropped.notifier().releases);
        head.register(dropped.as_ref()).unwrap();

        let invalidator = thread::spawn(move || head.invalidate_page(VirtAddr(0)));
        let owner = thread::spawn(move || {
            drop(dropped);
            free(dropped_memory);
        });

        head.release().unwrap();

        assert_eq!(
            kept.notifier().releases.load(SeqCst),
            1,
            "a registered notifier is released exactly once"
        );
        // SAFETY: release returned; loom checks no callback still reads.
        let state = kept.notifier().memory.with(|p| unsafe { *p });
        assert_eq!(state, RELEASED, "release was the last call");
        invalidator.join().unwrap();
        owner.join().unwrap();
        assert!(
            dropped_releases.load(SeqCst) <= 1,
            "a notifier dropped during release is released at most once"
        );
        assert!(head.is_released(), "the head is released");
    });
}

/// (d) A range start/end races with register on an empty head (the
/// range's fast path): the new notifier gets both halves or neither, never
/// an end without its start (`Tracked` asserts that on every end).
#[test]
fn range_racing_register_never_ends_without_start() {
    check("range start/end vs register (empty head)", 5, || {
        let head: &'static NotifierHead = leak(NotifierHead::new());
        let late = leak_pinned(Tracked::new());

        let registrar = thread::spawn(move || head.register(late).unwrap());

        head.invalidate_range_start(range()).end();

        registrar.join().unwrap();
        let calls = late.notifier().calls.load(SeqCst);
        assert!(
            calls == 0 || calls == 2,
            "the new notifier got both halves of the range or neither, got {calls} calls"
        );
        assert_eq!(
            late.notifier().open_ranges.load(SeqCst),
            0,
            "every start the new notifier got was ended"
        );
    });
}

/// (d') As (d), with a notifier already registered, so the range takes the
/// slow path at both start and end while the list changes under it.
#[test]
fn range_racing_register_on_busy_head_never_ends_without_start() {
    check("range start/end vs register (busy head)", 5, || {
        let head: &'static NotifierHead = leak(NotifierHead::new());
        let early = leak_pinned(Tracked::new());
        head.register(early).unwrap();
        let late = leak_pinned(Tracked::new());

        let registrar = thread::spawn(move || head.register(late).unwrap());

        head.invalidate_range_start(range()).end();

        registrar.join().unwrap();
        assert_eq!(
            early.notifier().calls.load(SeqCst),
            2,
            "the notifier registered throughout got start and end"
        );
        assert_eq!(
            late.notifier().open_ranges.load(SeqCst),
            0,
            "every start the new notifier got was ended"
        );
    });
}

/// (e) Issue 11, item 2: a node released by head A is registered on head B
/// while A still unregisters it. The head and the state of a node are one
/// word, moved by compare-and-swap: A's unregister sees B's word and
/// leaves the node alone, so it is never marked idle (and freed by its
/// owner) while B walks it.
#[test]
fn a_node_moving_between_heads_is_never_half_moved() {
    check("register on B vs unregister on A", 3, || {
        let a: &'static NotifierHead = leak(NotifierHead::new());
        let b: &'static NotifierHead = leak(NotifierHead::new());
        let sub = leak_pinned(Tracked::new());
        a.register(sub).unwrap();
        a.release().unwrap();
        let registrar = thread::spawn(move || b.register(sub));
        let unregistered = a.unregister(sub);
        let registered = registrar.join().unwrap();
        assert!(
            matches!(
                unregistered,
                Err(mmu_notifier_core::Error::Released | mmu_notifier_core::Error::NotRegistered)
            ),
            "A released the node: its unregister refuses, whoever holds it now ({unregistered:?})"
        );
        assert_eq!(
            registered.is_ok(),
            sub.is_registered(),
            "registered on B, but A's unregister marked the node idle: its owner would free it while B still walks it"
        );
        if registered.is_ok() {
            b.unregister(sub).unwrap();
        }
    });
}

/// (f) Issue 11, item 9: Y and X unregister while a range runs. The
/// interest a range's fast path reads after its snapshot covers every node
/// that snapshot still sees (a white-box check in `invalidate_range_start`
/// panics otherwise), so X, visible to the range, gets its start and end.
#[test]
fn interest_covers_every_node_a_snapshot_sees() {
    check("range vs two unregisters", 2, || {
        let head: &'static NotifierHead = leak(NotifierHead::new());
        let x = leak_pinned(Tracked::new());
        let y = leak_pinned(Tracked::new());
        head.register(x).unwrap();
        head.register(y).unwrap();
        let ty = thread::spawn(move || head.unregister(y).unwrap());
        let tr = thread::spawn(move || head.invalidate_range_start(range()).end());
        head.unregister(x).unwrap();
        ty.join().unwrap();
        tr.join().unwrap();
    });
}

/// (g) Issue 11, item 10: two releases at once. Each returns only after
/// the notifier's release callback has run, exactly once.
#[test]
fn concurrent_releases_both_return_after_the_release_callback() {
    check("release vs release", 3, || {
        let head: &'static NotifierHead = leak(NotifierHead::new());
        let sub = leak_pinned(Tracked::new());
        head.register(sub).unwrap();
        let other = thread::spawn(move || {
            head.release().unwrap();
            sub.notifier().releases.load(SeqCst)
        });
        head.release().unwrap();
        assert_eq!(
            sub.notifier().releases.load(SeqCst),
            1,
            "released exactly once"
        );
        assert_eq!(
            other.join().unwrap(),
            1,
            "the other release returned after the callback too"
        );
    });
}

/// (h) Two unregisters of one notifier race with an invalidation: one
/// succeeds, the other reports `NotRegistered`, and once both returned the
/// memory may go (no callback after).
#[test]
fn two_unregisters_race_and_the_memory_may_go_after_both() {
    check("unregister vs unregister vs invalidate_page", 2, || {
        let head: &'static NotifierHead = leak(NotifierHead::new());
        let sub = leak_pinned(Tracked::new());
        head.register(sub).unwrap();
        let invalidator = thread::spawn(move || head.invalidate_page(VirtAddr(0)));
        let other = thread::spawn(move || head.unregister(sub));
        let mine = head.unregister(sub);
        let theirs = other.join().unwrap();
        assert!(
            mine.is_ok() != theirs.is_ok(),
            "exactly one unregister succeeds: {mine:?} {theirs:?}"
        );
        if mine.is_ok() {
            free(sub.notifier().memory);
        }
        invalidator.join().unwrap();
    });
}

/// A notifier whose non-blocking start always fails, touching its memory.
struct Refusing(Tracked);

// SAFETY: as for `Tracked`.
unsafe impl Sync for Refusing {}

impl MmuNotifier for Refusing {
    fn invalidate_range_start(&self, range: &InvalidateRange) -> Result<(), Again> {
        self.0.touch("invalidate_range_start");
        if range.may_block() {
            Ok(())
        } else {
            Err(Again)
        }
    }
}

/// (i) The non-blocking path: a start that one notifier refuses ends the
/// notifiers that had started, while the refusing one unregisters and is
/// freed. Nothing is called on freed memory, and no end without a start.
#[test]
fn a_refused_nonblocking_start_racing_unregister() {
    check("nonblocking start (Again) vs unregister", 3, || {
        let head: &'static NotifierHead = leak(NotifierHead::new());
        let refusing = Pin::static_ref(leak(Subscription::new(Refusing(Tracked::new()))));
        let tracked = leak_pinned(Tracked::new());
        head.register(refusing).unwrap();
        head.register(tracked).unwrap();
        let invalidator = thread::spawn(move || {
            let r = head.try_invalidate_range_start_nonblock(range());
            if let Ok(guard) = r {
                guard.end();
            }
        });
        head.unregister(refusing).unwrap();
        free(refusing.notifier().0.memory);
        invalidator.join().unwrap();
        assert_eq!(
            tracked.notifier().open_ranges.load(SeqCst),
            0,
            "a start that succeeded was ended"
        );
    });
}

/// (j) `get`/`put`: the last reference dropped unregisters and frees the
/// shared notifier while an invalidation runs; a `get` racing it gets the
/// same notifier or a new one, never a freed one.
#[cfg(feature = "alloc")]
#[test]
fn get_and_put_racing_an_invalidation() {
    check("get/put vs invalidate_page", 2, || {
        let head: &'static NotifierHead = leak(NotifierHead::new());
        let first = head.get(Tracked::new).unwrap();
        let invalidator = thread::spawn(move || head.invalidate_page(VirtAddr(0)));
        let getter = thread::spawn(move || {
            let again = head.get(Tracked::new).unwrap();
            again.touch("a notifier from get");
        });
        drop(first);
        getter.join().unwrap();
        invalidator.join().unwrap();
    });
}
