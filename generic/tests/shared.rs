//! One refcounted notifier per (type, address space): `get` and `put`
//! (feature `alloc`).
#![cfg(feature = "alloc")]

use std::sync::atomic::{AtomicUsize, Ordering};

use mmu_notifier_core::{Error, MmuNotifier, NotifierHead, VirtAddr};

static MADE: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);
static DROPPED: AtomicUsize = AtomicUsize::new(0);

struct Device;

impl MmuNotifier for Device {
    fn invalidate_page(&self, _: VirtAddr) {
        CALLS.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        DROPPED.fetch_add(1, Ordering::SeqCst);
    }
}

fn make() -> Device {
    MADE.fetch_add(1, Ordering::SeqCst);
    Device
}

struct Other;
impl MmuNotifier for Other {}

#[test]
fn get_returns_one_shared_notifier_and_the_last_put_frees_it() {
    let head = NotifierHead::new();
    let a = head.get(make).unwrap();
    let b = head.get(make).unwrap();
    assert_eq!(
        MADE.load(Ordering::SeqCst),
        1,
        "the second get must reuse the first notifier"
    );
    assert!(
        std::ptr::eq(&*a, &*b),
        "both references must name the same notifier"
    );
    head.invalidate_page(VirtAddr(0x1000));
    assert_eq!(
        CALLS.load(Ordering::SeqCst),
        1,
        "a shared notifier is called once, not once per reference"
    );
    let c = b.clone();
    drop(a);
    drop(b);
    assert_eq!(
        DROPPED.load(Ordering::SeqCst),
        0,
        "freed while a reference remains"
    );
    head.invalidate_page(VirtAddr(0x2000));
    assert_eq!(CALLS.load(Ordering::SeqCst), 2);
    drop(c);
    assert_eq!(
        DROPPED.load(Ordering::SeqCst),
        1,
        "the last put must unregister and free it"
    );
    head.invalidate_page(VirtAddr(0x3000));
    assert_eq!(CALLS.load(Ordering::SeqCst), 2, "called after the last put");
    // A new get after the last put makes a new one; another type its own.
    let d = head.get(make).unwrap();
    let o = head.get(|| Other).unwrap();
    assert_eq!(MADE.load(Ordering::SeqCst), 2);
    drop((d, o));
    head.release().unwrap();
    assert_eq!(
        head.get(|| Other).err(),
        Some(Error::Released),
        "get on a released head"
    );
}
