//! Subscriptions that own their memory (feature `alloc`):
//! - [`NotifierHead::get`]/[`SharedNotifier`]: one refcounted notifier per
//!   (notifier type, address space), Linux's `mmu_notifier_get`/`put`;
//! - [`OwnedSubscription`]: a driver object that owns a subscription on a
//!   reference-counted address space, with no borrowed lifetime.

extern crate alloc;

use alloc::boxed::Box;
use core::any::TypeId;
use core::ops::Deref;
use core::pin::Pin;

use super::head::NotifierHead;
use super::node::{Subscription, REGISTERED};
use super::vtable::{Thunks, VTable};
use super::MmuNotifier;
use crate::error::Error;
use crate::kernel::{Kernel, Portable};
use crate::sync::Ordering::{AcqRel, Relaxed};

struct SharedThunks<N>(core::marker::PhantomData<N>);

impl<N: MmuNotifier + 'static> SharedThunks<N> {
    const VTABLE: &'static VTable = &VTable {
        type_id: Some(TypeId::of::<N>),
        ..*Thunks::<N>::VTABLE
    };
}

/// A counted reference to the one notifier of type `N` on a head; the
/// last one dropped unregisters it (after a grace period) and frees it.
pub struct SharedNotifier<'h, N: MmuNotifier + 'static, K: Kernel = Portable> {
    head: &'h NotifierHead<K>,
    sub: *const Subscription<'h, N>,
}

// SAFETY: the subscription is only reached through shared references, and
// `N: Sync + Send` lets another CPU use and drop it.
unsafe impl<N: MmuNotifier + Send + 'static, K: Kernel> Send for SharedNotifier<'_, N, K> {}
// SAFETY: as above.
unsafe impl<N: MmuNotifier + 'static, K: Kernel> Sync for SharedNotifier<'_, N, K> {}

impl<N: MmuNotifier + 'static, K: Kernel> Deref for SharedNotifier<'_, N, K> {
    type Target = N;
    fn deref(&self) -> &N {
        // SAFETY: the subscription lives until the last reference is
        // dropped (`users` counts us).
        unsafe { (*self.sub).notifier() }
    }
}

impl<N: MmuNotifier + 'static, K: Kernel> Clone for SharedNotifier<'_, N, K> {
    fn clone(&self) -> Self {
        // SAFETY: alive while we hold a reference.
        unsafe { (*self.sub).node() }.users.fetch_add(1, Relaxed);
        Self {
            head: self.head,
            sub: self.sub,
        }
    }
}

impl<N: MmuNotifier + 'static, K: Kernel> Drop for SharedNotifier<'_, N, K> {
    fn drop(&mut self) {
        let _serialise = self.head.shared.lock_with(K::wait);
        // SAFETY: alive while we hold a reference.
        if unsafe { (*self.sub).node() }.users.fetch_sub(1, AcqRel) == 1 {
            // SAFETY: the last reference: `get` made it with
            // `Box::into_raw` and nobody else frees it; dropping the
            // subscription unregisters it and waits for the grace period
            // (or for its release) before the memory goes.
            drop(unsafe { Box::from_raw(self.sub.cast_mut()) });
        }
    }
}

impl<K: Kernel> NotifierHead<K> {
    /// The one registered notifier of type `N` on this head, made with
    /// `make` and registered if there is none yet (Linux's
    /// `mmu_notifier_get`). Every call returns a counted reference to
    /// the same notifier; when the last is dropped (`put`) the notifier
    /// is unregistered and freed after a grace period.
    ///
    /// # Errors
    /// As [`register`](Self::register).
    pub fn get<'h, N: MmuNotifier + Send + 'static>(
        &'h self,
        make: impl FnOnce() -> N,
    ) -> Result<SharedNotifier<'h, N, K>, Error> {
        let _serialise = self.shared.lock_with(K::wait);
        {
            let _writer = self.lock();
            let mut p = self.first().load(Relaxed);
            // SAFETY: linked nodes are alive; we hold the writer lock.
            while let Some(node) = unsafe { p.as_ref() } {
                let same_type = node
                    .vtable
                    .type_id
                    .is_some_and(|id| id() == TypeId::of::<N>());
                if same_type && node.state() == REGISTERED {
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
        sub.node_mut().vtable = SharedThunks::<N>::VTABLE;
        sub.node_mut().users = crate::sync::AtomicUsize::new(1);
        let raw = Box::into_raw(Box::new(sub));
        // SAFETY: just allocated; nobody else can see it yet.
        unsafe { &*raw }.node().owner.store(raw.cast(), Relaxed);
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

/// Something that has a notifier head: the head itself, or an address
/// space that owns one.
pub trait HasNotifierHead {
    /// The kernel of the head.
    type Kernel: Kernel;
    /// The head.
    fn notifier_head(&self) -> &NotifierHead<Self::Kernel>;
}

impl<K: Kernel> HasNotifierHead for NotifierHead<K> {
    type Kernel = K;
    fn notifier_head(&self) -> &NotifierHead<K> {
        self
    }
}

/// A pointer that keeps its target alive, at one address, for as long as
/// it lives, and never gives out `&mut` to it: `Arc`, `Box`, `&'static`.
///
/// # Safety
/// 1. Every `deref` of this value (and of nothing else) returns the same
///    address for as long as the value lives;
/// 2. the target lives at least as long as the value.
pub unsafe trait StableOwner: Deref {}

// SAFETY: 1. an `Arc` points to one allocation for its whole life, and
// gives out no `&mut` while shared (and `get_mut` needs `&mut Arc`, which
// `OwnedSubscription` never gives out); 2. it keeps that allocation alive.
unsafe impl<T: ?Sized> StableOwner for alloc::sync::Arc<T> {}
// SAFETY: 1. a box points to one allocation until dropped or consumed,
// and `OwnedSubscription` gives out no `&mut Box`; 2. it owns it.
unsafe impl<T: ?Sized> StableOwner for Box<T> {}
// SAFETY: 1. a shared reference never changes; 2. `'static`.
unsafe impl<T: ?Sized> StableOwner for &'static T {}

/// A subscription that owns both its notifier and a reference to the
/// address space it is registered on, so a driver object can keep one on a
/// reference-counted address space (`Arc<Mm>`) without a borrowed lifetime
/// and without leaking anything to `'static`.
///
/// Dropping it unregisters the notifier (waiting for the grace period, as
/// dropping a [`Subscription`] does) and then drops the owner.
///
/// ```
/// use std::sync::Arc;
/// use mmu_notifier_core::{MmuNotifier, NotifierHead, OwnedSubscription, VirtAddr, Error};
///
/// struct Iotlb;
/// impl MmuNotifier for Iotlb {
///     fn invalidate_page(&self, _: VirtAddr) { /* flush one IOTLB entry */ }
/// }
///
/// /// A driver's per-process state, kept in a table as long as it likes.
/// struct DeviceContext {
///     sub: OwnedSubscription<Arc<NotifierHead>, Iotlb>,
/// }
///
/// let mm = Arc::new(NotifierHead::new()); // or an Arc of an address space
/// let ctx = DeviceContext { sub: OwnedSubscription::register(Arc::clone(&mm), Iotlb)? };
/// assert!(ctx.sub.is_registered());
/// mm.invalidate_page(VirtAddr(0x1000)); // reaches the driver
/// drop(ctx);                            // unregisters, then lets go of `mm`
/// # Ok::<(), Error>(())
/// ```
pub struct OwnedSubscription<P, N>
where
    P: StableOwner,
    P::Target: HasNotifierHead,
    N: MmuNotifier,
{
    // Declared first: dropped (unregistered) while `owner` keeps the head
    // alive.
    sub: Pin<Box<Subscription<'static, N>>>,
    owner: P,
}

impl<P, N> OwnedSubscription<P, N>
where
    P: StableOwner,
    P::Target: HasNotifierHead,
    N: MmuNotifier,
{
    /// Boxes `notifier` and registers it on `owner`'s head, keeping `owner`.
    ///
    /// # Errors
    /// As [`NotifierHead::register`].
    pub fn register(owner: P, notifier: N) -> Result<Self, Error> {
        let sub: Pin<Box<Subscription<'static, N>>> = Box::pin(Subscription::new(notifier));
        let head: *const NotifierHead<<P::Target as HasNotifierHead>::Kernel> =
            owner.notifier_head();
        // SAFETY: the `'static` borrow is confined to this struct: the
        // subscription is registered only on this head, never handed out
        // pinned, and dropped (unregistered) before `owner`, which keeps the
        // head alive at this address until then (`StableOwner` 1. and 2.).
        let head: &'static NotifierHead<_> = unsafe { &*head };
        head.register(sub.as_ref())?;
        Ok(Self { sub, owner })
    }

    /// The notifier.
    pub fn notifier(&self) -> &N {
        self.sub.notifier()
    }

    /// What keeps the address space alive.
    pub fn owner(&self) -> &P {
        &self.owner
    }

    /// Whether the notifier is registered and its head not released.
    pub fn is_registered(&self) -> bool {
        self.sub.is_registered()
    }

    /// Whether the head has released it.
    pub fn is_released(&self) -> bool {
        self.sub.is_released()
    }
}
