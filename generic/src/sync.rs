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
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

#[cfg(not(loom))]
#[cfg_attr(
    not(feature = "notifier"),
    expect(
        unused_imports,
        reason = "only the notifier list needs the pointer and counter atomics"
    )
)]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

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
    pub(crate) fn new() -> Self {
        Self {
            locked: AtomicBool::new(false),
        }
    }

    pub(crate) fn lock(&self) -> RawSpinGuard<'_> {
        loop {
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return RawSpinGuard { lock: self };
            }
            while self.locked.load(Ordering::Relaxed) {
                spin_loop();
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
