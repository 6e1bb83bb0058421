//! The cross-CPU half of a flush: `X86_64::with_shootdown` calls the
//! kernel's `TlbShootdown` from every flush, after the entry changed and
//! before the notifiers hear of it or the frame is handed back (the order
//! Linux keeps: clear, flush every CPU, tell secondary MMUs, free).

use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use mmu_notifier_core::{
    AddressSpace, Arch, MmuNotifier, PageRange, PhysAddr, Prot, Subscription, TableMemory, VirtAddr,
};
use mmu_notifier_x86::{TlbShootdown, X86_64};

const PAGE: u64 = 4096;

/// Records every remote flush it is asked for.
struct Recorder {
    flushes: Mutex<Vec<Option<u64>>>,
}

impl Recorder {
    fn take(&self) -> Vec<Option<u64>> {
        std::mem::take(&mut *self.flushes.lock().unwrap())
    }
}

// SAFETY: a test double: the host has no other CPUs and no hardware
// walker, so recording the requests is all "every other CPU" needs
// (1.-4. hold vacuously: there is nothing to purge, lock or wait for).
unsafe impl TlbShootdown for Recorder {
    fn flush_remote(&self, va: Option<VirtAddr>) {
        self.flushes.lock().unwrap().push(va.map(|v| v.0));
    }
}

#[repr(C, align(4096))]
struct Page([u64; 512]);

/// Table memory from the heap.
#[derive(Default)]
struct Heap {
    live: AtomicUsize,
}

// SAFETY: 1. each table is a fresh 4096-aligned heap page, owned until
// `free_table`; 2. its "physical address" is its address (provenance
// exposed), which `phys_to_virt` maps back to it; 3. no hardware walker.
unsafe impl TableMemory for Heap {
    fn phys_to_virt(&self, pa: PhysAddr) -> std::ptr::NonNull<u8> {
        std::ptr::NonNull::new(std::ptr::with_exposed_provenance_mut(pa.0 as usize)).unwrap()
    }

    fn alloc_table(&self, bytes: usize) -> Option<PhysAddr> {
        assert_eq!(bytes, 4096);
        self.live.fetch_add(1, Ordering::Relaxed);
        Some(PhysAddr(
            Box::into_raw(Box::new(Page([0; 512]))).expose_provenance() as u64,
        ))
    }

    unsafe fn free_table(&self, pa: PhysAddr, _bytes: usize) {
        self.live.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: allocated above as a `Box<Page>`, freed once (core contract).
        drop(unsafe {
            Box::from_raw(std::ptr::with_exposed_provenance_mut::<Page>(pa.0 as usize))
        });
    }
}

/// Sees, in `invalidate_page`, what the shootdown had done by then.
struct Witness {
    recorder: &'static Recorder,
    seen: Mutex<Vec<(u64, Vec<Option<u64>>)>>,
}

impl MmuNotifier for Witness {
    fn invalidate_page(&self, addr: VirtAddr) {
        let done = self.recorder.flushes.lock().unwrap().clone();
        self.seen.lock().unwrap().push((addr.0, done));
    }
}

fn leak<T>(v: T) -> &'static T {
    Box::leak(Box::new(v))
}

#[test]
fn flush_tlb_page_reaches_the_other_cpus_before_notifiers_and_frame_reuse() {
    let recorder = leak(Recorder {
        flushes: Mutex::new(Vec::new()),
    });
    let arch = leak(X86_64::with_shootdown(recorder));
    let heap = leak(Heap::default());
    let mm = AddressSpace::new(arch, heap).unwrap();
    let va = 0x40_0000;
    mm.map(VirtAddr(va), PhysAddr(0x20_0000), Prot::WRITE)
        .unwrap();
    assert!(
        recorder.take().is_empty(),
        "mapping an invalid entry needs no flush on any CPU"
    );

    let sub = pin!(Subscription::new(Witness {
        recorder,
        seen: Mutex::new(Vec::new())
    }));
    mm.notifiers().register(sub.as_ref()).unwrap();
    let mut freed = Vec::new();
    let range = PageRange::from_pages(VirtAddr(va), 1, PAGE).unwrap();
    mm.zap_range(range, &mut |r| freed.push((r.frame(), recorder.take())))
        .unwrap();

    let seen = sub.notifier().seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![(va, vec![Some(va)])],
        "invalidate_page must run after the other CPUs flushed the page"
    );
    assert_eq!(
        freed,
        vec![(PhysAddr(0x20_0000), vec![Some(va)])],
        "the frame must be handed back only after the other CPUs flushed it"
    );
    mm.notifiers().unregister(sub.as_ref()).unwrap();
}

#[test]
fn flush_tlb_all_asks_the_other_cpus_for_a_full_flush() {
    let recorder = leak(Recorder {
        flushes: Mutex::new(Vec::new()),
    });
    let arch = X86_64::with_shootdown(recorder);
    arch.flush_tlb_all();
    assert_eq!(
        recorder.take(),
        vec![None],
        "a full flush must reach the other CPUs as one"
    );
}

#[test]
fn without_a_shootdown_flushes_stay_local() {
    let heap = leak(Heap::default());
    // SAFETY: host tables: no CPU walks them.
    static LOCAL: X86_64 = unsafe { X86_64::local_only() };
    let mm = AddressSpace::new(&LOCAL, heap).unwrap();
    mm.map(VirtAddr(0x40_0000), PhysAddr(0x20_0000), Prot::READ)
        .unwrap();
    let range = PageRange::from_pages(VirtAddr(0x40_0000), 1, PAGE).unwrap();
    assert_eq!(mm.zap_range(range, &mut |_| {}).unwrap(), 1);
    assert_ne!(
        LOCAL,
        X86_64::with_shootdown(leak(Recorder {
            flushes: Mutex::new(Vec::new())
        }))
    );
    // SAFETY: as above.
    assert_eq!(LOCAL, unsafe { X86_64::local_only() });
}
