//! The notifier list (feature `notifier` on).
//!
//! An intrusive singly-linked list of pinned [`Subscription`]s. Writers
//! (register, unregister, release) serialise on a spin lock; readers walk
//! it lock-free inside an SRCU read-side section.
//!
//! Every change to membership bumps a generation counter. A reader
//! snapshots the generation once and calls exactly the nodes that were
//! alive at that generation (`born <= snap < dies`): a range operation uses
//! one snapshot for its start and its end, so both reach the same
//! notifiers whatever registers or unregisters in between.

use core::marker::{PhantomData, PhantomPinned};
use core::pin::Pin;
use core::ptr;

use super::cpu::Depths;
use super::srcu::{Srcu, SrcuReadGuard};
use super::{Again, Callbacks, InvalidateRange, MmuNotifier};
use crate::addr::{PageRange, VirtAddr};
use crate::error::Error;
use crate::sync::{
    spin_loop, AtomicBool, AtomicPtr, AtomicU64, AtomicUsize,
    Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst},
    RawSpinLock,
};

// Node states. Transitions happen under the head lock, except the last step
// of unregister (-> IDLE) and of release (-> RELEASED), which hand the node
// back to its owner.
const IDLE: usize = 0;
const REGISTERED: usize = 1;
const UNREGISTERING: usize = 2;
const RELEASING: usize = 3;
const RELEASED: usize = 4;

/// Type-erased entry points into a `Subscription<N>`, one table per `N`.
struct VTable {
    callbacks: Callbacks,
    /// The notifier's type, for subscriptions shared by `get`/`put`.
    #[cfg(feature = "alloc")]
    type_id: Option<fn() -> core::any::TypeId>,
    release: unsafe fn(*const Node),
    invalidate_page: unsafe fn(*const Node, VirtAddr),
    invalidate_pages: unsafe fn(*const Node, PageRange),
    age_page: unsafe fn(*const Node, VirtAddr) -> bool,
    clear_flush_young: unsafe fn(*const Node, PageRange) -> bool,
    clear_young: unsafe fn(*const Node, PageRange) -> bool,
    test_young: unsafe fn(*const Node, VirtAddr) -> bool,
    secondary_tlbs: unsafe fn(*const Node, PageRange),
    range_start: unsafe fn(*const Node, &InvalidateRange) -> Result<(), Again>,
    range_end: unsafe fn(*const Node, &InvalidateRange),
}

struct Thunks<N>(PhantomData<N>);

impl<N: MmuNotifier> Thunks<N> {
    const VTABLE: &'static VTable = &VTable {
        callbacks: N::CALLBACKS,
        #[cfg(feature = "alloc")]
        type_id: None,
        release: Self::release,
        invalidate_page: Self::invalidate_page,
        invalidate_pages: Self::invalidate_pages,
        age_page: Self::age_page,
        clear_flush_young: Self::clear_flush_young,
        clear_young: Self::clear_young,
        test_young: Self::test_young,
        secondary_tlbs: Self::secondary_tlbs,
        range_start: Self::range_start,
        range_end: Self::range_end,
    };

    /// # Safety
    /// `node` is the `node` field of a live `Subscription<'_, N>` (the
    /// vtable of a node is always the one of its own subscription type).
    unsafe fn notifier<'a>(node: *const Node) -> &'a N {
        // SAFETY: `Subscription` is `repr(C)` with `node` first, so a pointer
        // to the node is a pointer to the subscription; the caller promises
        // it is live, and `N: Sync` makes the shared reference sound on any
        // CPU.
        unsafe { &(*node.cast::<Subscription<'_, N>>()).notifier }
    }

    unsafe fn release(node: *const Node) {
        // SAFETY: forwarded contract of `notifier`.
        unsafe { Self::notifier(node) }.release();
    }
    unsafe fn invalidate_page(node: *const Node, addr: VirtAddr) {
        // SAFETY: forwarded contract of `notifier`.
        unsafe { Self::notifier(node) }.invalidate_page(addr);
    }
    unsafe fn invalidate_pages(node: *const Node, range: PageRange) {
        // SAFETY: forwarded contract of `notifier`.
        unsafe { Self::notifier(node) }.invalidate_pages(range);
    }
    unsafe fn age_page(node: *const Node, addr: VirtAddr) -> bool {
        // SAFETY: forwarded contract of `notifier`.
        unsafe { Self::notifier(node) }.age_page(addr)
    }
    unsafe fn clear_flush_young(node: *const Node, range: PageRange) -> bool {
        // SAFETY: forwarded contract of `notifier`.
        unsafe { Self::notifier(node) }.clear_flush_young(range)
    }
    unsafe fn clear_young(node: *const Node, range: PageRange) -> bool {
        // SAFETY: forwarded contract of `notifier`.
        unsafe { Self::notifier(node) }.clear_young(range)
    }
    unsafe fn test_young(node: *const Node, addr: VirtAddr) -> bool {
        // SAFETY: forwarded contract of `notifier`.
        unsafe { Self::notifier(node) }.test_young(addr)
    }
    unsafe fn secondary_tlbs(node: *const Node, range: PageRange) {
        // SAFETY: forwarded contract of `notifier`.
        unsafe { Self::notifier(node) }.invalidate_secondary_tlbs(range);
    }
    unsafe fn range_start(node: *const Node, range: &InvalidateRange) -> Result<(), Again> {
        // SAFETY: forwarded contract of `notifier`.
        unsafe { Self::notifier(node) }.invalidate_range_start(range)
    }
    unsafe fn range_end(node: *const Node, range: &InvalidateRange) {
        // SAFETY: forwarded contract of `notifier`.
        unsafe { Self::notifier(node) }.invalidate_range_end(range);
    }
}

/// The list linkage embedded at the start of every subscription.
struct Node {
    next: AtomicPtr<Node>,
    head: AtomicPtr<NotifierHead>,
    state: AtomicUsize,
    born: AtomicU64,
    dies: AtomicU64,
    vtable: &'static VTable,
    /// References handed out by `NotifierHead::get` (shared subscriptions).
    #[cfg(feature = "alloc")]
    users: AtomicUsize,
    /// The `Box::into_raw` pointer of a shared subscription: the only one
    /// allowed to free it (the list's pointer came from a shared borrow).
    #[cfg(feature = "alloc")]
    owner: AtomicPtr<()>,
}

impl Node {
    #[inline]
    fn visible_at(&self, snap: u64) -> bool {
        self.born.load(Relaxed) <= snap && snap < self.dies.load(Relaxed)
    }
}

/// A notifier wrapped for registration: the list node and the notifier,
/// pinned together.
///
/// Create it with [`Subscription::new`], pin it (`core::pin::pin!` on the
/// stack, or `Box::pin`), and pass it to [`NotifierHead::register`].
/// Dropping it unregisters it and waits for the grace period, so its memory
/// is never freed while a CPU may still call it. The lifetime `'h` ties it
/// to the head it is registered on: the head cannot go away first.
#[repr(C)]
pub struct Subscription<'h, N: MmuNotifier> {
    node: Node,
    notifier: N,
    _pin: PhantomPinned,
    // Invariant in 'h: a subscription must not be shortened to fit a head
    // that dies before it.
    _head: PhantomData<fn(&'h NotifierHead) -> &'h NotifierHead>,
}

impl<'h, N: MmuNotifier> Subscription<'h, N> {
    /// Wraps `notifier`; not registered anywhere yet.
    pub fn new(notifier: N) -> Self {
        Self {
            node: Node {
                next: AtomicPtr::new(ptr::null_mut()),
                head: AtomicPtr::new(ptr::null_mut()),
                state: AtomicUsize::new(IDLE),
                born: AtomicU64::new(0),
                dies: AtomicU64::new(0),
                vtable: Thunks::<N>::VTABLE,
                #[cfg(feature = "alloc")]
                users: AtomicUsize::new(0),
                #[cfg(feature = "alloc")]
                owner: AtomicPtr::new(ptr::null_mut()),
            },
            notifier,
            _pin: PhantomPinned,
            _head: PhantomData,
        }
    }

    /// The wrapped notifier.
    pub fn notifier(&self) -> &N {
        &self.notifier
    }

    /// Whether the subscription is registered and its head not released.
    pub fn is_registered(&self) -> bool {
        self.node.state.load(Acquire) == REGISTERED
    }

    /// Whether the head it was registered on has released it (its
    /// `release` callback has run).
    pub fn is_released(&self) -> bool {
        self.node.state.load(Acquire) == RELEASED
    }
}

impl<N: MmuNotifier> Drop for Subscription<'_, N> {
    fn drop(&mut self) {
        loop {
            match self.node.state.load(Acquire) {
                REGISTERED => {
                    let head = self.node.head.load(Acquire);
                    // SAFETY: a registered node's `head` points to the head it
                    // is on, and `'h` (invariant, checked by dropck through
                    // this Drop impl) keeps that head alive until we are
                    // dropped.
                    match unsafe { &*head }.unregister_node(&self.node) {
                        Err(Error::Released) => continue,
                        // Returning would free a registered node; waiting
                        // would never end.
                        Err(Error::InsideCallback) => panic!(
                            "a registered Subscription was dropped inside a callback or range invalidation of its own head"
                        ),
                        _ => return,
                    }
                }
                // The releasing CPU still holds a pointer to us: wait until
                // our `release` callback has returned.
                RELEASING => spin_loop(),
                _ => return,
            }
        }
    }
}

/// The per-address-space list of notifiers (Linux: `mm->notifier_subscriptions`).
pub struct NotifierHead {
    first: AtomicPtr<Node>,
    /// Union of the `Callbacks` of registered notifiers: what the hooks'
    /// fast path tests (one load, one branch).
    interest: AtomicUsize,
    generation: AtomicU64,
    released: AtomicBool,
    lock: RawSpinLock,
    srcu: Srcu,
    /// Per-CPU read-section depth, to refuse a register/unregister that
    /// would wait for the calling CPU itself.
    depths: Depths,
    /// Serialises `get`/`put` of shared subscriptions.
    #[cfg(feature = "alloc")]
    shared: RawSpinLock,
}

/// An SRCU read-side section of one head, counted per CPU.
struct ReadSection<'a> {
    depths: &'a Depths,
    slot: Option<usize>,
    _srcu: SrcuReadGuard<'a>,
}

impl Drop for ReadSection<'_> {
    fn drop(&mut self) {
        self.depths.leave(self.slot);
    }
}

impl Default for NotifierHead {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for NotifierHead {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NotifierHead")
            .field("has_notifiers", &self.has_notifiers())
            .field("released", &self.is_released())
            .finish()
    }
}

impl NotifierHead {
    /// An empty head.
    pub fn new() -> Self {
        Self {
            first: AtomicPtr::new(ptr::null_mut()),
            interest: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            released: AtomicBool::new(false),
            lock: RawSpinLock::new(),
            srcu: Srcu::new(),
            depths: Depths::new(),
            #[cfg(feature = "alloc")]
            shared: RawSpinLock::new(),
        }
    }

    /// Whether any notifier is on the list: the one load of the fast path.
    #[inline(always)]
    pub fn has_notifiers(&self) -> bool {
        !self.first.load(Relaxed).is_null()
    }

    fn read_section(&self) -> ReadSection<'_> {
        let slot = self.depths.enter();
        ReadSection {
            depths: &self.depths,
            slot,
            _srcu: self.srcu.read_lock(),
        }
    }

    /// Whether a registered notifier implements any of `callbacks`: one
    /// relaxed load and a test, for callers that have per-page work to
    /// skip when nobody listens to it.
    #[inline(always)]
    pub fn wants(&self, callbacks: Callbacks) -> bool {
        self.interest.load(Relaxed) & callbacks.bits() as usize != 0
    }

    /// Whether [`release`](Self::release) has run.
    pub fn is_released(&self) -> bool {
        self.released.load(Acquire)
    }

    /// Registers `sub` on this head.
    ///
    /// Returns once every range invalidation that was in flight has ended,
    /// so the notifier starts with a consistent view: every invalidation it
    /// is not told about finished before it could fault anything in.
    ///
    /// Blocks for a grace period: call it from a context that may wait.
    ///
    /// # Errors
    /// [`Error::Released`] if the head has been released;
    /// [`Error::AlreadyRegistered`] if `sub` is registered (here or on
    /// another head); [`Error::ConflictingCallbacks`] if the notifier
    /// declares both the secondary-TLB hook and range start/end;
    /// [`Error::InsideCallback`] if called, on a tracked CPU, from inside a
    /// callback or range invalidation of this head.
    pub fn register<'h, N: MmuNotifier>(
        &'h self,
        sub: Pin<&Subscription<'h, N>>,
    ) -> Result<(), Error> {
        if self.depths.inside() {
            return Err(Error::InsideCallback);
        }
        let node = &sub.get_ref().node;
        let callbacks = node.vtable.callbacks;
        if callbacks.contains(Callbacks::SECONDARY_TLB) && callbacks.intersects(Callbacks::RANGE) {
            return Err(Error::ConflictingCallbacks);
        }
        // The list holds pointers derived from the whole subscription, not
        // from `node`: the thunks cast them back to `Subscription<N>` to
        // reach the notifier, which lies outside a `&Node`'s provenance.
        let node_ptr: *mut Node = ptr::from_ref(sub.get_ref()).cast::<Node>().cast_mut();
        {
            let _writer = self.lock.lock();
            if self.released.load(Relaxed) {
                return Err(Error::Released);
            }
            if node
                .state
                .compare_exchange(IDLE, REGISTERED, AcqRel, Acquire)
                .is_err()
                && node
                    .state
                    .compare_exchange(RELEASED, REGISTERED, AcqRel, Acquire)
                    .is_err()
            {
                return Err(Error::AlreadyRegistered);
            }
            let generation = self.generation.load(Relaxed) + 1;
            node.born.store(generation, Relaxed);
            node.dies.store(u64::MAX, Relaxed);
            node.head.store(ptr::from_ref(self).cast_mut(), Release);
            node.next.store(self.first.load(Relaxed), Relaxed);
            // Publish: a reader that sees the node sees it initialised.
            self.first.store(node_ptr, SeqCst);
            self.interest.fetch_or(callbacks.bits() as usize, SeqCst);
            self.generation.store(generation, SeqCst);
        }
        // Range operations hold a read-side section from start to end.
        self.srcu.synchronize();
        Ok(())
    }

    /// Unregisters `sub` and waits until no CPU is inside, or can enter,
    /// any of its callbacks; afterwards its memory may be reused.
    ///
    /// Must not be called from inside a callback of this head (it would
    /// wait for itself): with a CPU-id source set, that is refused.
    ///
    /// # Errors
    /// [`Error::InsideCallback`] if called, on a tracked CPU, from inside a
    /// callback or range invalidation of this head;
    /// [`Error::NotRegistered`] if `sub` is not registered on this head;
    /// [`Error::Released`] if the head released it (its `release` callback
    /// ran or is running; dropping the subscription waits for it).
    pub fn unregister<N: MmuNotifier>(&self, sub: Pin<&Subscription<'_, N>>) -> Result<(), Error> {
        self.unregister_node(&sub.get_ref().node)
    }

    fn unregister_node(&self, node: &Node) -> Result<(), Error> {
        if self.depths.inside() {
            return Err(Error::InsideCallback);
        }
        {
            let _writer = self.lock.lock();
            if !ptr::eq(node.head.load(Relaxed), self) {
                return Err(Error::NotRegistered);
            }
            match node.state.load(Relaxed) {
                REGISTERED => {}
                RELEASING | RELEASED => return Err(Error::Released),
                _ => return Err(Error::NotRegistered),
            }
            node.state.store(UNREGISTERING, Relaxed);
            let generation = self.generation.load(Relaxed) + 1;
            node.dies.store(generation, Relaxed);
            self.generation.store(generation, SeqCst);
        }
        // Readers with an older snapshot (a range operation between its
        // start and end) still call it; wait for them.
        self.srcu.synchronize();
        {
            let _writer = self.lock.lock();
            self.unlink(node);
            self.recompute_interest();
        }
        // Readers that started later skip it but may still step over it.
        self.srcu.synchronize();
        node.head.store(ptr::null_mut(), Relaxed);
        node.state.store(IDLE, Release);
        Ok(())
    }

    /// Sets `interest` to the union of the callbacks of registered nodes.
    /// Caller holds the lock.
    fn recompute_interest(&self) {
        let mut bits = 0;
        let mut p = self.first.load(Relaxed);
        // SAFETY: linked nodes are alive (owners unlink them under this
        // lock before freeing them), and we hold the lock.
        while let Some(node) = unsafe { p.as_ref() } {
            if node.state.load(Relaxed) == REGISTERED {
                bits |= node.vtable.callbacks.bits() as usize;
            }
            p = node.next.load(Relaxed);
        }
        self.interest.store(bits, SeqCst);
    }

    /// Removes `node` from the list if it is on it. Caller holds the lock.
    fn unlink(&self, node: &Node) {
        let target = ptr::from_ref(node).cast_mut();
        let mut link: &AtomicPtr<Node> = &self.first;
        loop {
            let cur = link.load(Relaxed);
            if cur.is_null() {
                return;
            }
            if cur == target {
                link.store(node.next.load(Relaxed), SeqCst);
                return;
            }
            // SAFETY: nodes on the list stay alive while linked (their owner
            // unlinks them under this lock before freeing), and we hold the
            // lock.
            link = unsafe { &(*cur).next };
        }
    }

    /// Tears the list down: calls every registered notifier's
    /// [`MmuNotifier::release`] exactly once, after all other callbacks to
    /// it have returned, and refuses registration from now on. Calling it
    /// again does nothing.
    ///
    /// The caller must have stopped page-table changes to this address
    /// space (teardown holds the page-table lock): a change after release
    /// would reach no notifier.
    pub fn release(&self) {
        {
            let _writer = self.lock.lock();
            if self.released.swap(true, SeqCst) {
                return;
            }
            let generation = self.generation.load(Relaxed) + 1;
            let mut p = self.first.load(Relaxed);
            // SAFETY: linked nodes are alive (owners unlink them under this
            // lock before freeing them), and we hold the lock.
            while let Some(node) = unsafe { p.as_ref() } {
                if node.state.load(Relaxed) == REGISTERED {
                    node.state.store(RELEASING, Relaxed);
                    node.dies.store(generation, Relaxed);
                }
                p = node.next.load(Relaxed);
            }
            self.generation.store(generation, SeqCst);
        }
        // Every callback that began before is done; new readers skip all.
        self.srcu.synchronize();
        let mut chain: *mut Node = ptr::null_mut();
        {
            let _writer = self.lock.lock();
            // Detach the list and keep the nodes we release, in order.
            // Nodes being unregistered concurrently are stepped over; their
            // own grace period covers readers that still see them.
            let mut p = self.first.swap(ptr::null_mut(), SeqCst);
            self.interest.store(0, SeqCst);
            let mut tail: Option<&Node> = None;
            // SAFETY: detached nodes are alive: RELEASING ones until we
            // mark them RELEASED, UNREGISTERING ones until their owner's
            // grace period, which starts after we drop this lock.
            while let Some(node) = unsafe { p.as_ref() } {
                // `cur`, not `&Node`, carries the subscription's provenance.
                let cur = p;
                p = node.next.load(Relaxed);
                if node.state.load(Relaxed) == RELEASING {
                    match tail {
                        None => chain = cur,
                        Some(t) => t.next.store(cur, SeqCst),
                    }
                    tail = Some(node);
                }
            }
            if let Some(t) = tail {
                t.next.store(ptr::null_mut(), SeqCst);
            }
        }
        // Readers still stepping through the old list are done with it.
        self.srcu.synchronize();
        while !chain.is_null() {
            let this = chain;
            // SAFETY: a RELEASING node stays alive until we store RELEASED
            // (its owner's Drop waits for that).
            let node = unsafe { &*this };
            chain = node.next.load(Relaxed);
            // SAFETY: the vtable belongs to the node's own subscription type
            // and the node is alive (above).
            unsafe { (node.vtable.release)(this) };
            // `head` stays set: `unregister` on this head then reports
            // `Released`, as documented, not `NotRegistered`.
            // Hands the node back; we must not touch it after this store.
            node.state.store(RELEASED, Release);
        }
    }

    /// Calls `f` on every notifier visible at the current generation,
    /// inside a read-side section.
    #[inline]
    fn for_each(&self, wanted: Callbacks, f: impl FnMut(*const Node, &'static VTable)) {
        let _read = self.read_section();
        let snap = self.generation.load(SeqCst);
        self.walk(snap, wanted, f);
    }

    #[inline]
    /// Calls `f(node, vtable)` on every node visible at `snap`. `node` is
    /// the list's own pointer (provenance over the whole subscription), so
    /// `vtable`'s thunks may reach the notifier through it.
    fn walk(&self, snap: u64, wanted: Callbacks, mut f: impl FnMut(*const Node, &'static VTable)) {
        let mut p = self.first.load(SeqCst);
        // SAFETY: the caller holds a read-side section, so every node
        // reachable from the list stays alive until it ends.
        while let Some(node) = unsafe { p.as_ref() } {
            if node.visible_at(snap) && node.vtable.callbacks.intersects(wanted) {
                f(p, node.vtable);
            }
            p = node.next.load(SeqCst);
        }
    }

    /// Tells every notifier that the page at `addr` lost or downgraded its
    /// translation (the seed's `mmu_notifier(invalidate_page, ...)`). Call
    /// after the CPU TLB flush and before the frame may be reused.
    #[inline(always)]
    pub fn invalidate_page(&self, addr: VirtAddr) {
        if self.wants(Callbacks::INVALIDATE_PAGE) {
            self.invalidate_page_slow(addr);
        }
    }

    #[cold]
    #[inline(never)]
    fn invalidate_page_slow(&self, addr: VirtAddr) {
        // SAFETY: nodes reached by `for_each` are alive, with their own vtable.
        self.for_each(Callbacks::INVALIDATE_PAGE, |n, vt| unsafe {
            (vt.invalidate_page)(n, addr)
        });
    }

    /// Tells every notifier that every page of `range` lost or downgraded
    /// its translation (the seed's `invalidate_pages`).
    #[inline(always)]
    pub fn invalidate_pages(&self, range: PageRange) {
        if self.wants(Callbacks::INVALIDATE_PAGE) {
            self.invalidate_pages_slow(range);
        }
    }

    #[cold]
    #[inline(never)]
    fn invalidate_pages_slow(&self, range: PageRange) {
        // SAFETY: nodes reached by `for_each` are alive, with their own vtable.
        self.for_each(Callbacks::INVALIDATE_PAGE, |n, vt| unsafe {
            (vt.invalidate_pages)(n, range)
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

    #[cold]
    #[inline(never)]
    fn secondary_tlbs_slow(&self, range: PageRange) {
        // SAFETY: nodes reached by `for_each` are alive, with their own vtable.
        self.for_each(Callbacks::SECONDARY_TLB, |n, vt| unsafe {
            (vt.secondary_tlbs)(n, range)
        });
    }

    /// Asks every notifier whether its MMU accessed the page at `addr`
    /// since the last call, clearing that state (the seed's `age_page`);
    /// the answers are OR-ed (every notifier is asked, none is skipped by
    /// an earlier `true`).
    #[inline(always)]
    #[must_use]
    pub fn age_page(&self, addr: VirtAddr) -> bool {
        self.wants(Callbacks::AGE)
            && self.age_slow(|n, vt| {
                // SAFETY: `age_slow` passes nodes reached by a walk under its
                // read section: alive, with their own vtable.
                unsafe { (vt.age_page)(n, addr) }
            })
    }

    /// `clear_flush_young(range)` on every notifier, OR-ed (none skipped).
    #[inline(always)]
    #[must_use]
    pub fn clear_flush_young(&self, range: PageRange) -> bool {
        self.wants(Callbacks::AGE)
            && self.age_slow(|n, vt| {
                // SAFETY: `age_slow` passes nodes reached by a walk under its
                // read section: alive, with their own vtable.
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
                // SAFETY: `age_slow` passes nodes reached by a walk under its
                // read section: alive, with their own vtable.
                unsafe { (vt.clear_young)(n, range) }
            })
    }

    /// `test_young(addr)` on every notifier, OR-ed; clears nothing.
    #[inline(always)]
    #[must_use]
    pub fn test_young(&self, addr: VirtAddr) -> bool {
        self.wants(Callbacks::AGE)
            && self.age_slow(|n, vt| {
                // SAFETY: `age_slow` passes nodes reached by a walk under its
                // read section: alive, with their own vtable.
                unsafe { (vt.test_young)(n, addr) }
            })
    }

    #[cold]
    #[inline(never)]
    fn age_slow(&self, mut ask: impl FnMut(*const Node, &'static VTable) -> bool) -> bool {
        let mut young = false;
        self.for_each(Callbacks::AGE, |n, vt| young |= ask(n, vt));
        young
    }

    /// Starts a range invalidation from a context that may sleep; every
    /// notifier's `invalidate_range_start` runs before this returns, and
    /// their `invalidate_range_end` when the guard is ended or dropped.
    pub fn invalidate_range_start(&self, range: InvalidateRange) -> RangeGuard<'_> {
        let range = InvalidateRange {
            blockable: true,
            ..range
        };
        let mut guard = self.begin(range);
        if self.wants(Callbacks::RANGE) {
            guard.to_end = usize::MAX;
            self.walk(guard.snap, Callbacks::RANGE, |n, vt| {
                // SAFETY: nodes reached by `walk` under the guard's read
                // section are alive, with their own vtable.
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
    ) -> Result<RangeGuard<'_>, Error> {
        let range = InvalidateRange {
            blockable: false,
            ..range
        };
        let mut guard = self.begin(range);
        if !self.wants(Callbacks::RANGE) {
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

    fn begin(&self, range: InvalidateRange) -> RangeGuard<'_> {
        let read = self.read_section();
        let snap = self.generation.load(SeqCst);
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
#[must_use = "a range invalidation ends when this guard is dropped: bind it for the whole operation"]
pub struct RangeGuard<'a> {
    head: &'a NotifierHead,
    range: InvalidateRange,
    snap: u64,
    /// How many visible range notifiers get an end (`usize::MAX`: all).
    to_end: usize,
    _read: ReadSection<'a>,
}

impl RangeGuard<'_> {
    /// The invalidation this guard belongs to.
    pub fn range(&self) -> &InvalidateRange {
        &self.range
    }

    /// Ends the invalidation: every notifier whose start succeeded gets its
    /// `invalidate_range_end`.
    pub fn end(self) {
        drop(self);
    }
}

impl Drop for RangeGuard<'_> {
    fn drop(&mut self) {
        let mut budget = self.to_end;
        if budget == 0 {
            return;
        }
        let range = self.range;
        self.head.walk(self.snap, Callbacks::RANGE, |n, vt| {
            if budget > 0 {
                budget -= 1;
                // SAFETY: our read section keeps visible nodes alive.
                unsafe { (vt.range_end)(n, &range) };
            }
        });
    }
}

#[cfg(feature = "alloc")]
mod shared {
    //! One refcounted notifier per (notifier type, address space): Linux's
    //! `mmu_notifier_get`/`put`.

    extern crate alloc;

    use super::{NotifierHead, Subscription, Thunks, VTable, REGISTERED};
    use crate::error::Error;
    use crate::notifier::MmuNotifier;
    use crate::sync::Ordering::{AcqRel, Relaxed};
    use alloc::boxed::Box;
    use core::any::TypeId;
    use core::pin::Pin;

    struct SharedThunks<N>(core::marker::PhantomData<N>);

    impl<N: MmuNotifier + 'static> SharedThunks<N> {
        const VTABLE: &'static VTable = &VTable {
            type_id: Some(TypeId::of::<N>),
            ..*Thunks::<N>::VTABLE
        };
    }

    /// A counted reference to the one notifier of type `N` on a head; the
    /// last one dropped unregisters it (after a grace period) and frees it.
    pub struct SharedNotifier<'h, N: MmuNotifier + 'static> {
        head: &'h NotifierHead,
        sub: *const Subscription<'h, N>,
    }

    // SAFETY: the subscription is only reached through shared references,
    // and `N: Sync + Send` lets another CPU use and drop it.
    unsafe impl<N: MmuNotifier + Send + 'static> Send for SharedNotifier<'_, N> {}
    // SAFETY: as above.
    unsafe impl<N: MmuNotifier + 'static> Sync for SharedNotifier<'_, N> {}

    impl<N: MmuNotifier + 'static> core::ops::Deref for SharedNotifier<'_, N> {
        type Target = N;
        fn deref(&self) -> &N {
            // SAFETY: the subscription lives until the last reference is
            // dropped (`users` counts us).
            unsafe { (*self.sub).notifier() }
        }
    }

    impl<N: MmuNotifier + 'static> Clone for SharedNotifier<'_, N> {
        fn clone(&self) -> Self {
            // SAFETY: alive while we hold a reference.
            unsafe { &(*self.sub).node }.users.fetch_add(1, Relaxed);
            Self {
                head: self.head,
                sub: self.sub,
            }
        }
    }

    impl<N: MmuNotifier + 'static> Drop for SharedNotifier<'_, N> {
        fn drop(&mut self) {
            let _serialise = self.head.shared.lock();
            // SAFETY: alive while we hold a reference.
            if unsafe { &(*self.sub).node }.users.fetch_sub(1, AcqRel) == 1 {
                // SAFETY: the last reference: `get` made it with
                // `Box::into_raw` and nobody else frees it; dropping the
                // subscription unregisters it and waits for the grace period
                // (or for its release) before the memory goes.
                drop(unsafe { Box::from_raw(self.sub.cast_mut()) });
            }
        }
    }

    impl NotifierHead {
        /// The one registered notifier of type `N` on this head, made with
        /// `make` and registered if there is none yet (Linux's
        /// `mmu_notifier_get`). Every call returns a counted reference to
        /// the same notifier; when the last is dropped (`put`) the notifier
        /// is unregistered and freed after a grace period. Needs the
        /// `alloc` feature.
        ///
        /// # Errors
        /// As [`register`](Self::register).
        pub fn get<'h, N: MmuNotifier + Send + 'static>(
            &'h self,
            make: impl FnOnce() -> N,
        ) -> Result<SharedNotifier<'h, N>, Error> {
            let _serialise = self.shared.lock();
            {
                let _writer = self.lock.lock();
                let mut p = self.first.load(Relaxed);
                // SAFETY: linked nodes are alive; we hold the writer lock.
                while let Some(node) = unsafe { p.as_ref() } {
                    let same_type = node
                        .vtable
                        .type_id
                        .is_some_and(|id| id() == TypeId::of::<N>());
                    if same_type && node.state.load(Relaxed) == REGISTERED {
                        node.users.fetch_add(1, Relaxed);
                        let owner = node.owner.load(Relaxed);
                        return Ok(SharedNotifier {
                            head: self,
                            sub: owner.cast::<Subscription<'h, N>>().cast_const(),
                        });
                    }
                    p = node.next.load(Relaxed);
                }
            }
            let mut sub = Subscription::new(make());
            sub.node.vtable = SharedThunks::<N>::VTABLE;
            sub.node.users = crate::sync::AtomicUsize::new(1);
            let raw = Box::into_raw(Box::new(sub));
            // SAFETY: just allocated; nobody else can see it yet.
            unsafe { &*raw }.node.owner.store(raw.cast(), Relaxed);
            // SAFETY: the box is never moved, and freed only by the last
            // `SharedNotifier` (or below), after its Drop unregistered it.
            let pinned = unsafe { Pin::new_unchecked(&*raw) };
            if let Err(e) = self.register(pinned) {
                // SAFETY: never registered, nobody else has the pointer.
                drop(unsafe { Box::from_raw(raw) });
                return Err(e);
            }
            Ok(SharedNotifier {
                head: self,
                sub: raw.cast_const(),
            })
        }
    }
}

#[cfg(feature = "alloc")]
pub use shared::SharedNotifier;
