//! Which CPU is running: how the core recognises a register or unregister
//! issued from inside one of the same head's callbacks on the same CPU.
//!
//! The core cannot know CPU identities by itself. A kernel that wants the
//! check calls [`set_cpu_id_source`] once at boot with a function giving
//! the current CPU's index; without it, nothing is tracked and such a call
//! hangs, as in Linux.

use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

/// CPUs with an index below this are tracked; others are not checked.
pub(crate) const TRACKED_CPUS: usize = 64;

static SOURCE: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Tells the core how to identify the running CPU: `cpu_id` returns its
/// index, stable while the caller runs (callbacks run with preemption
/// disabled, or on a pinned thread). CPUs numbered 64 or
/// above are not checked. Call once at boot, before registering anything.
pub fn set_cpu_id_source(cpu_id: fn() -> usize) {
    SOURCE.store(cpu_id as *mut (), Ordering::Release);
}

/// The running CPU's tracking slot, if a source is set and it is tracked.
#[inline]
pub(crate) fn current() -> Option<usize> {
    let p = SOURCE.load(Ordering::Acquire);
    if p.is_null() {
        return None;
    }
    // SAFETY: only `set_cpu_id_source` stores here, always a `fn() -> usize`
    // cast to a data pointer; function and data pointers have the same size
    // on every target this crate supports.
    let f: fn() -> usize = unsafe { core::mem::transmute::<*mut (), fn() -> usize>(p) };
    let cpu = f();
    (cpu < TRACKED_CPUS).then_some(cpu)
}

/// Per-CPU depth of read-side sections of one head.
pub(crate) struct Depths([AtomicU32; TRACKED_CPUS]);

impl Depths {
    pub(crate) const fn new() -> Self {
        Self([const { AtomicU32::new(0) }; TRACKED_CPUS])
    }

    /// Counts the running CPU in; returns its slot for [`leave`](Self::leave).
    #[inline]
    pub(crate) fn enter(&self) -> Option<usize> {
        let cpu = current()?;
        self.0[cpu].fetch_add(1, Ordering::Relaxed);
        Some(cpu)
    }

    #[inline]
    pub(crate) fn leave(&self, slot: Option<usize>) {
        if let Some(cpu) = slot {
            self.0[cpu].fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Whether the running CPU is inside a read-side section of this head.
    pub(crate) fn inside(&self) -> bool {
        current().is_some_and(|cpu| self.0[cpu].load(Ordering::Relaxed) > 0)
    }
}
