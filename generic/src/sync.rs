//! The one door to atomics and spinning.
//!
//! Everything in the notifier core that other CPUs can observe goes through
//! this module, so the same code runs on real atomics, under Miri, and under
//! the loom model checker (`RUSTFLAGS="--cfg loom"`), which swaps in its own
//! atomics and explores every interleaving.
//!
//! Page-table memory does not go through here: the hardware walker reads
//! those words, so they are always real `core` atomics.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};

#[cfg(not(loom))]
#[cfg_attr(
    not(feature = "notifier"),
    expect(
        unused_imports,
        reason = "only the notifier list needs the pointer and counter atomics"
    )
)]
pub(crate) use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};

/// Defines a constructor that is a `const fn` on real atomics and a plain
/// `fn` under loom, whose atomics cannot be built in const context.
macro_rules! loom_const_fn {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$attr])*
        #[cfg(not(loom))]
        $vis const fn $name($($arg: $ty),*) -> $ret $body
        $(#[$attr])*
        #[cfg(loom)]
        $vis fn $name($($arg: $ty),*) -> $ret $body
    };
}
pub(crate) use loom_const_fn;

/// Called in every busy-wait loop: a CPU hint on hardware, a yield under loom
/// (so the model checker schedules the thread we wait for).
#[inline]
pub(crate) fn spin_loop() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}

/// A test-and-set spin lock that guards no data: it serialises writers whose
/// shared state is itself atomic (the notifier list, a page-table tree).
pub(crate) struct RawSpinLock {
    locked: AtomicBool,
}

impl RawSpinLock {
    loom_const_fn! {
        pub(crate) fn new() -> RawSpinLock {
            RawSpinLock {
                locked: AtomicBool::new(false),
            }
        }
    }

    /// Takes the lock, spinning with CPU hints while it is held.
    #[cfg_attr(
        not(feature = "notifier"),
        expect(
            dead_code,
            reason = "only the interval notifiers spin without a kernel"
        )
    )]
    pub(crate) fn lock(&self) -> RawSpinGuard<'_> {
        self.lock_with(|_| spin_loop())
    }

    /// Takes the lock, calling `wait(round)` between attempts (a kernel's
    /// way to wait: yield, sleep, or spin).
    pub(crate) fn lock_with(&self, wait: impl Fn(u32)) -> RawSpinGuard<'_> {
        let mut round = 0u32;
        loop {
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return RawSpinGuard { lock: self };
            }
            while self.locked.load(Ordering::Relaxed) {
                wait(round);
                round = round.saturating_add(1);
            }
        }
    }
}

/// Holds a [`RawSpinLock`]; unlocks on drop.
pub(crate) struct RawSpinGuard<'a> {
    lock: &'a RawSpinLock,
}

impl Drop for RawSpinGuard<'_> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}
