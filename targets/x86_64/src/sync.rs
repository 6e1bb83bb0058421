//! The one lock the harness uses: a spin lock.
//!
//! Several CPUs may run (see `smp`), with interrupts enabled once they do;
//! no interrupt handler takes a lock, so holding one with interrupts on is
//! safe, and a CPU spinning on one still answers TLB shootdowns.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

/// A test-and-set spin lock.
pub(crate) struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `value` to one holder at a time, so
// sharing the lock between CPUs is fine as long as `T` may move between them.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self { locked: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        while self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            core::hint::spin_loop();
        }
        SpinGuard { lock: self }
    }
}

/// Access to the value of a locked [`SpinLock`]; unlocks on drop.
pub(crate) struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: holding the guard means holding the lock: no other access.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: holding the guard means holding the lock: no other access.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

/// A cell written only while the boot CPU runs alone (before the kernel's
/// `main`), and only read afterwards.
#[repr(transparent)]
pub(crate) struct BootCell<T>(UnsafeCell<T>);

// SAFETY: writes happen only during single-threaded boot (see `set`), so
// later shared reads from any CPU cannot race with a write.
unsafe impl<T: Sync> Sync for BootCell<T> {}

impl<T> BootCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(UnsafeCell::new(value))
    }

    /// # Safety
    /// Only during boot, before the kernel's `main` runs and before any
    /// reference from [`BootCell::get`] exists.
    pub(crate) unsafe fn set(&self, value: T) {
        // SAFETY: the caller guarantees no other access exists now.
        unsafe { *self.0.get() = value }
    }

    pub(crate) fn get(&self) -> &T {
        // SAFETY: after boot the value is never written again (see `set`).
        unsafe { &*self.0.get() }
    }

    /// A raw pointer to the value, for code that hands it to hardware.
    pub(crate) fn as_ptr(&self) -> *mut T {
        self.0.get()
    }
}
