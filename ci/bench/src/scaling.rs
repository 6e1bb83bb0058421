//! Figure 7's measurement engine: `threads` threads call one operation on
//! one shared list in a timed loop, each counting its own calls.
//!
//! A measurement starts all threads together (each pinned to a CPU of its
//! own when asked), lets them run for a warm-up, then takes each thread's
//! count at a start signal and again at a stop signal; the time between
//! the two signals is the main thread's wall clock. A thread looks at the
//! signal once per [`BATCH`] calls, so a count is late by at most one
//! batch at either end, the same at both. Wall time, not CPU time: this is
//! meant for an otherwise idle machine, where throughput is what the
//! readers of a kernel would get.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use mmu_notifier_bench_params::scaling::Round;

/// Calls between two looks at the signal.
pub const BATCH: u64 = 64;

const WARM: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// How long each measurement runs.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// All threads calling, nothing counted.
    pub warmup: Duration,
    /// Counted.
    pub measure: Duration,
}

/// One thread's counts, alone on its cache lines so that counting does not
/// itself contend.
#[repr(align(128))]
#[derive(Default)]
struct Slot {
    start: AtomicU64,
    end: AtomicU64,
}

/// Runs `op` on `threads` threads at once and counts their calls; with
/// `cpus` not empty, thread `i` is pinned to `cpus[i % cpus.len()]`.
/// Returns the round and whether every thread could be pinned.
pub fn measure<F: Fn() + Sync>(
    op: &F,
    threads: usize,
    cpus: &[usize],
    timing: Timing,
) -> (Round, bool) {
    let phase = AtomicU8::new(WARM);
    let ready = AtomicUsize::new(0);
    let unpinned = AtomicUsize::new(0);
    let slots: Vec<Slot> = (0..threads).map(|_| Slot::default()).collect();
    let seconds = thread::scope(|s| {
        for (i, slot) in slots.iter().enumerate() {
            let (phase, ready, unpinned) = (&phase, &ready, &unpinned);
            s.spawn(move || {
                if !cpus.is_empty() && !pin_to(cpus[i % cpus.len()]) {
                    unpinned.fetch_add(1, Relaxed);
                }
                // Start together: nobody runs alone while the others are
                // still being created.
                ready.fetch_add(1, Relaxed);
                while ready.load(Relaxed) < threads {
                    std::hint::spin_loop();
                }
                let mut n = 0u64;
                let mut started = false;
                loop {
                    for _ in 0..BATCH {
                        op();
                    }
                    n += BATCH;
                    match phase.load(Relaxed) {
                        MEASURE if !started => {
                            slot.start.store(n, Relaxed);
                            started = true;
                        }
                        STOP => {
                            if !started {
                                slot.start.store(n, Relaxed);
                            }
                            slot.end.store(n, Relaxed);
                            break;
                        }
                        _ => {}
                    }
                }
            });
        }
        while ready.load(Relaxed) < threads {
            thread::sleep(Duration::from_millis(1));
        }
        thread::sleep(timing.warmup);
        let t0 = Instant::now();
        phase.store(MEASURE, Relaxed);
        thread::sleep(timing.measure);
        phase.store(STOP, Relaxed);
        t0.elapsed().as_secs_f64()
    });
    let calls = slots
        .iter()
        .map(|s| s.end.load(Relaxed) - s.start.load(Relaxed))
        .collect();
    (Round { seconds, calls }, unpinned.load(Relaxed) == 0)
}

/// The CPUs this process may run on, in order (empty if unknown).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is a plain bit array, for which all zeroes is the
    // empty set.
    let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
    // SAFETY: 1. pid 0 is the calling thread; 2. the size is that of `set`,
    // which is valid for writes for the whole call.
    let rc =
        unsafe { libc::sched_getaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    let max = 8 * core::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `cpu` is below the set's capacity in bits, and `set` was
    // filled in by the kernel above.
    (0..max)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Pins the calling thread to `cpu`; `false` if the kernel refused.
pub fn pin_to(cpu: usize) -> bool {
    if cpu >= 8 * core::mem::size_of::<libc::cpu_set_t>() {
        return false;
    }
    // SAFETY: cpu_set_t is a plain bit array, for which all zeroes is the
    // empty set.
    let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
    // SAFETY: `cpu` is below the set's capacity in bits (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: 1. pid 0 is the calling thread; 2. the size is that of `set`,
    // which is valid for reads for the whole call.
    unsafe { libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_counts_its_own_calls_between_the_signals() {
        let calls = AtomicU64::new(0);
        let op = || {
            calls.fetch_add(1, Relaxed);
        };
        let timing = Timing {
            warmup: Duration::from_millis(5),
            measure: Duration::from_millis(20),
        };
        let (round, _) = measure(&op, 2, &[], timing);
        assert_eq!(round.calls.len(), 2, "one count per thread");
        assert!(
            round.calls.iter().all(|&c| c > 0 && c % BATCH == 0),
            "each thread counted whole batches: {:?}",
            round.calls
        );
        let counted: u64 = round.calls.iter().sum();
        assert!(
            counted <= calls.load(Relaxed),
            "the measured calls are a part of all calls (warm-up excluded)"
        );
        assert!(
            round.seconds >= 0.02,
            "the measured time is at least the asked time"
        );
    }

    #[test]
    fn the_process_may_run_on_some_cpu() {
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty(), "sched_getaffinity names at least one CPU");
        assert!(pin_to(cpus[0]), "pinning to an allowed CPU succeeds");
    }
}
