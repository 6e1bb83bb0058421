//! The notifier step: the arch primitive, then the secondary MMUs.
//!
//! These wrappers are the only way from a cleared or aged entry to a
//! reusable frame. They are free functions over any [`Arch`], not trait
//! methods, so no arch can override them: the 2008 patch lost aging on s390
//! because its `ptep_clear_flush_young` override bypassed the generic
//! macro that called the notifier (Linux's later `*_notify` wrappers fixed
//! that; this module is the same fix, enforced by the type system).
//!
//! Order, as in Linux: clear the entry, purge the CPU TLBs, tell the
//! secondary MMUs, and only then hand the frame back.
//!
//! # What each helper does, and what is left to the caller
//! | helper | does | the caller still |
//! |---|---|---|
//! | [`ptep_clear_flush_notify`] | checks the leaf lies in the open range; clears it; flushes the CPU TLBs; `invalidate_secondary_tlbs` and `invalidate_page` (plus `invalidate_pages` over a huge leaf) | frees or keeps the [`Reusable`] frame; ends the range |
//! | [`ptep_modify_flush_notify`] | checks the leaf lies in the open range; changes its permissions (never making a copy-on-write leaf writable); flushes; `invalidate_secondary_tlbs` if it lost a permission | sends `invalidate_pages` for the whole range after its loop (per-page notifiers); ends the range |
//! | [`ptep_wrprotect_cow_notify`] | as `ptep_modify_flush_notify`, write-protecting and marking the leaf copy-on-write (fork) | as above |
//! | [`ptep_clear_flush_young_notify`] | tests and clears the accessed state (flushing if the arch must); ORs in every notifier's `clear_flush_young` | nothing (no range needed: aging changes no translation) |
//!
//! Range and interval notifiers hear nothing from these helpers: they heard
//! the start of the range the helpers take, and hear its end. That is why
//! the clearing and downgrading helpers take the open [`RangeGuard`]: a
//! frame can only come back from inside a range that was announced.

use crate::arch::{Arch, Entry, Flushed, Leaf, Prot, PteSlot};
use crate::error::Error;
use crate::kernel::Kernel;
use crate::notifier::{Callbacks, NotifierHead, RangeGuard};
use crate::PageRange;
use crate::PhysAddr;

/// A frame that no CPU and no secondary MMU translates to any more, through
/// the mapping that was just removed: the caller may free or reuse it (if
/// no other mapping of it remains, which is the caller's bookkeeping).
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[must_use = "a frame unmapped everywhere: free it or keep it, but do not lose it"]
pub struct Reusable {
    leaf: Leaf,
}

impl Reusable {
    /// Built only by this crate, after the CPU flush and the notifier step.
    pub(crate) fn new(leaf: Leaf) -> Self {
        Self { leaf }
    }
    /// The frame.
    pub fn frame(&self) -> PhysAddr {
        self.leaf.frame
    }
    /// The removed entry (final accessed/dirty state: a dirty page must be
    /// written back before its frame is reused).
    pub fn leaf(&self) -> Leaf {
        self.leaf
    }
    /// Consumes the token, giving the frame.
    pub fn into_frame(self) -> PhysAddr {
        self.leaf.frame
    }
}

/// The leaf in `slot`, if the open range announced every address it maps.
///
/// # Errors
/// [`Error::NotAnnounced`] if the slot's span is not inside the range;
/// [`Error::NotALeaf`] if the entry is not a valid leaf.
fn announced_leaf<A: Arch, K: Kernel>(
    guard: &RangeGuard<'_, K>,
    slot: &PteSlot<'_, A>,
) -> Result<(Leaf, PageRange), Error> {
    let span = slot.span();
    let announced = guard.range().range;
    if span.start() < announced.start() || span.end() > announced.end() {
        return Err(Error::NotAnnounced { addr: slot.va().0 });
    }
    match slot.leaf() {
        Some(leaf) => Ok((leaf, span)),
        None => Err(Error::NotALeaf { addr: slot.va().0 }),
    }
}

/// Clears the live leaf in `slot`, purges the CPU TLBs, then calls
/// `invalidate_secondary_tlbs` and `invalidate_page` (and
/// `invalidate_pages` over the span of a huge leaf) on every notifier.
/// Returns the frame once all of them have let go.
///
/// Range and interval notifiers were told at `guard`'s start; this checks
/// that the leaf lies in that range, so no frame comes back that they were
/// not told about.
///
/// # Safety
/// 1. As [`Arch::ptep_get_and_clear`] 2.: nothing the running code needs
///    is mapped by the leaf (the slot's own contract covers the rest);
/// 2. `guard` is an open range of the notifier head of the address space
///    the slot belongs to.
///
/// # Errors
/// Nothing is changed, and [`Error::NotAnnounced`] is returned, if the
/// leaf's span is not inside `guard`'s range; [`Error::NotALeaf`] if the
/// entry is not a valid leaf (a table, or already cleared).
#[inline]
#[must_use = "the frame comes back only once: free it or keep it"]
pub unsafe fn ptep_clear_flush_notify<A: Arch, K: Kernel>(
    arch: &A,
    guard: &RangeGuard<'_, K>,
    slot: &PteSlot<'_, A>,
) -> Result<Reusable, Error> {
    let (before, span) = announced_leaf(guard, slot)?;
    // SAFETY: 1. the entry is a valid leaf (checked above, under the slot's
    // page-table lock); 2. this function's condition 1.
    let flushed = unsafe { arch.ptep_clear_flush(slot) };
    let head = guard.head();
    // The idle cost: one load and one branch. Range-only notifiers were
    // told at the range's start: nothing to do per page for them.
    if NOTIFY && head.wants(PER_PAGE) {
        notify_cleared(head, span, !slot.level().is_last());
    }
    // The old word carries the final accessed/dirty bits.
    let leaf = match A::decode(slot.level(), flushed.old()) {
        Entry::Leaf(leaf) => leaf,
        _ => before,
    };
    Ok(Reusable::new(leaf))
}

/// The callbacks a cleared page is reported to.
const PER_PAGE: Callbacks = Callbacks::INVALIDATE_PAGE.union(Callbacks::SECONDARY_TLB);

/// The notifier step of [`ptep_clear_flush_notify`], out of line so the
/// idle path stays one load and one branch.
#[cold]
#[inline(never)]
fn notify_cleared<K: Kernel>(head: &NotifierHead<K>, span: PageRange, huge: bool) {
    head.invalidate_secondary_tlbs(span);
    head.invalidate_page(span.start());
    if huge {
        // One call per address would leave the rest of the span cached in
        // a secondary MMU that maps at base-page size.
        head.invalidate_pages(span);
    }
}

/// Changes the permissions of the live leaf in `slot` to `prot` (same
/// frame), purges the CPU TLBs, then, if the leaf lost a permission, runs
/// the synchronous secondary-TLB hook. A leaf that only gains permissions
/// needs no secondary invalidation: a secondary MMU that holds fewer
/// faults and refetches. The per-range calls of the call sites
/// (`invalidate_pages`, the range end) are the caller's.
///
/// # Safety
/// 1. `guard` is an open range of the notifier head of the address space
///    the slot belongs to.
///
/// # Errors
/// Nothing is changed on error: [`Error::NotAnnounced`] and
/// [`Error::NotALeaf`] as [`ptep_clear_flush_notify`];
/// [`Error::CopyOnWrite`] if `prot` is writable and the leaf is shared
/// copy-on-write (it must be copied, not made writable in place).
#[inline]
pub unsafe fn ptep_modify_flush_notify<A: Arch, K: Kernel>(
    arch: &A,
    guard: &RangeGuard<'_, K>,
    slot: &PteSlot<'_, A>,
    prot: Prot,
) -> Result<Flushed, Error> {
    let (leaf, span) = announced_leaf(guard, slot)?;
    if leaf.cow && prot.writable() {
        return Err(Error::CopyOnWrite { addr: slot.va().0 });
    }
    let new = A::leaf_with_prot(slot.level(), slot.read(), prot);
    // SAFETY: 1. this function's condition 1.; the rest: the leaf is valid
    // (checked) and `new` changes only its permissions.
    unsafe {
        modify(
            arch,
            guard,
            slot,
            span,
            new,
            leaf.prot.is_downgrade_to(prot),
        )
    }
}

/// Write-protects the live leaf in `slot` and marks it copy-on-write (what
/// fork does to a private mapping's pages), purges the CPU TLBs and runs
/// the secondary-TLB hook, as [`ptep_modify_flush_notify`].
///
/// # Safety
/// As [`ptep_modify_flush_notify`].
///
/// # Errors
/// As [`ptep_modify_flush_notify`], without `CopyOnWrite`.
#[inline]
pub unsafe fn ptep_wrprotect_cow_notify<A: Arch, K: Kernel>(
    arch: &A,
    guard: &RangeGuard<'_, K>,
    slot: &PteSlot<'_, A>,
) -> Result<Flushed, Error> {
    let (leaf, span) = announced_leaf(guard, slot)?;
    let prot = leaf.prot.difference(Prot::WRITE);
    let new = A::leaf_with_cow(
        slot.level(),
        A::leaf_with_prot(slot.level(), slot.read(), prot),
        true,
    );
    // SAFETY: as in `ptep_modify_flush_notify`; `new` changes only the
    // permissions and the copy-on-write mark.
    unsafe { modify(arch, guard, slot, span, new, leaf.prot.writable()) }
}

/// # Safety
/// 1. The slot's entry is a valid leaf and `new` is it with only its
///    permissions or copy-on-write mark changed;
/// 2. `guard` is an open range of the slot's address space's head.
unsafe fn modify<A: Arch, K: Kernel>(
    arch: &A,
    guard: &RangeGuard<'_, K>,
    slot: &PteSlot<'_, A>,
    span: PageRange,
    new: u64,
    downgrade: bool,
) -> Result<Flushed, Error> {
    // SAFETY: `ptep_modify`'s 1. and 2. are our 1.
    let flushed = unsafe { arch.ptep_modify(slot, new) }.flush();
    let head = guard.head();
    if NOTIFY && downgrade && head.wants(Callbacks::SECONDARY_TLB) {
        notify_modified(head, span);
    }
    Ok(flushed)
}

#[cold]
#[inline(never)]
fn notify_modified<K: Kernel>(head: &NotifierHead<K>, span: PageRange) {
    head.invalidate_secondary_tlbs(span);
}

/// Tests and clears the accessed state of the live leaf in `slot` through
/// the arch (which flushes if it must), then ORs in every notifier's
/// `clear_flush_young` over the leaf's span (`age_page` by default): young
/// if the CPU or any secondary MMU used the page since the last call.
///
/// # Safety
/// 1. `head` is the notifier head of the address space the slot belongs to.
///
/// # Errors
/// [`Error::NotALeaf`] if the entry is not a valid leaf.
#[inline(always)]
pub unsafe fn ptep_clear_flush_young_notify<A: Arch, K: Kernel>(
    arch: &A,
    head: &NotifierHead<K>,
    slot: &PteSlot<'_, A>,
) -> Result<bool, Error> {
    if slot.leaf().is_none() {
        return Err(Error::NotALeaf { addr: slot.va().0 });
    }
    // SAFETY: the slot's entry is a valid leaf (checked, under the slot's
    // page-table lock).
    let young = unsafe { arch.ptep_clear_flush_young(slot) };
    if NOTIFY && head.wants(Callbacks::AGE) {
        // Not short-circuited on `young`: every secondary MMU must clear
        // its state too.
        Ok(age_notifiers(head, slot.span()) | young)
    } else {
        Ok(young)
    }
}

#[cold]
#[inline(never)]
fn age_notifiers<K: Kernel>(head: &NotifierHead<K>, span: PageRange) -> bool {
    head.clear_flush_young(span)
}

/// Whether the notifier step runs: the per-page calls here, and the range
/// pair the head delivers. Only deliberately broken test builds
/// (`--cfg mmu_notifier_broken="no-notify"`, never a real build) turn it
/// off, so the negative checks can prove the suites then fail (the range
/// pair included, so that drivers that rely on it alone are caught too).
/// `release` is not part of it.
pub(crate) const NOTIFY: bool = !cfg!(mmu_notifier_broken = "no-notify");
