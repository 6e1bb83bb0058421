//! The notifier core: who is told, what, and when it is safe to forget them.
//!
//! An address space owns one [`NotifierHead`]. A secondary MMU implements
//! [`MmuNotifier`], wraps itself in a pinned [`Subscription`] and registers
//! it on the head. From then on every page-table change that removes or
//! downgrades a translation calls it, until it is unregistered or the
//! address space is released.
//!
//! # The read side
//! Callbacks are called from a lock-free walk of the list, inside a
//! sleepable-RCU read-side section (two counters, as Linux's SRCU): no lock
//! is taken on the invalidation path, and several CPUs walk the list at
//! once. With nobody registered a hook costs one relaxed load and one
//! branch predicted not-taken.
//!
//! # Guarantees (stronger than the 2008 seed)
//! - A notifier whose registration returned before an operation started is
//!   called for that operation.
//! - [`NotifierHead::register`] returns only after every range operation
//!   already in flight has ended, so a new notifier never sees an `end`
//!   without its `start`, and never misses the invalidation of a page it
//!   could still fault in.
//! - [`NotifierHead::unregister`] (and dropping a [`Subscription`]) returns
//!   only after a grace period: no CPU is inside, or can still enter, any of
//!   that notifier's callbacks, so its memory may be freed or reused.
//! - [`NotifierHead::release`] calls each registered notifier's
//!   [`MmuNotifier::release`] exactly once, after every other callback to
//!   it has returned, and nothing is called on it afterwards. Registering on
//!   a released head fails with [`Error::Released`](crate::Error::Released).
//!
//! # What a callback may do
//! Callbacks run concurrently on several CPUs, in whatever context the
//! page-table operation runs in (the reference [`AddressSpace`] calls them
//! with its page-table lock held). Inside one a notifier:
//! - **may** take its own locks, update its own tables, invalidate its own
//!   TLB and wait for its device to acknowledge;
//! - **may block** only in `invalidate_range_start`/`end` when
//!   [`InvalidateRange::may_block`] is true; everywhere else it must not
//!   sleep;
//! - **must not** call back into the same address space (it would deadlock
//!   on the page-table lock), nor register or unregister on the same head
//!   (both wait for a grace period that its own callback holds open). Once
//!   the kernel has called [`set_cpu_id_source`], such a call is refused
//!   with [`Error::InsideCallback`](crate::Error::InsideCallback) instead of
//!   hanging.
//!
//! [`AddressSpace`]: crate::mm::AddressSpace

#[cfg(feature = "notifier")]
mod cpu;
#[cfg(feature = "notifier")]
mod head;
#[cfg(feature = "notifier")]
pub use cpu::set_cpu_id_source;
#[cfg(feature = "notifier")]
mod srcu;
#[cfg(feature = "alloc")]
pub use head::SharedNotifier;
#[cfg(feature = "notifier")]
pub use head::{NotifierHead, RangeGuard, Subscription};

#[cfg(not(feature = "notifier"))]
mod disabled;
#[cfg(not(feature = "notifier"))]
pub use disabled::{set_cpu_id_source, NotifierHead, RangeGuard, Subscription};

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
    /// `invalidate_page` and `invalidate_pages` (the seed's per-page calls).
    pub const INVALIDATE_PAGE: Callbacks = Callbacks(2);
    /// `age_page`, `clear_flush_young`, `clear_young`, `test_young`.
    pub const AGE: Callbacks = Callbacks(4);
    /// `invalidate_range_start` and `invalidate_range_end`.
    pub const RANGE: Callbacks = Callbacks(8);
    /// `invalidate_secondary_tlbs`, for devices that walk the CPU's own
    /// tables (Linux's `arch_invalidate_secondary_tlbs`). Exclusive with
    /// [`RANGE`](Self::RANGE).
    pub const SECONDARY_TLB: Callbacks = Callbacks(16);
    /// The 2008 seed's operations.
    pub const SEED: Callbacks = Callbacks(1 | 2 | 4);
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
/// needs, and what it does not implement costs it nothing. The seed's four
/// operations (`release`, `invalidate_page`, `invalidate_pages`,
/// `age_page`) are here with their 2008 meaning; the range pair is what
/// Linux grew later. See the [module docs](self) for what a callback may do.
pub trait MmuNotifier: Sync {
    /// The callbacks this notifier implements; the core never calls the
    /// others, and skips the notifier on paths it does not listen to. The
    /// default is everything but [`Callbacks::SECONDARY_TLB`]. Declaring
    /// both `SECONDARY_TLB` and `RANGE` is refused at registration
    /// ([`Error::ConflictingCallbacks`](crate::Error::ConflictingCallbacks)),
    /// as in Linux: a device that walks the CPU tables needs only the
    /// synchronous flush, and start/end would invalidate it twice.
    const CALLBACKS: Callbacks = Callbacks::DEFAULT;

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
    /// TLB; `true` if any was accessed. Default: the seed's
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
}
