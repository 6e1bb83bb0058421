//! Calls that wait for a grace period, made from inside one: refused where
//! the kernel can tell the calling task apart (host threads: per-thread
//! reader slots), never refused for an innocent task, and a drop that can
//! neither wait nor return aborts instead of freeing a linked node.

use mmu_notifier_core::kernel::{Kernel, ReaderSlot, Srcu, StdThreads};
use std::pin::Pin;
use std::process::Command;
use std::sync::{Arc, Barrier};

use super::support::*;

type Head = NotifierHead<StdThreads>;

fn leak_head() -> &'static Head {
    Box::leak(Box::new(Head::for_kernel()))
}

struct Quiet;
impl MmuNotifier for Quiet {}

/// Tries to unregister the subscription it was told about from inside
/// `invalidate_page`, and records the answer.
struct SelfUnregistering {
    head: &'static Head,
    target: Mutex<Option<Pin<&'static Subscription<'static, Quiet>>>>,
    answer: Mutex<Option<Result<(), Error>>>,
}

impl MmuNotifier for SelfUnregistering {
    fn invalidate_page(&self, _: VirtAddr) {
        let target = *self.target.lock().unwrap();
        if let Some(t) = target {
            *self.answer.lock().unwrap() = Some(self.head.unregister(t));
        }
    }
}

#[test]
fn unregister_from_inside_a_callback_is_refused_not_a_deadlock() {
    let head = leak_head();
    let quiet = Pin::static_ref(Box::leak(Box::new(Subscription::new(Quiet))));
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
fn register_and_release_inside_a_range_invalidation_are_refused() {
    let head = Head::for_kernel();
    let sub = pin!(Subscription::new(Quiet));
    let guard = head.invalidate_range_start(unmap(0, 1));
    assert_eq!(
        head.register(sub.as_ref()),
        Err(Error::InsideCallback),
        "register would wait for this very range"
    );
    assert_eq!(
        head.release(),
        Err(Error::InsideCallback),
        "release would wait for this very range"
    );
    assert!(!head.is_released(), "the refused release changed nothing");
    guard.end();
    assert_eq!(
        head.register(sub.as_ref()),
        Ok(()),
        "after the range ended, registering works"
    );
}

#[test]
fn a_range_on_another_head_of_the_kernel_also_refuses() {
    // One grace-period domain per kernel: registering on `b` would wait
    // for the range open on `a`.
    let (a, b) = (Head::for_kernel(), Head::for_kernel());
    let sub = pin!(Subscription::new(Quiet));
    let guard = a.invalidate_range_start(unmap(0, 1));
    assert_eq!(b.register(sub.as_ref()), Err(Error::InsideCallback));
    guard.end();
    assert_eq!(b.register(sub.as_ref()), Ok(()));
}

/// Sleeps inside its blocking range start until told to go on.
struct Sleeper {
    entered: Arc<Barrier>,
    wake: Arc<Barrier>,
}

impl MmuNotifier for Sleeper {
    fn invalidate_range_start(&self, _: &InvalidateRange) -> Result<(), Again> {
        self.entered.wait();
        self.wake.wait();
        Ok(())
    }
}

/// Thread A sleeps inside a blocking callback; thread B, which runs no
/// callback at all, registers: it must wait for A's range and then
/// succeed, never be refused. With one CPU id for every thread (what a
/// kernel sees when B runs on the CPU A slept on) the old per-CPU check
/// refused it.
fn innocent_task_registers<K: Kernel>() {
    let head: &'static NotifierHead<K> = Box::leak(Box::new(NotifierHead::for_kernel()));
    let (entered, wake) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
    let sleeper = Pin::static_ref(Box::leak(Box::new(Subscription::new(Sleeper {
        entered: entered.clone(),
        wake: wake.clone(),
    }))));
    head.register(sleeper).unwrap();
    let a = thread::spawn(move || head.invalidate_range_start(unmap(0, 1)).end());
    entered.wait();
    let waker = thread::spawn(move || {
        pause();
        wake.wait();
    });
    let other = pin!(Subscription::new(Quiet));
    let result = head.register(other.as_ref());
    waker.join().unwrap();
    a.join().unwrap();
    assert_eq!(
        result,
        Ok(()),
        "a task that is inside no callback must not be refused"
    );
}

/// A kernel whose every thread reports CPU 0 (tasks share a CPU) and whose
/// readers may sleep: slots are not per task, so nothing can be refused.
struct OneCpu;
static ONE_CPU_SLOTS: [ReaderSlot; 1] = [ReaderSlot::new()];
static ONE_CPU: Srcu<OneCpu> = Srcu::new(&ONE_CPU_SLOTS);
// SAFETY: 1. every task runs on "CPU 0", below `nr_cpus`; 2. constant;
// 3. no barrier promised; 4. not promised (slots are shared, increments are
// atomic); 5. one static.
unsafe impl Kernel for OneCpu {
    type Rcu = Srcu<OneCpu>;
    fn rcu() -> &'static Srcu<OneCpu> {
        &ONE_CPU
    }
    fn cpu_id() -> usize {
        0
    }
    fn nr_cpus() -> usize {
        1
    }
}

#[test]
fn a_task_on_the_cpu_where_a_callback_sleeps_is_not_refused() {
    innocent_task_registers::<OneCpu>();
}

#[test]
fn a_thread_other_than_the_one_inside_is_not_refused() {
    innocent_task_registers::<StdThreads>();
}

/// A subscription that drops another one, registered on the same head,
/// from inside its callback.
struct Dropper(Mutex<Option<Pin<Box<Subscription<'static, Quiet>>>>>);

impl MmuNotifier for Dropper {
    fn invalidate_page(&self, _: VirtAddr) {
        let victim = self.0.lock().unwrap().take();
        drop(victim);
    }
}

const CHILD: &str = "MMU_NOTIFIER_TEST_CHILD";

/// The scenario runs in a child process: it must abort there, before the
/// linked node's memory goes (the old code panicked, unwound, freed it and
/// walked it again: a use after free Miri reported).
#[test]
#[cfg(not(miri))]
fn dropping_a_registered_subscription_inside_a_callback_aborts_instead_of_freeing_a_linked_node() {
    if std::env::var_os(CHILD).is_some() {
        let head = leak_head();
        let victim = Box::pin(Subscription::new(Quiet));
        head.register(victim.as_ref()).unwrap();
        let dropper = Pin::static_ref(Box::leak(Box::new(Subscription::new(Dropper(Mutex::new(
            Some(victim),
        ))))));
        head.register(dropper).unwrap();
        let _ = catch_unwind(|| head.invalidate_page(VirtAddr(0)));
        head.invalidate_page(VirtAddr(0));
        println!("the process survived the drop");
        return;
    }
    let me = std::env::current_exe().unwrap();
    let out = Command::new(me)
        .args([
            "--exact",
            "inside_callback::dropping_a_registered_subscription_inside_a_callback_aborts_instead_of_freeing_a_linked_node",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stdout.contains("survived"),
        "the drop returned with the node still linked:\n{stdout}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(6),
            "the child must abort (SIGABRT); status {:?}, stderr:\n{stderr}",
            out.status
        );
    }
    assert!(
        stderr.contains("dropped inside a notifier callback"),
        "the abort says why:\n{stderr}"
    );
}
