//! The reference secondary MMU: a shadow TLB driven only by notifier
//! callbacks, and the log of every call it received.
//!
//! It caches translations the way a device would (looked up once through
//! [`ShadowMmu::fault_in`], then used without asking the CPU tables), so
//! after any operation the oracle can ask the question that matters: does
//! it still translate an address to a frame the primary tables no longer
//! map there, or with more permission than they give?

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use mmu_notifier_core::{
    AddressSpace, Again, Event, InvalidateRange, MmuNotifier, PageRange, PhysAddr, VirtAddr,
};
use mmu_notifier_core::{Arch, TableMemory};

/// How many translations the shadow can cache.
pub const CAPACITY: usize = 64;
/// How many calls the log keeps.
pub const LOG: usize = 256;

/// Which callbacks the shadow MMU uses to stay coherent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// The 2008 seed: per-page `invalidate_page`, `invalidate_pages` after
    /// a loop; range start/end are only logged.
    Seed,
    /// Linux after 2008: drop everything in the range at
    /// `invalidate_range_start`, refuse to fault in until `end`; per-page
    /// calls are only logged.
    Range,
}

/// One callback the shadow received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `release`.
    Release,
    /// `invalidate_page(addr)`.
    InvalidatePage(VirtAddr),
    /// `invalidate_pages(range)`.
    InvalidatePages(PageRange),
    /// `age_page(addr)` and what it answered.
    AgePage(VirtAddr, bool),
    /// `invalidate_range_start`.
    RangeStart(PageRange, Event),
    /// `invalidate_range_end`.
    RangeEnd(PageRange, Event),
}

#[derive(Clone, Copy)]
struct Cached {
    page: u64,
    frame: PhysAddr,
    writable: bool,
    accessed: bool,
}

struct State {
    tlb: [Option<Cached>; CAPACITY],
    log: [Option<Call>; LOG],
    logged: usize,
    /// Open range invalidations (Range style refuses faults inside them).
    open: [Option<PageRange>; 8],
}

/// A minimal spin lock, enough for a test device.
struct Locked<T> {
    busy: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is serialised by `busy` (see `with`).
unsafe impl<T: Send> Sync for Locked<T> {}

impl<T> Locked<T> {
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        while self
            .busy
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        // SAFETY: we hold `busy`, so nobody else has a reference.
        let r = f(unsafe { &mut *self.value.get() });
        self.busy.store(false, Ordering::Release);
        r
    }
}

/// The reference secondary MMU.
pub struct ShadowMmu {
    style: Style,
    page_size: u64,
    state: Locked<State>,
    releases: AtomicUsize,
}

/// Why the shadow could not fault a page in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultIn {
    /// The primary tables do not map it (or not writably, for a write).
    NotMapped,
    /// A range invalidation covering it is in progress (Range style).
    Invalidating,
    /// The shadow has been released.
    Released,
    /// The shadow TLB is full.
    Full,
}

impl ShadowMmu {
    /// An empty shadow MMU for pages of `page_size` bytes.
    pub const fn new(style: Style, page_size: u64) -> Self {
        Self {
            style,
            page_size,
            state: Locked {
                busy: AtomicBool::new(false),
                value: UnsafeCell::new(State {
                    tlb: [None; CAPACITY],
                    log: [None; LOG],
                    logged: 0,
                    open: [None; 8],
                }),
            },
            releases: AtomicUsize::new(0),
        }
    }

    fn page(&self, va: VirtAddr) -> u64 {
        va.0 & !(self.page_size - 1)
    }

    /// The device's page fault: look the page up in the primary tables and
    /// cache the translation (writable only if the primary allows writes).
    ///
    /// # Errors
    /// Why it could not.
    pub fn fault_in<A: Arch, F: TableMemory>(
        &self,
        mm: &AddressSpace<'_, A, F>,
        va: VirtAddr,
        write: bool,
    ) -> Result<PhysAddr, FaultIn> {
        if self.releases.load(Ordering::Acquire) > 0 {
            return Err(FaultIn::Released);
        }
        let page = self.page(va);
        if self
            .state
            .with(|s| s.open.iter().flatten().any(|r| r.contains(VirtAddr(page))))
        {
            return Err(FaultIn::Invalidating);
        }
        let (leaf, level) = mm.translate(va).ok_or(FaultIn::NotMapped)?;
        if write && !leaf.prot.writable() {
            return Err(FaultIn::NotMapped);
        }
        let span = level.entry_span();
        let frame = PhysAddr(leaf.frame.0 + (page & (span - 1)));
        self.state.with(|s| {
            let slot = s
                .tlb
                .iter_mut()
                .find(|c| c.is_none_or(|c| c.page == page))
                .ok_or(FaultIn::Full)?;
            *slot = Some(Cached {
                page,
                frame,
                writable: leaf.prot.writable(),
                accessed: true,
            });
            Ok(frame)
        })
    }

    /// A device access through the shadow TLB: the cached frame, and the
    /// page marked accessed; `None` if not cached (the device would fault).
    pub fn access(&self, va: VirtAddr, write: bool) -> Option<PhysAddr> {
        let page = self.page(va);
        self.state.with(|s| {
            let c = s.tlb.iter_mut().flatten().find(|c| c.page == page)?;
            if write && !c.writable {
                return None;
            }
            c.accessed = true;
            Some(c.frame)
        })
    }

    /// The cached translation of `va`, if any: frame and writability.
    pub fn cached(&self, va: VirtAddr) -> Option<(PhysAddr, bool)> {
        let page = self.page(va);
        self.state.with(|s| {
            s.tlb
                .iter()
                .flatten()
                .find(|c| c.page == page)
                .map(|c| (c.frame, c.writable))
        })
    }

    /// Whether `va` is cached and accessed since the last `age_page`.
    pub fn accessed(&self, va: VirtAddr) -> bool {
        let page = self.page(va);
        self.state
            .with(|s| s.tlb.iter().flatten().any(|c| c.page == page && c.accessed))
    }

    /// Number of cached translations.
    pub fn cached_count(&self) -> usize {
        self.state.with(|s| s.tlb.iter().flatten().count())
    }

    /// How many times `release` was called.
    pub fn releases(&self) -> usize {
        self.releases.load(Ordering::Acquire)
    }

    /// The calls received so far, oldest first (at most [`LOG`]).
    pub fn calls(&self, out: &mut [Option<Call>; LOG]) -> usize {
        self.state.with(|s| {
            *out = s.log;
            s.logged.min(LOG)
        })
    }

    /// Drops every cached translation, as a driver does when it detaches
    /// from an address space (after unregistering it is told nothing more).
    pub fn detach(&self) {
        self.state.with(|s| s.tlb = [None; CAPACITY]);
    }

    /// Forgets the call log.
    pub fn clear_log(&self) {
        self.state.with(|s| {
            s.log = [None; LOG];
            s.logged = 0;
        });
    }

    /// Checks every cached translation against the primary tables: the
    /// oracle. `Err((va, cached frame, primary frame or None))` for the
    /// first stale one.
    ///
    /// # Errors
    /// The first stale translation.
    #[allow(clippy::type_complexity)]
    pub fn check_coherent<A: Arch, F: TableMemory>(
        &self,
        mm: &AddressSpace<'_, A, F>,
    ) -> Result<(), (VirtAddr, PhysAddr, Option<PhysAddr>)> {
        let mut snapshot = [None; CAPACITY];
        self.state.with(|s| snapshot = s.tlb);
        for c in snapshot.iter().flatten() {
            let va = VirtAddr(c.page);
            let primary = mm.translate(va).map(|(leaf, level)| {
                let span = level.entry_span();
                (
                    PhysAddr(leaf.frame.0 + (c.page & (span - 1))),
                    leaf.prot.writable(),
                )
            });
            match primary {
                Some((frame, w)) if frame == c.frame && (w || !c.writable) => {}
                other => return Err((va, c.frame, other.map(|p| p.0))),
            }
        }
        Ok(())
    }

    fn log(s: &mut State, call: Call) {
        if s.logged < LOG {
            s.log[s.logged] = Some(call);
        }
        s.logged += 1;
    }

    fn drop_range(s: &mut State, range: PageRange) {
        for slot in &mut s.tlb {
            if slot.is_some_and(|c| range.contains(VirtAddr(c.page))) {
                *slot = None;
            }
        }
    }
}

impl MmuNotifier for ShadowMmu {
    fn release(&self) {
        self.state.with(|s| {
            s.tlb = [None; CAPACITY];
            Self::log(s, Call::Release);
        });
        self.releases.fetch_add(1, Ordering::AcqRel);
    }

    fn invalidate_page(&self, addr: VirtAddr) {
        let page = self.page(addr);
        self.state.with(|s| {
            if self.style == Style::Seed {
                for slot in &mut s.tlb {
                    if slot.is_some_and(|c| c.page == page) {
                        *slot = None;
                    }
                }
            }
            Self::log(s, Call::InvalidatePage(addr));
        });
    }

    fn invalidate_pages(&self, range: PageRange) {
        self.state.with(|s| {
            if self.style == Style::Seed {
                Self::drop_range(s, range);
            }
            Self::log(s, Call::InvalidatePages(range));
        });
    }

    fn age_page(&self, addr: VirtAddr) -> bool {
        let page = self.page(addr);
        self.state.with(|s| {
            let mut young = false;
            for c in s.tlb.iter_mut().flatten() {
                if c.page == page {
                    young |= c.accessed;
                    c.accessed = false;
                }
            }
            Self::log(s, Call::AgePage(addr, young));
            young
        })
    }

    fn invalidate_range_start(&self, range: &InvalidateRange) -> Result<(), Again> {
        self.state.with(|s| {
            if self.style == Style::Range {
                Self::drop_range(s, range.range);
                if let Some(slot) = s.open.iter_mut().find(|o| o.is_none()) {
                    *slot = Some(range.range);
                }
            }
            Self::log(s, Call::RangeStart(range.range, range.event));
        });
        Ok(())
    }

    fn invalidate_range_end(&self, range: &InvalidateRange) {
        self.state.with(|s| {
            if self.style == Style::Range {
                if let Some(slot) = s.open.iter_mut().find(|o| **o == Some(range.range)) {
                    *slot = None;
                }
            }
            Self::log(s, Call::RangeEnd(range.range, range.event));
        });
    }
}
