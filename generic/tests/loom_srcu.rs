//! Loom models of the per-CPU read side (`kernel::Srcu`) under a kernel
//! with several CPUs: readers count on their own CPU's slot, a reader may
//! leave on another CPU than it entered on, and with per-task slots the
//! counters are plain stores. The notifier is freed right after
//! `unregister` returns; loom reports any callback not ordered before that
//! free (see `loom.rs` for the method).
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p mmu-notifier-core --test loom_srcu --release
//! ```
//!
//! These model the fenced read side (no `ASYMMETRIC_BARRIER`): loom cannot
//! model a barrier that lands at an arbitrary point of every other thread.
//! The asymmetric scheme is argued in `kernel/srcu.rs` and exercised by
//! the host stress tests and the QEMU SMP kernels.
#![cfg(loom)]

mod loom_common;
use loom_common::check;

use std::cell::Cell;
use std::pin::Pin;

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::thread;

use mmu_notifier_core::kernel::{Kernel, ReaderSlot, Srcu};
use mmu_notifier_core::{
    Event, InvalidateRange, MmuNotifier, NotifierHead, PageRange, Subscription, VirtAddr,
};

const ALIVE: u32 = 0xa11e;
const FREED: u32 = 0xf7ee;

fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

loom::thread_local! {
    static CPU: Cell<usize> = Cell::new(0);
}

fn run_on(cpu: usize) {
    CPU.with(|c| c.set(cpu));
}

macro_rules! loom_kernel {
    ($name:ident, $slots:ident, $srcu:ident, per_task: $per_task:expr) => {
        struct $name;
        loom::lazy_static! {
            static ref $slots: [ReaderSlot; 3] =
                [ReaderSlot::new(), ReaderSlot::new(), ReaderSlot::new()];
            static ref $srcu: Srcu<$name> = Srcu::new(&*$slots);
        }
        // SAFETY: 1. each model thread picks its CPU (below 3) with
        // `run_on`; with per-task slots every thread picks its own and never
        // moves inside a section, otherwise several may share one and move;
        // 2. constant; 3. no barrier promised; 4. as 1.; 5. one (lazy)
        // static per execution.
        unsafe impl Kernel for $name {
            type Rcu = Srcu<$name>;
            fn rcu() -> &'static Srcu<$name> {
                &*$srcu
            }
            fn cpu_id() -> usize {
                CPU.with(Cell::get)
            }
            fn nr_cpus() -> usize {
                3
            }
            fn wait(_round: u32) {
                thread::yield_now();
            }
            const READER_SLOT_PER_TASK: bool = $per_task;
        }
    };
}

loom_kernel!(SharedCpus, SHARED_SLOTS, SHARED, per_task: false);
loom_kernel!(PerTask, TASK_SLOTS, TASK, per_task: true);

/// A notifier whose memory is a loom cell, and whose ranges must pair up.
struct Tracked {
    memory: &'static UnsafeCell<u32>,
    open_ranges: AtomicUsize,
}

impl Tracked {
    fn new() -> Self {
        Self {
            memory: leak(UnsafeCell::new(ALIVE)),
            open_ranges: AtomicUsize::new(0),
        }
    }
    fn touch(&self) {
        // SAFETY: loom checks this read against the owner's free.
        let state = self.memory.with(|p| unsafe { *p });
        assert_eq!(state, ALIVE, "a callback ran on a freed notifier");
    }
    fn free(&self) {
        // SAFETY: loom checks this write against every callback's read.
        self.memory.with_mut(|p| unsafe { *p = FREED });
    }
}

// SAFETY: the loom cell's every access goes through loom's race detector.
unsafe impl Sync for Tracked {}

impl MmuNotifier for Tracked {
    fn invalidate_page(&self, _: VirtAddr) {
        self.touch();
    }
    fn invalidate_range_start(&self, _: &InvalidateRange) -> Result<(), mmu_notifier_core::Again> {
        self.touch();
        self.open_ranges.fetch_add(1, SeqCst);
        Ok(())
    }
    fn invalidate_range_end(&self, _: &InvalidateRange) {
        self.touch();
        assert!(
            self.open_ranges.fetch_sub(1, SeqCst) > 0,
            "an end without its start"
        );
    }
}

fn range() -> InvalidateRange {
    InvalidateRange::new(
        PageRange::from_pages(VirtAddr(0), 1, 4096).unwrap(),
        Event::Unmap,
    )
}

fn registered<K: Kernel>() -> (
    &'static NotifierHead<K>,
    Pin<&'static Subscription<'static, Tracked>>,
) {
    let head: &'static NotifierHead<K> = leak(NotifierHead::for_kernel());
    let sub = Pin::static_ref(leak(Subscription::new(Tracked::new())));
    head.register(sub).unwrap();
    (head, sub)
}

/// A reader on CPU 1 invalidates while CPU 0 unregisters and frees: the
/// reader's callback, if it runs, happens before the free.
fn reader_on_another_cpu<K: Kernel>() {
    run_on(0);
    let (head, sub) = registered::<K>();
    let reader = thread::spawn(move || {
        run_on(1);
        head.invalidate_page(VirtAddr(0));
    });
    head.unregister(sub).unwrap();
    sub.notifier().free();
    reader.join().unwrap();
}

#[test]
fn a_reader_on_another_cpu_never_calls_a_freed_notifier() {
    check(
        "per-CPU reader vs unregister",
        4,
        reader_on_another_cpu::<SharedCpus>,
    );
}

#[test]
fn a_reader_with_plain_per_task_counters_never_calls_a_freed_notifier() {
    check(
        "per-task reader vs unregister",
        4,
        reader_on_another_cpu::<PerTask>,
    );
}

/// A range enters on CPU 1, is preempted and resumed on CPU 2, and ends
/// there, while CPU 0 unregisters and frees its notifier: the grace period
/// sums the counters of every CPU, so it waits for the end.
#[test]
fn a_reader_that_migrates_between_entering_and_leaving_is_waited_for() {
    check("migrating range vs unregister", 3, || {
        run_on(0);
        let (head, sub) = registered::<SharedCpus>();
        let reader = thread::spawn(move || {
            run_on(1);
            let guard = head.invalidate_range_start(range());
            run_on(2);
            guard.end();
        });
        head.unregister(sub).unwrap();
        assert_eq!(
            sub.notifier().open_ranges.load(SeqCst),
            0,
            "unregister returned inside a range it had started"
        );
        sub.notifier().free();
        reader.join().unwrap();
    });
}

/// Two readers on two CPUs and a writer: the grace period waits for both.
#[test]
fn readers_on_two_cpus_are_both_waited_for() {
    check("two per-CPU readers vs unregister", 2, || {
        run_on(0);
        let (head, sub) = registered::<SharedCpus>();
        let readers: Vec<_> = [1, 2]
            .into_iter()
            .map(|cpu| {
                thread::spawn(move || {
                    run_on(cpu);
                    head.invalidate_page(VirtAddr(0));
                })
            })
            .collect();
        head.unregister(sub).unwrap();
        sub.notifier().free();
        for r in readers {
            r.join().unwrap();
        }
    });
}
