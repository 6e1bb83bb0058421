//! What the notifier tests share: addresses, the recording notifier, and
//! the fixtures.
#![allow(
    dead_code,
    unused_imports,
    reason = "each topic uses part of the support"
)]

pub use std::panic::{catch_unwind, AssertUnwindSafe};
pub use std::pin::{pin, Pin};
pub use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
pub use std::sync::Mutex;
pub use std::thread;
pub use std::time::Duration;

pub use mmu_notifier_core::kernel::{Kernel, ReaderSlot, Srcu};
pub use mmu_notifier_core::{
    Again, Error, Event, InvalidateRange, MmuNotifier, NotifierHead, Owner, PageRange,
    Subscription, VirtAddr,
};

pub const PAGE: u64 = 4096;

/// A second kernel with a grace-period domain of its own (one shared
/// reader slot, like the default), for tests that need two domains.
pub struct OtherKernel;
static OTHER_SLOTS: [ReaderSlot; 1] = [ReaderSlot::new()];
static OTHER: Srcu<OtherKernel> = Srcu::new(&OTHER_SLOTS);
// SAFETY: 1. every task uses index 0, below `nr_cpus`; 2. constant; 3. no
// barrier promised; 4. not promised (one shared slot, atomic increments);
// 5. one static.
unsafe impl Kernel for OtherKernel {
    type Rcu = Srcu<OtherKernel>;
    fn rcu() -> &'static Srcu<OtherKernel> {
        &OTHER
    }
    fn cpu_id() -> usize {
        0
    }
    fn nr_cpus() -> usize {
        1
    }
}

pub fn va(page: u64) -> VirtAddr {
    VirtAddr(page * PAGE)
}

pub fn pages(first: u64, count: u64) -> PageRange {
    PageRange::from_pages(va(first), count, PAGE).expect("a valid page range")
}

pub fn unmap(first: u64, count: u64) -> InvalidateRange {
    InvalidateRange::new(pages(first, count), Event::Unmap)
}

/// Long enough for a thread that should be blocked to have run on, had it
/// not been.
pub fn pause() {
    thread::sleep(Duration::from_millis(if cfg!(miri) { 5 } else { 50 }));
}

/// One callback as a notifier saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Release,
    Page(VirtAddr),
    Pages(PageRange),
    Age(VirtAddr),
    Start {
        range: PageRange,
        event: Event,
        owner: Option<Owner>,
        may_block: bool,
    },
    End(PageRange),
}

/// A notifier that implements every operation and writes down each call.
#[derive(Default)]
pub struct Recorder {
    calls: Mutex<Vec<Call>>,
    /// What `age_page` answers.
    young: bool,
    /// Whether `invalidate_range_start` fails with `Again` when it may not block.
    would_sleep: bool,
}

impl Recorder {
    pub fn young(young: bool) -> Self {
        Self {
            young,
            ..Self::default()
        }
    }

    pub fn would_sleep() -> Self {
        Self {
            would_sleep: true,
            ..Self::default()
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn count(&self, pred: impl Fn(&Call) -> bool) -> usize {
        self.calls().iter().filter(|c| pred(c)).count()
    }

    pub fn push(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }
}

impl MmuNotifier for Recorder {
    fn release(&self) {
        self.push(Call::Release);
    }
    fn invalidate_page(&self, addr: VirtAddr) {
        self.push(Call::Page(addr));
    }
    fn invalidate_pages(&self, range: PageRange) {
        self.push(Call::Pages(range));
    }
    fn age_page(&self, addr: VirtAddr) -> bool {
        self.push(Call::Age(addr));
        self.young
    }
    fn invalidate_range_start(&self, range: &InvalidateRange) -> Result<(), Again> {
        self.push(Call::Start {
            range: range.range,
            event: range.event,
            owner: range.owner,
            may_block: range.may_block(),
        });
        if self.would_sleep && !range.may_block() {
            Err(Again)
        } else {
            Ok(())
        }
    }
    fn invalidate_range_end(&self, range: &InvalidateRange) {
        self.push(Call::End(range.range));
    }
}

pub fn is_start(c: &Call) -> bool {
    matches!(c, Call::Start { .. })
}

pub fn is_end(c: &Call) -> bool {
    matches!(c, Call::End(_))
}

/// Counts calls in a counter it does not own, so the count can be read
/// after the subscription is gone.
pub struct Counter<'a>(pub &'a AtomicUsize);

impl MmuNotifier for Counter<'_> {
    fn invalidate_page(&self, _: VirtAddr) {
        self.0.fetch_add(1, SeqCst);
    }
}

/// Calls every hook once on `head`.
pub fn call_every_hook(head: &NotifierHead) {
    head.invalidate_page(va(1));
    head.invalidate_pages(pages(2, 3));
    let _ = head.age_page(va(5));
    head.invalidate_range_start(unmap(6, 2)).end();
    if let Ok(guard) = head.try_invalidate_range_start_nonblock(unmap(8, 1)) {
        guard.end();
    }
}
