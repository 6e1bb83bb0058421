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
use crate::kernel::{Kernel, Portable};

/// A notifier wrapped for registration. Without the `notifier` feature it
/// can be built but never registered.
pub struct Subscription<'h, N: MmuNotifier> {
    notifier: N,
    _head: PhantomData<fn(&'h ()) -> &'h ()>,
}

impl<'h, N: MmuNotifier> Subscription<'h, N> {
    /// Wraps `notifier`.
    pub const fn new(notifier: N) -> Self {
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
pub struct NotifierHead<K: Kernel = Portable> {
    _kernel: PhantomData<fn() -> K>,
}

impl<K: Kernel> core::fmt::Debug for NotifierHead<K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("NotifierHead (notifiers compiled out)")
    }
}

impl<K: Kernel> Default for NotifierHead<K> {
    fn default() -> Self {
        Self::for_kernel()
    }
}

impl NotifierHead<Portable> {
    /// An empty head.
    pub const fn new() -> Self {
        Self::for_kernel()
    }
}

impl<K: Kernel> NotifierHead<K> {
    /// An empty head of kernel `K`.
    pub const fn for_kernel() -> Self {
        Self {
            _kernel: PhantomData,
        }
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
    ///
    /// # Errors
    /// Never.
    #[inline(always)]
    pub fn release(&self) -> Result<(), Error> {
        Ok(())
    }
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
    /// Returns a guard that only remembers its range.
    #[inline(always)]
    pub fn invalidate_range_start(&self, range: InvalidateRange) -> RangeGuard<'_, K> {
        RangeGuard {
            range,
            _head: PhantomData,
        }
    }
    /// Returns a guard that only remembers its range.
    ///
    /// # Errors
    /// Never.
    #[inline(always)]
    pub fn try_invalidate_range_start_nonblock(
        &self,
        range: InvalidateRange,
    ) -> Result<RangeGuard<'_, K>, Error> {
        Ok(self.invalidate_range_start(range))
    }
}

/// A range invalidation with nobody to tell.
#[must_use = "a range invalidation ends when this guard is dropped: bind it for the whole operation"]
pub struct RangeGuard<'a, K: Kernel = Portable> {
    range: InvalidateRange,
    /// Not `Send`, like the real guard.
    _head: PhantomData<(&'a NotifierHead<K>, *const ())>,
}

impl<'a, K: Kernel> RangeGuard<'a, K> {
    /// The invalidation this guard belongs to.
    pub fn range(&self) -> &InvalidateRange {
        &self.range
    }
    /// The head it was started on.
    pub fn head(&self) -> &'a NotifierHead<K> {
        // SAFETY: `NotifierHead` is zero-sized here, and a reference to a
        // zero-sized value needs only a non-null, aligned address.
        unsafe { core::ptr::NonNull::dangling().as_ref() }
    }
    /// Ends the invalidation (nothing to do).
    #[inline(always)]
    pub fn end(self) {}
}

impl<K: Kernel> core::fmt::Debug for RangeGuard<'_, K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RangeGuard")
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}
