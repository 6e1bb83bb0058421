//! [`NotifierHead`]: list membership (register, unregister, release).
//!
//! An intrusive singly-linked list of pinned subscriptions. Writers
//! (register, unregister, release) serialise on a spin lock; readers walk
//! the list lock-free inside a read-side section of the kernel's grace-period
//! domain (see [`dispatch`](super::dispatch)).
//!
//! Every change to membership bumps a generation counter. A reader
//! snapshots the generation once and calls exactly the nodes that were
//! alive at that generation (`born <= snap < dies`): a range operation uses
//! one snapshot for its start and its end, so both reach the same
//! notifiers whatever registers or unregisters in between.

use core::marker::PhantomData;
use core::pin::Pin;
use core::ptr;

use super::node::{
    head_of, membership, state_of, HeadOps, Node, Subscription, IDLE, REGISTERED, REGISTERING,
    RELEASED, RELEASING, UNREGISTERING,
};
use super::{Callbacks, MmuNotifier};
use crate::error::Error;
use crate::kernel::{Kernel, Portable, Rcu};
use crate::sync::{
    loom_const_fn, AtomicPtr, AtomicU32, AtomicU64, AtomicU8,
    Ordering::{Acquire, Relaxed, Release},
    RawSpinLock,
};

/// `NotifierHead::release` has not run.
const LIVE: u8 = 0;
/// `release` is calling the notifiers' `release`.
const RELEASING_HEAD: u8 = 1;
/// `release` has returned.
const RELEASED_HEAD: u8 = 2;

/// The per-address-space list of notifiers (Linux:
/// `mm->notifier_subscriptions`), over the kernel `K` (see
/// [`kernel`](crate::kernel); the default, [`Portable`], needs nothing).
///
/// A `const fn` builds it, so a kernel's own address space may have a
/// `static` head: [`NotifierHead::new`] for the default kernel,
/// [`NotifierHead::for_kernel`] for any.
pub struct NotifierHead<K: Kernel = Portable> {
    first: AtomicPtr<Node>,
    /// Union of the callbacks of every linked node: what the hooks' fast
    /// path tests (one load, one branch). It covers every node a live
    /// snapshot can still see, which are all linked.
    pub(super) interest: AtomicU32,
    pub(super) generation: AtomicU64,
    release_state: AtomicU8,
    lock: RawSpinLock,
    /// Serialises `get`/`put` of shared subscriptions.
    #[cfg(feature = "alloc")]
    pub(super) shared: RawSpinLock,
    _kernel: PhantomData<fn() -> K>,
}

// The membership word keeps a node's state in the low three bits of its
// head's address.
const _: () = assert!(core::mem::align_of::<NotifierHead>() >= 8);

impl<K: Kernel> Default for NotifierHead<K> {
    fn default() -> Self {
        Self::for_kernel()
    }
}

impl<K: Kernel> core::fmt::Debug for NotifierHead<K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NotifierHead")
            .field("has_notifiers", &self.has_notifiers())
            .field("released", &self.is_released())
            .finish()
    }
}

impl NotifierHead<Portable> {
    loom_const_fn! {
        /// An empty head of the default kernel, [`Portable`].
        pub fn new() -> NotifierHead<Portable> {
            NotifierHead::for_kernel()
        }
    }
}

impl<K: Kernel> NotifierHead<K> {
    loom_const_fn! {
        /// An empty head of kernel `K`:
        /// `static HEAD: NotifierHead<MyKernel> = NotifierHead::for_kernel();`
        pub fn for_kernel() -> NotifierHead<K> {
            NotifierHead {
                first: AtomicPtr::new(ptr::null_mut()),
                interest: AtomicU32::new(0),
                generation: AtomicU64::new(0),
                release_state: AtomicU8::new(LIVE),
                lock: RawSpinLock::new(),
                #[cfg(feature = "alloc")]
                shared: RawSpinLock::new(),
                _kernel: PhantomData,
            }
        }
    }

    /// What a dropped subscription needs from a head of this kernel.
    const OPS: &'static HeadOps = &HeadOps {
        unregister: Self::unregister_at,
        wait: K::wait,
    };

    /// Whether any notifier is on the list.
    #[inline(always)]
    pub fn has_notifiers(&self) -> bool {
        !self.first.load(Relaxed).is_null()
    }

    /// Whether [`release`](Self::release) has begun: from then on nothing
    /// may register and the address space must not change.
    pub fn is_released(&self) -> bool {
        self.release_state.load(Acquire) != LIVE
    }

    pub(super) fn first(&self) -> &AtomicPtr<Node> {
        &self.first
    }

    /// This head's address, as membership words hold it.
    fn addr(&self) -> usize {
        ptr::from_ref(self).expose_provenance()
    }

    /// Takes the registration lock, waiting the kernel's way.
    pub(super) fn lock(&self) -> crate::sync::RawSpinGuard<'_> {
        self.lock.lock_with(K::wait)
    }

    /// Refuses a call that waits for a grace period when the calling task
    /// holds one open itself (it would wait forever).
    fn refuse_inside_callback() -> Result<(), Error> {
        match K::rcu().task_is_reading() {
            Some(true) => Err(Error::InsideCallback),
            _ => Ok(()),
        }
    }

    /// Registers `sub` on this head. It must be pinned (its address is on
    /// the list): `let sub = core::pin::pin!(Subscription::new(n));` then
    /// `head.register(sub.as_ref())`, or `Box::pin`, or a `static` with
    /// `Pin::static_ref`. Passing a plain `&sub` fails to compile with
    /// E0308 ("expected `Pin<&Subscription<..>>`").
    ///
    /// Returns once every range invalidation that was in flight has ended,
    /// so the notifier starts with a consistent view: every invalidation it
    /// is not told about finished before it could fault anything in.
    ///
    /// Blocks for a grace period: call it from a context that may wait,
    /// without holding a lock a range-guard holder may wait for (see the
    /// [module docs](super)).
    ///
    /// # Errors
    /// [`Error::Released`] if the head has been released;
    /// [`Error::AlreadyRegistered`] if `sub` is registered (here or on
    /// another head); [`Error::ConflictingCallbacks`] if the notifier
    /// declares both the secondary-TLB hook and range start/end;
    /// [`Error::InsideCallback`] if the calling task is inside a callback
    /// or range invalidation of this kernel (where the kernel can tell).
    pub fn register<'h, N: MmuNotifier>(
        &'h self,
        sub: Pin<&Subscription<'h, N>>,
    ) -> Result<(), Error> {
        Self::refuse_inside_callback()?;
        let sub = sub.get_ref();
        let node = sub.node();
        let callbacks = sub.notifier().callbacks();
        if callbacks.contains(Callbacks::SECONDARY_TLB) && callbacks.intersects(Callbacks::RANGE) {
            return Err(Error::ConflictingCallbacks);
        }
        {
            let _writer = self.lock();
            if self.release_state.load(Relaxed) != LIVE {
                return Err(Error::Released);
            }
            // Claim the node: only an idle node, or one its last head has
            // released (and let go of), may join. One CAS on the membership
            // word, so a racing registration elsewhere, or an unregister on
            // the old head, sees either the old word or ours, never half.
            let mut word = node.membership.load(Acquire);
            loop {
                if !matches!(state_of(word), IDLE | RELEASED) {
                    return Err(Error::AlreadyRegistered);
                }
                match node.membership.compare_exchange(
                    word,
                    membership(self.addr(), REGISTERING),
                    Acquire,
                    Acquire,
                ) {
                    Ok(_) => break,
                    Err(now) => word = now,
                }
            }
            // The node is ours: nobody else writes these fields until it
            // leaves this head.
            let generation = self.generation.load(Relaxed) + 1;
            node.callbacks.store(callbacks.bits(), Relaxed);
            node.born.store(generation, Relaxed);
            node.dies.store(u64::MAX, Relaxed);
            node.head_ops
                .store(ptr::from_ref(Self::OPS).cast_mut(), Relaxed);
            node.next.store(self.first.load(Relaxed), Relaxed);
            // Publish: a reader that sees the node sees it initialised.
            self.first.store(sub.node_ptr(), Release);
            self.interest.fetch_or(callbacks.bits(), Release);
            self.generation.store(generation, Release);
            // Only now `is_registered`: whoever sees it sees the node linked
            // and wanted.
            node.membership
                .store(membership(self.addr(), REGISTERED), Release);
        }
        // Range operations hold a read-side section from start to end.
        K::rcu().synchronize();
        Ok(())
    }

    /// Unregisters `sub` and waits until no CPU is inside, or can enter,
    /// any of its callbacks; afterwards its memory may be reused.
    ///
    /// # Errors
    /// [`Error::InsideCallback`] if the calling task is inside a callback
    /// or range invalidation of this kernel (where the kernel can tell);
    /// [`Error::NotRegistered`] if `sub` is not registered on this head;
    /// [`Error::Released`] if the head released it (its `release` callback
    /// ran or is running; dropping the subscription waits for it).
    pub fn unregister<N: MmuNotifier>(&self, sub: Pin<&Subscription<'_, N>>) -> Result<(), Error> {
        self.unregister_node(sub.get_ref().node())
    }

    /// [`HeadOps::unregister`] for this kernel.
    ///
    /// # Safety
    /// `head` is the address of a live `NotifierHead<K>`.
    unsafe fn unregister_at(head: usize, node: &Node) -> Result<(), Error> {
        // SAFETY: the caller's contract.
        let head = unsafe { &*ptr::with_exposed_provenance::<Self>(head) };
        head.unregister_node(node)
    }

    pub(super) fn unregister_node(&self, node: &Node) -> Result<(), Error> {
        Self::refuse_inside_callback()?;
        {
            let _writer = self.lock();
            match node.membership.compare_exchange(
                membership(self.addr(), REGISTERED),
                membership(self.addr(), UNREGISTERING),
                Acquire,
                Acquire,
            ) {
                Ok(_) => {}
                Err(word)
                    if head_of(word) == self.addr()
                        && matches!(state_of(word), RELEASING | RELEASED) =>
                {
                    return Err(Error::Released)
                }
                Err(_) => return Err(Error::NotRegistered),
            }
            let generation = self.generation.load(Relaxed) + 1;
            node.dies.store(generation, Relaxed);
            self.generation.store(generation, Release);
        }
        // Readers with an older snapshot (a range operation between its
        // start and end) still call it; wait for them.
        K::rcu().synchronize();
        {
            let _writer = self.lock();
            self.unlink(node);
            self.recompute_interest();
        }
        // Readers that started later skip it but may still step over it.
        K::rcu().synchronize();
        // Hands the node back; we must not touch it after this store.
        node.membership.store(IDLE, Release);
        Ok(())
    }

    /// Sets `interest` to the union of the callbacks of every linked node,
    /// whatever its state: a node being unregistered is still visible to
    /// snapshots older than its unregistration, and a range operation with
    /// such a snapshot must still find its callbacks wanted. Caller holds
    /// the lock.
    fn recompute_interest(&self) {
        let mut bits = 0;
        let mut p = self.first.load(Relaxed);
        // SAFETY: linked nodes are alive (owners unlink them under this
        // lock before freeing them), and we hold the lock.
        while let Some(node) = unsafe { p.as_ref() } {
            bits |= node.callbacks.load(Relaxed);
            p = node.next.load(Relaxed);
        }
        self.interest.store(bits, Release);
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
                link.store(node.next.load(Relaxed), Release);
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
    /// it have returned, and refuses registration from now on. A second
    /// call, concurrent or later, returns once the first has called every
    /// `release` (so a teardown racing a direct call never hands a frame
    /// back before the secondary MMUs let go).
    ///
    /// Waits for grace periods, including every range guard of this
    /// kernel in flight: do not call it with a lock held that a guard holder
    /// may wait for (see the [module docs](super); the reference
    /// `AddressSpace::teardown` calls it before taking its page-table lock).
    /// From the moment it begins, [`is_released`](Self::is_released) is
    /// true, and the caller must make no further change to the address
    /// space: no notifier would hear of it.
    ///
    /// # Errors
    /// [`Error::InsideCallback`] if the calling task is inside a callback or
    /// range invalidation of this kernel (where the kernel can tell): it
    /// would wait for itself.
    pub fn release(&self) -> Result<(), Error> {
        Self::refuse_inside_callback()?;
        {
            let _writer = self.lock();
            if self.release_state.load(Relaxed) != LIVE {
                drop(_writer);
                self.wait_until_released();
                return Ok(());
            }
            self.release_state.store(RELEASING_HEAD, Release);
            let generation = self.generation.load(Relaxed) + 1;
            let mut p = self.first.load(Relaxed);
            // SAFETY: linked nodes are alive (owners unlink them under this
            // lock before freeing them), and we hold the lock.
            while let Some(node) = unsafe { p.as_ref() } {
                if node
                    .membership
                    .compare_exchange(
                        membership(self.addr(), REGISTERED),
                        membership(self.addr(), RELEASING),
                        Acquire,
                        Relaxed,
                    )
                    .is_ok()
                {
                    node.dies.store(generation, Relaxed);
                }
                p = node.next.load(Relaxed);
            }
            self.generation.store(generation, Release);
        }
        // Every callback that began before is done; new readers skip all.
        K::rcu().synchronize();
        let mut chain: *mut Node = ptr::null_mut();
        {
            let _writer = self.lock();
            // Detach the list and keep the nodes we release, in order.
            // Nodes being unregistered concurrently are stepped over; their
            // own grace period covers readers that still see them.
            let mut p = self.first.swap(ptr::null_mut(), Acquire);
            self.interest.store(0, Release);
            let mut tail: Option<&Node> = None;
            // SAFETY: detached nodes are alive: RELEASING ones until we
            // mark them RELEASED, UNREGISTERING ones until their owner's
            // grace period, which starts after we drop this lock.
            while let Some(node) = unsafe { p.as_ref() } {
                // `cur`, not `&Node`, carries the subscription's provenance.
                let cur = p;
                p = node.next.load(Relaxed);
                if node.state() == RELEASING {
                    match tail {
                        None => chain = cur,
                        Some(t) => t.next.store(cur, Release),
                    }
                    tail = Some(node);
                }
            }
            if let Some(t) = tail {
                t.next.store(ptr::null_mut(), Release);
            }
        }
        // Readers still stepping through the old list are done with it.
        K::rcu().synchronize();
        while !chain.is_null() {
            let this = chain;
            // SAFETY: a RELEASING node stays alive until we store RELEASED
            // (its owner's Drop waits for that).
            let node = unsafe { &*this };
            chain = node.next.load(Relaxed);
            // SAFETY: 1. `this` is the list's pointer to the node, whose
            // vtable is its own subscription's; 2. it stays alive until the
            // store below.
            unsafe { (node.vtable.release)(this) };
            // The head address stays: `unregister` on this head then reports
            // `Released`, as documented, not `NotRegistered`. Hands the node
            // back; we must not touch it after this store.
            node.membership
                .store(membership(self.addr(), RELEASED), Release);
        }
        self.release_state.store(RELEASED_HEAD, Release);
        Ok(())
    }

    /// Waits until a `release` running on another CPU has returned.
    fn wait_until_released(&self) {
        let mut round = 0u32;
        while self.release_state.load(Acquire) != RELEASED_HEAD {
            K::wait(round);
            round = round.saturating_add(1);
        }
    }
}
