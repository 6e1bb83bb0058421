//! The notifier list compiled out (feature `notifier` off).
//!
//! Same names and signatures as the real list, so call sites type-check
//! their arguments either way; every hook is an empty `#[inline(always)]`
//! function and the head is zero-sized.
//!
//! Hooks still type-check their arguments with the feature off:
//!
//! ```compile_fail
//! let head = mmu_notifier_core::NotifierHead::new();
//! head.invalidate_page(42u32); // a `VirtAddr` is required
//! ```

use core::marker::PhantomData;
use core::pin::Pin;

use super::{InvalidateRange, MmuNotifier};
use crate::addr::{PageRange, VirtAddr};
use crate::error::Error;

/// Does nothing without the `notifier` feature (nothing is ever waited for).
pub fn set_cpu_id_source(cpu_id: fn() -> usize) {
    let _ = cpu_id;
}

/// A notifier wrapped for registration. Without the `notifier` feature it
/// can be built but never registered.
pub struct Subscription<'h, N: MmuNotifier> {
    notifier: N,
    _head: PhantomData<fn(&'h NotifierHead) -> &'h NotifierHead>,
}

impl<N: MmuNotifier> Subscription<'_, N> {
    /// Wraps `notifier`.
    pub fn new(notifier: N) -> Self {
        Self {
            notifier,
            _head: PhantomData,
        }
    }
    /// The wrapped notifier.
    pub fn notifier(&self) -> &N {
        &self.notifier
    }
    /// Always `false`.
    pub fn is_registered(&self) -> bool {
        false
    }
    /// Always `false`.
    pub fn is_released(&self) -> bool {
        false
    }
}

/// The per-address-space notifier list, compiled out: zero-sized.
#[derive(Debug, Default)]
pub struct NotifierHead {
    _private: (),
}

impl NotifierHead {
    /// An empty head.
    pub const fn new() -> Self {
        Self { _private: () }
    }
    /// Always `false`.
    #[inline(always)]
    pub fn has_notifiers(&self) -> bool {
        false
    }
    /// Always `false`.
    #[inline(always)]
    pub fn wants(&self, callbacks: super::Callbacks) -> bool {
        let _ = callbacks;
        false
    }
    /// Always `false`: release is not tracked without notifiers.
    pub fn is_released(&self) -> bool {
        false
    }
    /// # Errors
    /// Always [`Error::NotifiersDisabled`].
    pub fn register<'h, N: MmuNotifier>(
        &'h self,
        sub: Pin<&Subscription<'h, N>>,
    ) -> Result<(), Error> {
        let _ = sub;
        Err(Error::NotifiersDisabled)
    }
    /// # Errors
    /// Always [`Error::NotifiersDisabled`].
    pub fn unregister<N: MmuNotifier>(&self, sub: Pin<&Subscription<'_, N>>) -> Result<(), Error> {
        let _ = sub;
        Err(Error::NotifiersDisabled)
    }
    /// Does nothing.
    #[inline(always)]
    pub fn release(&self) {}
    /// Does nothing.
    #[inline(always)]
    pub fn invalidate_page(&self, addr: VirtAddr) {
        let _ = addr;
    }
    /// Does nothing.
    #[inline(always)]
    pub fn invalidate_pages(&self, range: PageRange) {
        let _ = range;
    }
    /// Always `false`.
    #[inline(always)]
    #[must_use]
    pub fn age_page(&self, addr: VirtAddr) -> bool {
        let _ = addr;
        false
    }
    /// Does nothing.
    #[inline(always)]
    pub fn invalidate_secondary_tlbs(&self, range: PageRange) {
        let _ = range;
    }
    /// Always `false`.
    #[inline(always)]
    #[must_use]
    pub fn clear_flush_young(&self, range: PageRange) -> bool {
        let _ = range;
        false
    }
    /// Always `false`.
    #[inline(always)]
    #[must_use]
    pub fn clear_young(&self, range: PageRange) -> bool {
        let _ = range;
        false
    }
    /// Always `false`.
    #[inline(always)]
    #[must_use]
    pub fn test_young(&self, addr: VirtAddr) -> bool {
        let _ = addr;
        false
    }
    /// Returns an empty guard.
    #[inline(always)]
    pub fn invalidate_range_start(&self, range: InvalidateRange) -> RangeGuard<'_> {
        RangeGuard {
            range,
            _head: PhantomData,
        }
    }
    /// Returns an empty guard.
    ///
    /// # Errors
    /// Never.
    #[inline(always)]
    pub fn try_invalidate_range_start_nonblock(
        &self,
        range: InvalidateRange,
    ) -> Result<RangeGuard<'_>, Error> {
        Ok(RangeGuard {
            range,
            _head: PhantomData,
        })
    }
}

/// A range invalidation with nobody to tell.
#[must_use = "a range invalidation ends when this guard is dropped: bind it for the whole operation"]
pub struct RangeGuard<'a> {
    range: InvalidateRange,
    _head: PhantomData<&'a NotifierHead>,
}

impl RangeGuard<'_> {
    /// The invalidation this guard belongs to.
    pub fn range(&self) -> &InvalidateRange {
        &self.range
    }
    /// Ends the invalidation (nothing to do).
    #[inline(always)]
    pub fn end(self) {}
}
