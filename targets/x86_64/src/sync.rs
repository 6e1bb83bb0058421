//! Boot-time state: [`BootCell`].
//!
//! The lock the kernel uses is the harness's `SpinLock`. Several CPUs may
//! run (see `smp`), with interrupts enabled once they do; no interrupt
//! handler takes a lock, so holding one with interrupts on is safe, and a
//! CPU spinning on one still answers TLB shootdowns.

use core::cell::UnsafeCell;

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
