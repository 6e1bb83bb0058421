//! Interval notifiers (Linux's `mmu_interval_notifier`, 2019): a secondary
//! MMU subscribes to the address ranges it mirrors, is called only for
//! invalidations that overlap them, and gets a collision-retry sequence
//! that makes its fault path race-free.
//!
//! Most users of plain [`MmuNotifier`]s intersected every invalidation
//! with their own list of ranges and raced with their own fault path. This
//! module does both once, correctly:
//!
//! - [`IntervalNotifiers`] is an [`MmuNotifier`] a driver registers once on
//!   an address space's [`NotifierHead`](crate::NotifierHead) (in a pinned
//!   [`Subscription`](crate::Subscription)). It keeps an interval tree of
//!   [`IntervalSub`]s and hands each range invalidation only to the
//!   subscriptions that overlap it.
//! - [`IntervalSub`] is one subscribed interval, pinned and intrusive (no
//!   allocation). Its [`IntervalOps::invalidate`] is called with the
//!   invalidation and the current sequence number.
//!
//! # The collision-retry protocol
//! The manager keeps an *invalidate sequence*, odd while an invalidation
//! that reached a subscription is running. A fault path does:
//!
//! 1. `let seq = sub.read_begin();` — waits while an invalidation that
//!    collides with `sub` runs;
//! 2. look the pages up in the primary tables (`AddressSpace::translate`);
//! 3. take the driver's own lock;
//! 4. `if sub.read_retry(seq)` → drop the lock, go back to 1; otherwise
//!    program the device and drop the lock.
//!
//! and [`IntervalOps::invalidate`] takes **the same driver lock**, calls
//! `sub.set_seq(cur_seq)`, and drops the device's translations in the
//! range. So either the fault took the lock first (and the invalidation
//! removes what it programmed), or the invalidation did (and the fault
//! sees `read_retry == true`): a device translation established from a
//! page-table state that an invalidation is replacing never survives it.
//!
//! # Inserting and removing while invalidations run
//! Invalidations walk the tree without the manager's lock (their callbacks
//! may sleep), so while any of them is walking the tree is frozen: inserts
//! and removes are queued on a deferred list and applied, under the lock,
//! when the last running invalidation ends (Linux's `deferred_list`).
//! - An interval inserted while an invalidation walks the tree is queued:
//!   it enters the tree when the last running invalidation ends, and
//!   invalidations that begin before then (while the tree is frozen) miss
//!   it too. It gets the running invalidations' (odd) sequence, so its
//!   `read_begin` waits until all of them, the ones it missed included,
//!   have ended: a fault path that follows the protocol never installs a
//!   translation that an invalidation it missed is replacing.
//! - [`IntervalNotifiers::remove`], and dropping an [`IntervalSub`], return
//!   only once the interval is out of the tree and no invalidation can
//!   reach it any more: the memory may then be freed. The type system adds
//!   the rest: a subscription is pinned (its address is in the tree), and
//!   its lifetime `'a` keeps the manager alive as long as it exists.
//!
//! # What a callback may do
//! [`IntervalOps::invalidate`] runs in the context of the range
//! invalidation (the reference [`AddressSpace`] holds its page-table lock).
//! It may take the driver's locks and wait for the device if
//! [`InvalidateRange::may_block`]; otherwise it must not sleep and returns
//! `false` when it would have to (the address space then gets
//! [`Again`] and changes nothing). It must not call
//! [`remove`](IntervalNotifiers::remove), drop a subscription, or call
//! [`read_begin`](IntervalSub::read_begin) on this manager: each waits for
//! the invalidation that is calling it. Inserting is fine (it is deferred).
//!
//! Neither `read_begin` nor `remove` may be called with a lock held that an
//! invalidation callback takes (the driver lock, the page-table lock).
//!
//! # Which invalidations reach an interval
//! The range pair (the head's `invalidate_range_start` and the guard's end,
//! as every call site of [`AddressSpace`] brackets its work, and as the
//! per-page helpers require) and the head's release, which is dispatched
//! as an [`Event::Release`] invalidation of the whole address space to
//! every interval. The per-page calls (`invalidate_page`,
//! `invalidate_pages`) and aging are not dispatched: they always come
//! inside a range pair that already reached the interval, as in Linux,
//! which dropped them in 2017.
//!
//! The manager receives the range pair and release from the notifier core
//! only, through a sealed entry point: its public [`MmuNotifier`] methods
//! do nothing, so no caller can end an invalidation that never started and
//! unfreeze the tree under a running walk.
//!
//! # The tree, and why it is our own
//! An intrusive AVL tree keyed by `(start, address)` and augmented with each
//! subtree's greatest end: insert and remove in O(log n) without
//! allocation, a query reports exactly the overlapping intervals, visiting
//! O(log n) nodes per interval reported (and O(log n) when none overlaps).
//! No crate fits: `intrusive-collections` (the well-kept `no_std`
//! intrusive red-black tree) has no hook to maintain a subtree maximum and
//! keeps its links in `Cell`s that neither loom nor a lock-free walker can
//! use; `intervaltree` and its kin allocate and are immutable once built.
//! Ours is ~250 lines with a property test against a linear scan.
//!
//! # Example
//! A device that mirrors 16 pages, driven directly through a
//! [`NotifierHead`](crate::NotifierHead) (an [`AddressSpace`] calls the same
//! `invalidate_range_start` from each of its call sites):
//!
//! ```
//! use core::pin::pin;
//! use std::sync::Mutex;
//!
//! use mmu_notifier_core::interval::{IntervalNotifiers, IntervalOps, IntervalSub};
//! use mmu_notifier_core::{
//!     Error, Event, InvalidateRange, NotifierHead, PageRange, Subscription, VirtAddr,
//! };
//!
//! const PAGE: u64 = 4096;
//!
//! /// A device with its own 16-entry page table: page index -> frame.
//! struct Device {
//!     table: Mutex<[Option<u64>; 16]>,
//! }
//!
//! impl IntervalOps for Device {
//!     fn invalidate(&self, sub: &IntervalSub<'_, Self>, r: &InvalidateRange, cur_seq: u64) -> bool {
//!         // A non-blocking invalidation must not wait for the lock.
//!         let mut table = match self.table.try_lock() {
//!             Ok(t) => t,
//!             Err(_) if !r.may_block() => return false,
//!             Err(_) => self.table.lock().unwrap(),
//!         };
//!         // Under the same lock the fault path checks `read_retry` under.
//!         sub.set_seq(cur_seq);
//!         for (i, e) in table.iter_mut().enumerate() {
//!             if r.range.contains(VirtAddr(i as u64 * PAGE)) {
//!                 *e = None;
//!             }
//!         }
//!         true
//!     }
//! }
//!
//! /// The device's fault path: `lookup` stands for `mm.translate(va)`.
//! fn fault(sub: &IntervalSub<'_, Device>, page: usize, lookup: impl Fn() -> u64) -> u32 {
//!     let mut tries = 0;
//!     loop {
//!         tries += 1;
//!         let seq = sub.read_begin();
//!         let frame = lookup();
//!         let mut table = sub.ops().table.lock().unwrap();
//!         if sub.read_retry(seq) {
//!             continue; // an invalidation collided: `frame` may be stale
//!         }
//!         table[page] = Some(frame);
//!         return tries;
//!     }
//! }
//!
//! let head = NotifierHead::new();
//! let manager = pin!(Subscription::new(IntervalNotifiers::new()));
//! match head.register(manager.as_ref()) {
//!     Ok(()) => {}
//!     // Built without the `notifier` feature: nothing is ever invalidated.
//!     Err(Error::NotifiersDisabled) => return,
//!     Err(e) => panic!("{e}"),
//! }
//! let dev = pin!(IntervalSub::new(Device { table: Mutex::new([None; 16]) }));
//! manager.notifier().insert(dev.as_ref(), VirtAddr(0), 16 * PAGE).unwrap();
//!
//! assert_eq!(fault(&dev, 3, || 0x3000), 1);
//! let page3 = InvalidateRange::new(
//!     PageRange::from_pages(VirtAddr(3 * PAGE), 1, PAGE).unwrap(),
//!     Event::Unmap,
//! );
//!
//! // The primary tables change page 3: the device drops it at once.
//! let guard = head.invalidate_range_start(page3);
//! assert_eq!(dev.ops().table.lock().unwrap()[3], None);
//! // A fault now would wait in `read_begin` until the change is complete.
//! assert_eq!(dev.try_read_begin(), None);
//! guard.end();
//!
//! // A fault that raced with an invalidation: it read the old translation
//! // before the change and must not install it.
//! let seq = dev.read_begin();
//! let stale = 0x3000;
//! head.invalidate_range_start(page3).end();
//! assert!(dev.read_retry(seq), "a colliding invalidation forces a retry");
//! let _ = stale;
//! // ... so it retries, and sees the new state.
//! assert_eq!(fault(&dev, 3, || 0x7000), 1);
//! assert_eq!(dev.ops().table.lock().unwrap()[3], Some(0x7000));
//! ```
//!
//! [`AddressSpace`]: crate::mm::AddressSpace
#![cfg(feature = "notifier")]

mod tree;

use core::marker::{PhantomData, PhantomPinned};
use core::ops::ControlFlow;
use core::pin::Pin;
use core::ptr;

use crate::addr::{PageRange, VirtAddr};
use crate::error::Error;
use crate::notifier::sealed::CoreOnly;
use crate::notifier::{Again, Callbacks, Event, InvalidateRange, MmuNotifier};
use crate::sync::{
    spin_loop, AtomicU64, AtomicUsize,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
    RawSpinLock,
};
use tree::{Links, Tree};

#[cfg(not(loom))]
use core::cell::UnsafeCell;
#[cfg(loom)]
use loom::cell::UnsafeCell;

/// A plain memory cell whose accesses are serialised by the manager's lock
/// (or by the tree being frozen). Under loom it is loom's cell, so a
/// broken serialisation rule is a reported data race rather than a silent
/// one; on hardware and under Miri it is `core`'s.
struct LockCell<T>(UnsafeCell<T>);

impl<T: Copy> LockCell<T> {
    fn new(value: T) -> Self {
        Self(UnsafeCell::new(value))
    }

    /// # Safety
    /// No write to this cell runs concurrently, and the last one
    /// happened-before this read.
    unsafe fn get(&self) -> T {
        #[cfg(loom)]
        // SAFETY: the caller's contract; loom checks it.
        return self.0.with(|p| unsafe { *p });
        #[cfg(not(loom))]
        // SAFETY: the caller's contract.
        unsafe {
            *self.0.get()
        }
    }

    /// # Safety
    /// No other access to this cell runs concurrently, and every earlier
    /// one happened-before this write.
    unsafe fn set(&self, value: T) {
        #[cfg(loom)]
        // SAFETY: the caller's contract; loom checks it.
        self.0.with_mut(|p| unsafe { *p = value });
        #[cfg(not(loom))]
        // SAFETY: the caller's contract.
        unsafe {
            *self.0.get() = value;
        }
    }
}

// Subscription states, in the low bits of the membership word (the rest is
// the manager's address). Every transition happens under the lock of the
// manager the word names, by compare-and-swap out of IDLE (the claim) and
// by stores after it; the last one of a removal (to IDLE) hands the memory
// back to its owner. One word, so no CPU can pair one manager with another
// manager's state.
/// In no manager; may be inserted. The whole word is 0.
const IDLE: usize = 0;
/// In the tree.
const IN_TREE: usize = 1;
/// On the deferred list, waiting for the running invalidations to end to
/// enter the tree; not reachable by any invalidation.
const PENDING_INSERT: usize = 2;
/// In the tree and on the deferred list, waiting to leave it; still called
/// by the invalidations that run.
const PENDING_REMOVE: usize = 3;
const STATE_BITS: usize = 0b11;

/// The manager address of a membership word.
const fn manager_of(word: usize) -> usize {
    word & !STATE_BITS
}
/// The state of a membership word.
const fn state_of(word: usize) -> usize {
    word & STATE_BITS
}

/// The type-erased part of a subscription: tree links, deferred-list link,
/// state and sequence. `links` comes first: the tree's pointers to it are
/// pointers to the node and to the whole subscription.
#[repr(C)]
struct Node {
    links: Links,
    /// Next on the manager's deferred list (manager lock).
    deferred_next: LockCell<*const Node>,
    /// `manager address | state`; 0 when idle. A named manager is valid
    /// for the subscription's lifetime `'a`.
    membership: AtomicUsize,
    /// The driver's copy of the invalidate sequence (`set_seq`).
    seq: AtomicU64,
    invalidate: unsafe fn(*const Node, &InvalidateRange, u64) -> bool,
}

/// What a driver does when an invalidation overlaps one of its intervals.
pub trait IntervalOps: Sync + Sized {
    /// Translations in `range.range` (intersect it with the interval) are
    /// about to change. Take the lock the fault path checks
    /// [`read_retry`](IntervalSub::read_retry) under, call
    /// [`sub.set_seq(cur_seq)`](IntervalSub::set_seq) inside it, and drop
    /// the device's translations of the range before releasing it.
    ///
    /// Return `false` only if `!range.may_block()` and the work would sleep
    /// (the lock is contended, the device must be waited for): the
    /// invalidation then fails with [`Again`] and the primary tables do not
    /// change. A `false` from a blockable invalidation is ignored (the
    /// range changes anyway), as in Linux, where it is a warning.
    fn invalidate(
        &self,
        sub: &IntervalSub<'_, Self>,
        range: &InvalidateRange,
        cur_seq: u64,
    ) -> bool;
}

unsafe fn invalidate_thunk<T: IntervalOps>(
    node: *const Node,
    range: &InvalidateRange,
    cur_seq: u64,
) -> bool {
    // SAFETY: (caller's contract) `node` is the tree's pointer to a live
    // `IntervalSub<'_, T>` (the thunk is chosen by its own `new`), with the
    // provenance of the whole subscription; `repr(C)` puts the node first.
    // `T: Sync` makes the shared reference sound on any CPU.
    let sub = unsafe { &*node.cast::<IntervalSub<'_, T>>() };
    sub.ops.invalidate(sub, range, cur_seq)
}

/// One subscribed interval: the tree node and the driver's ops, pinned
/// together.
///
/// Create it with [`IntervalSub::new`], pin it (`core::pin::pin!`, or
/// `Box::pin`), and insert it with [`IntervalNotifiers::insert`]. Dropping
/// it removes it and waits until no invalidation can still call it. The
/// lifetime `'a` ties it to the manager it is inserted in: the manager
/// cannot go away first.
#[repr(C)]
pub struct IntervalSub<'a, T: IntervalOps> {
    node: Node,
    ops: T,
    _pin: PhantomPinned,
    // Invariant in 'a: must not be shortened to fit a manager that dies first.
    _manager: PhantomData<fn(&'a IntervalNotifiers) -> &'a IntervalNotifiers>,
}

// SAFETY: the node's plain cells are accessed only under the lock of the
// manager the subscription is in (or while its tree is frozen); everything
// else in the node is atomic or immutable; `ops` is `Sync`.
unsafe impl<T: IntervalOps> Sync for IntervalSub<'_, T> {}
// SAFETY: an idle subscription is referenced by nobody, so it may move to
// another CPU with its ops; an inserted one is pinned and only its owner's
// `Pin<Box<_>>` moves, and `Drop` (which waits) is CPU-agnostic.
unsafe impl<T: IntervalOps + Send> Send for IntervalSub<'_, T> {}

impl<T: IntervalOps> IntervalSub<'_, T> {
    /// Wraps `ops`; not inserted anywhere yet.
    pub fn new(ops: T) -> Self {
        Self {
            node: Node {
                links: Links::new(),
                deferred_next: LockCell::new(ptr::null()),
                membership: AtomicUsize::new(IDLE),
                seq: AtomicU64::new(0),
                invalidate: invalidate_thunk::<T>,
            },
            ops,
            _pin: PhantomPinned,
            _manager: PhantomData,
        }
    }
}

impl<T: IntervalOps> IntervalSub<'_, T> {
    /// The driver's ops.
    pub fn ops(&self) -> &T {
        &self.ops
    }

    /// Whether the interval is inserted (in the tree, or waiting to enter
    /// or leave it).
    pub fn is_inserted(&self) -> bool {
        self.node.membership.load(Acquire) != IDLE
    }

    /// The interval as `(start, length)`, if inserted.
    pub fn interval(&self) -> Option<(VirtAddr, u64)> {
        let (_lock, _manager) = self.lock_manager()?;
        // SAFETY: inserted in the manager whose lock we hold, so
        // `start`/`last` were written under this lock and change only when
        // it is inserted again, which needs it idle first.
        let (start, last) = unsafe { (self.node.links.start.get(), self.node.links.last.get()) };
        Some((VirtAddr(start), last - start + 1))
    }

    /// A pointer to the node with the provenance of the whole subscription.
    /// It is the only kind the manager publishes (in the tree and on the
    /// deferred list): the thunk casts it back to reach the ops, which a
    /// pointer derived from `&self.node` may not do.
    fn node_ptr(&self) -> *const Node {
        ptr::from_ref(self).cast()
    }

    /// The manager the subscription is inserted in, with its lock held
    /// (so it stays there until the guard drops); `None` if idle.
    fn lock_manager(&self) -> Option<(crate::sync::RawSpinGuard<'_>, &IntervalNotifiers)> {
        loop {
            let word = self.node.membership.load(Acquire);
            if word == IDLE {
                return None;
            }
            let at = ptr::with_exposed_provenance::<IntervalNotifiers>(manager_of(word));
            // SAFETY: `insert` stored the address of a `&'a IntervalNotifiers`
            // (exposed there), and `'a` outlives `self`.
            let manager = unsafe { &*at };
            let lock = manager.lock.lock();
            // Only this manager's lock holder moves the node out of it: if
            // the word still names it, it stays there while we hold it.
            if manager_of(self.node.membership.load(Acquire)) == manager_of(word) {
                return Some((lock, manager));
            }
        }
    }

    /// The sequence, and whether an invalidation that collides with this
    /// interval is running (its `invalidate` set our sequence to the
    /// manager's current odd one, or we were inserted during it).
    fn snapshot(&self) -> (u64, Option<&IntervalNotifiers>) {
        let Some((_lock, manager)) = self.lock_manager() else {
            return (self.node.seq.load(Acquire), None);
        };
        let seq = self.node.seq.load(Acquire);
        let colliding = seq == manager.seq.load(Relaxed);
        (seq, colliding.then_some(manager))
    }

    /// Begins a read of the primary tables for this interval (Linux's
    /// `mmu_interval_read_begin`): waits while an invalidation colliding
    /// with it runs, and returns the sequence to pass to
    /// [`read_retry`](Self::read_retry).
    ///
    /// Spins: call it without holding the driver lock or any lock an
    /// invalidation holds, and never from inside a callback.
    pub fn read_begin(&self) -> u64 {
        let (seq, colliding) = self.snapshot();
        if let Some(manager) = colliding {
            // The manager's sequence changes (to even) only when the last
            // running invalidation has ended.
            while manager.seq.load(Acquire) == seq {
                spin_loop();
            }
        }
        seq
    }

    /// [`read_begin`](Self::read_begin) for a fault path that must not
    /// wait: `None` while an invalidation colliding with this interval
    /// runs (try again later, or fail the device access).
    pub fn try_read_begin(&self) -> Option<u64> {
        match self.snapshot() {
            (seq, None) => Some(seq),
            (_, Some(_)) => None,
        }
    }

    /// Whether an invalidation collided with the read that `seq` began:
    /// the pages collected since may be stale, so drop them and start
    /// again. Call it under the driver lock that `invalidate` takes, and
    /// program the device only if it is `false`, before dropping that lock
    /// (Linux's `mmu_interval_read_retry`).
    #[must_use = "a fault path that ignores the retry installs stale translations"]
    pub fn read_retry(&self, seq: u64) -> bool {
        self.node.seq.load(Acquire) != seq
    }

    /// [`read_retry`](Self::read_retry) without the driver lock: a `true`
    /// lets a long fault give up early; a `false` proves nothing (Linux's
    /// `mmu_interval_check_retry`).
    pub fn check_retry(&self, seq: u64) -> bool {
        self.node.seq.load(Acquire) != seq
    }

    /// Records that an invalidation with sequence `cur_seq` reached this
    /// interval. Call it from [`IntervalOps::invalidate`] with its
    /// `cur_seq`, under the driver lock (Linux's `mmu_interval_set_seq`).
    pub fn set_seq(&self, cur_seq: u64) {
        debug_assert!(
            cur_seq & 1 == 1,
            "set_seq takes the odd cur_seq given to invalidate"
        );
        self.node.seq.store(cur_seq, Release);
    }
}

impl<T: IntervalOps> Drop for IntervalSub<'_, T> {
    fn drop(&mut self) {
        // `&mut self`: nobody can insert us concurrently, so IDLE stays IDLE,
        // and only our manager moves us (out of it).
        let word = self.node.membership.load(Acquire);
        if word == IDLE {
            return;
        }
        // SAFETY: as in `lock_manager`: the address of a manager that
        // outlives us.
        let manager =
            unsafe { &*ptr::with_exposed_provenance::<IntervalNotifiers>(manager_of(word)) };
        let _ = manager.remove_sub(self);
    }
}

/// The manager: an [`MmuNotifier`] that dispatches each range invalidation
/// to the [`IntervalSub`]s overlapping it (Linux keeps this in
/// `mm->notifier_subscriptions`; here a driver registers one, or shares
/// one, per address space).
///
/// Register it on the address space's head inside a
/// [`Subscription`](crate::Subscription) and insert intervals into
/// `subscription.notifier()`. Unregistering it stops the dispatch: its
/// intervals are told nothing more, so remove them first.
pub struct IntervalNotifiers {
    lock: RawSpinLock,
    /// The invalidate sequence: odd while an invalidation that found an
    /// overlapping interval runs. Written under `lock`; read lock-free by
    /// waiters.
    seq: AtomicU64,
    /// Running invalidations (between start and end).
    active: LockCell<usize>,
    tree: Tree,
    /// Inserts and removes waiting for the running invalidations to end.
    deferred: LockCell<*const Node>,
}

// SAFETY: the plain cells (`active`, `deferred`, the tree) are accessed only
// under `lock`, except the tree, which invalidations also read while it is
// frozen (odd sequence, they are counted in `active`): then nothing writes
// it. Subscriptions it points to are `Sync` and alive while linked.
unsafe impl Sync for IntervalNotifiers {}
// SAFETY: as for `Sync`: nothing in it is tied to a CPU.
unsafe impl Send for IntervalNotifiers {}

impl Default for IntervalNotifiers {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for IntervalNotifiers {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IntervalNotifiers")
            .field("invalidate_seq", &self.seq.load(Relaxed))
            .finish_non_exhaustive()
    }
}

impl IntervalNotifiers {
    /// An empty manager.
    pub fn new() -> Self {
        Self {
            lock: RawSpinLock::new(),
            // Even: idle. Linux starts at 2 too; `seq - 1` stays odd.
            seq: AtomicU64::new(2),
            active: LockCell::new(0),
            tree: Tree::new(),
            deferred: LockCell::new(ptr::null()),
        }
    }

    /// Whether an invalidation that reached an interval is running (the
    /// invalidate sequence is odd).
    pub fn is_invalidating(&self) -> bool {
        self.seq.load(Acquire) & 1 == 1
    }

    /// This manager's address, as membership words hold it (exposed, so
    /// `lock_manager` may turn it back into a reference).
    fn addr(&self) -> usize {
        ptr::from_ref(self).expose_provenance()
    }

    /// Inserts `sub` for the interval `[start, start + len)` (Linux's
    /// `mmu_interval_notifier_insert`).
    ///
    /// If no invalidation walks the tree, every invalidation that overlaps
    /// the interval and begins after this returns calls its ops. Otherwise
    /// it is queued and enters the tree when the last running invalidation
    /// ends; invalidations that begin before then miss it as well, and its
    /// [`read_begin`](IntervalSub::read_begin) waits until every one of
    /// them has ended, so the fault path is protected either way.
    ///
    /// # Errors
    /// [`Error::EmptyRange`] if `len == 0`; [`Error::OutOfRange`] if the
    /// interval wraps past the end of the address space;
    /// [`Error::AlreadyRegistered`] if `sub` is inserted (here or in
    /// another manager).
    pub fn insert<'a, T: IntervalOps>(
        &'a self,
        sub: Pin<&IntervalSub<'a, T>>,
        start: VirtAddr,
        len: u64,
    ) -> Result<(), Error> {
        if len == 0 {
            return Err(Error::EmptyRange { at: start.0 });
        }
        let last = start.0.checked_add(len - 1).ok_or(Error::OutOfRange {
            addr: start.0,
            limit: u64::MAX,
        })?;
        let sub = sub.get_ref();
        let node = &sub.node;
        // The tree holds pointers derived from the whole subscription: the
        // thunk casts them back to reach the ops.
        let node_ptr = sub.node_ptr();
        let me = self.addr();
        let _lock = self.lock.lock();
        // Claim it: an IDLE subscription is in no manager, so the claim
        // gives us its cells; a racing insert elsewhere loses here, and a
        // racing remove on its old manager sees our word, not its own.
        if node
            .membership
            .compare_exchange(IDLE, me | PENDING_INSERT, AcqRel, Acquire)
            .is_err()
        {
            return Err(Error::AlreadyRegistered);
        }
        // SAFETY: claimed above, so nobody else touches its links; its
        // previous manager (if any) let go with its IDLE store, which our
        // CAS acquired.
        unsafe {
            node.links.start.set(start.0);
            node.links.last.set(last);
        }
        // SAFETY: `active`, `deferred` and the tree are ours under the lock.
        unsafe {
            let seq = self.seq.load(Relaxed);
            if self.active.get() == 0 {
                // Idle: straight in. Its sequence is odd and differs from
                // the manager's (even), so `read_begin` does not wait.
                self.tree.insert(node_ptr.cast());
                node.seq.store(seq.wrapping_sub(1), Release);
                node.membership.store(me | IN_TREE, Release);
            } else if seq & 1 == 1 {
                // Invalidations walk the tree: queue it. It missed them, so
                // it gets their sequence and its readers wait for them.
                node.deferred_next.set(self.deferred.get());
                self.deferred.set(node_ptr);
                node.seq.store(seq, Release);
            } else {
                // Invalidations run but none found an interval, so none
                // walks the tree: insert now. One of them may overlap it,
                // though: make the sequence odd so its readers wait until
                // they have all ended.
                self.tree.insert(node_ptr.cast());
                self.seq.store(seq | 1, Release);
                node.seq.store(seq | 1, Release);
                node.membership.store(me | IN_TREE, Release);
            }
        }
        Ok(())
    }

    /// Removes `sub` and waits until no invalidation can call it any more
    /// (Linux's `mmu_interval_notifier_remove`); afterwards its memory may
    /// be reused. If invalidations walk the tree, the removal is deferred
    /// to the end of the last one and this waits for it: never call it from
    /// a callback, or with a lock held that a callback takes.
    ///
    /// # Errors
    /// [`Error::NotRegistered`] if `sub` is not inserted in this manager.
    pub fn remove<T: IntervalOps>(&self, sub: Pin<&IntervalSub<'_, T>>) -> Result<(), Error> {
        self.remove_sub(sub.get_ref())
    }

    fn remove_sub<T: IntervalOps>(&self, sub: &IntervalSub<'_, T>) -> Result<(), Error> {
        let node = &sub.node;
        // What this publishes (on the deferred list) is, as in `insert`, a
        // pointer to the whole subscription, never one derived from `node`.
        let this = sub.node_ptr();
        let me = self.addr();
        {
            let _lock = self.lock.lock();
            // Under our lock only we move a node that names us; a node that
            // names another manager (or none) is not ours to touch.
            let word = node.membership.load(Acquire);
            if word == IDLE || manager_of(word) != me {
                return Err(Error::NotRegistered);
            }
            // SAFETY: the node is ours (its word names us) and we hold the
            // lock, which guards its links and our list and tree.
            unsafe {
                match state_of(word) {
                    IN_TREE if self.seq.load(Relaxed) & 1 == 0 => {
                        // Nobody walks the tree: out at once.
                        self.tree.remove(this.cast());
                        node.membership.store(IDLE, Release);
                        return Ok(());
                    }
                    IN_TREE => {
                        node.deferred_next.set(self.deferred.get());
                        self.deferred.set(this);
                        node.membership.store(me | PENDING_REMOVE, Relaxed);
                    }
                    PENDING_INSERT => {
                        // Never reachable by an invalidation: cancel.
                        self.unlink_deferred(node);
                        node.membership.store(IDLE, Release);
                        return Ok(());
                    }
                    // Someone else is removing it: wait with them.
                    _ => {}
                }
            }
        }
        // The last invalidation's end takes it out of the tree and stores
        // IDLE as its very last access to the node.
        while node.membership.load(Acquire) != IDLE {
            spin_loop();
        }
        Ok(())
    }

    /// Takes `node` off the deferred list.
    ///
    /// # Safety
    /// The lock is held and `node` is on the list.
    unsafe fn unlink_deferred(&self, node: &Node) {
        let target: *const Node = node;
        let mut link = &self.deferred;
        // SAFETY: the caller holds the lock; listed nodes are alive (their
        // owners take them off under the lock before they go).
        unsafe {
            loop {
                let cur = link.get();
                if cur.is_null() {
                    return;
                }
                if ptr::eq(cur, target) {
                    link.set(node.deferred_next.get());
                    node.deferred_next.set(ptr::null());
                    return;
                }
                link = &(*cur).deferred_next;
            }
        }
    }

    /// The start of an invalidation of `[first, last]`: counts it, and if
    /// an interval overlaps, freezes the tree (odd sequence) and calls each
    /// overlapping interval outside the lock.
    fn invalidate(&self, range: &InvalidateRange, first: u64, last: u64) -> Result<(), Again> {
        let cur_seq = {
            let _lock = self.lock.lock();
            // SAFETY: under the lock.
            unsafe {
                self.active.set(self.active.get() + 1);
                if !self.tree.any_overlap(first, last) {
                    return Ok(());
                }
            }
            let seq = self.seq.load(Relaxed) | 1;
            self.seq.store(seq, Release);
            seq
        };
        let mut would_block = false;
        let mut call = |links: *const Links| {
            let node = links.cast::<Node>();
            // SAFETY: the walk below reports only nodes of the frozen tree:
            // live subscriptions whose thunk matches their type; `links`
            // carries the whole subscription's provenance.
            let ok = unsafe { ((*node).invalidate)(node, range, cur_seq) };
            if ok || range.may_block() {
                ControlFlow::Continue(())
            } else {
                would_block = true;
                ControlFlow::Break(())
            }
        };
        // SAFETY: the sequence is odd and we are counted in `active` until
        // our end, so nothing changes the tree, and its nodes stay alive
        // (removals wait for the last end); our lock acquisition above
        // happened after the last change.
        let _ = unsafe { self.tree.for_each_overlap(first, last, &mut call) };
        if would_block {
            // No end follows a failed start: end it ourselves.
            self.end();
            return Err(Again);
        }
        Ok(())
    }

    /// The end of an invalidation. The last one to end applies the
    /// deferred inserts and removes, then makes the sequence even.
    fn end(&self) {
        let _lock = self.lock.lock();
        // SAFETY: under the lock; the tree is not walked (we were the last
        // walker, `active` reaches 0), and listed nodes are alive until we
        // store IDLE into them.
        unsafe {
            let active = self.active.get() - 1;
            self.active.set(active);
            let seq = self.seq.load(Relaxed);
            if active != 0 || seq & 1 == 0 {
                return;
            }
            let mut p = self.deferred.get();
            self.deferred.set(ptr::null());
            while let Some(node) = p.as_ref() {
                // `this`, not `&Node`, carries the whole subscription's
                // provenance (pushed by `insert` or `remove_sub`), which the
                // tree must keep for the thunk to reach the ops.
                let this = p;
                p = node.deferred_next.get();
                node.deferred_next.set(ptr::null());
                match state_of(node.membership.load(Relaxed)) {
                    PENDING_INSERT => {
                        self.tree.insert(this.cast());
                        node.membership.store(self.addr() | IN_TREE, Release);
                    }
                    PENDING_REMOVE => {
                        self.tree.remove(this.cast());
                        // Hands the node back: its owner may free it now,
                        // so this is our last access to it.
                        node.membership.store(IDLE, Release);
                    }
                    _ => debug_assert!(false, "a deferred node is pending"),
                }
            }
            self.seq.store(seq + 1, Release);
        }
    }
}

/// The manager receives the range pair and release from the notifier core
/// only (the sealed `__*_from_core` entry points): its public methods keep
/// their empty defaults, so a direct call can neither start nor end an
/// invalidation and unbalance the manager.
impl MmuNotifier for IntervalNotifiers {
    fn callbacks(&self) -> Callbacks {
        Callbacks::RELEASE.union(Callbacks::RANGE)
    }

    /// Dispatches an [`Event::Release`] invalidation of the whole address
    /// space to every interval (Linux's `mn_itree_release`).
    fn __release_from_core(&self, _: CoreOnly) {
        let everything = PageRange::new(VirtAddr(0), VirtAddr(u64::MAX), 1)
            .expect("[0, u64::MAX) is a valid range of 1-byte pages");
        let range = InvalidateRange::new(everything, Event::Release);
        let _ = self.invalidate(&range, 0, u64::MAX);
        self.end();
    }

    fn __range_start_from_core(&self, range: &InvalidateRange, _: CoreOnly) -> Result<(), Again> {
        self.invalidate(range, range.range.start().0, range.range.end().0 - 1)
    }

    fn __range_end_from_core(&self, _range: &InvalidateRange, _: CoreOnly) {
        self.end();
    }
}
