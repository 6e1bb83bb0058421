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

use std::pin::Pin;
use std::sync::atomic::AtomicUsize as StdAtomicUsize;
use std::sync::Arc;
use std::time::Instant;

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

/// Runs `model` under loom with `bound` preemptions (or
/// `LOOM_PREEMPTION_BOUND`), and prints how many interleavings it took.
fn check(name: &str, bound: usize, model: impl Fn() + Sync + Send + 'static) {
    let bound = std::env::var("LOOM_PREEMPTION_BOUND")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(bound);
    let iterations = Arc::new(StdAtomicUsize::new(0));
    let counter = Arc::clone(&iterations);
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(bound);
    let started = Instant::now();
    builder.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        model();
    });
    println!(
        "loom model {name}: preemption bound {bound}, {} interleavings, {:.2?}",
        iterations.load(std::sync::atomic::Ordering::Relaxed),
        started.elapsed()
    );
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
