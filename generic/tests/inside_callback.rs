//! With a CPU-id source set, registering or unregistering from inside a
//! callback (or a range invalidation) of the same head is refused instead
//! of waiting forever for a grace period the caller itself holds open.
//!
//! A test binary of its own: the CPU-id source is process-wide.
#![cfg(feature = "notifier")]

use std::cell::Cell;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use mmu_notifier_core::notifier::set_cpu_id_source;
use mmu_notifier_core::{
    Error, Event, InvalidateRange, MmuNotifier, NotifierHead, PageRange, Subscription, VirtAddr,
};

fn thread_as_cpu() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static ID: Cell<usize> = const { Cell::new(usize::MAX) });
    ID.with(|id| {
        if id.get() == usize::MAX {
            id.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        id.get()
    })
}

/// Tries to unregister the subscription it was told about from inside
/// `invalidate_page`, and records the answer.
struct SelfUnregistering {
    head: &'static NotifierHead,
    target: Mutex<Option<std::pin::Pin<&'static Subscription<'static, Quiet>>>>,
    answer: Mutex<Option<Result<(), Error>>>,
}

struct Quiet;
impl MmuNotifier for Quiet {}

impl MmuNotifier for SelfUnregistering {
    fn invalidate_page(&self, _: VirtAddr) {
        if let Some(t) = *self.target.lock().unwrap() {
            *self.answer.lock().unwrap() = Some(self.head.unregister(t));
        }
    }
}

#[test]
fn unregister_from_inside_a_callback_is_refused_not_a_deadlock() {
    set_cpu_id_source(thread_as_cpu);
    let head: &'static NotifierHead = Box::leak(Box::new(NotifierHead::new()));
    let leaked: &'static Subscription<'static, Quiet> =
        Box::leak(Box::new(Subscription::new(Quiet)));
    // SAFETY: leaked memory is never moved or freed.
    let quiet = unsafe { std::pin::Pin::new_unchecked(leaked) };
    head.register(quiet).unwrap();
    let caller = pin!(Subscription::new(SelfUnregistering {
        head,
        target: Mutex::new(Some(quiet)),
        answer: Mutex::new(None),
    }));
    head.register(caller.as_ref()).unwrap();
    head.invalidate_page(VirtAddr(0x1000));
    assert_eq!(
        *caller.notifier().answer.lock().unwrap(),
        Some(Err(Error::InsideCallback)),
        "unregister from inside a callback must be refused"
    );
    assert!(
        quiet.is_registered(),
        "the refused unregister must change nothing"
    );
    // Outside any callback the same call goes through.
    *caller.notifier().target.lock().unwrap() = None;
    assert_eq!(head.unregister(quiet), Ok(()));
}

#[test]
fn register_inside_a_range_invalidation_is_refused() {
    set_cpu_id_source(thread_as_cpu);
    let head = NotifierHead::new();
    let sub = pin!(Subscription::new(Quiet));
    let range = PageRange::new(VirtAddr(0), VirtAddr(0x1000), 0x1000).unwrap();
    let guard = head.invalidate_range_start(InvalidateRange::new(range, Event::Unmap));
    assert_eq!(
        head.register(sub.as_ref()),
        Err(Error::InsideCallback),
        "register would wait for this very range"
    );
    guard.end();
    assert_eq!(
        head.register(sub.as_ref()),
        Ok(()),
        "after the range ended, registering works"
    );
}
