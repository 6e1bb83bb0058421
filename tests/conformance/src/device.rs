//! The reference device: a software secondary MMU written against interval
//! notifiers, the way a driver should be.
//!
//! It has its own small page table (fixed capacity, no allocation), fills
//! it only from its fault path, which follows the collision-retry
//! protocol (`read_begin` → `AddressSpace::translate` → device lock →
//! `read_retry`? retry : install), and empties it only from
//! [`IntervalOps::invalidate`], which drops the entries in range and calls
//! `set_seq` under the same lock. Its table, log and oracle are the ones
//! every reference secondary MMU shares ([`crate::oracle`]).

use core::sync::atomic::{AtomicUsize, Ordering};

use mmu_notifier_core::interval::{IntervalOps, IntervalSub};
use mmu_notifier_core::Kernel;
use mmu_notifier_core::{
    AddressSpace, Arch, Event, InvalidateRange, PageRange, PhysAddr, TableMemory, VirtAddr,
};

use crate::oracle::{self, Log, Stale, Tlb, Translation};
use crate::sync::SpinLock;

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

struct State {
    table: Tlb<CAPACITY>,
    log: Log<Invalidation, LOG>,
}

/// The reference interval-notifier device. Wrap it in an
/// [`IntervalSub`] and insert it in the address space's
/// [`IntervalNotifiers`](mmu_notifier_core::interval::IntervalNotifiers).
pub struct Device {
    page_size: u64,
    state: SpinLock<State>,
    retries: AtomicUsize,
}

impl Device {
    /// An empty device for pages of `page_size` bytes.
    pub const fn new(page_size: u64) -> Self {
        Self {
            page_size,
            state: SpinLock::new(State {
                table: Tlb::new(),
                log: Log::new(),
            }),
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
    pub fn fault_in<A: Arch, F: TableMemory, K: Kernel>(
        sub: &IntervalSub<'_, Device>,
        mm: &AddressSpace<'_, A, F, K>,
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
    pub fn try_fault_in<A: Arch, F: TableMemory, K: Kernel>(
        sub: &IntervalSub<'_, Device>,
        mm: &AddressSpace<'_, A, F, K>,
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
    pub fn fault_in_with<A: Arch, F: TableMemory, K: Kernel>(
        sub: &IntervalSub<'_, Device>,
        mm: &AddressSpace<'_, A, F, K>,
        va: VirtAddr,
        write: bool,
        between: &mut dyn FnMut(u32),
    ) -> Result<Faulted, DeviceFault> {
        Self::fault(sub, mm, va, write, true, between)
    }

    fn fault<A: Arch, F: TableMemory, K: Kernel>(
        sub: &IntervalSub<'_, Device>,
        mm: &AddressSpace<'_, A, F, K>,
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
            let primary = oracle::primary(mm, page);
            between(attempt);
            let installed = {
                let mut s = dev.state.lock();
                if sub.read_retry(seq) {
                    // An invalidation collided: what we read may be stale.
                    None
                } else {
                    Some(match primary {
                        None => Err(DeviceFault::NotMapped),
                        Some((_, false)) if write => Err(DeviceFault::NotMapped),
                        Some((frame, writable)) => s
                            .table
                            .install(Translation {
                                page,
                                frame,
                                writable,
                                accessed: true,
                            })
                            .map(|()| Faulted {
                                frame,
                                attempts: attempt,
                            })
                            .map_err(|_| DeviceFault::Full),
                    })
                }
            };
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
        self.state
            .lock()
            .table
            .get(page)
            .map(|t| (t.frame, t.writable))
    }

    /// Number of translations held.
    pub fn cached_count(&self) -> usize {
        self.state.lock().table.len()
    }

    /// How many fault attempts were retried because of a collision.
    pub fn retries(&self) -> usize {
        self.retries.load(Ordering::Relaxed)
    }

    /// The invalidations received, oldest first (at most [`LOG`] are
    /// kept), and how many there were in all.
    pub fn invalidations(&self) -> ([Option<Invalidation>; LOG], usize) {
        self.state.lock().log.snapshot()
    }

    /// Forgets the invalidation log.
    pub fn clear_log(&self) {
        self.state.lock().log.clear();
    }

    /// The oracle: every translation the device holds matches the primary
    /// tables (same frame, no more permission).
    ///
    /// # Errors
    /// The first stale translation.
    pub fn check_coherent<A: Arch, F: TableMemory, K: Kernel>(
        &self,
        mm: &AddressSpace<'_, A, F, K>,
    ) -> Result<(), Stale> {
        let snapshot = self.state.lock().table;
        oracle::check_coherent(snapshot.iter(), mm)
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
            s.table
                .drop_where(|page| range.range.contains(VirtAddr(page)));
            s.log.push(Invalidation {
                range: range.range,
                event: range.event,
                cur_seq,
            });
        };
        if range.may_block() {
            work(&mut self.state.lock());
            true
        } else {
            // Must not spin: a contended lock means "would block".
            self.state.try_lock().map(|mut s| work(&mut s)).is_some()
        }
    }
}
