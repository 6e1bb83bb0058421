//! The kernel's side of the notifier core: which CPU is running, how to
//! wait, and how grace periods work.
//!
//! Every [`NotifierHead`] is generic over a [`Kernel`]: a zero-sized type
//! the embedding kernel implements once. The core calls it on every
//! invalidation (to enter and leave a read-side section) and on every
//! registration change (to wait for a grace period).
//!
//! # Why a type parameter
//! The CPU id is read on every invalidation, so it must be an inlined,
//! direct call: a type parameter is monomorphised into the hook, where a
//! function pointer set at boot (what this crate had before) is an
//! indirect call and a global `extern` symbol needs LTO to inline. A type
//! also lets several embeddings live in one program (the host tests run
//! the default, the per-thread host kernel and loom's side by side), and
//! costs nothing when the `notifier` feature is off. The default,
//! [`Portable`], needs nothing from the kernel, so `NotifierHead` (without
//! a parameter) keeps working for a first boot.
//!
//! # What a kernel provides
//! - [`Kernel::cpu_id`] and [`Kernel::nr_cpus`]: the running CPU's index
//!   and how many there are, for the per-CPU reader counters of [`Srcu`];
//! - [`Kernel::wait`]: one round of waiting while a grace period, a release
//!   or a lock is awaited (yield, sleep, or spin);
//! - [`Kernel::barrier_all_cpus`] (optional): a full memory barrier on
//!   every CPU (an IPI, or `membarrier` on a host). With it, readers pay no
//!   fence at all ([`Kernel::ASYMMETRIC_BARRIER`]);
//! - [`Kernel::Rcu`] and [`Kernel::rcu`]: the grace-period engine. The
//!   crate's own is [`Srcu`], per-CPU sleepable RCU over the hooks above; a
//!   kernel that has its own SRCU implements [`Rcu`] over it instead.
//!
//! # One grace-period domain per kernel
//! Every head of a kernel shares `K::rcu()`, as Linux shares one SRCU
//! domain between all MMU notifiers: per-CPU reader counters cost a cache
//! line per CPU, too much per address space. A grace period therefore waits
//! for readers of every head of that kernel, and registering or
//! unregistering from inside any callback of that kernel would wait for
//! itself (refused with [`Error::InsideCallback`] where the kernel can tell,
//! see [`Rcu::task_is_reading`]).
//!
//! # Example: a kernel with per-CPU data
//! ```
//! use mmu_notifier_core::kernel::{Kernel, ReaderSlot, Srcu};
//! use mmu_notifier_core::NotifierHead;
//!
//! const MAX_CPUS: usize = 64;
//!
//! /// The kernel's embedding of the notifier core.
//! struct MyKernel;
//!
//! static READERS: [ReaderSlot; MAX_CPUS] = [const { ReaderSlot::new() }; MAX_CPUS];
//! static SRCU: Srcu<MyKernel> = Srcu::new(&READERS);
//!
//! // SAFETY: 1. `cpu_id` is this CPU's index from its per-CPU area, below
//! // `nr_cpus`, which only grows (CPUs come online, never go); 2. no
//! // barrier is promised (`ASYMMETRIC_BARRIER` stays false); 3. readers
//! // may sleep or be preempted, so slots are not per task (the default).
//! unsafe impl Kernel for MyKernel {
//!     type Rcu = Srcu<MyKernel>;
//!     fn rcu() -> &'static Srcu<MyKernel> {
//!         &SRCU
//!     }
//!     #[inline(always)]
//!     fn cpu_id() -> usize {
//!         this_cpu_index() // e.g. a `gs:`-relative load
//!     }
//!     fn nr_cpus() -> usize {
//!         online_cpus()
//!     }
//!     fn wait(round: u32) {
//!         if round < 64 { core::hint::spin_loop() } else { schedule() }
//!     }
//! }
//! # fn this_cpu_index() -> usize { 0 }
//! # fn online_cpus() -> usize { 1 }
//! # fn schedule() {}
//!
//! // A head of the kernel's own address space, as a `static`.
//! static KERNEL_MM_NOTIFIERS: NotifierHead<MyKernel> = NotifierHead::for_kernel();
//! # let _ = &KERNEL_MM_NOTIFIERS;
//! ```
//!
//! [`NotifierHead`]: crate::NotifierHead
//! [`Error::InsideCallback`]: crate::Error::InsideCallback

mod srcu;
#[cfg(all(feature = "std", not(loom)))]
mod std_threads;

pub use srcu::{ReaderSlot, Srcu};
#[cfg(all(feature = "std", not(loom)))]
pub use std_threads::{StdThreads, StdThreadsFenced};

/// What the notifier core needs from the kernel it runs in.
///
/// Implement it on a zero-sized type, once per kernel; see the [module
/// docs](self) for why it is a type and for a complete example.
///
/// # Safety
/// The implementor promises:
/// 1. [`cpu_id`](Self::cpu_id) returns the index of the CPU it runs on,
///    below [`nr_cpus`](Self::nr_cpus), and two CPUs never share an index
///    at the same time (a reader that migrates may see two different
///    indexes, one at each end of its section: [`Srcu`] allows that);
/// 2. [`nr_cpus`](Self::nr_cpus) never decreases, and counts a CPU before
///    that CPU first enters a read-side section;
/// 3. if [`ASYMMETRIC_BARRIER`](Self::ASYMMETRIC_BARRIER) is true,
///    [`barrier_all_cpus`](Self::barrier_all_cpus) returns only after every
///    CPU that may be inside a read-side section has executed a full memory
///    barrier after the call began (Linux's `membarrier` semantics);
/// 4. if [`READER_SLOT_PER_TASK`](Self::READER_SLOT_PER_TASK) is true, no
///    two contexts (tasks, threads or interrupt handlers) are ever inside
///    read-side sections on the same `cpu_id` at the same time: a task
///    is not preempted, and no interrupt handler invalidates, while it is
///    inside one (or ids are per thread, as on a host);
/// 5. [`rcu`](Self::rcu) returns the same domain every time.
pub unsafe trait Kernel: Sized + 'static {
    /// The grace-period engine every head of this kernel uses: [`Srcu`]
    /// over this kernel's hooks, or the kernel's own.
    type Rcu: Rcu;

    /// The one grace-period domain of this kernel (a `static`).
    fn rcu() -> &'static Self::Rcu;

    /// The index of the running CPU. Called on every invalidation: make it
    /// `#[inline(always)]` and cheap (a per-CPU load).
    fn cpu_id() -> usize;

    /// How many CPUs may enter a read-side section (the highest
    /// [`cpu_id`](Self::cpu_id) plus one). Read by grace periods only.
    fn nr_cpus() -> usize;

    /// One round of waiting, called in every loop that waits for other CPUs
    /// (a grace period, a release in progress, a contended registration
    /// lock); `round` counts from 0 for each wait. Spin a little, then
    /// yield or sleep if the kernel can. Default: a CPU spin hint.
    #[inline]
    fn wait(round: u32) {
        let _ = round;
        crate::sync::spin_loop();
    }

    /// Whether [`barrier_all_cpus`](Self::barrier_all_cpus) works. Then
    /// readers need no memory fence of their own: the rare grace period
    /// pays for the ordering with a barrier on every CPU instead (the
    /// asymmetric-fence scheme of Linux's SRCU-fast). Default: `false`,
    /// readers fence (a locked increment).
    const ASYMMETRIC_BARRIER: bool = false;

    /// A full memory barrier on every CPU that may be inside a read-side
    /// section, returning once all have executed it: an IPI to every other
    /// CPU whose handler fences and acknowledges, or
    /// `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` on a host. Called
    /// only if [`ASYMMETRIC_BARRIER`](Self::ASYMMETRIC_BARRIER).
    fn barrier_all_cpus() {}

    /// Whether each reader slot is used by one context at a time (see
    /// condition 4): then readers count with plain stores instead of
    /// locked read-modify-writes, and the core can tell whether the running
    /// task is inside a read-side section. Default: `false`.
    const READER_SLOT_PER_TASK: bool = false;
}

/// A read-side section's receipt: what [`Rcu::read_unlock`] needs to close
/// it. Opaque to the core; a kernel's own RCU may store whatever its
/// unlock takes (Linux's `srcu_read_lock` returns an index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a read-side section stays open until its token is given to read_unlock"]
pub struct ReadToken(usize);

impl ReadToken {
    /// A token carrying `value`.
    pub const fn new(value: usize) -> Self {
        Self(value)
    }
    /// The value it carries.
    pub const fn value(self) -> usize {
        self.0
    }
}

/// Read-side sections and grace periods: sleepable RCU.
///
/// The notifier list is walked inside a read-side section; unregistering
/// unlinks a node and then waits for a grace period before its memory may
/// be reused. [`Srcu`] is the crate's implementation; a kernel with its own
/// SRCU implements this over it.
///
/// # Safety
/// The implementor promises:
/// 1. [`synchronize`](Self::synchronize) returns only after every read-side
///    section that began before the call has ended, and everything done
///    inside such a section happens-before `synchronize` returns;
/// 2. a section that is not waited for (it began after `synchronize` was
///    called) observes every write that happened-before the call;
/// 3. sections nest, may be left on another CPU than the one that entered
///    them, and may sleep (callbacks in blocking mode do);
/// 4. [`task_is_reading`](Self::task_is_reading) returns `Some(true)` only
///    if the running task is inside a section of this domain, and
///    `Some(false)` only if it is not.
pub unsafe trait Rcu: Sync + 'static {
    /// Enters a read-side section.
    fn read_lock(&self) -> ReadToken;

    /// Leaves the section `token` came from.
    ///
    /// # Safety
    /// `token` was returned by [`read_lock`](Self::read_lock) of this
    /// domain, on the same task, and is given back exactly once.
    unsafe fn read_unlock(&self, token: ReadToken);

    /// Waits for a grace period: until every section that began before this
    /// call has ended.
    fn synchronize(&self);

    /// Whether the running task is inside a read-side section of this
    /// domain, if the domain can tell (`None`: it cannot). The core refuses
    /// a registration change that would wait for the calling task itself.
    fn task_is_reading(&self) -> Option<bool> {
        None
    }
}

/// The kernel that needs nothing: one shared pair of reader counters,
/// readers that fence, grace periods that spin. What the crate did before
/// the embedding surface existed, for a first boot; a kernel with per-CPU
/// data should implement [`Kernel`] (see the module docs).
///
/// Every reader writes the same cache line, so invalidations on several
/// CPUs serialise on it: correct for any number of CPUs, but it does not
/// scale.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Portable;

#[cfg(not(loom))]
static PORTABLE_READERS: [ReaderSlot; 1] = [ReaderSlot::new()];
#[cfg(not(loom))]
static PORTABLE_SRCU: Srcu<Portable> = Srcu::new(&PORTABLE_READERS);

#[cfg(loom)]
loom::lazy_static! {
    static ref PORTABLE_READERS: [ReaderSlot; 1] = [ReaderSlot::new()];
    static ref PORTABLE_SRCU: Srcu<Portable> = Srcu::new(&*PORTABLE_READERS);
}

// SAFETY: 1. every CPU uses index 0, the one shared slot, and `nr_cpus` is
// 1; sharing a slot is allowed because 4. is not promised
// (`READER_SLOT_PER_TASK` stays false: readers increment with locked
// read-modify-writes); 2. `nr_cpus` is constant; 3. no barrier is promised;
// 5. `rcu` returns one static.
unsafe impl Kernel for Portable {
    type Rcu = Srcu<Portable>;

    #[inline(always)]
    fn rcu() -> &'static Srcu<Portable> {
        #[cfg(not(loom))]
        return &PORTABLE_SRCU;
        #[cfg(loom)]
        return &PORTABLE_SRCU;
    }

    #[inline(always)]
    fn cpu_id() -> usize {
        0
    }

    fn nr_cpus() -> usize {
        1
    }
}
