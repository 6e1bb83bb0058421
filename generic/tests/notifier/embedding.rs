//! The kernel's side: a kernel with per-CPU data, its own waits, its own
//! RCU; readers write only their own CPU's slot; a reader that migrates
//! between entering and leaving is still waited for; heads as statics.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64};

use mmu_notifier_core::kernel::{Rcu, ReadToken};

use super::support::*;

const CPUS: usize = 4;

thread_local! {
    /// The CPU the current thread "runs on" in the test kernels below.
    static CPU: Cell<usize> = const { Cell::new(0) };
}

fn run_on(cpu: usize) {
    CPU.with(|c| c.set(cpu));
}

/// Defines a kernel with four CPUs whose current CPU the test chooses,
/// counting the rounds of waiting its grace periods do: one per test that
/// looks at its slots, so no other test's readers touch them.
macro_rules! four_cpus {
    ($kernel:ident, $slots:ident, $srcu:ident, $waits:ident) => {
        struct $kernel;
        static $slots: [ReaderSlot; CPUS] = [const { ReaderSlot::new() }; CPUS];
        static $srcu: Srcu<$kernel> = Srcu::new(&$slots);
        static $waits: AtomicU32 = AtomicU32::new(0);

        // SAFETY: 1. `cpu_id` is the thread's chosen CPU, below 4 (a test
        // thread that "migrates" changes it between entering and leaving,
        // which `Srcu` allows); 2. constant; 3. no barrier promised; 4. not
        // promised (several threads may pick one CPU, so increments are
        // atomic); 5. one static.
        unsafe impl Kernel for $kernel {
            type Rcu = Srcu<$kernel>;
            fn rcu() -> &'static Srcu<$kernel> {
                &$srcu
            }
            #[inline(always)]
            fn cpu_id() -> usize {
                CPU.with(Cell::get)
            }
            fn nr_cpus() -> usize {
                CPUS
            }
            fn wait(_round: u32) {
                $waits.fetch_add(1, SeqCst);
                thread::yield_now();
            }
        }
    };
}

four_cpus!(FourCpus, FOUR_SLOTS, FOUR, FOUR_WAITS);
four_cpus!(Observed, OBSERVED_SLOTS, OBSERVED, OBSERVED_WAITS);

/// A head of the kernel's own address space: built in const context.
static KERNEL_MM: NotifierHead<FourCpus> = NotifierHead::for_kernel();

struct Quiet;
impl MmuNotifier for Quiet {
    fn invalidate_page(&self, _: VirtAddr) {}
}

#[test]
fn a_reader_writes_only_its_own_cpus_slot() {
    static HEAD: NotifierHead<Observed> = NotifierHead::for_kernel();
    let sub = Pin::static_ref(Box::leak(Box::new(Subscription::new(Quiet))));
    HEAD.register(sub).unwrap();
    thread::spawn(|| {
        run_on(2);
        let before: Vec<_> = OBSERVED_SLOTS
            .iter()
            .map(|s| (s.entered(), s.left()))
            .collect();
        HEAD.invalidate_page(va(1));
        HEAD.invalidate_range_start(unmap(0, 1)).end();
        let after: Vec<_> = OBSERVED_SLOTS
            .iter()
            .map(|s| (s.entered(), s.left()))
            .collect();
        for cpu in 0..CPUS {
            let expected = if cpu == 2 { (2, 2) } else { (0, 0) };
            assert_eq!(
                (after[cpu].0 - before[cpu].0, after[cpu].1 - before[cpu].1),
                expected,
                "CPU {cpu}'s slot: a reader on CPU 2 writes CPU 2's slot only"
            );
        }
    })
    .join()
    .unwrap();
}

#[test]
fn a_reader_that_migrates_between_entering_and_leaving_is_still_waited_for() {
    let head = NotifierHead::<FourCpus>::for_kernel();
    let sub = pin!(Subscription::new(Quiet));
    let (started, leave) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
    thread::scope(|s| {
        let reader = s.spawn(|| {
            run_on(1);
            let guard = head.invalidate_range_start(unmap(0, 1));
            run_on(3); // preempted and resumed elsewhere
            started.wait();
            leave.wait();
            guard.end(); // leaves on CPU 3
        });
        started.wait();
        let registrar = s.spawn(|| {
            run_on(0);
            head.register(sub.as_ref()).unwrap();
        });
        pause();
        let waited = !registrar.is_finished();
        // Let the reader leave before judging: a failed assertion inside
        // the scope would leave it waiting, and the scope with it.
        leave.wait();
        reader.join().unwrap();
        registrar.join().unwrap();
        assert!(
            waited,
            "register must wait for the range, whose reader moved from CPU 1 to CPU 3"
        );
    });
}

#[test]
fn grace_periods_wait_the_kernels_way() {
    let head = NotifierHead::<FourCpus>::for_kernel();
    let sub = pin!(Subscription::new(Quiet));
    let before = FOUR_WAITS.load(SeqCst);
    let guard = head.invalidate_range_start(unmap(0, 1));
    thread::scope(|s| {
        let registrar = s.spawn(|| head.register(sub.as_ref()).unwrap());
        // The registration cannot finish while this range is open: it
        // waits, and every round of that waiting is the kernel's `wait`.
        while FOUR_WAITS.load(SeqCst) == before {
            assert!(
                !registrar.is_finished(),
                "register returned inside an open range"
            );
            thread::yield_now();
        }
        guard.end();
        registrar.join().unwrap();
    });
}

/// The notifier of a static subscription: remembers the last page.
struct LastPage(AtomicU64);
impl MmuNotifier for LastPage {
    fn invalidate_page(&self, addr: VirtAddr) {
        self.0.store(addr.0, SeqCst);
    }
}

#[test]
fn a_static_head_and_a_static_subscription_work_like_any_other() {
    static DRIVER: Subscription<'static, LastPage> = Subscription::new(LastPage(AtomicU64::new(0)));
    let sub = Pin::static_ref(&DRIVER);
    KERNEL_MM.register(sub).unwrap();
    KERNEL_MM.invalidate_page(va(9));
    assert_eq!(
        DRIVER.notifier().0.load(SeqCst),
        va(9).0,
        "a static subscription on a static head is called"
    );
    KERNEL_MM.unregister(sub).unwrap();
    assert!(!DRIVER.is_registered(), "and unregistered");
}

/// A kernel that brings its own RCU: here one made of the crate's `Srcu`
/// (standing in for the kernel's), counting how the core uses it.
struct OwnRcu;
struct CountingRcu {
    locks: AtomicUsize,
    unlocks: AtomicUsize,
    grace_periods: AtomicUsize,
}
static OWN_SLOTS: [ReaderSlot; 1] = [ReaderSlot::new()];
static UNDER: Srcu<OwnRcu> = Srcu::new(&OWN_SLOTS);
static COUNTING: CountingRcu = CountingRcu {
    locks: AtomicUsize::new(0),
    unlocks: AtomicUsize::new(0),
    grace_periods: AtomicUsize::new(0),
};

// SAFETY: 1.-4. are `UNDER`'s, which every call is passed to.
unsafe impl Rcu for CountingRcu {
    fn read_lock(&self) -> ReadToken {
        self.locks.fetch_add(1, SeqCst);
        UNDER.read_lock()
    }
    unsafe fn read_unlock(&self, token: ReadToken) {
        self.unlocks.fetch_add(1, SeqCst);
        // SAFETY: the token came from `UNDER.read_lock` (our read_lock), on
        // this task, once (our caller's contract).
        unsafe { UNDER.read_unlock(token) };
    }
    fn synchronize(&self) {
        self.grace_periods.fetch_add(1, SeqCst);
        UNDER.synchronize();
    }
}

// SAFETY: 1. one CPU id, 0; 2. constant; 3. no barrier promised; 4. not
// promised; 5. one static.
unsafe impl Kernel for OwnRcu {
    type Rcu = CountingRcu;
    fn rcu() -> &'static CountingRcu {
        &COUNTING
    }
    fn cpu_id() -> usize {
        0
    }
    fn nr_cpus() -> usize {
        1
    }
}

#[test]
fn a_kernels_own_rcu_carries_every_read_side_section_and_grace_period() {
    let head = NotifierHead::<OwnRcu>::for_kernel();
    let sub = pin!(Subscription::new(Recorder::default()));
    let (locks, unlocks, gps) = (
        COUNTING.locks.load(SeqCst),
        COUNTING.unlocks.load(SeqCst),
        COUNTING.grace_periods.load(SeqCst),
    );
    head.register(sub.as_ref()).unwrap();
    head.invalidate_page(va(1));
    head.invalidate_range_start(unmap(0, 1)).end();
    head.unregister(sub.as_ref()).unwrap();
    assert_eq!(
        COUNTING.locks.load(SeqCst) - locks,
        2,
        "one section per walk or range"
    );
    assert_eq!(COUNTING.unlocks.load(SeqCst) - unlocks, 2, "each left once");
    assert_eq!(
        COUNTING.grace_periods.load(SeqCst) - gps,
        3,
        "register waits one grace period, unregister two"
    );
    assert_eq!(
        sub.notifier().calls().len(),
        3,
        "the page and the range reached the notifier"
    );
}
