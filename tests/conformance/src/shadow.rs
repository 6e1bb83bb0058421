//! The reference secondary MMU for the plain notifier: a shadow TLB driven
//! only by notifier callbacks, and the log of every call it received.
//!
//! It caches translations the way a device would (looked up once through
//! [`ShadowMmu::fault_in`], then used without asking the CPU tables), so
//! after any operation the oracle ([`ShadowMmu::check_coherent`]) can ask
//! the question that matters: does it still translate an address to a
//! frame the primary tables no longer map there, or with more permission
//! than they give?
//!
//! Its fault path is safe against invalidations on other CPUs: every
//! invalidating callback bumps a sequence count under the shadow's lock,
//! and a fault installs what it read from the primary tables only if the
//! count did not move since (under the same lock), else it reads again.
//! Without that, a whole zap can run between a fault's lookup and its
//! install, and its per-page callback then finds nothing to drop.

use core::sync::atomic::{AtomicUsize, Ordering};

use mmu_notifier_core::Kernel;
use mmu_notifier_core::{
    AddressSpace, Again, Arch, Event, InvalidateRange, MmuNotifier, PageRange, PhysAddr,
    TableMemory, VirtAddr,
};

use crate::oracle::{self, Log, Stale, Tlb, Translation};
use crate::sync::SpinLock;

/// How many translations the shadow can cache.
pub const CAPACITY: usize = 64;
/// How many calls the log keeps.
pub const LOG: usize = 256;
/// How many times a fault reads the primary tables again because an
/// invalidation ran meanwhile, before it gives up.
pub const MAX_ATTEMPTS: u32 = 64;

/// Which callbacks the shadow MMU uses to stay coherent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Per-page callbacks: drop a page at `invalidate_page`, a range at
    /// `invalidate_pages` (after the loop that changed it); range start and
    /// end are only logged.
    PerPage,
    /// Range callbacks: drop everything in the range at
    /// `invalidate_range_start` and refuse to fault it in until the
    /// matching end; per-page calls are only logged.
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

struct State {
    tlb: Tlb<CAPACITY>,
    log: Log<Call, LOG>,
    /// Open range invalidations (Range style refuses faults inside them).
    open: [Option<PageRange>; 8],
    /// Bumped by every invalidating callback (see the module docs).
    seq: u64,
}

impl State {
    fn invalidating(&self, page: u64) -> bool {
        self.open
            .iter()
            .flatten()
            .any(|r| r.contains(VirtAddr(page)))
    }
}

/// The reference secondary MMU.
pub struct ShadowMmu {
    style: Style,
    page_size: u64,
    state: SpinLock<State>,
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
    /// Invalidations kept coming between the lookup and the install:
    /// gave up after [`MAX_ATTEMPTS`].
    Contended,
}

impl ShadowMmu {
    /// An empty shadow MMU for pages of `page_size` bytes.
    pub const fn new(style: Style, page_size: u64) -> Self {
        Self {
            style,
            page_size,
            state: SpinLock::new(State {
                tlb: Tlb::new(),
                log: Log::new(),
                open: [None; 8],
                seq: 0,
            }),
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
    pub fn fault_in<A: Arch, F: TableMemory, K: Kernel>(
        &self,
        mm: &AddressSpace<'_, A, F, K>,
        va: VirtAddr,
        write: bool,
    ) -> Result<PhysAddr, FaultIn> {
        let page = self.page(va);
        for _ in 0..MAX_ATTEMPTS {
            if self.releases() > 0 {
                return Err(FaultIn::Released);
            }
            let seq = {
                let s = self.state.lock();
                if s.invalidating(page) {
                    return Err(FaultIn::Invalidating);
                }
                s.seq
            };
            let (frame, writable) = oracle::primary(mm, page).ok_or(FaultIn::NotMapped)?;
            if write && !writable {
                return Err(FaultIn::NotMapped);
            }
            let mut s = self.state.lock();
            if s.seq != seq {
                // An invalidation ran since the lookup: it may be stale.
                continue;
            }
            let t = Translation {
                page,
                frame,
                writable,
                accessed: true,
            };
            s.tlb.install(t).map_err(|_| FaultIn::Full)?;
            return Ok(frame);
        }
        Err(FaultIn::Contended)
    }

    /// A device access through the shadow TLB: the cached frame, and the
    /// page marked accessed; `None` if not cached (the device would fault).
    pub fn access(&self, va: VirtAddr, write: bool) -> Option<PhysAddr> {
        let page = self.page(va);
        let mut s = self.state.lock();
        let t = s.tlb.get_mut(page).filter(|t| !write || t.writable)?;
        t.accessed = true;
        Some(t.frame)
    }

    /// The cached translation of `va`, if any: frame and writability.
    pub fn cached(&self, va: VirtAddr) -> Option<(PhysAddr, bool)> {
        let page = self.page(va);
        self.state
            .lock()
            .tlb
            .get(page)
            .map(|t| (t.frame, t.writable))
    }

    /// Whether `va` is cached and accessed since the last `age_page`.
    pub fn accessed(&self, va: VirtAddr) -> bool {
        let page = self.page(va);
        self.state.lock().tlb.get(page).is_some_and(|t| t.accessed)
    }

    /// Number of cached translations.
    pub fn cached_count(&self) -> usize {
        self.state.lock().tlb.len()
    }

    /// How many times `release` was called.
    pub fn releases(&self) -> usize {
        self.releases.load(Ordering::Acquire)
    }

    /// The calls received so far, oldest first, and how many of them
    /// there are (at most [`LOG`] are kept).
    pub fn calls(&self) -> ([Option<Call>; LOG], usize) {
        let (calls, n) = self.state.lock().log.snapshot();
        (calls, n.min(LOG))
    }

    /// Drops every cached translation, as a driver does when it detaches
    /// from an address space (after unregistering it is told nothing more).
    pub fn detach(&self) {
        self.state.lock().tlb.clear();
    }

    /// Forgets the call log.
    pub fn clear_log(&self) {
        self.state.lock().log.clear();
    }

    /// The oracle: every cached translation matches the primary tables.
    ///
    /// # Errors
    /// The first stale translation.
    pub fn check_coherent<A: Arch, F: TableMemory, K: Kernel>(
        &self,
        mm: &AddressSpace<'_, A, F, K>,
    ) -> Result<(), Stale> {
        let snapshot = self.state.lock().tlb;
        oracle::check_coherent(snapshot.iter(), mm)
    }

    /// Records `call`; with `drops`, also invalidates the pages `drop`
    /// selects (the sequence count moves first, so a racing fault reads
    /// again).
    fn invalidate(&self, call: Call, drops: bool, drop: impl FnMut(u64) -> bool) {
        let mut s = self.state.lock();
        if drops {
            s.seq += 1;
            s.tlb.drop_where(drop);
        }
        s.log.push(call);
    }
}

impl MmuNotifier for ShadowMmu {
    fn release(&self) {
        self.invalidate(Call::Release, true, |_| true);
        self.releases.fetch_add(1, Ordering::AcqRel);
    }

    fn invalidate_page(&self, addr: VirtAddr) {
        let page = self.page(addr);
        let per_page = self.style == Style::PerPage;
        self.invalidate(Call::InvalidatePage(addr), per_page, |p| p == page);
    }

    fn invalidate_pages(&self, range: PageRange) {
        let per_page = self.style == Style::PerPage;
        self.invalidate(Call::InvalidatePages(range), per_page, |p| {
            range.contains(VirtAddr(p))
        });
    }

    fn age_page(&self, addr: VirtAddr) -> bool {
        let page = self.page(addr);
        let mut s = self.state.lock();
        let young = s
            .tlb
            .get_mut(page)
            .is_some_and(|t| core::mem::replace(&mut t.accessed, false));
        s.log.push(Call::AgePage(addr, young));
        young
    }

    fn invalidate_range_start(&self, range: &InvalidateRange) -> Result<(), Again> {
        let mut s = self.state.lock();
        if self.style == Style::Range {
            s.seq += 1;
            s.tlb.drop_where(|p| range.range.contains(VirtAddr(p)));
            if let Some(slot) = s.open.iter_mut().find(|o| o.is_none()) {
                *slot = Some(range.range);
            }
        }
        s.log.push(Call::RangeStart(range.range, range.event));
        Ok(())
    }

    fn invalidate_range_end(&self, range: &InvalidateRange) {
        let mut s = self.state.lock();
        if self.style == Style::Range {
            if let Some(slot) = s.open.iter_mut().find(|o| **o == Some(range.range)) {
                *slot = None;
            }
        }
        s.log.push(Call::RangeEnd(range.range, range.event));
    }
}
