//! Several CPUs at once: the notifier core under real concurrency, the
//! same scenarios and parameters on the host (threads over the emulator)
//! and in every QEMU kernel (its secondary CPUs).
//!
//! Every CPU runs one address space while others change it, register and
//! unregister notifiers, or tear it down. Each case does a fixed amount of
//! work, then the oracle checks what must hold whatever the interleaving:
//! - no CPU keeps a translation the tables no longer have (its next access
//!   faults, and it never reads a frame that was handed back and reused:
//!   such frames are [`POISON`]ed, reused ones hold another page's
//!   [`tag`]);
//! - no secondary translation points to a frame the CPU tables do not map
//!   there ([`ShadowMmu::check_coherent`]);
//! - no callback runs after `unregister` returned, and `release` runs
//!   exactly once per registered notifier, never beside another callback
//!   of it; later operations get [`Error::Released`].
//!
//! The helpers ([`Pool`], [`Verdict`], [`Barrier`], [`Rng`], ...) are public
//! so that a kernel's own multi-CPU cases, those about its hardware (x86
//! IPI shootdown, s390 global and local IPTE), are written with the same
//! words.

use core::fmt;
use core::pin::{pin, Pin};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst};

use mmu_notifier_core::{
    Again, Error, Event, InvalidateRange, MmuNotifier, NotifierHead, PageRange, PhysAddr, Prot,
    Reusable, Subscription, VirtAddr,
};

use crate::cases::{new_space, page, pages, va, Space};
use crate::shadow::{FaultIn, ShadowMmu, Style};
use crate::sync::SpinLock;
use crate::{ensure, fail, CpuFault, Failure, Machine, Outcome};

/// A machine's CPUs, as the multi-CPU cases need them: how many, and a
/// way to run work on all of them at once. Kernels implement it with their
/// secondary CPUs, the host with threads.
///
/// The machine's [`Kernel`](mmu_notifier_core::Kernel) gives each CPU its
/// own reader slot and promises one task per slot
/// (`READER_SLOT_PER_TASK`), so the core can tell which CPU is inside a
/// callback: `unregister_from_callback_refused_and_waits_for_other_cpu`
/// relies on it.
pub trait Cpus: Sync {
    /// How many CPUs run cases, the caller's included (at least 1).
    fn count(&self) -> usize;
    /// Runs `work(cpu)` on CPUs `0..count()` at once, the caller as CPU 0,
    /// and returns once every CPU has returned. Each CPU ends on the
    /// machine's own address space.
    fn run_on_each(&self, work: &(dyn Fn(usize) + Sync));
    /// Microseconds on a clock that only moves forward, the same on
    /// every CPU.
    fn now_us(&self) -> u64;
    /// Called in every busy-wait loop (a CPU hint; the host yields its
    /// thread).
    fn relax(&self) {
        core::hint::spin_loop();
    }
}

/// Pages of the test window the cases work on (the shadow caches 64).
pub const WINDOW: u64 = 32;
/// Data frames circulating in a case: more than the window, so a frame
/// handed back is reused for another page.
pub const POOL: usize = 48;
/// Operations each mutating CPU runs in
/// `concurrent_zap_and_fault_in_stay_coherent`.
pub const OPS_PER_CPU: u32 = 1000;
/// Register/unregister cycles in `register_unregister_races_invalidation`.
pub const REGISTER_CYCLES: u32 = 200;
/// Teardowns in `release_exactly_once_under_concurrency`.
pub const RELEASE_ROUNDS: u32 = 20;
/// How long a CPU waits for another before it fails the case.
pub const TIMEOUT_US: u64 = 20_000_000;

/// What a data frame holds while it is mapped at `va`: the page's tag.
pub const fn tag(va: VirtAddr) -> u64 {
    va.0 ^ 0x7a67_0000_0000_0000
}

/// What a data frame holds once it was handed back, before its reuse.
pub const POISON: u64 = 0xdead_dead_dead_dead;

/// Spins for `us` microseconds: work that takes a while (inside a
/// callback, to widen a race window), so it keeps the CPU (no
/// [`Cpus::relax`]).
pub fn spin_us(cpus: &dyn Cpus, us: u64) {
    let start = cpus.now_us();
    while cpus.now_us() - start < us {
        core::hint::spin_loop();
    }
}

/// The verdict of a case that several CPUs can fail: the first failure,
/// and how many there were.
pub struct Verdict {
    first: SpinLock<Option<Failure>>,
    failures: AtomicUsize,
}

impl Verdict {
    /// No failure yet.
    pub const fn new() -> Self {
        Self {
            first: SpinLock::new(None),
            failures: AtomicUsize::new(0),
        }
    }

    /// Fails the case (from any CPU).
    pub fn fail(&self, why: fmt::Arguments<'_>) {
        self.failures.fetch_add(1, SeqCst);
        let mut first = self.first.lock();
        if first.is_none() {
            *first = Some(Failure::new(why));
        }
    }

    /// Records `outcome`'s failure, if any; whether it passed.
    pub fn record(&self, outcome: Outcome) -> bool {
        let Err(failure) = outcome else { return true };
        self.failures.fetch_add(1, SeqCst);
        self.first.lock().get_or_insert(failure);
        false
    }

    /// Whether some CPU failed the case (the others stop early).
    pub fn failed(&self) -> bool {
        self.failures.load(SeqCst) != 0
    }

    /// The verdict, once every CPU that could fail it has returned.
    ///
    /// # Errors
    /// The first failure (with the count, when there were several).
    pub fn outcome(&self) -> Outcome {
        let n = self.failures.load(SeqCst);
        match *self.first.lock() {
            None => Ok(()),
            Some(first) if n == 1 => Err(first),
            Some(first) => fail!("{first} ({n} failures in all)"),
        }
    }
}

impl Default for Verdict {
    fn default() -> Self {
        Self::new()
    }
}

/// Spins until `done()` holds. Gives up (returns false) at once when the
/// case failed elsewhere, and after [`TIMEOUT_US`], failing it with
/// `waiting_for`.
pub fn wait_until(
    cpus: &dyn Cpus,
    v: &Verdict,
    waiting_for: &str,
    mut done: impl FnMut() -> bool,
) -> bool {
    let start = cpus.now_us();
    while !done() {
        if v.failed() {
            return false;
        }
        if cpus.now_us() - start > TIMEOUT_US {
            v.fail(format_args!(
                "timed out after {} s waiting for {waiting_for}",
                TIMEOUT_US / 1_000_000
            ));
            return false;
        }
        cpus.relax();
    }
    true
}

/// A one-shot barrier for the CPUs of one case.
pub struct Barrier {
    arrived: AtomicUsize,
}

impl Barrier {
    /// Nobody arrived yet.
    pub const fn new() -> Self {
        Self {
            arrived: AtomicUsize::new(0),
        }
    }

    /// Arrives without waiting.
    pub fn arrive(&self) {
        self.arrived.fetch_add(1, SeqCst);
    }

    /// Arrives and waits for `n` CPUs in all; false if the case failed
    /// meanwhile (see [`wait_until`]).
    pub fn wait(&self, cpus: &dyn Cpus, v: &Verdict, n: usize) -> bool {
        self.arrive();
        wait_until(cpus, v, "the other CPUs at a barrier", || {
            self.arrived.load(SeqCst) >= n
        })
    }

    /// How many CPUs arrived so far.
    pub fn arrived(&self) -> usize {
        self.arrived.load(SeqCst)
    }
}

impl Default for Barrier {
    fn default() -> Self {
        Self::new()
    }
}

/// xorshift64*: a fixed sequence per CPU and case, so runs are comparable.
pub struct Rng(u64);

impl Rng {
    /// The sequence of CPU `cpu` in the case salted `salt`.
    pub fn new(cpu: usize, salt: u64) -> Self {
        Rng((cpu as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (not 0).
    pub fn below(&mut self, n: u64) -> u64 {
        (self.next_u64() >> 32) % n
    }

    /// The first page and length (1 to `max` pages) of a random range
    /// inside the window.
    pub fn range(&mut self, max: u64) -> (u64, u64) {
        let first = self.below(WINDOW);
        (first, (1 + self.below(max)).min(WINDOW - first))
    }
}

/// Data frames no page maps: taken to map a page, given back (poisoned)
/// when the core hands a frame back. Lock-free: a slot holds a frame or 0.
/// Dropping the pool frees its frames.
pub struct Pool<'m, M: Machine> {
    m: &'m M,
    slots: [AtomicU64; POOL],
}

impl<'m, M: Machine> Pool<'m, M> {
    /// [`POOL`] frames from `m`, poisoned.
    ///
    /// # Errors
    /// The machine is out of frames.
    pub fn fill(m: &'m M) -> Result<Self, Failure> {
        let pool = Pool {
            m,
            slots: [const { AtomicU64::new(0) }; POOL],
        };
        for slot in &pool.slots {
            let Some(frame) = m.alloc_frame() else {
                fail!("out of frames for the pool");
            };
            m.write_phys(frame, POISON);
            slot.store(frame.0, SeqCst);
        }
        Ok(pool)
    }

    /// A frame, if any is left.
    pub fn take(&self) -> Option<PhysAddr> {
        self.slots.iter().find_map(|s| match s.swap(0, SeqCst) {
            0 => None,
            f => Some(PhysAddr(f)),
        })
    }

    /// Takes back a frame no translation reaches any more, poisoned, so a
    /// CPU still reading it through a stale translation sees so.
    ///
    /// # Panics
    /// If more frames come back than went out (a frame handed back twice).
    pub fn give(&self, frame: PhysAddr) {
        self.m.write_phys(frame, POISON);
        let back = self
            .slots
            .iter()
            .any(|s| s.compare_exchange(0, frame.0, SeqCst, SeqCst).is_ok());
        assert!(back, "more frames came back to the pool than went out");
    }

    /// The zap and teardown callback: a frame the core handed back.
    pub fn reuse(&self, r: Reusable) {
        self.give(r.into_frame());
    }
}

impl<M: Machine> Drop for Pool<'_, M> {
    fn drop(&mut self) {
        for s in &self.slots {
            match s.swap(0, SeqCst) {
                0 => {}
                f => self.m.free_frame(PhysAddr(f)),
            }
        }
    }
}

/// Maps every unmapped page of `count` pages from `first` to a pool frame
/// holding its tag. Returns how many it mapped (fewer when the pool runs
/// dry).
///
/// # Errors
/// What the core refused, except a page another CPU mapped meanwhile
/// (`Error::Released` once the space is torn down).
pub fn map_range<M: Machine>(
    m: &M,
    mm: &Space<'_, M>,
    pool: &Pool<'_, M>,
    (first, count): (u64, u64),
    prot: Prot,
) -> Result<u32, Error> {
    let mut mapped = 0;
    for p in first..first + count {
        let page = va(m, p);
        if mm.translate(page).is_some() {
            continue;
        }
        let Some(frame) = pool.take() else { break };
        m.write_phys(frame, tag(page));
        match mm.map(page, frame, prot) {
            Ok(()) => mapped += 1,
            Err(Error::AlreadyMapped { .. }) => pool.give(frame),
            Err(e) => {
                pool.give(frame);
                return Err(e);
            }
        }
    }
    Ok(mapped)
}

/// A CPU read of page `p` on CPU `cpu`: it faults, or it reads the page's
/// tag. Anything else came through a translation the tables no longer
/// have. Returns whether it hit.
pub fn check_read<M: Machine>(m: &M, v: &Verdict, cpu: usize, p: u64) -> bool {
    let page = va(m, p);
    match m.cpu_read(page) {
        Ok(x) if x == tag(page) => true,
        Err(CpuFault::NotMapped) => false,
        Ok(POISON) => {
            v.fail(format_args!(
                "CPU {cpu} read {page} through a stale translation: its frame was handed back (poisoned)"
            ));
            false
        }
        Ok(x) => {
            v.fail(format_args!(
                "CPU {cpu} read {x:#x} at {page}: a stale translation to a frame reused for another page"
            ));
            false
        }
        Err(f) => {
            v.fail(format_args!(
                "CPU {cpu} read of {page}: unexpected fault {f:?}"
            ));
            false
        }
    }
}

/// While nothing changes the tables: CPU `cpu` faults on every page of the
/// window the tables do not map, and reads its tag from every page they
/// map (its TLB holds nothing stale).
pub fn check_cpu_tlb<M: Machine>(m: &M, mm: &Space<'_, M>, v: &Verdict, cpu: usize) {
    for p in 0..WINDOW {
        let page = va(m, p);
        match (mm.translate(page), m.cpu_read(page)) {
            (None, Err(CpuFault::NotMapped)) => {}
            (Some(_), Ok(x)) if x == tag(page) => {}
            (t, r) => v.fail(format_args!(
                "after the run, CPU {cpu} reads {page} as {r:x?} while the tables hold {:?} (stale TLB entry)",
                t.map(|(leaf, _)| leaf.frame)
            )),
        }
    }
}

fn pool_and_space<'m, M: Machine>(m: &'m M) -> Result<(Pool<'m, M>, Space<'m, M>), Failure> {
    Ok((Pool::fill(m)?, new_space(m)?))
}

// ---------------------------------------------------------------------------

/// The mutating CPUs (all but the last) zap, map and mprotect random
/// overlapping ranges of one address space; the last CPU faults pages into
/// a shadow MMU with per-page callbacks, uses and ages them; every CPU runs
/// the space and reads a random page after each step. Then the oracle: the
/// shadow is coherent with the tables, and on every CPU an unmapped page
/// faults and a mapped one reads its tag.
pub(crate) fn concurrent_zap_and_fault_in_stay_coherent<M: Machine + Cpus>(m: &M) -> Outcome {
    let cpus = m.count();
    let (pool, mm) = pool_and_space(m)?;
    let sub = pin!(Subscription::new(ShadowMmu::new(
        Style::PerPage,
        page::<M>()
    )));
    ensure!(
        mm.notifiers().register(sub.as_ref()).is_ok(),
        "register failed"
    );
    let shadow = sub.notifier();
    if let Err(e) = map_range(m, &mm, &pool, (0, WINDOW), Prot::WRITE) {
        fail!("initial map: {e}");
    }
    let v = Verdict::new();
    let (started, mutated, stopped) = (Barrier::new(), Barrier::new(), Barrier::new());
    let (ops, cached, hits, contended) = (
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    );
    let start = m.now_us();
    m.run_on_each(&|cpu| {
        // SAFETY: 1. `mm` is built on `m`'s arch and table allocator;
        // 2. it outlives `run_on_each`, and this CPU deactivates below.
        unsafe { m.activate(mm.root()) };
        let mut rng = Rng::new(cpu, 0xb);
        // Everybody starts together (secondary CPUs wake up late).
        started.wait(m, &v, cpus);
        if cpu == cpus - 1 {
            // The secondary MMU's CPU, until the mutators are done.
            while mutated.arrived() < cpus - 1 && !v.failed() {
                let p = rng.below(WINDOW);
                let write = rng.below(2) == 0;
                match shadow.fault_in(&mm, va(m, p), write) {
                    Ok(_) => {
                        cached.fetch_add(1, SeqCst);
                        let _ = shadow.access(va(m, p), write);
                    }
                    Err(FaultIn::NotMapped) => {}
                    Err(FaultIn::Contended) => {
                        contended.fetch_add(1, SeqCst);
                    }
                    Err(e) => v.fail(format_args!(
                        "the shadow could not fault page {p} in: {e:?}"
                    )),
                }
                if rng.below(8) == 0 {
                    let _ = mm.clear_flush_young(va(m, p));
                }
                if check_read(m, &v, cpu, rng.below(WINDOW)) {
                    hits.fetch_add(1, SeqCst);
                }
                m.relax();
            }
        } else {
            for _ in 0..OPS_PER_CPU {
                if v.failed() {
                    break;
                }
                let (first, count) = rng.range(4);
                let range = pages(m, first, count);
                let done = match rng.below(8) {
                    0..=2 => {
                        let prot = if rng.below(2) == 0 {
                            Prot::WRITE
                        } else {
                            Prot::READ
                        };
                        map_range(m, &mm, &pool, (first, count), prot).map(drop)
                    }
                    3 | 4 => mm.zap_range(range, &mut |r| pool.reuse(r)).map(drop),
                    5 => mm.change_protection(range, Prot::READ).map(drop),
                    6 => mm.change_protection(range, Prot::WRITE).map(drop),
                    _ => {
                        for p in first..first + count {
                            if check_read(m, &v, cpu, p) {
                                hits.fetch_add(1, SeqCst);
                            }
                        }
                        Ok(())
                    }
                };
                if let Err(e) = done {
                    v.fail(format_args!(
                        "CPU {cpu}: an operation on {range:?} failed: {e}"
                    ));
                }
                ops.fetch_add(1, SeqCst);
                if check_read(m, &v, cpu, rng.below(WINDOW)) {
                    hits.fetch_add(1, SeqCst);
                }
                // Take turns, where CPUs share cores (the host's threads).
                m.relax();
            }
            mutated.arrive();
        }
        // Everybody stops changing anything; then each CPU checks its TLB.
        if stopped.wait(m, &v, cpus) {
            check_cpu_tlb(m, &mm, &v, cpu);
        }
        m.deactivate();
    });
    let took_ms = (m.now_us() - start) / 1000;
    if let Err(stale) = shadow.check_coherent(&mm) {
        v.fail(format_args!(
            "after the run the secondary MMU is stale: {stale}"
        ));
    }
    v.outcome()?;
    let torn = mm.teardown(&mut |r| pool.reuse(r));
    ensure!(torn.is_ok(), "teardown: {torn:?}");
    ensure!(
        shadow.releases() == 1,
        "release ran {} times, expected once",
        shadow.releases()
    );
    ensure!(
        shadow.cached_count() == 0,
        "the secondary MMU kept translations after release"
    );
    m.log(format_args!(
        "     {} CPUs: {} mutators x {OPS_PER_CPU} ops ({} done), {} shadow faults-in ({} gave up, contended), {} CPU read hits; {took_ms} ms",
        cpus,
        cpus - 1,
        ops.load(SeqCst),
        cached.load(SeqCst),
        contended.load(SeqCst),
        hits.load(SeqCst),
    ));
    Ok(())
}

// ---------------------------------------------------------------------------

/// A notifier that notices being called when it must not be: `gone` is set
/// right after `unregister` returned, and each callback looks at it when it
/// starts and again after a few microseconds of work.
struct Watch<'c> {
    cpus: &'c dyn Cpus,
    inside: AtomicU32,
    gone: AtomicBool,
    /// Set while CPU 0 is inside `unregister`; callbacks that see it when
    /// they finish overlapped an unregister (its grace period had to wait
    /// for them).
    unregistering: AtomicBool,
    overlaps: AtomicU32,
    /// Asks the next callback to stay until `unregistering` shows (and a
    /// little longer), so that some unregisters surely meet a running
    /// callback whatever the scheduling; `holding` says one does.
    hold: AtomicBool,
    holding: AtomicBool,
    late: AtomicU32,
    calls: AtomicU64,
    starts: AtomicU64,
    ends: AtomicU64,
    /// Range ends that came without a start.
    unpaired: AtomicU32,
}

impl<'c> Watch<'c> {
    fn new(cpus: &'c dyn Cpus) -> Self {
        Self {
            cpus,
            inside: AtomicU32::new(0),
            gone: AtomicBool::new(false),
            unregistering: AtomicBool::new(false),
            overlaps: AtomicU32::new(0),
            hold: AtomicBool::new(false),
            holding: AtomicBool::new(false),
            late: AtomicU32::new(0),
            calls: AtomicU64::new(0),
            starts: AtomicU64::new(0),
            ends: AtomicU64::new(0),
            unpaired: AtomicU32::new(0),
        }
    }

    fn visit(&self) {
        self.inside.fetch_add(1, SeqCst);
        self.calls.fetch_add(1, SeqCst);
        if self.gone.load(SeqCst) {
            self.late.fetch_add(1, SeqCst);
        }
        spin_us(self.cpus, 5);
        if self.hold.swap(false, SeqCst) {
            self.holding.store(true, SeqCst);
            let start = self.cpus.now_us();
            while !self.unregistering.load(SeqCst) && self.cpus.now_us() - start < 1_000_000 {
                self.cpus.relax();
            }
            // CPU 0 is in (or about to enter) unregister: its grace period
            // must wait for this.
            spin_us(self.cpus, 50);
        }
        if self.gone.load(SeqCst) {
            self.late.fetch_add(1, SeqCst);
        }
        if self.unregistering.load(SeqCst) {
            self.overlaps.fetch_add(1, SeqCst);
        }
        self.inside.fetch_sub(1, SeqCst);
    }
}

impl MmuNotifier for Watch<'_> {
    fn invalidate_page(&self, _addr: VirtAddr) {
        self.visit();
    }
    fn invalidate_pages(&self, _range: PageRange) {
        self.visit();
    }
    fn invalidate_range_start(&self, _range: &InvalidateRange) -> Result<(), Again> {
        self.starts.fetch_add(1, SeqCst);
        self.visit();
        Ok(())
    }
    fn invalidate_range_end(&self, _range: &InvalidateRange) {
        if self.ends.fetch_add(1, SeqCst) >= self.starts.load(SeqCst) {
            self.unpaired.fetch_add(1, SeqCst);
        }
        self.visit();
    }
}

/// What CPU 0 counts over the cycles of
/// `register_unregister_races_invalidation`.
#[derive(Default)]
struct Cycles {
    /// Unregisters that began while a callback ran.
    overlapped: u32,
    /// Cycles in which a callback was held across the unregister.
    held: u32,
    /// Unregisters that returned while a callback still ran.
    early: u32,
    /// Unregisters after which the notifier had more starts than ends.
    open_at_unregister: u32,
}

/// CPU 0 registers a notifier, lets it take invalidations for a moment
/// (every eighth cycle it makes sure a callback is running), unregisters it
/// and marks it gone, [`REGISTER_CYCLES`] times; the other CPUs invalidate
/// meanwhile, through the address space and straight through its head. No
/// callback may see the notifier gone (`unregister` waits for callbacks in
/// flight), and its range starts and ends are paired whenever `unregister`
/// has returned.
pub(crate) fn register_unregister_races_invalidation<M: Machine + Cpus>(m: &M) -> Outcome {
    let cpus = m.count();
    let (pool, mm) = pool_and_space(m)?;
    if let Err(e) = map_range(m, &mm, &pool, (0, WINDOW), Prot::WRITE) {
        fail!("initial map: {e}");
    }
    let sub = pin!(Subscription::new(Watch::new(m)));
    let sub = sub.into_ref();
    let (w, head) = (sub.notifier(), mm.notifiers());
    let v = Verdict::new();
    let done = AtomicBool::new(false);
    let invalidations = AtomicU64::new(0);
    let cycles = SpinLock::new(Cycles::default());
    let start = m.now_us();
    m.run_on_each(&|cpu| {
        if cpu == 0 {
            let counted = register_cycles(m, &v, head, sub);
            *cycles.lock() = counted;
            done.store(true, SeqCst);
            return;
        }
        let mut rng = Rng::new(cpu, 0xc);
        while !done.load(SeqCst) && !v.failed() {
            let (first, count) = rng.range(4);
            let range = pages(m, first, count);
            let result = match rng.below(4) {
                0 => {
                    let guard =
                        head.invalidate_range_start(InvalidateRange::new(range, Event::Clear));
                    spin_us(m, rng.below(10));
                    guard.end();
                    Ok(())
                }
                1 => {
                    head.invalidate_pages(range);
                    Ok(())
                }
                2 => mm.zap_range(range, &mut |r| pool.reuse(r)).map(drop),
                _ => mm.change_protection(range, Prot::READ).map(drop),
            }
            .and_then(|()| map_range(m, &mm, &pool, (first, count), Prot::WRITE).map(drop));
            if let Err(e) = result {
                v.fail(format_args!(
                    "CPU {cpu}: an operation on {range:?} failed: {e}"
                ));
            }
            invalidations.fetch_add(1, SeqCst);
        }
    });
    let took_ms = (m.now_us() - start) / 1000;
    v.outcome()?;
    let torn = mm.teardown(&mut |r| pool.reuse(r));
    ensure!(torn.is_ok(), "teardown: {torn:?}");
    let c = cycles.lock();
    ensure!(
        c.early == 0,
        "unregister returned while a callback of the notifier was still running (no grace period): {} of {REGISTER_CYCLES} unregisters",
        c.early
    );
    let late = w.late.load(SeqCst);
    ensure!(
        late == 0,
        "a callback ran after unregister returned ({late} times)"
    );
    let unpaired = w.unpaired.load(SeqCst);
    ensure!(
        unpaired == 0,
        "{unpaired} invalidate_range_end(s) came without their start"
    );
    ensure!(
        c.open_at_unregister == 0,
        "{} unregister(s) returned between a range start and its end",
        c.open_at_unregister
    );
    let calls = w.calls.load(SeqCst);
    ensure!(
        calls > 0,
        "the notifier was never called: the case proved nothing"
    );
    ensure!(
        c.held > 0 && w.overlaps.load(SeqCst) > 0,
        "no callback ever ran while unregister did: the race never happened"
    );
    m.log(format_args!(
        "     {REGISTER_CYCLES} (un)register cycles vs {} CPUs: {} invalidations, {calls} callbacks, {} overlapped an unregister ({} held), {} unregisters began inside one; {took_ms} ms",
        cpus - 1,
        invalidations.load(SeqCst),
        w.overlaps.load(SeqCst),
        c.held,
        c.overlapped,
    ));
    Ok(())
}

/// CPU 0's part of `register_unregister_races_invalidation`.
fn register_cycles<'h, M: Machine + Cpus>(
    m: &M,
    v: &Verdict,
    head: &'h NotifierHead<M::Kernel>,
    sub: Pin<&Subscription<'h, Watch<'_>>>,
) -> Cycles {
    let w = sub.notifier();
    let mut rng = Rng::new(0, 0xd0);
    let mut c = Cycles::default();
    for cycle in 0..REGISTER_CYCLES {
        if v.failed() {
            break;
        }
        w.gone.store(false, SeqCst);
        if let Err(e) = head.register(sub) {
            v.fail(format_args!("cycle {cycle}: register: {e}"));
            break;
        }
        // Unregister while a callback runs, if one comes within a while:
        // that is when the grace period has work to do.
        let start = m.now_us();
        let wait = 20 + rng.below(200);
        while w.inside.load(SeqCst) == 0 && m.now_us() - start < wait {
            m.relax();
        }
        if w.inside.load(SeqCst) > 0 {
            c.overlapped += 1;
        }
        w.holding.store(false, SeqCst);
        if cycle % 8 == 0 {
            w.hold.store(true, SeqCst);
            let start = m.now_us();
            while !w.holding.load(SeqCst) && m.now_us() - start < 2_000 {
                m.relax();
            }
            // No callback took the request in time: withdraw it, unless
            // one took it just now.
            if !w.hold.swap(false, SeqCst)
                && !wait_until(m, v, "a held callback to say so", || w.holding.load(SeqCst))
            {
                break;
            }
            if w.holding.load(SeqCst) {
                c.held += 1;
            }
        }
        w.unregistering.store(true, SeqCst);
        let r = head.unregister(sub);
        w.gone.store(true, SeqCst);
        w.unregistering.store(false, SeqCst);
        if let Err(e) = r {
            v.fail(format_args!("cycle {cycle}: unregister: {e}"));
            break;
        }
        if w.inside.load(SeqCst) != 0 {
            c.early += 1;
        }
        if w.starts.load(SeqCst) != w.ends.load(SeqCst) {
            c.open_at_unregister += 1;
        }
        // Let a callback that wrongly still runs trip on `gone`.
        spin_us(m, 5);
    }
    c
}

// ---------------------------------------------------------------------------

/// Blocks in its first range start: tries to unregister itself there (the
/// core must refuse: its own grace period would wait for itself), then
/// waits for CPU 0's `unregister` to begin and stays `hold_us` longer.
struct Blocker<'c, K> {
    cpus: &'c dyn Cpus,
    /// The head and the subscription, by address: the callback needs them
    /// to try unregistering itself.
    head: AtomicUsize,
    sub: AtomicUsize,
    entered: AtomicBool,
    go: AtomicBool,
    left: AtomicBool,
    /// CPU 1's range start returned (with the callback, or without it
    /// where the notifier step is missing).
    started: AtomicBool,
    /// What `unregister` from inside the callback returned.
    inside: SpinLock<Option<Result<(), Error>>>,
    hold_us: u64,
    /// The head's kernel, which the stored address is a head of.
    _kernel: core::marker::PhantomData<fn() -> K>,
}

impl<K: mmu_notifier_core::Kernel> MmuNotifier for Blocker<'_, K> {
    fn invalidate_range_start(&self, _range: &InvalidateRange) -> Result<(), Again> {
        if self.entered.load(SeqCst) {
            return Ok(());
        }
        // SAFETY: 1. both addresses were stored by the case before it
        // registered this subscription: the head of its address space and
        // the pinned subscription, which live on the case's stack until
        // after every CPU returned (so during this callback); 2. the
        // subscription is pinned there, and only a shared pinned view of
        // it is made here.
        let (head, sub) = unsafe {
            (
                &*(self.head.load(SeqCst) as *const NotifierHead<K>),
                Pin::new_unchecked(
                    &*(self.sub.load(SeqCst) as *const Subscription<'_, Blocker<'_, K>>),
                ),
            )
        };
        *self.inside.lock() = Some(head.unregister(sub));
        self.entered.store(true, SeqCst);
        let start = self.cpus.now_us();
        while !self.go.load(SeqCst) && self.cpus.now_us() - start < TIMEOUT_US {
            self.cpus.relax();
        }
        // CPU 0 is calling unregister now; its grace period must wait.
        spin_us(self.cpus, self.hold_us);
        self.left.store(true, SeqCst);
        Ok(())
    }
}

/// CPU 1 enters a callback and tries to unregister its notifier from
/// inside it (refused with `Error::InsideCallback`: waiting would deadlock
/// on itself); CPU 0 unregisters the notifier meanwhile, which must wait
/// until CPU 1 has left the callback.
pub(crate) fn unregister_from_callback_refused_and_waits_for_other_cpu<M: Machine + Cpus>(
    m: &M,
) -> Outcome {
    let mm = new_space(m)?;
    let sub = pin!(Subscription::new(Blocker {
        cpus: m,
        head: AtomicUsize::new(0),
        sub: AtomicUsize::new(0),
        entered: AtomicBool::new(false),
        go: AtomicBool::new(false),
        left: AtomicBool::new(false),
        started: AtomicBool::new(false),
        inside: SpinLock::new(None),
        hold_us: 20_000,
        _kernel: core::marker::PhantomData::<fn() -> M::Kernel>,
    }));
    let sub = sub.into_ref();
    let b = sub.notifier();
    b.head
        .store(core::ptr::from_ref(mm.notifiers()) as usize, SeqCst);
    b.sub.store(core::ptr::from_ref(&*sub) as usize, SeqCst);
    ensure!(mm.notifiers().register(sub).is_ok(), "register failed");
    let v = Verdict::new();
    let waited = SpinLock::new(None);
    m.run_on_each(&|cpu| match cpu {
        1 => {
            mm.notifiers()
                .invalidate_range_start(InvalidateRange::new(pages(m, 0, 1), Event::Clear))
                .end();
            b.started.store(true, SeqCst);
        }
        0 => {
            if !wait_until(m, &v, "CPU 1 to enter the callback", || {
                b.entered.load(SeqCst) || b.started.load(SeqCst)
            }) {
                return;
            }
            if !b.entered.load(SeqCst) {
                v.fail(format_args!(
                    "CPU 1's range start returned without calling the notifier"
                ));
                return;
            }
            b.go.store(true, SeqCst);
            let start = m.now_us();
            if let Err(e) = mm.notifiers().unregister(sub) {
                v.fail(format_args!("unregister on CPU 0: {e}"));
            }
            *waited.lock() = Some((m.now_us() - start, b.left.load(SeqCst)));
        }
        _ => {}
    });
    v.outcome()?;
    let inside = *b.inside.lock();
    ensure!(
        inside == Some(Err(Error::InsideCallback)),
        "unregister from inside the notifier's own callback gave {inside:?}, expected Err(InsideCallback)"
    );
    let Some((waited_us, left)) = *waited.lock() else {
        fail!("CPU 0 never unregistered");
    };
    ensure!(
        left,
        "unregister returned while CPU 1 was still inside the notifier's callback (no grace period): it returned after {waited_us} us, the callback ran {} us longer",
        b.hold_us
    );
    m.log(format_args!(
        "     CPU 1 refused (InsideCallback); CPU 0's unregister waited {waited_us} us for CPU 1's callback"
    ));
    ensure!(mm.teardown(&mut |_| {}).is_ok(), "teardown failed");
    Ok(())
}

// ---------------------------------------------------------------------------

/// Counts how it is called around `release`.
struct Counted<'c> {
    cpus: &'c dyn Cpus,
    releases: AtomicU32,
    inside: AtomicU32,
    /// Callbacks that began after `release` (must be 0), and `release`s
    /// that began while another callback ran (must be 0).
    after_release: AtomicU32,
    during_callback: AtomicU32,
    calls: AtomicU64,
}

impl<'c> Counted<'c> {
    fn new(cpus: &'c dyn Cpus) -> Self {
        Self {
            cpus,
            releases: AtomicU32::new(0),
            inside: AtomicU32::new(0),
            after_release: AtomicU32::new(0),
            during_callback: AtomicU32::new(0),
            calls: AtomicU64::new(0),
        }
    }

    fn visit(&self) {
        self.inside.fetch_add(1, SeqCst);
        self.calls.fetch_add(1, SeqCst);
        if self.releases.load(SeqCst) > 0 {
            self.after_release.fetch_add(1, SeqCst);
        }
        spin_us(self.cpus, 2);
        self.inside.fetch_sub(1, SeqCst);
    }

    /// `release` ran once if the notifier was registered (never if not),
    /// and nothing ran after it or beside it.
    fn check(&self, who: &str, registered: bool) -> Outcome {
        let releases = self.releases.load(SeqCst);
        ensure!(
            releases == u32::from(registered),
            "{who}'s notifier (registered: {registered}) saw release {releases} times"
        );
        let after = self.after_release.load(SeqCst);
        ensure!(
            after == 0,
            "{who}'s notifier was called {after} times after its release"
        );
        let during = self.during_callback.load(SeqCst);
        ensure!(
            during == 0,
            "{who}'s release ran while another of its callbacks ran"
        );
        Ok(())
    }
}

impl MmuNotifier for Counted<'_> {
    fn release(&self) {
        if self.inside.load(SeqCst) != 0 {
            self.during_callback.fetch_add(1, SeqCst);
        }
        spin_us(self.cpus, 2);
        self.releases.fetch_add(1, SeqCst);
    }
    fn invalidate_page(&self, _addr: VirtAddr) {
        self.visit();
    }
    fn invalidate_pages(&self, _range: PageRange) {
        self.visit();
    }
    fn invalidate_range_start(&self, _range: &InvalidateRange) -> Result<(), Again> {
        self.visit();
        Ok(())
    }
    fn invalidate_range_end(&self, _range: &InvalidateRange) {
        self.visit();
    }
}

/// Rounds of: one address space with pages and a notifier; one CPU (a
/// different one each round) tears it down while every other CPU registers
/// a notifier of its own and keeps invalidating, zapping and mapping. Every
/// notifier whose `register` succeeded gets `release` exactly once and
/// nothing after or beside it; a `register` that lost the race gets
/// `Error::Released` and never a `release`; once an operation sees the
/// teardown, every later operation and registration gets `Error::Released`.
pub(crate) fn release_exactly_once_under_concurrency<M: Machine + Cpus>(m: &M) -> Outcome {
    let cpus = m.count();
    let pool = Pool::fill(m)?;
    let (mut registered, mut refused, mut calls) = (0, 0, 0);
    let start = m.now_us();
    for round in 0..RELEASE_ROUNDS {
        let mm = new_space(m)?;
        if let Err(e) = map_range(m, &mm, &pool, (0, 8), Prot::WRITE) {
            fail!("round {round}: initial map: {e}");
        }
        let main_sub = pin!(Subscription::new(Counted::new(m)));
        ensure!(
            mm.notifiers().register(main_sub.as_ref()).is_ok(),
            "register failed"
        );
        let tearer = round as usize % cpus;
        let v = Verdict::new();
        let ready = Barrier::new();
        let (won, lost) = (AtomicU32::new(0), AtomicU32::new(0));
        m.run_on_each(&|cpu| {
            if !ready.wait(m, &v, cpus) {
                return;
            }
            let mut rng = Rng::new(cpu, 0xe0 + round as u64);
            let outcome = if cpu == tearer {
                tear_down(m, &mm, &pool, &mut rng)
            } else {
                race_teardown(m, &mm, &pool, &mut rng, cpu, (&won, &lost))
            };
            v.record(outcome);
        });
        if let Err(why) = v.outcome() {
            fail!("round {round} (CPU {tearer} tore down): {why}");
        }
        main_sub.notifier().check("the first", true)?;
        ensure!(mm.is_released(), "the address space was not torn down");
        registered += won.load(SeqCst);
        refused += lost.load(SeqCst);
        calls += main_sub.notifier().calls.load(SeqCst);
    }
    let took_ms = (m.now_us() - start) / 1000;
    m.log(format_args!(
        "     {RELEASE_ROUNDS} teardowns (rotating CPU) vs {} CPUs: {registered} registrations won the race, {refused} were refused, {calls} callbacks; {took_ms} ms",
        cpus - 1
    ));
    Ok(())
}

/// The tearing CPU's part of `release_exactly_once_under_concurrency`.
fn tear_down<M: Machine + Cpus>(
    m: &M,
    mm: &Space<'_, M>,
    pool: &Pool<'_, M>,
    rng: &mut Rng,
) -> Outcome {
    spin_us(m, rng.below(200));
    m.deactivate();
    let r = mm.teardown(&mut |r| pool.reuse(r));
    ensure!(r.is_ok(), "teardown: {r:?}");
    let again = mm.teardown(&mut |r| pool.reuse(r));
    ensure!(
        again == Err(Error::Released),
        "a second teardown gave {again:?}, expected Released"
    );
    let map = map_range(m, mm, pool, (9, 1), Prot::WRITE);
    ensure!(
        map == Err(Error::Released),
        "a map after teardown gave {map:?}, expected Released"
    );
    Ok(())
}

/// The other CPUs' part of `release_exactly_once_under_concurrency`:
/// register (sometimes before the teardown, sometimes after it began),
/// then invalidate, zap and map until the teardown shows.
fn race_teardown<M: Machine + Cpus>(
    m: &M,
    mm: &Space<'_, M>,
    pool: &Pool<'_, M>,
    rng: &mut Rng,
    cpu: usize,
    (won, lost): (&AtomicU32, &AtomicU32),
) -> Outcome {
    // Dropped when this CPU returns: after the release, so `Drop` finds it
    // released (or never registered) and returns at once.
    let sub = pin!(Subscription::new(Counted::new(m)));
    spin_us(m, rng.below(200));
    let registered = match mm.notifiers().register(sub.as_ref()) {
        Ok(()) => {
            won.fetch_add(1, SeqCst);
            true
        }
        Err(Error::Released) => {
            lost.fetch_add(1, SeqCst);
            false
        }
        Err(e) => fail!("CPU {cpu}: register failed with {e}, not Released"),
    };
    let own = 8 + cpu as u64;
    let head = mm.notifiers();
    let operation = |rng: &mut Rng| match rng.below(4) {
        0 => {
            let guard =
                head.invalidate_range_start(InvalidateRange::new(pages(m, 0, 8), Event::Clear));
            spin_us(m, rng.below(5));
            guard.end();
            Ok(())
        }
        1 => {
            head.invalidate_pages(pages(m, rng.below(8), 1));
            Ok(())
        }
        2 => mm
            .zap_range(pages(m, own, 1), &mut |r| pool.reuse(r))
            .map(drop),
        _ => map_range(m, mm, pool, (own, 1), Prot::WRITE).map(drop),
    };
    let mut released = false;
    for _ in 0..100_000 {
        match operation(rng) {
            Ok(()) => {}
            Err(Error::Released) => {
                released = true;
                break;
            }
            Err(e) => fail!("CPU {cpu}: an operation failed with {e}, not Released"),
        }
    }
    ensure!(
        released,
        "CPU {cpu}: the teardown never showed (no Released in 100000 operations)"
    );
    // That operation saw `Released`: the release has begun (teardown
    // releases before it takes the page-table lock). A second `release`
    // returns only once the first has called every `release` callback.
    let r = mm.notifiers().release();
    ensure!(r.is_ok(), "CPU {cpu}: a second release gave {r:?}");
    sub.notifier().check("a racing CPU", registered)?;
    let zap = mm.zap_range(pages(m, own, 1), &mut |r| pool.reuse(r));
    ensure!(
        zap == Err(Error::Released),
        "CPU {cpu}: a zap after one saw Released gave {zap:?}"
    );
    let again = pin!(Subscription::new(Counted::new(m)));
    let r = mm.notifiers().register(again.as_ref());
    ensure!(
        r == Err(Error::Released),
        "CPU {cpu}: registering after the teardown gave {r:?}, expected Released"
    );
    Ok(())
}
