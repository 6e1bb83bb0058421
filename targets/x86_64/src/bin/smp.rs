//! Notifiers and TLB shootdown with several CPUs: the cases of issue 8 on
//! the real x86-64 MMU under QEMU (`-smp N`, N ≥ 2).
//!
//! Every CPU runs the same `AddressSpace` (each through its own view of
//! the tree) while others change it, register and unregister notifiers, or
//! tear it down. Each case runs a fixed number of iterations, then an
//! oracle checks what must hold whatever the interleaving:
//! - no CPU keeps a translation the tables no longer have (its next access
//!   faults, and it never reads a frame that was freed and reused: freed
//!   frames are poisoned, reused ones hold another page's tag);
//! - no secondary translation points to a frame the CPU tables do not map
//!   there (`ShadowMmu::check_coherent`);
//! - `release` runs exactly once per registered notifier, and later
//!   operations get `Error::Released`;
//! - no callback runs after `unregister` returned.
//!
//! The runner boots this kernel only with `--smp 2` or more; with one CPU
//! every case is skipped (and the kernel reports failure: nothing ran).
#![no_std]
#![no_main]

use core::fmt;
use core::pin::pin;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::SeqCst};

use mmu_notifier_conformance::shadow::{ShadowMmu, Style};
use mmu_notifier_conformance::{CpuFault, Machine};
use mmu_notifier_core::{
    Again, AddressSpace, Error, InvalidateRange, MmuNotifier, PageRange, PhysAddr, Prot, Reusable, Subscription,
    VirtAddr,
};
use mmu_notifier_kernel_x86_64::machine::{KernelFrames, KernelMachine};
use mmu_notifier_kernel_x86_64::{self as h, println, smp, Reason, Tally};
use mmu_notifier_x86::X86_64;

h::entry!(main);

/// Which build this is: `normal`, or the deliberately broken variant the
/// runner asked for (`--broken`), which the run must catch.
const BUILD: &str = if cfg!(mmu_notifier_broken = "no-shootdown") {
    "broken: no-shootdown (flushes stay on the local CPU)"
} else if cfg!(mmu_notifier_broken = "no-grace") {
    "broken: no-grace (unregister does not wait for callbacks)"
} else if cfg!(mmu_notifier_broken = "no-flush") {
    "broken: no-flush (the arch skips invlpg)"
} else if cfg!(mmu_notifier_broken = "no-notify") {
    "broken: no-notify (the core skips the notifier step)"
} else {
    "normal"
};

/// Pages the shared address space may map, from the start of the test window.
const WINDOW: u64 = 32;
/// Data frames the cases circulate (more than the window, so freed frames
/// are reused for other pages).
const POOL: usize = 48;
const PAGE: u64 = 4096;

/// (a) pages zapped under the readers' TLBs.
const SHOOTDOWN_PAGES: u64 = 200;
/// (b) operations per CPU.
const COHERENT_OPS: u32 = 2000;
/// (c) register/unregister cycles.
const REGISTER_CYCLES: usize = 500;
/// (d) address spaces torn down under concurrent use.
const RELEASE_ROUNDS: u32 = 50;

static MACHINE: KernelMachine = KernelMachine::new();

type Space = AddressSpace<'static, X86_64, KernelFrames>;

/// What page `va` holds while it is mapped: its tag.
const fn tag(va: VirtAddr) -> u64 {
    va.0 ^ 0x7a67_0000_0000_0000
}
/// What a frame holds once it was handed back (freed, before reuse).
const POISON: u64 = 0xdead_dead_dead_dead;

const fn va(page: u64) -> VirtAddr {
    VirtAddr(h::TEST_WINDOW + page * PAGE)
}

fn pages(first: u64, count: u64) -> PageRange {
    PageRange::from_pages(va(first), count, PAGE).expect("page-aligned")
}

struct CaseDef {
    name: &'static str,
    run: fn() -> Result<(), Reason>,
}

const CASES: &[CaseDef] = &[
    CaseDef { name: "shootdown_makes_other_cpu_fault", run: shootdown_makes_other_cpu_fault },
    CaseDef { name: "concurrent_zap_and_fault_in_stay_coherent", run: concurrent_zap_and_fault_in_stay_coherent },
    CaseDef { name: "register_unregister_races_invalidation", run: register_unregister_races_invalidation },
    CaseDef { name: "release_exactly_once_under_concurrency", run: release_exactly_once_under_concurrency },
];

fn main(_cmdline: &'static str) -> ! {
    let cpus = smp::start();
    println!(
        "smp: x86_64, {cpus} CPU(s) online, accelerator {:?}, {BUILD} build, TSC {} kHz",
        h::accel(),
        h::tsc_per_ms()
    );
    let mut tally = Tally::new();
    let filter = h::filter();
    for case in CASES.iter().filter(|c| filter.is_none_or(|f| c.name.contains(f))) {
        if cpus < 2 {
            tally.skip(case.name, "needs at least 2 CPUs (boot with -smp 2 or more)");
            continue;
        }
        let frames_before = h::frames_in_use();
        let ipis_before = smp::shootdown_ipis();
        let start = h::rdtsc();
        let outcome = (case.run)();
        let ms = (h::rdtsc() - start) / h::tsc_per_ms().max(1);
        MACHINE.deactivate();
        let leaked = h::frames_in_use() as isize - frames_before as isize;
        println!("     {}: {ms} ms, {} shootdown IPIs", case.name, smp::shootdown_ipis() - ipis_before);
        let outcome = match outcome {
            Ok(()) if leaked != 0 => Err(Reason::new(format_args!("passed, but {leaked} frame(s) not freed"))),
            other => other,
        };
        tally.record(case.name, outcome);
    }
    tally.finish()
}

// ---------------------------------------------------------------------------
// Shared helpers: a verdict any CPU can fail, a frame pool, a random source.

/// The first failure any CPU reported, and how many there were.
struct Verdict {
    claimed: AtomicBool,
    ptr: AtomicPtr<u8>,
    len: AtomicUsize,
    failures: AtomicUsize,
}

impl Verdict {
    const fn new() -> Self {
        Self {
            claimed: AtomicBool::new(false),
            ptr: AtomicPtr::new(core::ptr::null_mut()),
            len: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
        }
    }

    fn fail(&self, args: fmt::Arguments<'_>) {
        self.failures.fetch_add(1, SeqCst);
        if !self.claimed.swap(true, SeqCst) {
            let msg = Reason::new(args).as_str();
            self.len.store(msg.len(), SeqCst);
            self.ptr.store(msg.as_ptr().cast_mut(), SeqCst);
        }
    }

    fn failed(&self) -> bool {
        self.failures.load(SeqCst) != 0
    }

    /// The verdict, once every CPU that could fail it has finished.
    fn outcome(&self) -> Result<(), Reason> {
        let n = self.failures.load(SeqCst);
        if n == 0 {
            return Ok(());
        }
        let ptr = self.ptr.load(SeqCst);
        let first = if ptr.is_null() {
            "(message lost)"
        } else {
            // SAFETY: `ptr`/`len` come from a `&'static str` (a `Reason`),
            // stored before `ptr` was published.
            unsafe { core::str::from_utf8_unchecked(core::slice::from_raw_parts(ptr, self.len.load(SeqCst))) }
        };
        Err(Reason::new(format_args!("{first} ({n} failure(s) in all)")))
    }
}

/// Data frames not mapped anywhere. Lock-free: a slot holds a frame or 0.
struct Pool {
    slots: [AtomicU64; POOL],
}

impl Pool {
    fn fill() -> Result<Self, Reason> {
        let pool = Pool { slots: [const { AtomicU64::new(0) }; POOL] };
        for slot in &pool.slots {
            let Some(f) = MACHINE.alloc_frame() else {
                pool.drain();
                return Err("out of frames".into());
            };
            MACHINE.write_phys(f, POISON);
            slot.store(f.0, SeqCst);
        }
        Ok(pool)
    }

    fn take(&self) -> Option<PhysAddr> {
        self.slots.iter().find_map(|s| match s.swap(0, SeqCst) {
            0 => None,
            f => Some(PhysAddr(f)),
        })
    }

    /// Takes back a frame no translation reaches any more; poisons it, so
    /// that a CPU still reading it through a stale translation sees so.
    fn give(&self, frame: PhysAddr) {
        MACHINE.write_phys(frame, POISON);
        let slot = self.slots.iter().find(|s| s.compare_exchange(0, frame.0, SeqCst, SeqCst).is_ok());
        assert!(slot.is_some(), "more frames came back than went out");
    }

    /// The zap and teardown callback: a frame the core handed back.
    fn reuse(&self, r: Reusable) {
        self.give(r.into_frame());
    }

    fn drain(&self) {
        for s in &self.slots {
            let f = s.swap(0, SeqCst);
            if f != 0 {
                MACHINE.free_frame(PhysAddr(f));
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.drain();
    }
}

/// xorshift64*: a fixed sequence per CPU and case, so runs are comparable.
struct Rng(u64);

impl Rng {
    fn new(cpu: usize, case: u64) -> Self {
        Rng((cpu as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ case)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        (self.next() >> 32) % n
    }
    /// A random range of 1..=8 pages inside the window.
    fn range(&mut self) -> PageRange {
        let first = self.below(WINDOW);
        let count = (1 + self.below(8)).min(WINDOW - first);
        pages(first, count)
    }
}

fn new_space() -> Result<Space, Reason> {
    Space::new(MACHINE.arch(), MACHINE.frames()).map_err(|e| Reason::new(format_args!("AddressSpace::new: {e}")))
}

/// Maps every unmapped page of `range` to a pool frame holding its tag.
/// Returns how many it mapped; `Err(Released)` once the space is gone.
fn map_range(mm: &Space, pool: &Pool, range: PageRange) -> Result<u32, Error> {
    let mut mapped = 0;
    let mut page = range.start();
    while page < range.end() {
        if mm.translate(page).is_none() {
            let Some(frame) = pool.take() else { break };
            MACHINE.write_phys(frame, tag(page));
            match mm.map(page, frame, Prot::WRITE) {
                Ok(()) => mapped += 1,
                // Another CPU mapped it since we looked.
                Err(Error::AlreadyMapped { .. }) => pool.give(frame),
                Err(e) => {
                    pool.give(frame);
                    return Err(e);
                }
            }
        }
        page = VirtAddr(page.0 + PAGE);
    }
    Ok(mapped)
}

/// A CPU read of `page` on this CPU: it faults, or it reads the page's tag.
/// Anything else came through a translation the tables no longer have.
fn check_read(v: &Verdict, page: VirtAddr) {
    match MACHINE.cpu_read(page) {
        Ok(x) if x == tag(page) => {}
        Err(CpuFault::NotMapped) => {}
        Ok(POISON) => v.fail(format_args!(
            "CPU {} read {page} through a stale translation: its frame was handed back (poisoned)",
            h::cpu_id()
        )),
        Ok(x) => v.fail(format_args!(
            "CPU {} read {x:#x} at {page}: a stale translation to a frame reused for another page",
            h::cpu_id()
        )),
        Err(f) => v.fail(format_args!("CPU {} read of {page}: unexpected fault {f:?}", h::cpu_id())),
    }
}

/// Spins `n` rounds (to widen race windows, or let another CPU run).
fn spin(n: u64) {
    for _ in 0..n {
        core::hint::spin_loop();
    }
}

// ---------------------------------------------------------------------------
// (a) shootdown_makes_other_cpu_fault

struct Shoot<'a> {
    mm: &'a Space,
    pool: &'a Pool,
    v: Verdict,
    /// The page of the current round (0: not started), published by CPU 0
    /// once it is mapped.
    round: AtomicU64,
    /// Readers that have the current page in their TLB.
    filled: AtomicUsize,
    /// The round whose `zap_range` has returned.
    zapped: AtomicU64,
    /// Readers done with the current round.
    done: AtomicUsize,
    /// Reads that succeeded between the PTE clear and the shootdown (the
    /// window exists; informational).
    late_hits: AtomicU64,
}

/// CPU 0 maps a page; every other CPU reads it (TLB filled) and keeps
/// reading; CPU 0 zaps it (`zap_range`), and the frame is poisoned when the
/// core hands it back. After `zap_range` returned, every other CPU's next
/// read must fault, and no read may ever see the poison.
fn shootdown_makes_other_cpu_fault() -> Result<(), Reason> {
    let mm = new_space()?;
    let pool = Pool::fill()?;
    let ctx = Shoot {
        mm: &mm,
        pool: &pool,
        v: Verdict::new(),
        round: AtomicU64::new(0),
        filled: AtomicUsize::new(0),
        zapped: AtomicU64::new(0),
        done: AtomicUsize::new(0),
        late_hits: AtomicU64::new(0),
    };
    smp::on_all_cpus(&ctx, |c, cpu| if cpu == 0 { shoot_zapper(c) } else { shoot_reader(c) });
    println!(
        "     {SHOOTDOWN_PAGES} pages zapped under {} reader CPU(s); reads that hit before the shootdown: {}",
        smp::cpus() - 1,
        ctx.late_hits.load(SeqCst)
    );
    let _ = mm.teardown(&mut |r| pool.reuse(r));
    ctx.v.outcome()
}

fn shoot_zapper(c: &Shoot<'_>) {
    let readers = smp::cpus() - 1;
    for round in 1..=SHOOTDOWN_PAGES {
        let page = va(round % 256);
        if let Err(e) = map_range(c.mm, c.pool, pages(round % 256, 1)) {
            return c.v.fail(format_args!("map {page}: {e}"));
        }
        c.filled.store(0, SeqCst);
        c.done.store(0, SeqCst);
        c.round.store(round, SeqCst);
        while c.filled.load(SeqCst) < readers {
            core::hint::spin_loop();
        }
        let range = pages(round % 256, 1);
        match c.mm.zap_range(range, &mut |r| c.pool.reuse(r)) {
            Ok(1) => {}
            other => c.v.fail(format_args!("zap_range({range:?}) = {other:?}, expected Ok(1)")),
        }
        c.zapped.store(round, SeqCst);
        while c.done.load(SeqCst) < readers {
            core::hint::spin_loop();
        }
        if c.v.failed() {
            break;
        }
    }
    c.round.store(u64::MAX, SeqCst);
}

fn shoot_reader(c: &Shoot<'_>) {
    // SAFETY: the space lives until after `on_all_cpus` returns, and this
    // CPU leaves it (the mailbox loop deactivates) before the teardown.
    unsafe { MACHINE.activate(c.mm.root()) };
    let mut last = 0;
    loop {
        let round = loop {
            let r = c.round.load(SeqCst);
            if r != last {
                break r;
            }
            core::hint::spin_loop();
        };
        if round == u64::MAX {
            return;
        }
        last = round;
        let page = va(round % 256);
        match MACHINE.cpu_read(page) {
            Ok(x) if x == tag(page) => {}
            other => c.v.fail(format_args!("CPU {}: first read of freshly mapped {page} gave {other:?}", h::cpu_id())),
        }
        c.filled.fetch_add(1, SeqCst);
        loop {
            let zapped_before = c.zapped.load(SeqCst) == round;
            match MACHINE.cpu_read(page) {
                Err(CpuFault::NotMapped) => break,
                Ok(x) if x == tag(page) && !zapped_before => {
                    c.late_hits.fetch_add(1, SeqCst);
                }
                Ok(x) if x == tag(page) => {
                    c.v.fail(format_args!(
                        "CPU {} still read {page} after zap_range returned: its TLB kept the translation (no shootdown?)",
                        h::cpu_id()
                    ));
                    break;
                }
                Ok(x) => {
                    c.v.fail(format_args!(
                        "CPU {} read {x:#x} at {page} after the frame was handed back: a stale translation to a reused frame",
                        h::cpu_id()
                    ));
                    break;
                }
                Err(f) => {
                    c.v.fail(format_args!("CPU {}: read of {page}: unexpected {f:?}", h::cpu_id()));
                    break;
                }
            }
        }
        c.done.fetch_add(1, SeqCst);
    }
}

// ---------------------------------------------------------------------------
// (b) concurrent_zap_and_fault_in_stay_coherent

struct Coherent<'a> {
    mm: &'a Space,
    pool: &'a Pool,
    shadow: &'a ShadowMmu,
    v: Verdict,
    zaps: AtomicU64,
    maps: AtomicU64,
    protects: AtomicU64,
    faults_in: AtomicU64,
    reads: AtomicU64,
}

/// CPUs 0..N-1 zap, map and mprotect random overlapping ranges of one
/// address space; the last CPU faults pages into a Seed-style shadow MMU
/// (and ages them); every CPU runs the space and reads a random page after
/// each step. Then the oracle: the shadow is coherent with the tables, and
/// on every CPU an unmapped page faults and a mapped one reads its tag.
fn concurrent_zap_and_fault_in_stay_coherent() -> Result<(), Reason> {
    let mm = new_space()?;
    let pool = Pool::fill()?;
    let sub = pin!(Subscription::new(ShadowMmu::new(Style::Seed, PAGE)));
    mm.notifiers().register(sub.as_ref()).map_err(|e| Reason::new(format_args!("register: {e}")))?;
    let ctx = Coherent {
        mm: &mm,
        pool: &pool,
        shadow: sub.notifier(),
        v: Verdict::new(),
        zaps: AtomicU64::new(0),
        maps: AtomicU64::new(0),
        protects: AtomicU64::new(0),
        faults_in: AtomicU64::new(0),
        reads: AtomicU64::new(0),
    };
    map_range(&mm, &pool, pages(0, WINDOW)).map_err(|e| Reason::new(format_args!("initial map: {e}")))?;
    smp::on_all_cpus(&ctx, coherent_worker);
    println!(
        "     {COHERENT_OPS} ops on each of {} CPU(s): {} zaps, {} maps, {} mprotects, {} shadow faults-in, {} CPU reads",
        smp::cpus(),
        ctx.zaps.load(SeqCst),
        ctx.maps.load(SeqCst),
        ctx.protects.load(SeqCst),
        ctx.faults_in.load(SeqCst),
        ctx.reads.load(SeqCst)
    );
    // The oracle, now that nothing changes any more.
    if let Err((page, cached, primary)) = ctx.shadow.check_coherent(&mm) {
        ctx.v.fail(format_args!(
            "the shadow MMU translates {page} to {cached} but the CPU tables map it to {primary:?}"
        ));
    }
    smp::on_all_cpus(&ctx, |c, _| {
        // SAFETY: as in the workers.
        unsafe { MACHINE.activate(c.mm.root()) };
        for p in 0..WINDOW {
            let page = va(p);
            match (c.mm.translate(page), MACHINE.cpu_read(page)) {
                (None, Err(CpuFault::NotMapped)) => {}
                (Some(_), Ok(x)) if x == tag(page) => {}
                (t, r) => c.v.fail(format_args!(
                    "after the run, CPU {} reads {page} as {r:?} while the tables hold {:?}",
                    h::cpu_id(),
                    t.map(|(leaf, _)| leaf.frame)
                )),
            }
        }
        MACHINE.deactivate();
    });
    mm.teardown(&mut |r| pool.reuse(r)).map_err(|e| Reason::new(format_args!("teardown: {e}")))?;
    if sub.notifier().releases() != 1 {
        ctx.v.fail(format_args!("release ran {} times", sub.notifier().releases()));
    }
    ctx.v.outcome()
}

fn coherent_worker(c: &Coherent<'_>, cpu: usize) {
    let device = cpu == smp::cpus() - 1;
    let mut rng = Rng::new(cpu, 0xb);
    // SAFETY: the space lives until after `on_all_cpus` returns; the
    // mailbox loop (and CPU 0's caller) deactivate before its teardown.
    unsafe { MACHINE.activate(c.mm.root()) };
    for _ in 0..COHERENT_OPS {
        if c.v.failed() {
            break;
        }
        if device {
            let page = va(rng.below(WINDOW));
            let write = rng.below(2) == 0;
            if c.shadow.fault_in(c.mm, page, write).is_ok() {
                c.faults_in.fetch_add(1, SeqCst);
            }
            if rng.below(8) == 0 {
                let _ = c.mm.clear_flush_young(page);
            }
        } else {
            let range = rng.range();
            let result = match rng.below(4) {
                0 => c.mm.zap_range(range, &mut |r| c.pool.reuse(r)).map(|n| {
                    c.zaps.fetch_add(n as u64, SeqCst);
                }),
                1 => map_range(c.mm, c.pool, range).map(|n| {
                    c.maps.fetch_add(u64::from(n), SeqCst);
                }),
                2 => c.mm.change_protection(range, Prot::READ).map(|n| {
                    c.protects.fetch_add(n as u64, SeqCst);
                }),
                _ => c.mm.change_protection(range, Prot::WRITE).map(|n| {
                    c.protects.fetch_add(n as u64, SeqCst);
                }),
            };
            if let Err(e) = result {
                c.v.fail(format_args!("CPU {cpu}: operation on {range:?} failed: {e}"));
            }
        }
        check_read(&c.v, va(rng.below(WINDOW)));
        c.reads.fetch_add(1, SeqCst);
    }
    MACHINE.deactivate();
}

// ---------------------------------------------------------------------------
// (c) register_unregister_races_invalidation

/// `UNREGISTERED[i]`: the `unregister` of cycle `i` has returned.
static UNREGISTERED: [AtomicBool; REGISTER_CYCLES] = [const { AtomicBool::new(false) }; REGISTER_CYCLES];
/// Callbacks that ran (or were still running) after their notifier's
/// `unregister` returned.
static LATE_CALLBACKS: AtomicU64 = AtomicU64::new(0);
/// `invalidate_range_end` without a matching start.
static UNPAIRED_ENDS: AtomicU64 = AtomicU64::new(0);
/// Every callback of every cycle.
static CALLBACKS: AtomicU64 = AtomicU64::new(0);

/// A notifier that knows which cycle it belongs to and checks, when a
/// callback starts and again when it ends, that its cycle's `unregister`
/// has not returned yet. It lingers in each callback, so that callbacks in
/// flight while `unregister` runs are common: the grace period must wait
/// for them.
struct Watch {
    cycle: usize,
    starts: AtomicU64,
    ends: AtomicU64,
}

impl Watch {
    fn callback(&self) {
        let cycle = self.cycle;
        CALLBACKS.fetch_add(1, SeqCst);
        if UNREGISTERED[cycle].load(SeqCst) {
            LATE_CALLBACKS.fetch_add(1, SeqCst);
        }
        spin(300);
        if UNREGISTERED[cycle].load(SeqCst) {
            LATE_CALLBACKS.fetch_add(1, SeqCst);
        }
    }
}

impl MmuNotifier for Watch {
    fn invalidate_page(&self, _addr: VirtAddr) {
        self.callback();
    }
    fn invalidate_pages(&self, _range: PageRange) {
        self.callback();
    }
    fn invalidate_range_start(&self, _range: &InvalidateRange) -> Result<(), Again> {
        self.starts.fetch_add(1, SeqCst);
        self.callback();
        Ok(())
    }
    fn invalidate_range_end(&self, _range: &InvalidateRange) {
        if self.ends.fetch_add(1, SeqCst) >= self.starts.load(SeqCst) {
            UNPAIRED_ENDS.fetch_add(1, SeqCst);
        }
        self.callback();
    }
}

struct Churn<'a> {
    mm: &'a Space,
    pool: &'a Pool,
    v: Verdict,
    registrar_done: AtomicBool,
    invalidations: AtomicU64,
    unpaired_at_unregister: AtomicU64,
}

/// The last CPU registers a notifier, lets it take invalidations for a
/// moment, unregisters it, and marks that cycle over, 500 times; the other
/// CPUs zap, remap and mprotect meanwhile. No callback may see its cycle
/// over (`unregister` waits for callbacks in flight), and every notifier
/// sees its range starts and ends paired.
fn register_unregister_races_invalidation() -> Result<(), Reason> {
    for u in &UNREGISTERED {
        u.store(false, SeqCst);
    }
    LATE_CALLBACKS.store(0, SeqCst);
    UNPAIRED_ENDS.store(0, SeqCst);
    CALLBACKS.store(0, SeqCst);
    let mm = new_space()?;
    let pool = Pool::fill()?;
    map_range(&mm, &pool, pages(0, WINDOW)).map_err(|e| Reason::new(format_args!("initial map: {e}")))?;
    let ctx = Churn {
        mm: &mm,
        pool: &pool,
        v: Verdict::new(),
        registrar_done: AtomicBool::new(false),
        invalidations: AtomicU64::new(0),
        unpaired_at_unregister: AtomicU64::new(0),
    };
    smp::on_all_cpus(&ctx, |c, cpu| if cpu == smp::cpus() - 1 { churn_registrar(c) } else { churn_invalidator(c, cpu) });
    let (late, unpaired, calls) = (LATE_CALLBACKS.load(SeqCst), UNPAIRED_ENDS.load(SeqCst), CALLBACKS.load(SeqCst));
    println!(
        "     {REGISTER_CYCLES} register/unregister cycles against {} invalidating operations; {calls} callbacks",
        ctx.invalidations.load(SeqCst)
    );
    if late != 0 {
        ctx.v.fail(format_args!("{late} callback check(s) ran after their notifier's unregister returned"));
    }
    if unpaired != 0 || ctx.unpaired_at_unregister.load(SeqCst) != 0 {
        ctx.v.fail(format_args!(
            "unpaired range callbacks: {unpaired} end(s) without a start, {} notifier(s) unregistered with starts != ends",
            ctx.unpaired_at_unregister.load(SeqCst)
        ));
    }
    if calls == 0 {
        ctx.v.fail(format_args!("no callback ran at all: the race was not exercised"));
    }
    mm.teardown(&mut |r| pool.reuse(r)).map_err(|e| Reason::new(format_args!("teardown: {e}")))?;
    ctx.v.outcome()
}

fn churn_registrar(c: &Churn<'_>) {
    let mut rng = Rng::new(h::cpu_id(), 0xc);
    for (cycle, unregistered) in UNREGISTERED.iter().enumerate() {
        if c.v.failed() {
            break;
        }
        let sub = pin!(Subscription::new(Watch { cycle, starts: AtomicU64::new(0), ends: AtomicU64::new(0) }));
        if let Err(e) = c.mm.notifiers().register(sub.as_ref()) {
            c.v.fail(format_args!("cycle {cycle}: register: {e}"));
            break;
        }
        spin(rng.below(4000));
        if let Err(e) = c.mm.notifiers().unregister(sub.as_ref()) {
            c.v.fail(format_args!("cycle {cycle}: unregister: {e}"));
            break;
        }
        unregistered.store(true, SeqCst);
        let w = sub.notifier();
        if w.starts.load(SeqCst) != w.ends.load(SeqCst) {
            c.unpaired_at_unregister.fetch_add(1, SeqCst);
        }
    }
    c.registrar_done.store(true, SeqCst);
}

fn churn_invalidator(c: &Churn<'_>, cpu: usize) {
    let mut rng = Rng::new(cpu, 0xc);
    // Bounded even if the registrar never finishes.
    for _ in 0..1_000_000 {
        if c.registrar_done.load(SeqCst) || c.v.failed() {
            return;
        }
        let range = rng.range();
        let result = match rng.below(3) {
            0 => c.mm.zap_range(range, &mut |r| c.pool.reuse(r)).map(drop),
            1 => c.mm.change_protection(range, Prot::READ).map(drop),
            _ => c.mm.change_protection(range, Prot::WRITE).map(drop),
        }
        .and_then(|()| map_range(c.mm, c.pool, range).map(drop));
        if let Err(e) = result {
            return c.v.fail(format_args!("CPU {cpu}: operation on {range:?} failed: {e}"));
        }
        c.invalidations.fetch_add(1, SeqCst);
    }
}

// ---------------------------------------------------------------------------
// (d) release_exactly_once_under_concurrency

/// Counts its `release` calls, and callbacks that come after one.
struct Counted {
    releases: AtomicU64,
    after_release: AtomicU64,
}

impl Counted {
    const fn new() -> Self {
        Self { releases: AtomicU64::new(0), after_release: AtomicU64::new(0) }
    }
    fn callback(&self) {
        if self.releases.load(SeqCst) != 0 {
            self.after_release.fetch_add(1, SeqCst);
        }
    }
}

impl MmuNotifier for Counted {
    fn release(&self) {
        self.callback();
        self.releases.fetch_add(1, SeqCst);
    }
    fn invalidate_page(&self, _addr: VirtAddr) {
        self.callback();
    }
    fn invalidate_pages(&self, _range: PageRange) {
        self.callback();
    }
    fn invalidate_range_start(&self, _range: &InvalidateRange) -> Result<(), Again> {
        self.callback();
        Ok(())
    }
    fn invalidate_range_end(&self, _range: &InvalidateRange) {
        self.callback();
    }
}

struct Release<'a> {
    mm: &'a Space,
    pool: &'a Pool,
    v: Verdict,
    /// CPUs that started using the space this round.
    ready: AtomicUsize,
    registered: AtomicU64,
    refused: AtomicU64,
    ops_refused: AtomicU64,
}

/// Rounds of: one address space with pages and a notifier; CPU 0 tears it
/// down while every other CPU registers a notifier of its own and keeps
/// zapping and mapping. Every notifier whose `register` succeeded gets
/// `release` exactly once and nothing after it; a `register` that lost the
/// race gets `Error::Released` and never a `release`; once an operation
/// sees the teardown, every later operation and registration gets
/// `Error::Released`.
fn release_exactly_once_under_concurrency() -> Result<(), Reason> {
    let pool = Pool::fill()?;
    let v = Verdict::new();
    let (mut registered, mut refused, mut ops_refused) = (0, 0, 0);
    for round in 0..RELEASE_ROUNDS {
        let mm = new_space()?;
        map_range(&mm, &pool, pages(0, 8)).map_err(|e| Reason::new(format_args!("initial map: {e}")))?;
        let sub = pin!(Subscription::new(Counted::new()));
        mm.notifiers().register(sub.as_ref()).map_err(|e| Reason::new(format_args!("register: {e}")))?;
        let ctx = Release {
            mm: &mm,
            pool: &pool,
            v: Verdict::new(),
            ready: AtomicUsize::new(0),
            registered: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            ops_refused: AtomicU64::new(0),
        };
        smp::on_all_cpus(&ctx, |c, cpu| if cpu == 0 { release_teardown(c) } else { release_user(c, cpu) });
        let n = sub.notifier();
        if n.releases.load(SeqCst) != 1 || n.after_release.load(SeqCst) != 0 {
            ctx.v.fail(format_args!(
                "CPU 0's notifier: release ran {} times, {} callbacks after it",
                n.releases.load(SeqCst),
                n.after_release.load(SeqCst)
            ));
        }
        if let Err(why) = ctx.v.outcome() {
            v.fail(format_args!("round {round}: {why}"));
            break;
        }
        registered += ctx.registered.load(SeqCst);
        refused += ctx.refused.load(SeqCst);
        ops_refused += ctx.ops_refused.load(SeqCst);
    }
    println!(
        "     {RELEASE_ROUNDS} teardowns under {} other CPU(s): {registered} racing registrations released once, {refused} refused, {ops_refused} operations refused",
        smp::cpus() - 1
    );
    v.outcome()
}

fn release_teardown(c: &Release<'_>) {
    while c.ready.load(SeqCst) < smp::cpus() - 1 {
        core::hint::spin_loop();
    }
    spin(Rng::new(0, c.mm.root().0).below(20_000));
    if let Err(e) = c.mm.teardown(&mut |r| c.pool.reuse(r)) {
        return c.v.fail(format_args!("teardown: {e}"));
    }
    if c.mm.teardown(&mut |r| c.pool.reuse(r)) != Err(Error::Released) {
        c.v.fail(format_args!("a second teardown was not refused with Released"));
    }
}

fn release_user(c: &Release<'_>, cpu: usize) {
    let mut rng = Rng::new(cpu, c.mm.root().0);
    let sub = pin!(Subscription::new(Counted::new()));
    c.ready.fetch_add(1, SeqCst);
    spin(rng.below(10_000));
    let registered = match c.mm.notifiers().register(sub.as_ref()) {
        Ok(()) => {
            c.registered.fetch_add(1, SeqCst);
            true
        }
        Err(Error::Released) => {
            c.refused.fetch_add(1, SeqCst);
            false
        }
        Err(e) => return c.v.fail(format_args!("CPU {cpu}: register: {e}")),
    };
    let mut released = false;
    for _ in 0..1_000_000 {
        let range = rng.range();
        let result = if rng.below(2) == 0 {
            c.mm.zap_range(range, &mut |r| c.pool.reuse(r)).map(drop)
        } else {
            map_range(c.mm, c.pool, range).map(drop)
        };
        match result {
            Ok(()) if released => {
                return c.v.fail(format_args!("CPU {cpu}: an operation succeeded after one was refused (Released)"));
            }
            Ok(()) => {}
            Err(Error::Released) => {
                c.ops_refused.fetch_add(1, SeqCst);
                if released {
                    break;
                }
                released = true;
            }
            Err(e) => return c.v.fail(format_args!("CPU {cpu}: operation on {range:?}: {e}")),
        }
    }
    if !released {
        return c.v.fail(format_args!("CPU {cpu}: the teardown never became visible"));
    }
    let late = pin!(Subscription::new(Counted::new()));
    if c.mm.notifiers().register(late.as_ref()) != Err(Error::Released) {
        c.v.fail(format_args!("CPU {cpu}: registering after the teardown was not refused with Released"));
    }
    let n = sub.notifier();
    let want = u64::from(registered);
    if n.releases.load(SeqCst) != want || n.after_release.load(SeqCst) != 0 {
        c.v.fail(format_args!(
            "CPU {cpu}: notifier (registered: {registered}) saw release {} times (expected {want}), {} callbacks after it",
            n.releases.load(SeqCst),
            n.after_release.load(SeqCst)
        ));
    }
}
