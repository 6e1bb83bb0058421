//! The shadow-style IOMMU driver, written once over [`IoDomain`]: the
//! driver owns the IOMMU's page table and mirrors into it a window of an
//! address space, as a kernel driver does that pins nothing and relies on
//! MMU notifiers instead (Linux's `mmu_interval_notifier` users: HMM-based
//! drivers, `amdgpu`'s userptr, RDMA's ODP).
//!
//! # The two paths
//! - **Fault path** ([`ShadowIommu::fault_in`]): the collision-retry
//!   protocol. `seq = read_begin()`, look the page up in the CPU tables
//!   (`AddressSpace::translate`), take the driver lock, and if
//!   `read_retry(seq)` start again; otherwise program the IO page-table
//!   entry ([`IoDomain::set_pte`], then [`IoDomain::publish`]) under the
//!   lock. A translation read while an invalidation of it ran never
//!   reaches the hardware.
//! - **Invalidation** ([`IntervalOps::invalidate`], called from every
//!   call site's `invalidate_range_start` and from `release`): under the
//!   same lock, `set_seq`, clear every IO entry the driver set in the
//!   range, then one [`IoDomain::invalidate`] over the span it cleared,
//!   which returns once the hardware dropped the translations. Only then
//!   does the call site go on, and only after its end may a frame be
//!   reused.
//!
//! # Call sites and the invalidation each one issues
//! Every call site of `AddressSpace` brackets its change with one range
//! pair, so the driver sees one invalidation per operation, before any
//! entry changes, with the operation's event:
//!
//! | call site | event | what the driver does |
//! |---|---|---|
//! | `zap_range` | `Unmap` | clears the mirrored pages of the range, one IOTLB invalidation over them |
//! | `change_protection` (mprotect) | `ProtectionVma` | the same: a read-only page is mirrored again read-only by the next fault |
//! | `copy_range` with `CopyMode::Cow` (fork) | `Clear` | the same for the parent's range: its pages become read-only |
//! | `remap_pfn_range` | `Clear` | clears whatever it mirrored there (nothing, the range was unmapped) |
//! | `unmap_huge_range` | `Unmap` | clears the 4 KiB IO pages it mirrored from the huge page |
//! | `teardown` | `Release` (from `release`, whole address space) | clears everything it mirrored |
//!
//! Nothing is issued when nothing in the range was mirrored. The hardware
//! half says what "one IOTLB invalidation" is: on VT-d a page-selective
//! IOTLB descriptor per aligned power-of-two block through the queued
//! invalidation interface, then a wait descriptor; on zPCI an RPCIT over
//! the range.
//!
//! Built with `--cfg mmu_notifier_broken="no-iotlb"` the driver clears its
//! entries but skips the invalidation: the hardware keeps using the old
//! translation, which the DMA cases must catch.
//!
//! Built with `--cfg mmu_notifier_broken="no-notify"` the core skips the
//! range pair as well as the per-page calls: only `release` still reaches
//! the driver, so every call site but teardown leaves its IO entries and
//! IOTLB as they were, and the DMA cases catch that too.

use core::pin::{pin, Pin};

use mmu_notifier_core::interval::{IntervalNotifiers, IntervalOps, IntervalSub};
use mmu_notifier_core::{
    AddressSpace, Arch, InvalidateRange, Kernel, PageRange, PhysAddr, Subscription, TableMemory,
    VirtAddr,
};

use super::{
    Bound, FaultInError, Invalidation, InvalidationStats, IoDomain, Style, IOTLB_INVALIDATION,
    IO_PAGE,
};
use crate::sync::SpinLock;
use crate::{Failure, Outcome};

/// How many 4 KiB pages a driver mirrors at most (its window).
pub const MAX_PAGES: u64 = 1024;
/// How many times a fault retries before it gives up.
pub const MAX_ATTEMPTS: u32 = 16;

struct State {
    /// Which pages of the window have an IO entry, one bit each.
    mapped: [u64; (MAX_PAGES / 64) as usize],
    stats: InvalidationStats,
}

/// The driver: a window of an address space mirrored into an IO domain at
/// `iova_base`. Wrap it in an [`IntervalSub`] inserted for the window
/// ([`bind`] does all of it).
pub struct ShadowIommu<'d, D: IoDomain> {
    domain: &'d D,
    window: PageRange,
    iova_base: u64,
    /// Taken by the fault path and by invalidations (without waiting when
    /// the invalidation may not block).
    state: SpinLock<State>,
}

impl<'d, D: IoDomain> ShadowIommu<'d, D> {
    /// A driver mirroring `window` (at most [`MAX_PAGES`] pages) at bus
    /// addresses from `iova_base`, nothing mirrored yet.
    ///
    /// # Panics
    /// If the window is larger than [`MAX_PAGES`] pages or not aligned to
    /// [`IO_PAGE`].
    pub fn new(domain: &'d D, window: PageRange, iova_base: u64) -> Self {
        assert!(
            window.len() / IO_PAGE <= MAX_PAGES
                && window.start().is_aligned(IO_PAGE)
                && window.len().is_multiple_of(IO_PAGE),
            "window {window:?} is not {MAX_PAGES} aligned pages at most"
        );
        Self {
            domain,
            window,
            iova_base,
            state: SpinLock::new(State {
                mapped: [0; (MAX_PAGES / 64) as usize],
                stats: InvalidationStats::default(),
            }),
        }
    }

    /// The bus address of `va` (which lies in the window).
    pub fn iova(&self, va: VirtAddr) -> u64 {
        self.iova_base + (va.0 - self.window.start().0)
    }

    fn page_index(&self, va: VirtAddr) -> Option<u64> {
        self.window
            .contains(va)
            .then(|| (va.0 - self.window.start().0) / IO_PAGE)
    }

    /// The invalidations issued so far.
    pub fn stats(&self) -> InvalidationStats {
        self.state.lock().stats
    }

    /// The device-fault path: maps the 4 KiB page of `va` into the IO
    /// domain as the CPU tables map it now, following the collision-retry
    /// protocol (see the module docs). A read fault of a writable page
    /// maps it writable, as the CPU tables allow.
    ///
    /// # Errors
    /// [`FaultInError`].
    pub fn fault_in<A: Arch, F: TableMemory, K: Kernel>(
        sub: &IntervalSub<'_, Self>,
        mm: &AddressSpace<'_, A, F, K>,
        va: VirtAddr,
        write: bool,
    ) -> Result<(), FaultInError> {
        let drv = sub.ops();
        let page = VirtAddr(va.0 & !(IO_PAGE - 1));
        let index = drv.page_index(page).ok_or(FaultInError::OutsideWindow)?;
        let iova = drv.iova(page);
        for _ in 0..MAX_ATTEMPTS {
            let seq = sub.read_begin();
            let primary = mm.translate(page);
            let done = {
                let mut s = drv.state.lock();
                if sub.read_retry(seq) {
                    // An invalidation collided: what we read may be stale.
                    None
                } else if let Some((leaf, level)) =
                    primary.filter(|(leaf, _)| !write || leaf.prot.writable())
                {
                    let frame = PhysAddr(leaf.frame.0 + (page.0 & (level.entry_span() - 1)));
                    let r = drv
                        .domain
                        .set_pte(iova, frame, leaf.prot.writable())
                        .and_then(|()| drv.domain.publish(iova, IO_PAGE));
                    if r.is_ok() {
                        s.mapped[(index / 64) as usize] |= 1 << (index % 64);
                    }
                    Some(r.map_err(FaultInError::Io))
                } else {
                    // Not mapped, or only read-only for a write.
                    Some(Err(FaultInError::NotMapped))
                }
            };
            if let Some(r) = done {
                return r;
            }
        }
        Err(FaultInError::TooManyRetries)
    }

    /// Clears every mirrored page in `[first, last]` (window page indices)
    /// and invalidates the IOTLB over the span cleared. Caller holds the
    /// lock.
    fn clear(&self, s: &mut State, first: u64, last: u64, inv: Option<&InvalidateRange>) {
        let mut span: Option<(u64, u64)> = None;
        for i in first..=last {
            let (word, bit) = ((i / 64) as usize, 1u64 << (i % 64));
            if s.mapped[word] & bit == 0 {
                continue;
            }
            s.mapped[word] &= !bit;
            let iova = self.iova_base + i * IO_PAGE;
            self.domain.clear_pte(iova);
            span = Some(span.map_or((iova, iova), |(lo, _)| (lo, iova)));
        }
        let Some((lo, hi)) = span else { return };
        let len = hi - lo + IO_PAGE;
        if IOTLB_INVALIDATION {
            // A refused invalidation leaves nothing better to do than to
            // report it: the entries are cleared, and the DMA cases see
            // any translation that survived.
            let _ = self.domain.invalidate(lo, len);
            s.stats.record(Invalidation {
                event: inv.map(|r| r.event),
                iova: lo,
                len,
                kind: self.domain.invalidation_name(),
            });
        }
    }
}

impl<D: IoDomain> IntervalOps for ShadowIommu<'_, D> {
    fn invalidate(
        &self,
        sub: &IntervalSub<'_, Self>,
        range: &InvalidateRange,
        cur_seq: u64,
    ) -> bool {
        let r = range.range;
        let start = r.start().0.max(self.window.start().0);
        let end = r.end().0.min(self.window.end().0);
        let work = |s: &mut State| {
            // Under the lock the fault path checks `read_retry` under.
            sub.set_seq(cur_seq);
            if start < end {
                let first = (start - self.window.start().0) / IO_PAGE;
                let last = (end - 1 - self.window.start().0) / IO_PAGE;
                self.clear(s, first, last, Some(range));
            }
        };
        if range.may_block() {
            work(&mut self.state.lock());
            true
        } else {
            self.state.try_lock().map(|mut s| work(&mut s)).is_some()
        }
    }
}

impl<D: IoDomain> Drop for ShadowIommu<'_, D> {
    /// Detaching: whatever is still mirrored goes, with its invalidation,
    /// so the domain is empty for the next user.
    fn drop(&mut self) {
        let last = self.window.len() / IO_PAGE - 1;
        let mut s = self.state.lock();
        self.clear(&mut s, 0, last, None);
    }
}

/// A bound shadow driver: the subscription and its address space.
struct ShadowBound<'s, 'a, 'm, 'd, D: IoDomain, A: Arch, F: TableMemory, K: Kernel> {
    sub: Pin<&'s IntervalSub<'a, ShadowIommu<'d, D>>>,
    mm: &'s AddressSpace<'m, A, F, K>,
}

impl<D: IoDomain, A: Arch, F: TableMemory, K: Kernel> Bound
    for ShadowBound<'_, '_, '_, '_, D, A, F, K>
{
    fn style(&self) -> Style {
        Style::Shadow
    }

    fn iova(&self, va: VirtAddr) -> u64 {
        self.sub.ops().iova(va)
    }

    fn fault_in(&self, va: VirtAddr, write: bool) -> Result<(), FaultInError> {
        ShadowIommu::fault_in(&self.sub, self.mm, va, write)
    }

    fn stats(&self) -> InvalidationStats {
        self.sub.ops().stats()
    }
}

/// Binds a shadow driver over `domain` to `mm` for `window` at bus
/// addresses from `iova_base` (an interval notifier manager registered on
/// `mm`, the driver inserted for the window), runs `f`, then unbinds
/// (which clears and invalidates whatever is still mirrored).
///
/// # Errors
/// `f`'s failure, or why registering failed.
pub fn bind<D: IoDomain, A: Arch, F: TableMemory, K: Kernel>(
    domain: &D,
    mm: &AddressSpace<'_, A, F, K>,
    window: PageRange,
    iova_base: u64,
    f: &mut dyn FnMut(&dyn Bound) -> Outcome,
) -> Outcome {
    let manager = pin!(Subscription::new(IntervalNotifiers::new()));
    if let Err(e) = mm.notifiers().register(manager.as_ref()) {
        return Err(Failure::new(format_args!(
            "cannot register the interval notifiers: {e}"
        )));
    }
    let sub = pin!(IntervalSub::new(ShadowIommu::new(
        domain, window, iova_base
    )));
    if let Err(e) = manager
        .notifier()
        .insert(sub.as_ref(), window.start(), window.len())
    {
        return Err(Failure::new(format_args!(
            "cannot insert the driver's interval: {e}"
        )));
    }
    let bound = ShadowBound {
        sub: sub.as_ref(),
        mm,
    };
    f(&bound)
}
