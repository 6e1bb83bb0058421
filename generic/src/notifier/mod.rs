//! The notifier core: who is told, what, and when it is safe to forget them.
//!
//! An address space owns one [`NotifierHead`]. A secondary MMU implements
//! [`MmuNotifier`], wraps itself in a pinned [`Subscription`] and registers
//! it on the head. From then on every page-table change that removes or
//! downgrades a translation calls it, until it is unregistered or the
//! address space is released.
//!
//! # Where each kind of notifier hears about a change
//! | the caller runs | range notifiers (`RANGE`), interval notifiers | per-page notifiers (`INVALIDATE_PAGE`) | devices on the CPU tables (`SECONDARY_TLB`) | aging (`AGE`) |
//! |---|---|---|---|---|
//! | [`NotifierHead::invalidate_range_start`] … guard end | `invalidate_range_start` / `end` | — | — | — |
//! | [`ptep_clear_flush_notify`] (unmap one leaf) | (inside the guard it takes) | `invalidate_page`, plus `invalidate_pages` for a huge leaf | `invalidate_secondary_tlbs` of the leaf | — |
//! | [`ptep_modify_flush_notify`] (downgrade one leaf) | (inside the guard it takes) | — (the call site sends `invalidate_pages` for the whole range) | `invalidate_secondary_tlbs` of the leaf | — |
//! | [`ptep_clear_flush_young_notify`] | — | — | — | `clear_flush_young` |
//! | [`NotifierHead::release`] | `release` | `release` | `release` | `release` |
//!
//! The per-page helpers take the open [`RangeGuard`]: a frame comes back as
//! [`Reusable`](crate::Reusable) only from inside a range whose start every
//! range and interval notifier has heard. A plain IOTLB that drops
//! translations at the range's start should therefore declare only
//! [`Callbacks::RANGE`] (and `RELEASE`): with the default set it is also
//! called per page, and invalidates twice.
//!
//! # The read side
//! Callbacks are called from a lock-free walk of the list, inside a
//! read-side section of the [`Kernel`](crate::kernel::Kernel)'s grace-period
//! domain (per-CPU sleepable RCU by default): no lock is taken and no
//! shared cache line is written on the invalidation path, and several CPUs
//! walk the list at once. With nobody registered a hook costs one relaxed
//! load and one branch predicted not-taken.
//!
//! # Guarantees
//! - A notifier whose registration returned before an operation started is
//!   called for that operation.
//! - [`NotifierHead::register`] returns only after every range operation
//!   already in flight has ended, so a new notifier never sees an `end`
//!   without its `start`, and never misses the invalidation of a page it
//!   could still fault in.
//! - [`NotifierHead::unregister`] (and dropping a [`Subscription`]) returns
//!   only after a grace period: no CPU is inside, or can still enter, any of
//!   that notifier's callbacks, so its memory may be freed or reused. Once
//!   it has begun, the notifier may miss invalidations: stop the device
//!   from using its translations first.
//! - [`NotifierHead::release`] calls each registered notifier's
//!   [`MmuNotifier::release`] exactly once, after every other callback to
//!   it has returned, and nothing is called on it afterwards; a second,
//!   concurrent `release` returns only once the first has called them all.
//!   Registering on a released head fails with
//!   [`Error::Released`](crate::Error::Released).
//!
//! # Locks and ordering: the rules a kernel must follow
//! - **Range guards and locks.** A [`RangeGuard`] holds a read-side section
//!   from its start to its end, and `register`, `unregister` and `release`
//!   wait for every section of the kernel's domain. So a task holding a
//!   guard must never wait for a lock that a task calling one of those may
//!   hold, or both wait forever. The reference
//!   [`AddressSpace`](crate::mm::AddressSpace) opens its guards only after
//!   taking every lock it needs and takes none inside them; a kernel that
//!   opens the guard first and then takes its page-table lock (Linux's
//!   order, since a blocking start may sleep) must call `release` without
//!   that lock, as Linux's `exit_mmap` calls `mmu_notifier_release` before
//!   it takes any.
//! - **From inside a callback** a notifier must not register or unregister
//!   on any head of the same kernel, drop a registered subscription, or
//!   call `release`: each waits for a grace period that its own callback
//!   holds open. Where the kernel's domain can tell
//!   ([`Rcu::task_is_reading`](crate::kernel::Rcu::task_is_reading)), the
//!   calls fail with [`Error::InsideCallback`](crate::Error::InsideCallback)
//!   and such a drop aborts (it can neither wait nor leave a linked node
//!   behind); otherwise they hang, as in Linux.
//!
//! # What a callback may do, and interrupt context
//! Callbacks run concurrently on several CPUs, in whatever context the
//! page-table operation runs in (the reference `AddressSpace` calls them
//! with its page-table lock held). Inside one a notifier may take its own
//! locks, update its own tables, invalidate its own TLB and wait for its
//! device; it **may block** only in `invalidate_range_start`/`end` when
//! [`InvalidateRange::may_block`] is true, and must not sleep anywhere else.
//!
//! Hooks may be called from interrupt context (an interrupt handler that
//! unmaps) if every callback of the head is non-blocking and the kernel's
//! domain allows it: the default [`Portable`](crate::kernel::Portable) and
//! [`Srcu`](crate::kernel::Srcu) without
//! [`READER_SLOT_PER_TASK`](crate::kernel::Kernel::READER_SLOT_PER_TASK) do
//! (readers use atomic read-modify-writes); with per-task slots, an
//! interrupt handler must not invalidate (Kernel condition 4).
//! `register`, `unregister`, `release` and dropping a registered
//! subscription wait, and never belong in interrupt context.
//!
//! [`ptep_clear_flush_notify`]: crate::pgtable::ptep_clear_flush_notify
//! [`ptep_modify_flush_notify`]: crate::pgtable::ptep_modify_flush_notify
//! [`ptep_clear_flush_young_notify`]: crate::pgtable::ptep_clear_flush_young_notify

#[cfg(feature = "notifier")]
mod dispatch;
#[cfg(feature = "notifier")]
mod head;
#[cfg(feature = "notifier")]
mod node;
#[cfg(feature = "alloc")]
mod shared;
#[cfg(feature = "notifier")]
mod vtable;

#[cfg(feature = "notifier")]
pub use dispatch::RangeGuard;
#[cfg(feature = "notifier")]
pub use head::NotifierHead;
#[cfg(feature = "notifier")]
pub use node::Subscription;
#[cfg(feature = "alloc")]
pub use shared::{HasNotifierHead, OwnedSubscription, SharedNotifier};

#[cfg(not(feature = "notifier"))]
mod disabled;
#[cfg(not(feature = "notifier"))]
pub use disabled::{NotifierHead, RangeGuard, Subscription};

use crate::addr::{PageRange, VirtAddr};

/// Why a range is being invalidated, so a secondary MMU can choose how
/// much work to do (a protection change need not drop a read-only mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Event {
    /// Pages are unmapped (zap, munmap, huge-page unmap).
    Unmap,
    /// Translations are cleared but the pages stay (write-protection on
    /// fork for copy-on-write, page-table teardown of a range).
    Clear,
    /// The protection of a whole mapping changes (mprotect).
    ProtectionVma,
    /// The protection of single pages changes.
    ProtectionPage,
    /// Soft-dirty tracking write-protects pages.
    SoftDirty,
    /// The whole address space is going away.
    Release,
    /// Pages are migrated to other frames.
    Migrate,
    /// A device takes exclusive access to pages.
    Exclusive,
}

/// An opaque token naming who started an invalidation, so a driver can
/// recognise (and skip) changes it made itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Owner(pub usize);

/// A range invalidation as seen by `invalidate_range_start`/`end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct InvalidateRange {
    /// The addresses whose translations change.
    pub range: PageRange,
    /// Why they change.
    pub event: Event,
    /// Who changes them, if they said.
    pub owner: Option<Owner>,
    blockable: bool,
}

impl InvalidateRange {
    /// A range invalidation started from a context that may sleep.
    pub const fn new(range: PageRange, event: Event) -> Self {
        Self {
            range,
            event,
            owner: None,
            blockable: true,
        }
    }

    /// The same invalidation, tagged with its owner.
    pub const fn with_owner(mut self, owner: Owner) -> Self {
        self.owner = Some(owner);
        self
    }

    /// Whether callbacks may sleep for this invalidation. Set by the entry
    /// point the caller used, never by the caller directly.
    pub const fn may_block(&self) -> bool {
        self.blockable
    }
}

/// Which callbacks a notifier implements: the core calls only those, and
/// skips a notifier entirely on the paths it does not listen to (a
/// range-only notifier costs nothing per page).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Callbacks(u32);

impl Callbacks {
    /// `release`.
    pub const RELEASE: Callbacks = Callbacks(1);
    /// `invalidate_page` and `invalidate_pages`: told per page (or per
    /// range of pages) after the CPU TLB flush.
    pub const INVALIDATE_PAGE: Callbacks = Callbacks(2);
    /// `age_page`, `clear_flush_young`, `clear_young`, `test_young`.
    pub const AGE: Callbacks = Callbacks(4);
    /// `invalidate_range_start` and `invalidate_range_end`.
    pub const RANGE: Callbacks = Callbacks(8);
    /// `invalidate_secondary_tlbs`, for devices that walk the CPU's own
    /// tables (Linux's `arch_invalidate_secondary_tlbs`). Exclusive with
    /// [`RANGE`](Self::RANGE).
    pub const SECONDARY_TLB: Callbacks = Callbacks(16);
    /// Release, per-page invalidation and aging, without the range pair:
    /// the protocol of the original 2008 patch.
    pub const PER_PAGE: Callbacks = Callbacks(1 | 2 | 4);
    /// Everything but the secondary-TLB hook: the default.
    pub const DEFAULT: Callbacks = Callbacks(1 | 2 | 4 | 8);

    /// Both sets.
    pub const fn union(self, other: Callbacks) -> Callbacks {
        Callbacks(self.0 | other.0)
    }
    /// Whether every callback of `other` is in `self`.
    pub const fn contains(self, other: Callbacks) -> bool {
        self.0 & other.0 == other.0
    }
    /// Whether `self` and `other` share a callback.
    pub const fn intersects(self, other: Callbacks) -> bool {
        self.0 & other.0 != 0
    }
    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }
}

impl core::fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let names = [
            (Self::RELEASE, "RELEASE"),
            (Self::INVALIDATE_PAGE, "INVALIDATE_PAGE"),
            (Self::AGE, "AGE"),
            (Self::RANGE, "RANGE"),
            (Self::SECONDARY_TLB, "SECONDARY_TLB"),
        ];
        let mut first = true;
        for (flag, name) in names {
            if self.contains(flag) {
                f.write_str(if first { "" } else { " | " })?;
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("(none)")?;
        }
        Ok(())
    }
}

/// A non-blocking `invalidate_range_start` would have had to sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Again;

/// A secondary MMU's view of the primary page tables.
///
/// Every method has an empty default: a notifier implements only what it
/// needs, and what it does not implement costs it nothing. `release`,
/// `invalidate_page`, `invalidate_pages` and `age_page` are the original
/// 2008 protocol; the range pair, the young variants and the secondary-TLB
/// hook are what Linux grew later. See the [module docs](self) for where
/// each is called and what a callback may do.
///
/// The trait is object safe: a driver whose callbacks are chosen at run
/// time registers a `Subscription<Box<dyn MmuNotifier + Send>>` (with the
/// `alloc` feature) or a `Subscription<&'static dyn MmuNotifier>`.
///
/// Only the core calls these methods on a registered notifier. Calling one
/// directly is allowed and reaches only that notifier: nothing checks the
/// order, so a notifier must not rely on balanced calls for memory safety
/// ([`IntervalNotifiers`], which does, receives the core's calls through a
/// sealed entry point instead).
///
#[cfg_attr(
    feature = "notifier",
    doc = "[`IntervalNotifiers`]: crate::interval::IntervalNotifiers"
)]
#[cfg_attr(
    not(feature = "notifier"),
    doc = "[`IntervalNotifiers`]: crate#features"
)]
pub trait MmuNotifier: Sync {
    /// The callbacks this notifier implements; the core never calls the
    /// others, and skips the notifier on paths it does not listen to. Read
    /// once, at registration. The default is everything but
    /// [`Callbacks::SECONDARY_TLB`]. Declaring both `SECONDARY_TLB` and
    /// `RANGE` is refused at registration
    /// ([`Error::ConflictingCallbacks`](crate::Error::ConflictingCallbacks)),
    /// as in Linux: a device that walks the CPU tables needs only the
    /// synchronous flush, and start/end would invalidate it twice.
    fn callbacks(&self) -> Callbacks {
        Callbacks::DEFAULT
    }

    /// The address space is being torn down. Called exactly once, before any
    /// of its frames is freed and after every other callback has returned;
    /// nothing is called afterwards. Drop every secondary translation.
    fn release(&self) {}

    /// The translation of the page at `addr` was removed or downgraded and
    /// the CPU TLBs were flushed; the frame is still allocated and will be
    /// freed or reused once this returns. Must not sleep.
    fn invalidate_page(&self, addr: VirtAddr) {
        let _ = addr;
    }

    /// As [`invalidate_page`](Self::invalidate_page) for every page of
    /// `range`. Must not sleep.
    fn invalidate_pages(&self, range: PageRange) {
        let _ = range;
    }

    /// Test and clear the secondary MMU's accessed state for the page at
    /// `addr`; `true` if it was accessed since the last call. Must not sleep.
    fn age_page(&self, addr: VirtAddr) -> bool {
        let _ = addr;
        false
    }

    /// Test and clear the accessed state of every page of `range` (a base
    /// page, or the span of a huge one) and flush it from the secondary
    /// TLB; `true` if any was accessed. Default:
    /// [`age_page`](Self::age_page) on the range's first address. Must not
    /// sleep.
    fn clear_flush_young(&self, range: PageRange) -> bool {
        self.age_page(range.start())
    }

    /// As [`clear_flush_young`](Self::clear_flush_young) without flushing
    /// the secondary TLB (cheaper; the next access may not set the state
    /// again). Default: `clear_flush_young`. Must not sleep.
    fn clear_young(&self, range: PageRange) -> bool {
        self.clear_flush_young(range)
    }

    /// Whether the page at `addr` was accessed, without clearing anything.
    /// Default: `false` (a notifier that cannot tell says "old"). Must not
    /// sleep.
    fn test_young(&self, addr: VirtAddr) -> bool {
        let _ = addr;
        false
    }

    /// The CPU TLB was just flushed for `range`: flush the device's TLB
    /// too. For devices that walk the CPU's own tables (an IOMMU sharing
    /// them). Called from the flush path right after every CPU flush,
    /// possibly with the page-table lock held: must not sleep.
    fn invalidate_secondary_tlbs(&self, range: PageRange) {
        let _ = range;
    }

    /// Translations in `range` are about to change: drop them, and do not
    /// establish new ones in `range` until the matching `end`. May sleep if
    /// `range.may_block()`; otherwise return [`Again`] instead of sleeping,
    /// and then no `end` follows.
    ///
    /// # Errors
    /// [`Again`] only when `!range.may_block()` and the work would sleep.
    fn invalidate_range_start(&self, range: &InvalidateRange) -> Result<(), Again> {
        let _ = range;
        Ok(())
    }

    /// The change announced by the matching start is complete. Called once
    /// for every successful start, also when the operation stopped early.
    fn invalidate_range_end(&self, range: &InvalidateRange) {
        let _ = range;
    }

    /// How the core delivers [`release`](Self::release). Sealed: only the
    /// core holds a [`CoreOnly`](sealed::CoreOnly), so nobody else can call
    /// it, and nobody outside this crate can override it.
    #[doc(hidden)]
    fn __release_from_core(&self, _: sealed::CoreOnly) {
        self.release();
    }

    /// How the core delivers [`invalidate_range_start`](Self::invalidate_range_start) (sealed).
    #[doc(hidden)]
    fn __range_start_from_core(
        &self,
        range: &InvalidateRange,
        _: sealed::CoreOnly,
    ) -> Result<(), Again> {
        self.invalidate_range_start(range)
    }

    /// How the core delivers [`invalidate_range_end`](Self::invalidate_range_end) (sealed).
    #[doc(hidden)]
    fn __range_end_from_core(&self, range: &InvalidateRange, _: sealed::CoreOnly) {
        self.invalidate_range_end(range);
    }
}

pub(crate) mod sealed {
    /// Proof that the caller is the notifier core. Its field is private to
    /// this crate, so the methods that take one can be neither called nor
    /// overridden from outside.
    #[derive(Clone, Copy)]
    pub struct CoreOnly(());

    impl CoreOnly {
        #[cfg_attr(
            not(feature = "notifier"),
            expect(dead_code, reason = "only the notifier list calls notifiers")
        )]
        pub(crate) const fn new() -> Self {
            Self(())
        }
    }
}

/// Forwards every call, sealed ones included, to the notifier behind a
/// reference, a box or an `Arc`.
macro_rules! forward_notifier {
    ($([$($bound:tt)*] $ptr:ty),*) => {$(
        impl<N: MmuNotifier + ?Sized $($bound)*> MmuNotifier for $ptr {
            fn callbacks(&self) -> Callbacks {
                (**self).callbacks()
            }
            fn release(&self) {
                (**self).release();
            }
            fn invalidate_page(&self, addr: VirtAddr) {
                (**self).invalidate_page(addr);
            }
            fn invalidate_pages(&self, range: PageRange) {
                (**self).invalidate_pages(range);
            }
            fn age_page(&self, addr: VirtAddr) -> bool {
                (**self).age_page(addr)
            }
            fn clear_flush_young(&self, range: PageRange) -> bool {
                (**self).clear_flush_young(range)
            }
            fn clear_young(&self, range: PageRange) -> bool {
                (**self).clear_young(range)
            }
            fn test_young(&self, addr: VirtAddr) -> bool {
                (**self).test_young(addr)
            }
            fn invalidate_secondary_tlbs(&self, range: PageRange) {
                (**self).invalidate_secondary_tlbs(range);
            }
            fn invalidate_range_start(&self, range: &InvalidateRange) -> Result<(), Again> {
                (**self).invalidate_range_start(range)
            }
            fn invalidate_range_end(&self, range: &InvalidateRange) {
                (**self).invalidate_range_end(range);
            }
            fn __release_from_core(&self, core: sealed::CoreOnly) {
                (**self).__release_from_core(core);
            }
            fn __range_start_from_core(
                &self,
                range: &InvalidateRange,
                core: sealed::CoreOnly,
            ) -> Result<(), Again> {
                (**self).__range_start_from_core(range, core)
            }
            fn __range_end_from_core(&self, range: &InvalidateRange, core: sealed::CoreOnly) {
                (**self).__range_end_from_core(range, core);
            }
        }
    )*};
}

forward_notifier!([] & N);
#[cfg(feature = "alloc")]
forward_notifier!([] alloc::boxed::Box<N>, [+ Send] alloc::sync::Arc<N>);
