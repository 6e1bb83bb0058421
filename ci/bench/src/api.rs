//! The one place where the benchmarks construct the core's types: notifier
//! heads, subscriptions, interval managers and subscriptions, address
//! spaces. Everything else in `ci/bench` names [`Head`], [`Sub`] and [`Mm`]
//! and calls these functions, so when the head becomes generic over how it
//! is embedded in a kernel, this module is all that changes (pick the
//! embedding in the aliases and constructors below).
//!
//! The heads run on host threads as the kernel's CPUs
//! ([`StdThreads`]: a reader slot per thread, readers ordered by
//! `membarrier`), as a kernel with per-CPU data would embed the core.

use core::pin::Pin;

#[cfg(feature = "notifier")]
use mmu_notifier_core::interval::{IntervalNotifiers, IntervalOps, IntervalSub};
use mmu_notifier_core::kernel::{Kernel as CoreKernel, StdThreads, StdThreadsFenced};
use mmu_notifier_core::{AddressSpace, Error, MmuNotifier, NotifierHead, Subscription};
use mmu_notifier_emu::Emu;

/// The kernel the benchmarked heads run on.
pub type Kernel = StdThreads;
/// The notifier head every benchmark measures.
pub type Head = NotifierHead<Kernel>;
/// The list on host threads whose readers fence (figure 7's comparison).
pub type HeadFenced = NotifierHead<StdThreadsFenced>;
/// A subscription on a [`Head`] (or a [`HeadFenced`]).
pub type Sub<'h, N> = Subscription<'h, N>;
/// An address space on the emulated MMU, which is also its frame
/// allocator; its head is a [`Head`].
pub type Mm<'e> = AddressSpace<'e, Emu, Emu, Kernel>;

/// An empty head.
pub fn head() -> Head {
    NotifierHead::for_kernel()
}

/// An empty head whose readers fence.
pub fn head_fenced() -> HeadFenced {
    NotifierHead::for_kernel()
}

/// A pinned subscription of `n`, not registered yet.
pub fn subscription<'h, N: MmuNotifier>(n: N) -> Pin<Box<Sub<'h, N>>> {
    Box::pin(Subscription::new(n))
}

/// Registers `sub` on `head`.
///
/// # Errors
/// What [`NotifierHead::register`] returns (without the `notifier`
/// feature: always [`Error::NotifiersDisabled`]).
pub fn register<'h, K: CoreKernel, N: MmuNotifier>(
    head: &'h NotifierHead<K>,
    sub: Pin<&Sub<'h, N>>,
) -> Result<(), Error> {
    head.register(sub)
}

/// Unregisters `sub` from `head`.
///
/// # Errors
/// What [`NotifierHead::unregister`] returns.
pub fn unregister<K: CoreKernel, N: MmuNotifier>(
    head: &NotifierHead<K>,
    sub: Pin<&Sub<'_, N>>,
) -> Result<(), Error> {
    head.unregister(sub)
}

/// A pinned, registered subscription of `n` on `head`.
///
/// # Errors
/// What [`register`] returns.
pub fn subscribe<'h, K: CoreKernel, N: MmuNotifier>(
    head: &'h NotifierHead<K>,
    n: N,
) -> Result<Pin<Box<Sub<'h, N>>>, Error> {
    let sub = subscription(n);
    register(head, sub.as_ref())?;
    Ok(sub)
}

/// An empty interval-notifier manager, to register on a head.
#[cfg(feature = "notifier")]
pub fn interval_manager() -> IntervalNotifiers {
    IntervalNotifiers::new()
}

/// An interval subscription of `ops`, not inserted yet.
#[cfg(feature = "notifier")]
pub fn interval_sub<'a, T: IntervalOps>(ops: T) -> Pin<Box<IntervalSub<'a, T>>> {
    Box::pin(IntervalSub::new(ops))
}

/// The emulated machine every benchmark runs on: one CPU, so every TLB
/// flush costs as little as the emulator allows and the notifier's share
/// of an operation is, if anything, overstated.
pub fn machine() -> Emu {
    Emu::new(1)
}

/// An address space on `emu` (with an empty head of its own).
///
/// # Errors
/// What [`AddressSpace::new`] returns (no frame for the root table).
pub fn address_space(emu: &Emu) -> Result<Mm<'_>, Error> {
    Mm::for_kernel(emu, emu)
}
