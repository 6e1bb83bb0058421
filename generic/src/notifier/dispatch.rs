//! The read side: the hooks a page-table operation calls, each a lock-free
//! walk of the list inside a read-side section, and [`RangeGuard`].
//!
//! With nobody listening a hook is one relaxed load and one branch; the
//! walk lives out of line so that stays true when it is inlined.

use core::marker::PhantomData;

use super::head::NotifierHead;
use super::node::Node;
use super::vtable::VTable;
use super::{Again, Callbacks, InvalidateRange};
use crate::addr::{PageRange, VirtAddr};
use crate::error::Error;
use crate::kernel::{Kernel, Portable, Rcu, ReadToken};
use crate::sync::Ordering::{Acquire, Relaxed};

/// Not `Send` or `Sync`, and tied to a kernel type.
type OnThisTask<K> = PhantomData<(*const (), fn() -> K)>;

/// An open read-side section of `K`'s domain; leaves it on drop.
struct ReadSection<K: Kernel> {
    token: ReadToken,
    /// Left on the task that entered it.
    _not_send: OnThisTask<K>,
}

impl<K: Kernel> ReadSection<K> {
    #[inline(always)]
    fn enter() -> Self {
        Self {
            token: K::rcu().read_lock(),
            _not_send: PhantomData,
        }
    }
}

impl<K: Kernel> Drop for ReadSection<K> {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: the token came from `read_lock` of the same domain in
        // `enter`, on this task (the type is not `Send`), and a section is
        // dropped once.
        unsafe { K::rcu().read_unlock(self.token) };
    }
}

impl<K: Kernel> NotifierHead<K> {
    /// Whether a registered notifier implements any of `callbacks`: one
    /// relaxed load and a test, for callers that have per-page work to
    /// skip when nobody listens to it.
    #[inline(always)]
    pub fn wants(&self, callbacks: Callbacks) -> bool {
        self.interest.load(Relaxed) & callbacks.bits() != 0
    }

    /// Calls `f` on every linked notifier that wants one of `wanted`,
    /// inside a read-side section: the one-shot hooks.
    ///
    /// No generation snapshot: a single call needs no pairing with a
    /// later one, and calling any linked node is safe (the read section
    /// keeps it alive) and right (a node being registered is initialised
    /// before it is linked; one being unregistered or released has not
    /// been told it is gone, and its grace periods wait for this call).
    #[inline(always)]
    fn for_each(&self, wanted: Callbacks, mut f: impl FnMut(*const Node, &'static VTable)) {
        let _read = ReadSection::<K>::enter();
        let mut p = self.first().load(Acquire);
        // SAFETY: we hold a read-side section, so every node reachable
        // from the list stays alive until it ends.
        while let Some(node) = unsafe { p.as_ref() } {
            if node.callbacks.load(Relaxed) & wanted.bits() != 0 {
                f(p, node.vtable);
            }
            p = node.next.load(Acquire);
        }
    }

    /// Calls `f(node, vtable)` on every node visible at `snap` that wants
    /// one of `wanted`. `node` is the list's own pointer (provenance over
    /// the whole subscription), so `vtable`'s thunks may reach the notifier
    /// through it. The caller holds a read-side section.
    #[inline(always)]
    fn walk(&self, snap: u64, wanted: Callbacks, mut f: impl FnMut(*const Node, &'static VTable)) {
        let mut p = self.first().load(Acquire);
        // SAFETY: the caller holds a read-side section, so every node
        // reachable from the list stays alive until it ends.
        while let Some(node) = unsafe { p.as_ref() } {
            if node.visible_at(snap) && node.callbacks.load(Relaxed) & wanted.bits() != 0 {
                f(p, node.vtable);
            }
            p = node.next.load(Acquire);
        }
    }

    /// Tells every notifier that the page at `addr` lost or downgraded its
    /// translation (`invalidate_page`). Call after the CPU TLB flush and
    /// before the frame may be reused. Range and interval notifiers are not
    /// told here: they heard the enclosing range's start.
    #[inline(always)]
    pub fn invalidate_page(&self, addr: VirtAddr) {
        if self.wants(Callbacks::INVALIDATE_PAGE) {
            self.invalidate_page_slow(addr);
        }
    }

    #[inline]
    fn invalidate_page_slow(&self, addr: VirtAddr) {
        self.for_each(Callbacks::INVALIDATE_PAGE, |n, vt| {
            // SAFETY: 1. `for_each` passes the list's pointer to a node with
            // its own vtable; 2. it is alive for the walk's read section.
            unsafe { (vt.invalidate_page)(n, addr) }
        });
    }

    /// Tells every notifier that every page of `range` lost or downgraded
    /// its translation (`invalidate_pages`).
    #[inline(always)]
    pub fn invalidate_pages(&self, range: PageRange) {
        if self.wants(Callbacks::INVALIDATE_PAGE) {
            self.invalidate_pages_slow(range);
        }
    }

    #[inline]
    fn invalidate_pages_slow(&self, range: PageRange) {
        self.for_each(Callbacks::INVALIDATE_PAGE, |n, vt| {
            // SAFETY: as in `invalidate_page_slow`.
            unsafe { (vt.invalidate_pages)(n, range) }
        });
    }

    /// Tells devices that walk the CPU tables that the CPU TLB was just
    /// flushed for `range` (Linux's `arch_invalidate_secondary_tlbs`).
    /// Called right after every CPU flush; callbacks must not sleep.
    #[inline(always)]
    pub fn invalidate_secondary_tlbs(&self, range: PageRange) {
        if self.wants(Callbacks::SECONDARY_TLB) {
            self.secondary_tlbs_slow(range);
        }
    }

    #[inline]
    fn secondary_tlbs_slow(&self, range: PageRange) {
        self.for_each(Callbacks::SECONDARY_TLB, |n, vt| {
            // SAFETY: as in `invalidate_page_slow`.
            unsafe { (vt.secondary_tlbs)(n, range) }
        });
    }

    /// Asks every notifier whether its MMU accessed the page at `addr`
    /// since the last call, clearing that state (`age_page`); the answers
    /// are OR-ed (every notifier is asked, none is skipped by an earlier
    /// `true`).
    #[inline(always)]
    #[must_use]
    pub fn age_page(&self, addr: VirtAddr) -> bool {
        self.wants(Callbacks::AGE)
            && self.age_slow(|n, vt| {
                // SAFETY: as in `invalidate_page_slow`.
                unsafe { (vt.age_page)(n, addr) }
            })
    }

    /// `clear_flush_young(range)` on every notifier, OR-ed (none skipped).
    #[inline(always)]
    #[must_use]
    pub fn clear_flush_young(&self, range: PageRange) -> bool {
        self.wants(Callbacks::AGE)
            && self.age_slow(|n, vt| {
                // SAFETY: as in `invalidate_page_slow`.
                unsafe { (vt.clear_flush_young)(n, range) }
            })
    }

    /// `clear_young(range)` on every notifier, OR-ed (none skipped): like
    /// [`clear_flush_young`](Self::clear_flush_young) without secondary
    /// TLB flushes.
    #[inline(always)]
    #[must_use]
    pub fn clear_young(&self, range: PageRange) -> bool {
        self.wants(Callbacks::AGE)
            && self.age_slow(|n, vt| {
                // SAFETY: as in `invalidate_page_slow`.
                unsafe { (vt.clear_young)(n, range) }
            })
    }

    /// `test_young(addr)` on every notifier, OR-ed; clears nothing.
    #[inline(always)]
    #[must_use]
    pub fn test_young(&self, addr: VirtAddr) -> bool {
        self.wants(Callbacks::AGE)
            && self.age_slow(|n, vt| {
                // SAFETY: as in `invalidate_page_slow`.
                unsafe { (vt.test_young)(n, addr) }
            })
    }

    #[inline]
    fn age_slow(&self, mut ask: impl FnMut(*const Node, &'static VTable) -> bool) -> bool {
        let mut young = false;
        self.for_each(Callbacks::AGE, |n, vt| young |= ask(n, vt));
        young
    }

    /// Starts a range invalidation from a context that may sleep; every
    /// range notifier's `invalidate_range_start` runs before this returns,
    /// and their `invalidate_range_end` when the guard is ended or dropped.
    ///
    /// The guard holds a read-side section until it ends: see the [module
    /// docs](super) for the lock rule that follows.
    #[inline]
    pub fn invalidate_range_start(&self, range: InvalidateRange) -> RangeGuard<'_, K> {
        let mut guard = self.begin(InvalidateRange {
            blockable: true,
            ..range
        });
        #[cfg(any(debug_assertions, loom))]
        self.check_interest_covers(guard.snap);
        if crate::pgtable::NOTIFY && self.wants(Callbacks::RANGE) {
            guard.to_end = usize::MAX;
            self.walk(guard.snap, Callbacks::RANGE, |n, vt| {
                // SAFETY: 1. the list's pointer to a node with its own
                // vtable; 2. alive for the guard's read section.
                let r = unsafe { (vt.range_start)(n, &guard.range) };
                debug_assert!(
                    r.is_ok(),
                    "a blockable invalidate_range_start must not fail"
                );
            });
        }
        guard
    }

    /// Starts a range invalidation from a context that must not sleep (an
    /// OOM-reaper-like path). Callbacks see `may_block() == false`.
    ///
    /// # Errors
    /// [`Error::Again`] if a notifier would have had to sleep. Then the
    /// notifiers whose start succeeded have already received their `end`,
    /// the others none, and the caller must change nothing.
    pub fn try_invalidate_range_start_nonblock(
        &self,
        range: InvalidateRange,
    ) -> Result<RangeGuard<'_, K>, Error> {
        let mut guard = self.begin(InvalidateRange {
            blockable: false,
            ..range
        });
        if !crate::pgtable::NOTIFY || !self.wants(Callbacks::RANGE) {
            return Ok(guard);
        }
        let mut started = 0usize;
        let mut failed = false;
        self.walk(guard.snap, Callbacks::RANGE, |n, vt| {
            if !failed {
                // SAFETY: as in `invalidate_range_start`.
                match unsafe { (vt.range_start)(n, &guard.range) } {
                    Ok(()) => started += 1,
                    Err(Again) => failed = true,
                }
            }
        });
        // The walk order is stable under one snapshot: the first `started`
        // visible nodes are exactly those that succeeded.
        guard.to_end = started;
        if failed {
            drop(guard);
            return Err(Error::Again);
        }
        guard.to_end = usize::MAX;
        Ok(guard)
    }

    /// Checks (debug builds and loom models) the invariant a range's fast
    /// path relies on: when no range callback is wanted, no node visible at
    /// the snapshot has one. The caller holds a read-side section.
    #[cfg(any(debug_assertions, loom))]
    fn check_interest_covers(&self, snap: u64) {
        if !self.wants(Callbacks::RANGE) {
            self.walk(snap, Callbacks::RANGE, |_, _| {
                panic!("a range notifier visible at the snapshot is missing from the interest")
            });
        }
    }

    /// Enters the read-side section and takes the snapshot a range uses
    /// from start to end. The interest is read after the snapshot, so it
    /// covers every node the snapshot sees.
    #[inline(always)]
    fn begin(&self, range: InvalidateRange) -> RangeGuard<'_, K> {
        let read = ReadSection::enter();
        let snap = self.generation.load(Acquire);
        RangeGuard {
            head: self,
            range,
            snap,
            to_end: 0,
            _read: read,
        }
    }
}

/// An invalidation between `invalidate_range_start` and
/// `invalidate_range_end`.
///
/// Ending it (with [`end`](Self::end), or by dropping it on an early
/// return or a panic unwinding through the operation) calls every
/// `invalidate_range_end` whose start succeeded, exactly once. While it
/// lives, unregistering any of its notifiers waits, and a notifier
/// registered meanwhile is called neither for its start nor its end.
///
/// The per-page helpers of [`pgtable`](crate::pgtable) take it: a frame is
/// handed back only from inside a range every range notifier has heard of.
///
/// It ends on the task that started it (it is not `Send`):
///
/// ```compile_fail,E0277
/// use mmu_notifier_core::{Event, InvalidateRange, NotifierHead, PageRange, VirtAddr};
/// let head = Box::leak(Box::new(NotifierHead::new()));
/// let range = PageRange::from_pages(VirtAddr(0), 1, 4096).unwrap();
/// let guard = head.invalidate_range_start(InvalidateRange::new(range, Event::Unmap));
/// std::thread::spawn(move || guard.end());
/// ```
#[must_use = "a range invalidation ends when this guard is dropped: bind it for the whole operation"]
pub struct RangeGuard<'a, K: Kernel = Portable> {
    head: &'a NotifierHead<K>,
    range: InvalidateRange,
    snap: u64,
    /// How many visible range notifiers get an end (`usize::MAX`: all).
    to_end: usize,
    _read: ReadSection<K>,
}

impl<'a, K: Kernel> RangeGuard<'a, K> {
    /// The invalidation this guard belongs to.
    pub fn range(&self) -> &InvalidateRange {
        &self.range
    }

    /// The head it was started on.
    pub fn head(&self) -> &'a NotifierHead<K> {
        self.head
    }

    /// Ends the invalidation: every notifier whose start succeeded gets its
    /// `invalidate_range_end`.
    #[inline]
    pub fn end(self) {
        drop(self);
    }

    /// Calls every `invalidate_range_end` this guard owes.
    #[inline(always)]
    fn finish(&mut self) {
        let mut budget = self.to_end;
        if budget == 0 {
            return;
        }
        let range = &self.range;
        self.head.walk(self.snap, Callbacks::RANGE, |n, vt| {
            if budget > 0 {
                budget -= 1;
                // SAFETY: 1. the list's pointer to a node with its own
                // vtable; 2. our read section keeps visible nodes alive.
                unsafe { (vt.range_end)(n, range) };
            }
        });
    }
}

impl<K: Kernel> core::fmt::Debug for RangeGuard<'_, K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RangeGuard")
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

impl<K: Kernel> Drop for RangeGuard<'_, K> {
    #[inline]
    fn drop(&mut self) {
        self.finish();
    }
}
