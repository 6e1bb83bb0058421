//! What every reference secondary MMU keeps, and the oracle that judges it.
//!
//! [`ShadowMmu`](crate::shadow::ShadowMmu) (plain notifier) and
//! [`Device`](crate::device::Device) (interval notifier) differ only in
//! how they hear about invalidations. Both cache translations in a
//! [`Tlb`], record what they were told in a [`Log`], and are judged by the
//! same question, [`check_coherent`]: does any cached translation point to
//! a frame the primary tables no longer map there, or give more permission
//! than they do?

use core::fmt;

use mmu_notifier_core::Kernel;
use mmu_notifier_core::{AddressSpace, Arch, PhysAddr, TableMemory, VirtAddr};

/// One cached translation: a page, the frame it maps, and what the device
/// may do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// Page-aligned virtual address.
    pub page: u64,
    /// The frame (the 4 KiB piece of a huge leaf, for a page inside one).
    pub frame: PhysAddr,
    /// Whether the device may write through it.
    pub writable: bool,
    /// Used since the last aging (plain notifier only).
    pub accessed: bool,
}

/// A cached translation the primary tables contradict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stale {
    /// The page.
    pub va: VirtAddr,
    /// The frame the secondary MMU still translates it to.
    pub cached: PhysAddr,
    /// What the primary tables map there now, if anything.
    pub primary: Option<PhysAddr>,
}

impl fmt::Display for Stale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.primary {
            Some(p) => write!(
                f,
                "{} -> {} but the primary tables map it to {p}",
                self.va, self.cached
            ),
            None => write!(
                f,
                "{} -> {} but the primary tables do not map it",
                self.va, self.cached
            ),
        }
    }
}

/// What the primary tables give for `page`: the frame (inside a huge leaf:
/// the page's own piece of it) and whether it is writable.
pub fn primary<A: Arch, F: TableMemory, K: Kernel>(
    mm: &AddressSpace<'_, A, F, K>,
    page: u64,
) -> Option<(PhysAddr, bool)> {
    mm.translate(VirtAddr(page)).map(|(leaf, level)| {
        let span = level.entry_span();
        (
            PhysAddr(leaf.frame.0 + (page & (span - 1))),
            leaf.prot.writable(),
        )
    })
}

/// The oracle: every translation must match the primary tables (same
/// frame, no more permission).
///
/// # Errors
/// The first stale translation.
pub fn check_coherent<A: Arch, F: TableMemory, K: Kernel>(
    cached: impl IntoIterator<Item = Translation>,
    mm: &AddressSpace<'_, A, F, K>,
) -> Result<(), Stale> {
    for t in cached {
        match primary(mm, t.page) {
            Some((frame, w)) if frame == t.frame && (w || !t.writable) => {}
            other => {
                return Err(Stale {
                    va: VirtAddr(t.page),
                    cached: t.frame,
                    primary: other.map(|(frame, _)| frame),
                })
            }
        }
    }
    Ok(())
}

/// The device's translation cache: at most `N` pages, no allocation.
#[derive(Clone, Copy)]
pub struct Tlb<const N: usize> {
    slots: [Option<Translation>; N],
}

/// The cache is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl<const N: usize> Tlb<N> {
    /// An empty cache.
    pub const fn new() -> Self {
        Self { slots: [None; N] }
    }

    /// The translation of `page`, if cached.
    pub fn get(&self, page: u64) -> Option<&Translation> {
        self.slots.iter().flatten().find(|t| t.page == page)
    }

    /// The translation of `page`, if cached, to update.
    pub fn get_mut(&mut self, page: u64) -> Option<&mut Translation> {
        self.slots.iter_mut().flatten().find(|t| t.page == page)
    }

    /// Caches `t`, replacing an older translation of the same page.
    ///
    /// # Errors
    /// [`Full`] when every slot holds another page.
    pub fn install(&mut self, t: Translation) -> Result<(), Full> {
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.is_none_or(|old| old.page == t.page))
            .ok_or(Full)?;
        *slot = Some(t);
        Ok(())
    }

    /// Drops every translation whose page `drop` selects.
    pub fn drop_where(&mut self, mut drop: impl FnMut(u64) -> bool) {
        for slot in &mut self.slots {
            if slot.is_some_and(|t| drop(t.page)) {
                *slot = None;
            }
        }
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.slots = [None; N];
    }

    /// How many translations are cached.
    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every cached translation.
    pub fn iter(&self) -> impl Iterator<Item = Translation> + '_ {
        self.slots.iter().flatten().copied()
    }
}

impl<const N: usize> Default for Tlb<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// The first `N` events a device received, and how many there were.
#[derive(Clone, Copy)]
pub struct Log<T: Copy, const N: usize> {
    events: [Option<T>; N],
    count: usize,
}

impl<T: Copy, const N: usize> Log<T, N> {
    /// An empty log.
    pub const fn new() -> Self {
        Self {
            events: [None; N],
            count: 0,
        }
    }

    /// Records `event` (counted even when the log is full).
    pub fn push(&mut self, event: T) {
        if let Some(slot) = self.events.get_mut(self.count) {
            *slot = Some(event);
        }
        self.count += 1;
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        *self = Self::new();
    }

    /// The kept events, oldest first, and how many were received in all.
    pub fn snapshot(&self) -> ([Option<T>; N], usize) {
        (self.events, self.count)
    }
}

impl<T: Copy, const N: usize> Default for Log<T, N> {
    fn default() -> Self {
        Self::new()
    }
}
