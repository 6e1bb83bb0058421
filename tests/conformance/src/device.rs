//! The reference device: a software secondary MMU written against interval
//! notifiers, the way a driver should be.
//!
//! It has its own small page table (fixed capacity, no allocation), fills
//! it only from its fault path, which follows the collision-retry
//! protocol (`read_begin` → `AddressSpace::translate` → device lock →
//! `read_retry`? retry : install), and empties it only from
//! [`IntervalOps::invalidate`], which drops the entries in range and calls
//! `set_seq` under the same lock. [`Device::check_coherent`] is the oracle,
//! as [`ShadowMmu::check_coherent`](crate::shadow::ShadowMmu::check_coherent)
//! is for the plain notifier.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use mmu_notifier_core::interval::{IntervalOps, IntervalSub};
use mmu_notifier_core::{
    AddressSpace, Arch, Event, InvalidateRange, PageRange, PhysAddr, TableMemory, VirtAddr,
};

/// How many translations the device can hold.
pub const CAPACITY: usize = 32;
/// How many invalidations its log keeps.
pub const LOG: usize = 32;
/// How many times a fault retries before it gives up.
pub const MAX_ATTEMPTS: u32 = 16;

/// One invalidation the device received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalidation {
    /// The invalidated range (the whole invalidation, not clipped).
    pub range: PageRange,
    /// Why.
    pub event: Event,
    /// The sequence it carried (odd).
    pub cur_seq: u64,
}

/// Why a device fault failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceFault {
    /// The primary tables do not map the page (or not writably, for a write).
    NotMapped,
    /// The page lies outside the device's interval (or it is not
    /// inserted): no invalidation would reach a translation of it.
    OutsideInterval,
    /// A colliding invalidation runs (only from the non-waiting fault).
    Invalidating,
    /// Invalidations kept colliding: gave up after [`MAX_ATTEMPTS`].
    TooManyRetries,
    /// The device page table is full.
    Full,
}

/// A successful fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faulted {
    /// The frame the device now translates the page to.
    pub frame: PhysAddr,
    /// How many tries it took (1: no collision).
    pub attempts: u32,
}

#[derive(Clone, Copy)]
struct Entry {
    page: u64,
    frame: PhysAddr,
    writable: bool,
}

struct State {
    table: [Option<Entry>; CAPACITY],
    log: [Option<Invalidation>; LOG],
    logged: usize,
}

/// The device lock: a minimal spin lock (the device is a test device).
struct Locked<T> {
    busy: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is serialised by `busy` (see `try_with`).
unsafe impl<T: Send> Sync for Locked<T> {}

impl<T> Locked<T> {
    fn try_with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        if self
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        // SAFETY: we hold `busy`, so nobody else has a reference.
        let r = f(unsafe { &mut *self.value.get() });
        self.busy.store(false, Ordering::Release);
        Some(r)
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut f = Some(f);
        loop {
            if let Some(r) = self.try_with(|v| (f.take().expect("called once"))(v)) {
                return r;
            }
            core::hint::spin_loop();
        }
    }
}

/// The reference interval-notifier device. Wrap it in an
/// [`IntervalSub`] and insert it in the address space's
/// [`IntervalNotifiers`](mmu_notifier_core::interval::IntervalNotifiers).
pub struct Device {
    page_size: u64,
    state: Locked<State>,
    retries: AtomicUsize,
}

impl Device {
    /// An empty device for pages of `page_size` bytes.
    pub const fn new(page_size: u64) -> Self {
        Self {
            page_size,
            state: Locked {
                busy: AtomicBool::new(false),
                value: UnsafeCell::new(State {
                    table: [None; CAPACITY],
                    log: [None; LOG],
                    logged: 0,
                }),
            },
            retries: AtomicUsize::new(0),
        }
    }

    fn page(&self, va: VirtAddr) -> u64 {
        va.0 & !(self.page_size - 1)
    }

    /// The device's page fault: the collision-retry protocol, waiting in
    /// `read_begin` while a colliding invalidation runs.
    ///
    /// # Errors
    /// Why the page could not be mapped.
    pub fn fault_in<A: Arch, F: TableMemory>(
        sub: &IntervalSub<'_, Device>,
        mm: &AddressSpace<'_, A, F>,
        va: VirtAddr,
        write: bool,
    ) -> Result<PhysAddr, DeviceFault> {
        Self::fault(sub, mm, va, write, true, &mut |_| {}).map(|f| f.frame)
    }

    /// As [`fault_in`](Self::fault_in), but never waits: fails with
    /// [`DeviceFault::Invalidating`] while a colliding invalidation runs
    /// (for a fault path in a context that must not spin).
    ///
    /// # Errors
    /// Why the page could not be mapped.
    pub fn try_fault_in<A: Arch, F: TableMemory>(
        sub: &IntervalSub<'_, Device>,
        mm: &AddressSpace<'_, A, F>,
        va: VirtAddr,
        write: bool,
    ) -> Result<PhysAddr, DeviceFault> {
        Self::fault(sub, mm, va, write, false, &mut |_| {}).map(|f| f.frame)
    }

    /// As [`fault_in`](Self::fault_in), calling `between(attempt)` after
    /// each read of the primary tables and before the device lock is
    /// taken: the window in which a racing invalidation makes the read
    /// stale. A single-CPU test runs an invalidation there.
    ///
    /// # Errors
    /// Why the page could not be mapped.
    pub fn fault_in_with<A: Arch, F: TableMemory>(
        sub: &IntervalSub<'_, Device>,
        mm: &AddressSpace<'_, A, F>,
        va: VirtAddr,
        write: bool,
        between: &mut dyn FnMut(u32),
    ) -> Result<Faulted, DeviceFault> {
        Self::fault(sub, mm, va, write, true, between)
    }

    fn fault<A: Arch, F: TableMemory>(
        sub: &IntervalSub<'_, Device>,
        mm: &AddressSpace<'_, A, F>,
        va: VirtAddr,
        write: bool,
        wait: bool,
        between: &mut dyn FnMut(u32),
    ) -> Result<Faulted, DeviceFault> {
        let dev = sub.ops();
        let page = dev.page(va);
        match sub.interval() {
            Some((start, len)) if page >= start.0 && page - start.0 < len => {}
            _ => return Err(DeviceFault::OutsideInterval),
        }
        for attempt in 1..=MAX_ATTEMPTS {
            let seq = if wait {
                sub.read_begin()
            } else {
                sub.try_read_begin().ok_or(DeviceFault::Invalidating)?
            };
            let primary = mm.translate(va);
            between(attempt);
            let installed = dev.state.with(|s| {
                if sub.read_retry(seq) {
                    // An invalidation collided: what we read may be stale.
                    return None;
                }
                let Some((leaf, level)) = primary else {
                    return Some(Err(DeviceFault::NotMapped));
                };
                if write && !leaf.prot.writable() {
                    return Some(Err(DeviceFault::NotMapped));
                }
                let span = level.entry_span();
                let frame = PhysAddr(leaf.frame.0 + (page & (span - 1)));
                let Some(slot) = s
                    .table
                    .iter_mut()
                    .find(|e| e.is_none_or(|e| e.page == page))
                else {
                    return Some(Err(DeviceFault::Full));
                };
                *slot = Some(Entry {
                    page,
                    frame,
                    writable: leaf.prot.writable(),
                });
                Some(Ok(Faulted {
                    frame,
                    attempts: attempt,
                }))
            });
            match installed {
                Some(r) => return r,
                None => {
                    dev.retries.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Err(DeviceFault::TooManyRetries)
    }

    /// A device access: the cached frame and writability of `va`'s page,
    /// `None` if the device would fault.
    pub fn cached(&self, va: VirtAddr) -> Option<(PhysAddr, bool)> {
        let page = self.page(va);
        self.state.with(|s| {
            s.table
                .iter()
                .flatten()
                .find(|e| e.page == page)
                .map(|e| (e.frame, e.writable))
        })
    }

    /// Number of translations held.
    pub fn cached_count(&self) -> usize {
        self.state.with(|s| s.table.iter().flatten().count())
    }

    /// How many fault attempts were retried because of a collision.
    pub fn retries(&self) -> usize {
        self.retries.load(Ordering::Relaxed)
    }

    /// The invalidations received, oldest first; returns how many (at most
    /// [`LOG`] are kept).
    pub fn invalidations(&self, out: &mut [Option<Invalidation>; LOG]) -> usize {
        self.state.with(|s| {
            *out = s.log;
            s.logged
        })
    }

    /// Forgets the invalidation log.
    pub fn clear_log(&self) {
        self.state.with(|s| {
            s.log = [None; LOG];
            s.logged = 0;
        });
    }

    /// The oracle: every translation the device holds matches the primary
    /// tables (same frame, no more permission).
    ///
    /// # Errors
    /// `(va, device frame, primary frame or None)` of the first stale one.
    #[allow(clippy::type_complexity)]
    pub fn check_coherent<A: Arch, F: TableMemory>(
        &self,
        mm: &AddressSpace<'_, A, F>,
    ) -> Result<(), (VirtAddr, PhysAddr, Option<PhysAddr>)> {
        let mut snapshot = [None; CAPACITY];
        self.state.with(|s| snapshot = s.table);
        for e in snapshot.iter().flatten() {
            let va = VirtAddr(e.page);
            let primary = mm.translate(va).map(|(leaf, level)| {
                let span = level.entry_span();
                (
                    PhysAddr(leaf.frame.0 + (e.page & (span - 1))),
                    leaf.prot.writable(),
                )
            });
            match primary {
                Some((frame, w)) if frame == e.frame && (w || !e.writable) => {}
                other => return Err((va, e.frame, other.map(|p| p.0))),
            }
        }
        Ok(())
    }
}

impl IntervalOps for Device {
    fn invalidate(
        &self,
        sub: &IntervalSub<'_, Self>,
        range: &InvalidateRange,
        cur_seq: u64,
    ) -> bool {
        let work = |s: &mut State| {
            // Under the lock the fault path checks `read_retry` under.
            sub.set_seq(cur_seq);
            for slot in &mut s.table {
                if slot.is_some_and(|e| range.range.contains(VirtAddr(e.page))) {
                    *slot = None;
                }
            }
            if s.logged < LOG {
                s.log[s.logged] = Some(Invalidation {
                    range: range.range,
                    event: range.event,
                    cur_seq,
                });
            }
            s.logged += 1;
        };
        if range.may_block() {
            self.state.with(work);
            true
        } else {
            // Must not spin: a contended lock means "would block".
            self.state.try_with(work).is_some()
        }
    }
}
