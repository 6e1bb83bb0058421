//! List membership: the node every subscription embeds, the one word that
//! says which head it belongs to and in what state, and [`Subscription`].
//!
//! The head's address and the state live in one atomic word, changed only
//! by compare-and-swap: a node can never be seen as "registered on head A"
//! by one CPU while another has already moved it to head B (the bug of a
//! separate head pointer, written after the state).

use core::marker::{PhantomData, PhantomPinned};
use core::ptr;

use super::vtable::{Thunks, VTable};
use super::MmuNotifier;
use crate::error::Error;
use crate::sync::{
    loom_const_fn, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed},
};

/// Node states, in the low bits of the membership word; the rest is the
/// address of the head (aligned to 8, checked where heads are defined).
pub(super) const IDLE: usize = 0;
/// On a head's list, called by readers.
pub(super) const REGISTERED: usize = 1;
/// Leaving a head's list: `unregister` is waiting for grace periods.
pub(super) const UNREGISTERING: usize = 2;
/// Being released: the head's `release` still holds a pointer to it.
pub(super) const RELEASING: usize = 3;
/// Released by its head, which no longer touches it.
pub(super) const RELEASED: usize = 4;
/// Claimed by a head that is linking it (under that head's lock); becomes
/// REGISTERED once linked and visible to readers.
pub(super) const REGISTERING: usize = 5;
const STATE_BITS: usize = 0b111;

/// A membership word: `head address | state`.
#[inline(always)]
pub(super) const fn membership(head: usize, state: usize) -> usize {
    head | state
}
/// The state of a membership word.
#[inline(always)]
pub(super) const fn state_of(word: usize) -> usize {
    word & STATE_BITS
}
/// The head address of a membership word.
#[inline(always)]
pub(super) const fn head_of(word: usize) -> usize {
    word & !STATE_BITS
}

/// What a subscription needs from the head it is registered on when it is
/// dropped, erased of the head's kernel type.
pub(super) struct HeadOps {
    /// `NotifierHead::<K>::unregister_node` on the head at the address.
    ///
    /// # Safety
    /// The address is that of a live `NotifierHead<K>` of this table's `K`.
    pub(super) unregister: unsafe fn(usize, &Node) -> Result<(), Error>,
    /// `K::wait`.
    pub(super) wait: fn(u32),
}

/// The list linkage embedded at the start of every subscription.
pub(super) struct Node {
    pub(super) next: AtomicPtr<Node>,
    pub(super) membership: AtomicUsize,
    /// The generations in which readers see it: `born <= snap < dies`.
    pub(super) born: AtomicU64,
    pub(super) dies: AtomicU64,
    /// The notifier's `callbacks()`, read at registration.
    pub(super) callbacks: AtomicU32,
    pub(super) vtable: &'static VTable,
    /// The head's operations, set at registration (for `Drop`).
    pub(super) head_ops: AtomicPtr<HeadOps>,
    /// References handed out by `NotifierHead::get` (shared subscriptions).
    #[cfg(feature = "alloc")]
    pub(super) users: AtomicUsize,
    /// The `Box::into_raw` pointer of a shared subscription: the only one
    /// allowed to free it (the list's pointer came from a shared borrow).
    #[cfg(feature = "alloc")]
    pub(super) owner: AtomicPtr<()>,
}

impl Node {
    loom_const_fn! {
        fn new(vtable: &'static VTable) -> Node {
            Node {
                next: AtomicPtr::new(ptr::null_mut()),
                membership: AtomicUsize::new(IDLE),
                born: AtomicU64::new(0),
                dies: AtomicU64::new(0),
                callbacks: AtomicU32::new(0),
                vtable,
                head_ops: AtomicPtr::new(ptr::null_mut()),
                #[cfg(feature = "alloc")]
                users: AtomicUsize::new(0),
                #[cfg(feature = "alloc")]
                owner: AtomicPtr::new(ptr::null_mut()),
            }
        }
    }

    /// Whether a reader with snapshot `snap` calls this node.
    #[inline(always)]
    pub(super) fn visible_at(&self, snap: u64) -> bool {
        self.born.load(Relaxed) <= snap && snap < self.dies.load(Relaxed)
    }

    /// The node's state.
    pub(super) fn state(&self) -> usize {
        state_of(self.membership.load(Acquire))
    }
}

/// A notifier wrapped for registration: the list node and the notifier,
/// pinned together.
///
/// Create it with [`Subscription::new`], pin it (`core::pin::pin!` on the
/// stack, `Box::pin`, or a `static` with `Pin::static_ref`), and pass it to
/// [`NotifierHead::register`](super::NotifierHead::register) (an unpinned
/// `&Subscription` is refused with E0308, "expected `Pin<&Subscription>`":
/// pin it first). Dropping it unregisters it and waits for the grace
/// period, so its memory is never freed while a CPU may still call it. The
/// lifetime `'h` ties it to the head it is registered on: the head cannot
/// go away first. (With reference-counted address spaces, use
/// [`OwnedSubscription`], feature `alloc`.)
#[cfg_attr(
    feature = "alloc",
    doc = "\n[`OwnedSubscription`]: super::OwnedSubscription"
)]
#[cfg_attr(
    not(feature = "alloc"),
    doc = "\n[`OwnedSubscription`]: crate#features"
)]
///
/// Dropping a registered subscription from inside a callback of its own
/// kernel could neither wait (the grace period waits for that callback) nor
/// return (its memory would be freed while linked): where the kernel can
/// tell, it aborts instead, see the [module docs](super).
///
#[cfg_attr(
    feature = "alloc",
    doc = "[`OwnedSubscription`]: super::OwnedSubscription"
)]
#[cfg_attr(not(feature = "alloc"), doc = "[`OwnedSubscription`]: crate#features")]
#[repr(C)]
pub struct Subscription<'h, N: MmuNotifier> {
    node: Node,
    notifier: N,
    _pin: PhantomPinned,
    // Invariant in 'h: a subscription must not be shortened to fit a head
    // that dies before it.
    _head: PhantomData<fn(&'h ()) -> &'h ()>,
}

impl<'h, N: MmuNotifier> Subscription<'h, N> {
    loom_const_fn! {
        /// Wraps `notifier`; not registered anywhere yet.
        pub fn new(notifier: N) -> Subscription<'h, N> {
            Subscription {
                node: Node::new(Thunks::<N>::VTABLE),
                notifier,
                _pin: PhantomPinned,
                _head: PhantomData,
            }
        }
    }

    /// The wrapped notifier.
    pub fn notifier(&self) -> &N {
        &self.notifier
    }

    /// Whether the subscription is registered and its head not released.
    pub fn is_registered(&self) -> bool {
        self.node.state() == REGISTERED
    }

    /// Whether the head it was registered on has released it (its
    /// `release` callback has run).
    pub fn is_released(&self) -> bool {
        self.node.state() == RELEASED
    }

    pub(super) fn node(&self) -> &Node {
        &self.node
    }

    /// The list's pointer to this subscription: derived from the whole
    /// subscription, so the thunks may cast it back to reach the notifier,
    /// which lies outside a `&Node`'s provenance.
    pub(super) fn node_ptr(&self) -> *mut Node {
        ptr::from_ref(self).cast::<Node>().cast_mut()
    }

    #[cfg(feature = "alloc")]
    pub(super) fn node_mut(&mut self) -> &mut Node {
        &mut self.node
    }
}

impl<N: MmuNotifier> Drop for Subscription<'_, N> {
    fn drop(&mut self) {
        let mut round = 0u32;
        loop {
            let word = self.node.membership.load(Acquire);
            match state_of(word) {
                REGISTERED => {
                    // Set by `register` before it made the node REGISTERED;
                    // `&mut self` means that registration has returned.
                    let ops = self.node.head_ops.load(Relaxed);
                    // SAFETY: `head_ops` of a registered node is a static
                    // `HeadOps` of its head's kernel.
                    let ops = unsafe { &*ops };
                    // SAFETY: the membership word names the head the node is
                    // on, which `'h` (invariant, checked by dropck through
                    // this `Drop`) keeps alive until we are dropped; `ops`
                    // is that head's kernel's table.
                    let result = unsafe { (ops.unregister)(head_of(word), &self.node) };
                    if result == Err(Error::InsideCallback) {
                        abort_dropped_inside_callback();
                    }
                    // `Ok`, or the head began releasing it: look again.
                }
                // The releasing CPU still holds a pointer to us: wait until
                // our `release` callback has returned.
                RELEASING => {
                    let ops = self.node.head_ops.load(Relaxed);
                    // SAFETY: as above: a releasing node was registered.
                    (unsafe { &*ops }.wait)(round);
                    round = round.saturating_add(1);
                }
                // Never registered, unregistered, or released.
                _ => return,
            }
        }
    }
}

/// A registered subscription dropped inside a callback of its own kernel
/// can neither wait for the grace period (its own callback holds it open)
/// nor let its memory go while it is linked. Aborts: a panic in a function
/// that cannot unwind, so no destructor frees the node.
#[cold]
#[inline(never)]
extern "C" fn abort_dropped_inside_callback() -> ! {
    panic!(
        "a registered Subscription was dropped inside a notifier callback of its own kernel: \
         it can neither wait for the grace period its caller holds open nor be freed while \
         linked (unregister it outside the callback)"
    )
}
