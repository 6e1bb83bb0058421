//! The notifier step: the arch primitive, then the secondary MMUs.
//!
//! These wrappers are the only way from a cleared or aged entry to a
//! reusable frame. They are free functions over any [`Arch`], not trait
//! methods, so no arch can override them: the 2008 seed lost aging on s390
//! because its `ptep_clear_flush_young` override bypassed the generic
//! macro that called the notifier (Linux's later `*_notify` wrappers fixed
//! that; this module is the same fix, enforced by the type system).
//!
//! Order, as in Linux: clear the entry, purge the CPU TLBs, tell the
//! secondary MMUs, and only then hand the frame back.

use crate::addr::{PageRange, PhysAddr, VirtAddr};
use crate::arch::{Arch, Entry, Flushed, Leaf, PteSlot};
use crate::notifier::{Callbacks, NotifierHead};

/// A frame that no CPU and no secondary MMU translates to any more, through
/// the mapping that was just removed: the caller may free or reuse it (if
/// no other mapping of it remains, which is the caller's bookkeeping).
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[must_use = "a frame unmapped everywhere: free it or keep it, but do not lose it"]
pub struct Reusable {
    frame: PhysAddr,
    leaf: Leaf,
}

impl Reusable {
    /// Built only by this crate, after the CPU flush and the notifier step.
    pub(crate) fn new(leaf: Leaf) -> Self {
        Self {
            frame: leaf.frame,
            leaf,
        }
    }
    /// The frame.
    pub fn frame(&self) -> PhysAddr {
        self.frame
    }
    /// The removed entry (final accessed/dirty state: a dirty page must be
    /// written back before its frame is reused).
    pub fn leaf(&self) -> Leaf {
        self.leaf
    }
    /// Consumes the token, giving the frame.
    pub fn into_frame(self) -> PhysAddr {
        self.frame
    }
}

/// Clears a live leaf, purges the CPU TLBs, then calls `invalidate_page`
/// (and `invalidate_pages` for the span of a huge leaf) on every notifier.
/// Returns the frame once all of them have let go, or `None` if the entry
/// was not a leaf.
///
/// # Safety
/// As [`Arch::ptep_get_and_clear`]; `head` is the notifier head of the
/// address space the slot belongs to.
#[inline]
pub unsafe fn ptep_clear_flush_notify<A: Arch>(
    arch: &A,
    head: &NotifierHead,
    slot: &PteSlot<'_>,
) -> Option<Reusable> {
    // SAFETY: forwarded contract.
    let flushed = unsafe { arch.ptep_clear_flush(slot) };
    // The idle cost: one load and one branch. Range-only notifiers were
    // told at the range's start: nothing to do per page for them.
    if NOTIFY && head.wants(PER_PAGE) {
        notify_cleared::<A>(head, slot.va(), slot.level());
    }
    match A::decode(slot.level(), flushed.old()) {
        Entry::Leaf(leaf) => Some(Reusable::new(leaf)),
        _ => None,
    }
}

/// The callbacks a cleared page is reported to.
const PER_PAGE: Callbacks = Callbacks::INVALIDATE_PAGE.union(Callbacks::SECONDARY_TLB);

/// The notifier step of [`ptep_clear_flush_notify`], out of line so the
/// idle path stays one load and one branch.
#[cold]
#[inline(never)]
fn notify_cleared<A: Arch>(head: &NotifierHead, va: VirtAddr, level: usize) {
    let span = leaf_range::<A>(va, level);
    if let Some(span) = span {
        head.invalidate_secondary_tlbs(span);
    }
    head.invalidate_page(va);
    if level + 1 < A::LEVELS.len() {
        // A huge leaf: the seed's per-address call would leave the rest of
        // the span cached in a secondary MMU that maps at base-page size.
        if let Some(span) = span {
            head.invalidate_pages(span);
        }
    }
}

/// Replaces a live leaf with `new` (same frame, no more permission: a
/// write-protect or an mprotect downgrade), purges the CPU TLBs, then runs
/// the synchronous secondary-TLB hook. The per-range notifier calls of the
/// call sites (`invalidate_pages`, start/end) are the caller's.
///
/// # Safety
/// As [`Arch::ptep_modify`]; `head` is the notifier head of the address
/// space the slot belongs to.
#[inline]
pub unsafe fn ptep_modify_flush_notify<A: Arch>(
    arch: &A,
    head: &NotifierHead,
    slot: &PteSlot<'_>,
    new: u64,
) -> Flushed {
    // SAFETY: forwarded contract.
    let flushed = unsafe { arch.ptep_modify(slot, new) }.flush();
    if NOTIFY && head.wants(Callbacks::SECONDARY_TLB) {
        notify_modified::<A>(head, slot.va(), slot.level());
    }
    flushed
}

#[cold]
#[inline(never)]
fn notify_modified<A: Arch>(head: &NotifierHead, va: VirtAddr, level: usize) {
    if let Some(span) = leaf_range::<A>(va, level) {
        head.invalidate_secondary_tlbs(span);
    }
}

/// Tests and clears the accessed state of a live leaf through the arch
/// (which flushes if it must), then ORs in every notifier's
/// `clear_flush_young` over the leaf's span (the seed's `age_page` by
/// default): young if the CPU or any secondary MMU used the page since the
/// last call.
///
/// # Safety
/// As [`Arch::ptep_test_and_clear_young`]; `head` is the notifier head of
/// the address space the slot belongs to.
#[inline(always)]
pub unsafe fn ptep_clear_flush_young_notify<A: Arch>(
    arch: &A,
    head: &NotifierHead,
    slot: &PteSlot<'_>,
) -> bool {
    // SAFETY: forwarded contract.
    let young = unsafe { arch.ptep_clear_flush_young(slot) };
    if NOTIFY && head.wants(Callbacks::AGE) {
        // Not short-circuited on `young`: every secondary MMU must clear
        // its state too.
        age_notifiers::<A>(head, slot.va(), slot.level()) | young
    } else {
        young
    }
}

#[cold]
#[inline(never)]
fn age_notifiers<A: Arch>(head: &NotifierHead, va: VirtAddr, level: usize) -> bool {
    leaf_range::<A>(va, level).is_some_and(|span| head.clear_flush_young(span))
}

/// The addresses a leaf at `slot` translates.
pub(crate) fn leaf_range<A: Arch>(va: VirtAddr, level: usize) -> Option<PageRange> {
    let span = A::LEVELS[level].entry_span();
    PageRange::new(va, va.checked_add(span)?, A::PAGE_SIZE).ok()
}

/// Whether the notifier step runs. Only deliberately broken test builds
/// (`--cfg mmu_notifier_broken="no-notify"`, never a real build) turn it
/// off, so the negative checks can prove the suites then fail.
pub(crate) const NOTIFY: bool = !cfg!(mmu_notifier_broken = "no-notify");
