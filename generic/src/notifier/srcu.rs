//! Sleepable read-copy-update with two counters, after Linux's SRCU.
//!
//! Readers add one to the counter of the current epoch, walk, and take it
//! away again; they never wait, and may block while inside. A grace period
//! flips the epoch and waits for the old counter to drain, twice: the flip
//! sends new readers to the other counter so a stream of readers cannot
//! starve the writer, and the second round catches a reader that read the
//! epoch just before a flip.
//!
//! All accesses are sequentially consistent: the proof below needs a single
//! order in which a writer's unlink comes before its counter checks.
//!
//! *Why it is enough:* a writer unlinks a node, then (in the total order)
//! reads both counters until it sees each at zero. A reader whose increment
//! comes after the writer's zero-read of that counter also reads the list
//! after the unlink, so it cannot reach the node. A reader whose increment
//! comes before keeps the counter above zero until it leaves. Either way no
//! reader holds the node when `synchronize` returns.
//!
//! The writer accepts a zero only from a read-modify-write
//! (`fetch_add(0)`), which makes the same argument hold with
//! acquire/release alone, without the SeqCst total order: an RMW reads the
//! latest value, so either it sees the reader's increment (and waits for
//! the decrement, which then happens-before the writer goes on), or the
//! reader's increment reads from it and the writer's unlink happens-before
//! the reader's walk. This keeps the proof local to this file (it no
//! longer needs every list access in `head.rs` to be SeqCst) and lets loom,
//! which models SeqCst loads and stores as acquire/release only, check it.
//! Readers pay nothing for it; the writer polls with plain loads first.

use crate::sync::{spin_loop, AtomicUsize, Ordering::SeqCst, RawSpinLock};

pub(crate) struct Srcu {
    epoch: CacheLine<AtomicUsize>,
    readers: [CacheLine<AtomicUsize>; 2],
    writer: RawSpinLock,
}

/// Keeps a hot word on a cache line of its own, so a writer polling one
/// counter, or flipping the epoch, does not steal the line a reader is
/// incrementing (128 bytes: adjacent-line prefetchers pair lines).
#[repr(align(128))]
struct CacheLine<T>(T);

impl<T> core::ops::Deref for CacheLine<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl Srcu {
    pub(crate) fn new() -> Self {
        Self {
            epoch: CacheLine(AtomicUsize::new(0)),
            readers: [
                CacheLine(AtomicUsize::new(0)),
                CacheLine(AtomicUsize::new(0)),
            ],
            writer: RawSpinLock::new(),
        }
    }

    /// Enters a read-side section; it lasts until the guard is dropped.
    #[inline]
    pub(crate) fn read_lock(&self) -> SrcuReadGuard<'_> {
        let idx = self.epoch.load(SeqCst) & 1;
        self.readers[idx].fetch_add(1, SeqCst);
        SrcuReadGuard { srcu: self, idx }
    }

    /// Waits until every read-side section that began before this call has
    /// ended.
    pub(crate) fn synchronize(&self) {
        // Deliberately broken test builds (never a real one) skip the grace
        // period, so the SMP suites can prove they catch its absence.
        if cfg!(mmu_notifier_broken = "no-grace") {
            return;
        }
        let _serialise = self.writer.lock();
        for _ in 0..2 {
            let old = self.epoch.load(SeqCst) & 1;
            self.epoch.store(old ^ 1, SeqCst);
            // Poll with plain loads (readers keep the line shared), but
            // accept zero only from a read-modify-write: see the module docs.
            // Back off between polls, so a stream of readers is not slowed
            // by the writer's traffic on their counter.
            let mut pause = 1u32;
            while self.readers[old].load(SeqCst) != 0 || self.readers[old].fetch_add(0, SeqCst) != 0
            {
                for _ in 0..pause {
                    spin_loop();
                }
                pause = (pause * 2).min(1024);
            }
        }
    }
}

/// An open SRCU read-side section.
pub(crate) struct SrcuReadGuard<'a> {
    srcu: &'a Srcu,
    idx: usize,
}

impl Drop for SrcuReadGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.srcu.readers[self.idx].fetch_sub(1, SeqCst);
    }
}
