//! [`Srcu`]: sleepable read-copy-update with per-CPU reader counters, after
//! Linux's SRCU (2006, per-CPU since 2017) and its fence-free readers
//! (SRCU-lite and SRCU-fast, 2024–2025).
//!
//! # The read side writes no shared cache line
//! Each CPU has a [`ReaderSlot`] on a cache line of its own, with a lock and
//! an unlock counter per epoch. A reader reads the epoch (a line every CPU
//! only reads), adds one to its CPU's lock counter, walks, and later adds
//! one to the unlock counter of the CPU it is on then (it may have
//! migrated). Nothing a reader writes is written by another CPU, so
//! invalidations on many CPUs never bounce a line between them.
//!
//! # Grace periods
//! A writer (register, unregister, release: rare) waits until, for one
//! epoch, the sum of the unlock counters equals the sum of the lock
//! counters, reading the unlocks first: a reader whose unlock it counts has
//! a lock it counts too (the unlock is a release store, the scan an acquire
//! load), so equal sums mean every counted reader has left. It drains the
//! idle epoch, flips the epoch so new readers go to the other counters (a
//! stream of readers cannot starve it), and drains the old one.
//!
//! A reader the scan does not count must see what the writer did before
//! the grace period (the unlinked node). Either side can pay for that:
//! - **Readers fence** (default): the lock increment is a sequentially
//!   consistent read-modify-write, and the writer confirms a zero with a
//!   read-modify-write of each lock counter. An RMW reads the latest value,
//!   so either the writer's RMW sees the reader's increment, or the
//!   reader's increment reads from the writer's RMW and the writer's unlink
//!   happens-before the reader's walk. This argument needs only
//!   acquire/release, which is what loom checks.
//! - **The writer fences every CPU** ([`Kernel::ASYMMETRIC_BARRIER`]):
//!   readers use plain increments with only a compiler fence, and the
//!   writer calls [`Kernel::barrier_all_cpus`] after its unlink and before
//!   its scans. On each CPU the barrier lands at some point of the reader:
//!   after its increment (then the scan counts it) or before its walk
//!   (then the walk sees the unlink). Readers pay nothing; a grace period
//!   pays one barrier on every CPU.
//!
//! With [`Kernel::READER_SLOT_PER_TASK`] the increments are a load and a
//! store (no locked instruction), and a slot's lock minus unlock is the
//! running task's own nesting depth, which lets the core refuse a
//! registration change made from inside a callback.
//!
//! Counters wrap; only differences matter, and 2^64 nested readers do not
//! exist.

use core::marker::PhantomData;
use core::sync::atomic::compiler_fence;

use super::{Kernel, Rcu, ReadToken};
use crate::sync::{
    loom_const_fn, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
    RawSpinLock,
};

/// One CPU's reader counters, on a cache line of its own (128 bytes:
/// adjacent-line prefetchers pair lines).
///
/// A kernel keeps an array of these, one per CPU, in a `static` (or in its
/// per-CPU areas) and hands it to [`Srcu::new`].
#[repr(align(128))]
pub struct ReaderSlot {
    lock: [AtomicUsize; 2],
    unlock: [AtomicUsize; 2],
}

impl ReaderSlot {
    loom_const_fn! {
        /// A slot with no reader.
        pub fn new() -> ReaderSlot {
            ReaderSlot {
                lock: [AtomicUsize::new(0), AtomicUsize::new(0)],
                unlock: [AtomicUsize::new(0), AtomicUsize::new(0)],
            }
        }
    }

    /// How many read-side sections were entered on this CPU, ever
    /// (wrapping): for a kernel's diagnostics and the tests that check a
    /// reader writes only its own CPU's slot.
    pub fn entered(&self) -> usize {
        self.lock[0]
            .load(Relaxed)
            .wrapping_add(self.lock[1].load(Relaxed))
    }

    /// How many read-side sections were left on this CPU, ever (wrapping).
    pub fn left(&self) -> usize {
        self.unlock[0]
            .load(Relaxed)
            .wrapping_add(self.unlock[1].load(Relaxed))
    }

    /// Readers of this slot still inside a section of either epoch.
    fn depth(&self) -> usize {
        let locks = self.lock[0]
            .load(Relaxed)
            .wrapping_add(self.lock[1].load(Relaxed));
        let unlocks = self.unlock[0]
            .load(Relaxed)
            .wrapping_add(self.unlock[1].load(Relaxed));
        locks.wrapping_sub(unlocks)
    }
}

impl Default for ReaderSlot {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for ReaderSlot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReaderSlot")
            .field("depth", &self.depth())
            .finish()
    }
}

/// Keeps a word on a cache line of its own.
#[repr(align(128))]
struct CacheLine<T>(T);

/// What every reader reads and only a grace period writes: one cache line.
struct ReadMostly {
    /// The current epoch's parity selects the counters new readers use.
    epoch: AtomicUsize,
    slots: &'static [ReaderSlot],
}

/// Per-CPU sleepable RCU over a [`Kernel`]'s hooks (see the module docs
/// of [`kernel`](super) for how a kernel sets one up).
pub struct Srcu<K> {
    shared: CacheLine<ReadMostly>,
    /// Serialises grace periods (on a line of its own: readers never
    /// touch it).
    writer: RawSpinLock,
    _kernel: PhantomData<fn() -> K>,
}

impl<K> core::fmt::Debug for Srcu<K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Srcu")
            .field("slots", &self.shared.0.slots.len())
            .finish_non_exhaustive()
    }
}

impl<K: Kernel> Srcu<K> {
    loom_const_fn! {
        /// A domain whose readers count in `slots`, indexed by
        /// [`Kernel::cpu_id`] (it needs at least [`Kernel::nr_cpus`]
        /// slots; a CPU without one panics on entry, it is never unsafe).
        pub fn new(slots: &'static [ReaderSlot]) -> Srcu<K> {
            Srcu {
                shared: CacheLine(ReadMostly {
                    epoch: AtomicUsize::new(0),
                    slots,
                }),
                writer: RawSpinLock::new(),
                _kernel: PhantomData,
            }
        }
    }

    /// The running CPU's slot.
    #[inline(always)]
    fn this_cpu(&self) -> &ReaderSlot {
        &self.shared.0.slots[K::cpu_id()]
    }

    /// Adds one to a counter of the running CPU's slot.
    #[inline(always)]
    fn bump(counter: &AtomicUsize, order: crate::sync::Ordering) {
        if K::READER_SLOT_PER_TASK {
            // Nobody else writes this slot while we are in (Kernel
            // condition 4): a load and a store, no locked instruction.
            counter.store(counter.load(Relaxed).wrapping_add(1), order);
        } else {
            counter.fetch_add(1, order);
        }
    }

    /// Waits until every reader counted in epoch `idx` has left.
    fn drain(&self, idx: usize) {
        let all = self.shared.0.slots;
        let slots = &all[..K::nr_cpus().min(all.len())];
        let mut round = 0u32;
        loop {
            // Unlocks first: a counted unlock (a release store read by an
            // acquire load) brings its lock with it.
            let unlocks = slots.iter().fold(0usize, |sum, s| {
                sum.wrapping_add(s.unlock[idx].load(Acquire))
            });
            let locks = slots
                .iter()
                .fold(0usize, |sum, s| sum.wrapping_add(s.lock[idx].load(Acquire)));
            if locks == unlocks {
                if K::ASYMMETRIC_BARRIER {
                    // The barrier before the scan covers readers not counted.
                    return;
                }
                // Readers fence: accept the sums only from read-modify-writes
                // of the lock counters (module docs). Polling above used
                // plain loads so as not to steal the readers' lines.
                let confirmed = slots.iter().fold(0usize, |sum, s| {
                    sum.wrapping_add(s.lock[idx].fetch_add(0, SeqCst))
                });
                if confirmed == unlocks {
                    return;
                }
            }
            K::wait(round);
            round = round.saturating_add(1);
        }
    }
}

// SAFETY: 1. `drain` returns for an epoch only once the unlock sum equals
// the lock sum, read unlocks first with acquire loads of release stores, so
// every counted reader has left and its section happens-before the return;
// `synchronize` drains both epochs. 2. A reader not counted by a drain
// observes the writer's earlier writes: with readers fencing, through the
// RMW argument of the module docs; with `ASYMMETRIC_BARRIER`, through the
// barrier that precedes every scan (Kernel condition 3). 3. Tokens carry the
// epoch, not the slot: a reader may leave on another CPU, and counts are
// sums, so nesting and sleeping are fine. 4. `task_is_reading` answers only
// with per-task slots (Kernel condition 4), where the slot's depth is the
// task's own.
unsafe impl<K: Kernel> Rcu for Srcu<K> {
    #[inline(always)]
    fn read_lock(&self) -> ReadToken {
        let idx = self.shared.0.epoch.load(Relaxed) & 1;
        let slot = self.this_cpu();
        if K::ASYMMETRIC_BARRIER {
            Self::bump(&slot.lock[idx], Relaxed);
            // The grace period's barrier orders this increment before the
            // walk on our behalf; the compiler must not reorder it either.
            compiler_fence(SeqCst);
        } else {
            slot.lock[idx].fetch_add(1, SeqCst);
        }
        // With per-task slots the task leaves on the CPU it entered on
        // (Kernel condition 4): the token remembers the slot itself (128-byte
        // aligned, so the epoch fits in bit 0).
        ReadToken::new(if K::READER_SLOT_PER_TASK {
            core::ptr::from_ref(slot).expose_provenance() | idx
        } else {
            idx
        })
    }

    #[inline(always)]
    unsafe fn read_unlock(&self, token: ReadToken) {
        if K::ASYMMETRIC_BARRIER {
            compiler_fence(SeqCst);
        }
        let slot = if K::READER_SLOT_PER_TASK {
            let at = core::ptr::with_exposed_provenance::<ReaderSlot>(token.value() & !1);
            // SAFETY: the token came from `read_lock` of this domain (our
            // caller's contract), which stored there the address of one of
            // our `'static` slots, exposed.
            unsafe { &*at }
        } else {
            // The reader may have migrated: count it where it is now.
            self.this_cpu()
        };
        // Release: everything done in the section happens-before a drain
        // that counts this unlock.
        Self::bump(&slot.unlock[token.value() & 1], Release);
    }

    fn synchronize(&self) {
        // Deliberately broken test builds (never a real one) skip the grace
        // period, so the SMP suites can prove they catch its absence.
        if cfg!(mmu_notifier_broken = "no-grace") {
            return;
        }
        let _serialise = self.writer.lock_with(K::wait);
        if K::ASYMMETRIC_BARRIER {
            K::barrier_all_cpus();
        }
        let current = self.shared.0.epoch.load(Relaxed) & 1;
        // Readers that read the epoch before the last flip may still be in
        // the idle counters: drain those first, then send new readers there
        // and drain the counters they had been using.
        self.drain(current ^ 1);
        self.shared.0.epoch.fetch_add(1, Relaxed);
        self.drain(current);
    }

    fn task_is_reading(&self) -> Option<bool> {
        K::READER_SLOT_PER_TASK.then(|| self.this_cpu().depth() != 0)
    }
}
