//! Host threads as the kernel's CPUs (feature `std`): what the host tests,
//! the benchmarks and user-space programs embed.
//!
//! Each thread that enters a read-side section claims a [`ReaderSlot`] of
//! its own for as long as it lives, so slots are per task (plain increments,
//! and the core can tell whether the calling thread is inside a callback).
//! [`StdThreads`] orders readers with `membarrier(2)` on Linux (readers
//! fence nothing); [`StdThreadsFenced`] makes readers fence instead, for
//! hosts without it and to measure the difference. Under Miri, which has no
//! `membarrier`, `StdThreads` fences too.

extern crate std;

use std::cell::Cell;
use std::sync::Once;
use std::thread_local;

use super::{Kernel, ReaderSlot, Srcu};
// Real atomics: this embedding is for real threads, never loom's.
use core::sync::atomic::{
    AtomicBool, AtomicUsize,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};

/// Threads that may use read-side sections at once.
const SLOTS: usize = 256;

static READERS: [ReaderSlot; SLOTS] = [const { ReaderSlot::new() }; SLOTS];
/// [`StdThreadsFenced`]'s own counters: a domain counts only its readers.
static READERS_FENCED: [ReaderSlot; SLOTS] = [const { ReaderSlot::new() }; SLOTS];
static CLAIMED: [AtomicBool; SLOTS] = [const { AtomicBool::new(false) }; SLOTS];
/// One more than the highest slot ever claimed.
static HIGH_WATER: AtomicUsize = AtomicUsize::new(0);

const UNCLAIMED: usize = usize::MAX;

thread_local! {
    /// This thread's slot (`UNCLAIMED` until its first read-side section).
    static SLOT: Cell<usize> = const { Cell::new(UNCLAIMED) };
    /// Gives the slot back when the thread exits.
    static GIVE_BACK: SlotOwner = const { SlotOwner };
}

struct SlotOwner;

impl Drop for SlotOwner {
    fn drop(&mut self) {
        let slot = SLOT.replace(UNCLAIMED);
        if slot != UNCLAIMED {
            CLAIMED[slot].store(false, Release);
        }
    }
}

/// The calling thread's slot index, claiming one on first use.
#[inline(always)]
fn this_thread() -> usize {
    let slot = SLOT.get();
    if slot != UNCLAIMED {
        slot
    } else {
        claim()
    }
}

#[cold]
fn claim() -> usize {
    let slot = (0..SLOTS)
        .find(|&i| {
            CLAIMED[i]
                .compare_exchange(false, true, AcqRel, Relaxed)
                .is_ok()
        })
        .expect("more than 256 threads are inside notifier read-side sections at once");
    // Counted before our first section begins (Kernel condition 2): a
    // writer's scan that misses this store began before it, and then
    // missed our increments too, which the barrier or RMW argument covers.
    HIGH_WATER.fetch_max(slot + 1, AcqRel);
    SLOT.set(slot);
    // Registers the destructor; a thread already tearing down its locals
    // keeps the slot, which is only a leak of one slot.
    let _ = GIVE_BACK.try_with(|_| ());
    slot
}

fn wait(round: u32) {
    if round < 32 {
        core::hint::spin_loop();
    } else if round < 64 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}

/// `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`: a full barrier on every
/// CPU that runs a thread of this process.
#[cfg(all(target_os = "linux", not(miri)))]
fn membarrier() {
    const REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;
    const PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: `membarrier` takes (cmd, flags, cpu_id) and touches no
        // memory of ours.
        let r = unsafe { libc::syscall(libc::SYS_membarrier, REGISTER_PRIVATE_EXPEDITED, 0, 0) };
        assert_eq!(
            r,
            0,
            "membarrier registration failed: {}",
            std::io::Error::last_os_error()
        );
    });
    // SAFETY: as above.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, PRIVATE_EXPEDITED, 0, 0) };
    assert_eq!(
        r,
        0,
        "membarrier failed: {}",
        std::io::Error::last_os_error()
    );
}

/// Whether this build can use `membarrier`.
const HAS_MEMBARRIER: bool = cfg!(all(target_os = "linux", not(miri)));

/// Host threads as CPUs, with fence-free readers ordered by `membarrier`
/// (Linux; elsewhere and under Miri, readers fence).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StdThreads;

/// Host threads as CPUs, with readers that fence: the fallback for a
/// kernel that cannot fence every CPU, kept to measure it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StdThreadsFenced;

static SRCU: Srcu<StdThreads> = Srcu::new(&READERS);
static SRCU_FENCED: Srcu<StdThreadsFenced> = Srcu::new(&READERS_FENCED);

// SAFETY: 1. each thread owns the slot it claimed until it exits, so no two
// running threads share an index, and it is below `HIGH_WATER`;
// 2. `HIGH_WATER` only grows, and a thread raises it before its first
// section; 3. `membarrier(PRIVATE_EXPEDITED)` is a full barrier on every CPU
// running one of our threads, and a thread that is not running has passed a
// context switch (itself a full barrier); without it the const is false;
// 4. slots are per thread; 5. one static.
unsafe impl Kernel for StdThreads {
    type Rcu = Srcu<StdThreads>;
    #[inline(always)]
    fn rcu() -> &'static Srcu<StdThreads> {
        &SRCU
    }
    #[inline(always)]
    fn cpu_id() -> usize {
        this_thread()
    }
    fn nr_cpus() -> usize {
        HIGH_WATER.load(Acquire)
    }
    fn wait(round: u32) {
        wait(round);
    }
    const ASYMMETRIC_BARRIER: bool = HAS_MEMBARRIER;
    fn barrier_all_cpus() {
        #[cfg(all(target_os = "linux", not(miri)))]
        membarrier();
    }
    const READER_SLOT_PER_TASK: bool = true;
}

// SAFETY: as for `StdThreads`, over counters of its own (the thread's
// index is shared, the slots are not); 3. no barrier is promised.
unsafe impl Kernel for StdThreadsFenced {
    type Rcu = Srcu<StdThreadsFenced>;
    #[inline(always)]
    fn rcu() -> &'static Srcu<StdThreadsFenced> {
        &SRCU_FENCED
    }
    #[inline(always)]
    fn cpu_id() -> usize {
        this_thread()
    }
    fn nr_cpus() -> usize {
        HIGH_WATER.load(Acquire)
    }
    fn wait(round: u32) {
        wait(round);
    }
    const READER_SLOT_PER_TASK: bool = true;
}
