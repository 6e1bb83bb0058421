//! Several CPUs at once (issue 8, s390x): what the global IPTE does to the
//! other CPUs' TLBs, and the notifier core under real concurrency —
//! invalidations on many CPUs over overlapping ranges while a secondary MMU
//! faults pages in, notifiers registered and unregistered while callbacks
//! run, teardown while other CPUs invalidate and register.
//!
//! Booted by the runner only with `--smp N` (N > 1), with `-smp N -append
//! smp=N`. Every case uses as many CPUs as there are (at least two), does a
//! fixed number of iterations, and ends with the oracle:
//! - no CPU translates a page the primary tables no longer map, or to a
//!   frame other than the one they map (a missing IPTE leaves QEMU's TLB
//!   entry in place: the `no-flush` build fails here);
//! - the reference secondary MMU ([`ShadowMmu`], Seed style) holds no
//!   translation the primary tables do not give (`check_coherent`);
//! - no callback runs after `unregister` returned, or concurrently with or
//!   after `release`, and `release` runs exactly once (the `no-grace`
//!   build, whose SRCU grace period is a no-op, fails here).
//!
//! A CPU's TLB survives only within one job (a secondary CPU is restarted
//! for each job and purges its TLB then), so each case does its stress and
//! its TLB checks in one job per CPU, separated by a barrier.
#![no_std]
#![no_main]

use core::pin::{pin, Pin};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst};

use mmu_notifier_conformance::shadow::{FaultIn, ShadowMmu, Style};
use mmu_notifier_conformance::{CpuFault, Machine};
use mmu_notifier_core::{
    AddressSpace, Again, Arch, Error, Event, InvalidateRange, MmuNotifier, NotifierHead, PageRange, PhysAddr, Prot,
    Reusable, Subscription, VirtAddr,
};
use mmu_notifier_kernel_s390x::clock::now_us;
use mmu_notifier_kernel_s390x::dat::{self, Level, PTE_INVALID, TABLE_INVALID};
use mmu_notifier_kernel_s390x::machine::{refresh_view, KernelFrames, KernelMachine};
use mmu_notifier_kernel_s390x::probe::{code, Fault};
use mmu_notifier_kernel_s390x::smp::{self, MAX_CPUS};
use mmu_notifier_kernel_s390x::test::{detail, note};
use mmu_notifier_kernel_s390x::{self as h, bytes_in_use, case, ensure, println, probe_read, TEST_WINDOW};
use mmu_notifier_s390::S390x;

h::entry!(main);

/// Which build this is: `normal`, or the deliberately broken variant the
/// runner asked for (`--broken`), which the run must catch.
const BUILD: &str = if cfg!(mmu_notifier_broken = "no-flush") {
    "broken: no-flush (the arch stores the invalid bit instead of IPTE)"
} else if cfg!(mmu_notifier_broken = "no-notify") {
    "broken: no-notify (the core skips the notifier step)"
} else if cfg!(mmu_notifier_broken = "no-grace") {
    "broken: no-grace (SRCU synchronize returns at once)"
} else {
    "normal"
};

const PAGE: u64 = 4096;
/// Pages of the window the stress cases work on (the shadow holds 64).
const WINDOW: u64 = 32;
/// How long CPU 0 waits for a job, and a CPU for another (microseconds).
const TIMEOUT_US: u64 = 20_000_000;

/// Mutator iterations per CPU in `concurrent_zap_and_fault_in_stay_coherent`.
const STRESS_ITERATIONS: u64 = 1000;
/// Register/unregister cycles in `register_unregister_races_invalidation`.
const REGISTER_CYCLES: u32 = 300;
/// Teardown rounds in `release_exactly_once_under_concurrency`.
const RELEASE_ROUNDS: u32 = 20;

type Space<'m> = AddressSpace<'m, S390x, KernelFrames>;

fn main() -> ! {
    // The core can then refuse (un)registering from inside a callback on
    // the same CPU instead of waiting for itself.
    mmu_notifier_core::notifier::set_cpu_id_source(smp::cpu_id);
    let cpus = match smp::init() {
        Ok(n) => n,
        Err(e) => {
            println!("FATAL: secondary CPU bring-up: {e}");
            println!("0 passed, 1 failed");
            h::exit_failure()
        }
    };
    println!("smp: s390x, QEMU TCG, {cpus} CPUs, {BUILD} build");
    h::run_tests(&[
        case!(global_ipte_purges_other_cpu),
        case!(local_ipte_purges_only_this_cpu),
        case!(concurrent_zap_and_fault_in_stay_coherent),
        case!(register_unregister_races_invalidation),
        case!(unregister_from_callback_refused_and_waits_for_other_cpu),
        case!(release_exactly_once_under_concurrency),
    ])
}

// ---------------------------------------------------------------------------
// Helpers shared by the cases.

const fn va(page: u64) -> VirtAddr {
    VirtAddr(TEST_WINDOW + page * PAGE)
}

fn pages(first: u64, count: u64) -> PageRange {
    PageRange::from_pages(va(first), count, PAGE).expect("the cases' ranges are page-aligned")
}

/// What a data frame mapped at `page` holds in its first doubleword.
const fn tag(page: u64, serial: u64) -> u64 {
    0x5a5a_0000_0000_0000 | (page << 32) | (serial & 0xffff_ffff)
}

/// The page a tag names, if `value` is a tag at all.
const fn tag_page(value: u64) -> Option<u64> {
    if value >> 48 == 0x5a5a {
        Some((value >> 32) & 0xffff)
    } else {
        None
    }
}

fn rw() -> Prot {
    Prot::READ | Prot::WRITE
}

/// The first doubleword of the data frame at `pa`.
fn read_phys(pa: PhysAddr) -> u64 {
    // SAFETY: `pa` is a data frame the primary tables map (the caller read
    // it from them while nothing changes them), in the identity-mapped
    // pool; no Rust reference covers data frames.
    unsafe { (pa.0 as *const u64).read_volatile() }
}

fn need_cpus() -> Result<usize, &'static str> {
    let n = smp::online();
    ensure!(n >= 2, "needs at least 2 CPUs (boot with -smp 2 or more)");
    Ok(n)
}

/// Busy-waits `us` microseconds (the TOD clock).
fn spin_us(us: u64) {
    let start = now_us();
    while now_us() - start < us {
        core::hint::spin_loop();
    }
}

/// xorshift64*: a different, reproducible stream per CPU and case.
struct Rng(u64);

impl Rng {
    fn new(cpu: usize, salt: u64) -> Self {
        Rng(0x9e37_79b9_7f4a_7c15 ^ ((cpu as u64 + 1) << 32) ^ salt)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        (self.next() >> 16) % n
    }
}

/// Coordination between the CPUs of one case: a phase number, barriers,
/// and an abort flag so that one CPU's failure does not leave the others
/// waiting for the time limit.
struct Flow {
    phase: AtomicU32,
    arrived: [AtomicUsize; 4],
    abort: AtomicBool,
}

impl Flow {
    const fn new() -> Self {
        Flow { phase: AtomicU32::new(0), arrived: [const { AtomicUsize::new(0) }; 4], abort: AtomicBool::new(false) }
    }

    fn until(&self, mut cond: impl FnMut() -> bool, what: &'static str) -> Result<(), &'static str> {
        let start = now_us();
        while !cond() {
            ensure!(!self.abort.load(SeqCst), "another CPU failed");
            ensure!(now_us() - start < TIMEOUT_US, what);
            core::hint::spin_loop();
        }
        Ok(())
    }

    fn set_phase(&self, p: u32) {
        self.phase.store(p, SeqCst);
    }

    fn wait_phase(&self, p: u32) -> Result<(), &'static str> {
        self.until(|| self.phase.load(SeqCst) >= p, "timed out waiting for another CPU's step")
    }

    /// Barrier `n` for `cpus` CPUs.
    fn barrier(&self, n: usize, cpus: usize) -> Result<(), &'static str> {
        self.arrived[n].fetch_add(1, SeqCst);
        self.until(|| self.arrived[n].load(SeqCst) >= cpus, "timed out at a barrier")
    }

    /// Marks the case failed for every CPU and passes `r` on.
    fn check(&self, r: Result<(), &'static str>) -> Result<(), &'static str> {
        if r.is_err() {
            self.abort.store(true, SeqCst);
        }
        r
    }
}

fn new_space(m: &KernelMachine) -> Result<Space<'_>, &'static str> {
    AddressSpace::new(m.arch(), m.frames()).map_err(|_| "cannot create an address space")
}

/// Maps `page` to a fresh frame holding its tag.
fn map_tagged(m: &KernelMachine, mm: &Space<'_>, page: u64, serial: u64, prot: Prot) -> Result<(), Error> {
    let frame = m.alloc_frame().ok_or(Error::OutOfMemory)?;
    m.write_phys(frame, tag(page, serial));
    mm.map(va(page), frame, prot).inspect_err(|_| m.free_frame(frame))
}

/// Tears `mm` down, giving every frame back; this CPU leaves it first.
fn teardown(m: &KernelMachine, mm: &Space<'_>) -> Result<(), &'static str> {
    m.deactivate();
    mm.teardown(&mut |f: Reusable| m.free_frame(f.into_frame())).map_err(|_| "teardown refused")
}

/// The oracle for this CPU's TLB, while nothing changes the tables: every
/// page of the window the primary does not map faults, every page it maps
/// reads what its frame holds.
fn check_cpu_tlb(m: &KernelMachine, mm: &Space<'_>, cpu: usize) -> Result<(), &'static str> {
    for p in 0..WINDOW {
        let got = m.cpu_read(va(p));
        match mm.translate(va(p)) {
            None => ensure!(
                got == Err(CpuFault::NotMapped),
                "a CPU still translates a page the primary tables no longer map (stale TLB entry)",
                "CPU {cpu}, page {p}: read {got:x?}"
            ),
            Some((leaf, _)) => {
                let want = read_phys(leaf.frame);
                ensure!(
                    got == Ok(want),
                    "a CPU reads a mapped page from another frame than the primary maps (stale TLB entry)",
                    "CPU {cpu}, page {p}: read {got:x?}, frame {} holds {want:#x}",
                    leaf.frame
                );
            }
        }
    }
    Ok(())
}

/// The leaf PTE's real address for `va` in the tree at `root`, walked by
/// hand (the core does not hand PTE addresses out).
fn pte_address(root: u64, va: VirtAddr) -> Option<u64> {
    let mut table = root;
    for level in [Level::RegionFirst, Level::RegionSecond, Level::RegionThird] {
        // SAFETY: `table` is a live region table of the tree (2048 entries,
        // identity mapped); the index is below 2048.
        let e = unsafe { (table as *const u64).add(level.index(va.0)).read_volatile() };
        if e & TABLE_INVALID != 0 {
            return None;
        }
        table = e & !0xfff;
    }
    // SAFETY: as above, the segment table.
    let ste = unsafe { (table as *const u64).add(Level::Segment.index(va.0)).read_volatile() };
    if ste & TABLE_INVALID != 0 {
        return None;
    }
    Some((ste & !0x7ff) + 8 * dat::pt_index(va.0) as u64)
}

// ---------------------------------------------------------------------------
// (a) The global IPTE purges the other CPU's TLB.

struct IpteCtx<'a> {
    m: &'a KernelMachine,
    mm: &'a Space<'a>,
    frame: PhysAddr,
    flow: Flow,
}

const MARK: u64 = 0x6d61_726b_0000_0001;
const REUSED: u64 = 0x7265_7573_6564_0002;

/// Runs `body` and then checks that it gave back every byte of the pool
/// it took (tables, data frames, the root table of its address spaces).
fn without_leaks(body: impl FnOnce(&KernelMachine) -> Result<(), &'static str>) -> Result<(), &'static str> {
    let m = KernelMachine::new();
    let before = bytes_in_use();
    body(&m)?;
    let after = bytes_in_use();
    ensure!(
        after == before,
        "the case did not give back every byte of the pool",
        "{before} bytes in use before, {after} after"
    );
    Ok(())
}

fn global_ipte_purges_other_cpu() -> Result<(), &'static str> {
    need_cpus()?;
    without_leaks(global_ipte_body)
}

fn global_ipte_body(m: &KernelMachine) -> Result<(), &'static str> {
    let mm = new_space(m)?;
    let frame = m.alloc_frame().ok_or("out of frames")?;
    m.write_phys(frame, MARK);
    mm.map(va(0), frame, rw()).map_err(|_| "map failed")?;
    let ctx = IpteCtx { m, mm: &mm, frame, flow: Flow::new() };
    let t0 = now_us();
    let r = smp::on_cpus(2, &ctx, |c, cpu| c.flow.check(ipte_work(c, cpu)), TIMEOUT_US);
    let took = now_us() - t0;
    teardown(m, &mm)?;
    // Zapped by CPU 0 and kept (as if reused) until CPU 1 was done.
    m.free_frame(frame);
    r.map_err(|(_, e)| e)?;
    note(format_args!("CPU 1 read, CPU 0 zapped (IPTE), CPU 1 faulted 0x11; {took} us"));
    Ok(())
}

fn ipte_work(c: &IpteCtx<'_>, cpu: usize) -> Result<(), &'static str> {
    if cpu == 1 {
        // SAFETY: the address space outlives this job (CPU 0 tears it down
        // after `on_cpus` returned), and we leave it before returning.
        unsafe { c.m.activate(c.mm.root()) };
        let first = c.m.cpu_read(va(0));
        ensure!(first == Ok(MARK), "CPU 1 could not read the mapped page", "read {first:x?}");
        // Its TLB now holds the translation.
        c.flow.set_phase(1);
        c.flow.wait_phase(2)?;
        refresh_view();
        // A new translation block: `probe_read` is a call.
        let again = probe_read(va(0).0);
        c.m.deactivate();
        match again {
            Err(Fault { code: code::PAGE_TRANSLATION, addr }) if addr == va(0).0 => Ok(()),
            Ok(v) => {
                detail(format_args!("CPU 1 read {v:#x} through its old translation (frame now holds {REUSED:#x})"));
                Err("CPU 1 still translated the page after CPU 0's zap (global IPTE) returned: its TLB was not purged")
            }
            Err(f) => {
                detail(format_args!("{f:x?}"));
                Err("CPU 1 took another exception than page translation (0x11)")
            }
        }
    } else {
        c.flow.wait_phase(1)?;
        let mut freed = 0;
        c.mm.zap_range(pages(0, 1), &mut |f: Reusable| {
            freed += 1;
            // Kept, not freed: CPU 0 "reuses" the frame below.
            let _ = f.into_frame();
        })
        .map_err(|_| "zap failed")?;
        ensure!(freed == 1, "the zap did not hand the frame back");
        // The frame is reusable now: a stale translation would read this.
        c.m.write_phys(c.frame, REUSED);
        c.flow.set_phase(2);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// (b) IPTE with the local-clearing option.

struct LocalCtx<'a> {
    m: &'a KernelMachine,
    mm: &'a Space<'a>,
    pte: u64,
    flow: Flow,
    /// What CPU 1 saw after CPU 0's local IPTE: 1 stale hit, 2 fault 0x11.
    seen: AtomicU32,
}

fn local_ipte_purges_only_this_cpu() -> Result<(), &'static str> {
    need_cpus()?;
    without_leaks(local_ipte_body)
}

fn local_ipte_body(m: &KernelMachine) -> Result<(), &'static str> {
    let mm = new_space(m)?;
    let f0 = m.alloc_frame().ok_or("out of frames")?;
    let f1 = m.alloc_frame().ok_or("out of frames")?;
    m.write_phys(f0, tag(0, 0));
    m.write_phys(f1, tag(1, 0));
    mm.map(va(0), f0, rw()).map_err(|_| "map failed")?;
    mm.map(va(1), f1, rw()).map_err(|_| "map failed")?;
    let result = (|| -> Result<(), &'static str> {
        // Architected part: the space is attached to CPU 0 only (CPU 1 is
        // stopped on the kernel's space), so IPTE-local is allowed and must
        // take effect at once on this CPU.
        // SAFETY: `mm` outlives its use here; deactivated below.
        unsafe { m.activate(mm.root()) };
        ensure!(m.cpu_read(va(0)) == Ok(tag(0, 0)), "CPU 0 could not read page 0");
        let pte = pte_address(mm.root().0, va(0)).ok_or("no PTE for page 0")?;
        // SAFETY: `pte` is the PTE of page 0 in a live page table of `mm`;
        // no Rust reference points into the test window; only CPU 0 has the
        // space attached, as the local-clearing option requires.
        unsafe { dat::ipte(pte, va(0).0, true) };
        // SAFETY: reading the PTE word IPTE just wrote, in a live table.
        let word = unsafe { (pte as *const u64).read_volatile() };
        ensure!(word & PTE_INVALID != 0, "IPTE-local did not set the PTE's invalid bit", "PTE {word:#x}");
        let after = probe_read(va(0).0);
        ensure!(
            matches!(after, Err(Fault { code: code::PAGE_TRANSLATION, .. })),
            "CPU 0 still translated page 0 right after its own IPTE-local",
            "read {after:x?}"
        );
        m.deactivate();

        // Observed part (not asserted): CPU 1 also has the space attached
        // and page 1 in its TLB, which makes IPTE-local a programming error.
        // The architecture leaves CPU 1's entry unpredictable; QEMU clears
        // only the issuing CPU's TLB, so CPU 1 keeps reading the old frame.
        let pte1 = pte_address(mm.root().0, va(1)).ok_or("no PTE for page 1")?;
        let ctx = LocalCtx { m, mm: &mm, pte: pte1, flow: Flow::new(), seen: AtomicU32::new(0) };
        smp::on_cpus(2, &ctx, |c, cpu| c.flow.check(local_work(c, cpu)), TIMEOUT_US).map_err(|(_, e)| e)?;
        let seen = match ctx.seen.load(SeqCst) {
            1 => "kept its stale entry (read the old frame)",
            2 => "faulted 0x11",
            _ => "did something else",
        };
        note(format_args!("IPTE-local faults on CPU 0 at once; CPU 1, still attached (a misuse), {seen} (not asserted)"));
        Ok(())
    })();
    m.deactivate();
    // CPU 1 may hold a stale entry for page 1 (and CPU 0 for nothing):
    // purge every CPU before the frames go back.
    // SAFETY: supervisor state; CSP only purges TLBs.
    unsafe { m.arch().flush_tlb_all() };
    teardown(m, &mm)?;
    // IPTE-local made both PTEs invalid behind the core's back, so the
    // teardown did not hand their frames back.
    m.free_frame(f0);
    m.free_frame(f1);
    result
}

fn local_work(c: &LocalCtx<'_>, cpu: usize) -> Result<(), &'static str> {
    if cpu == 1 {
        // SAFETY: the space outlives this job; left before returning.
        unsafe { c.m.activate(c.mm.root()) };
        let first = c.m.cpu_read(va(1));
        ensure!(first == Ok(tag(1, 0)), "CPU 1 could not read page 1", "read {first:x?}");
        c.flow.set_phase(1);
        c.flow.wait_phase(2)?;
        let again = probe_read(va(1).0);
        c.m.deactivate();
        c.seen.store(
            match again {
                Ok(_) => 1,
                Err(Fault { code: code::PAGE_TRANSLATION, .. }) => 2,
                Err(_) => 3,
            },
            SeqCst,
        );
        Ok(())
    } else {
        c.flow.wait_phase(1)?;
        // SAFETY: the PTE of page 1 in a live table of the space; no Rust
        // reference into the test window. CPU 1 still has the space
        // attached: that misuse is what this part observes, and the frame
        // stays allocated until every TLB is purged.
        unsafe { dat::ipte(c.pte, va(1).0, true) };
        c.flow.set_phase(2);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// (c) Zaps, maps and mprotects on several CPUs against a faulting secondary.

/// The reference secondary MMU with the fault path a real driver needs
/// under concurrency (KVM's sequence count): the shadow's own `fault_in`
/// looks the page up and caches it in two steps, and a whole zap can run
/// between them (its `invalidate_page` then finds nothing to drop). Every
/// invalidating callback bumps `seq` before the shadow drops entries; a
/// fault that sees `seq` move while it ran drops what it cached and
/// retries. The 2008 seed left this to drivers.
struct Device {
    shadow: ShadowMmu,
    seq: AtomicU64,
}

impl Device {
    const fn new() -> Self {
        Device { shadow: ShadowMmu::new(Style::Seed, PAGE), seq: AtomicU64::new(0) }
    }

    fn bump(&self) {
        self.seq.fetch_add(1, SeqCst);
    }

    fn fault_in(&self, mm: &Space<'_>, va: VirtAddr, write: bool) -> Result<PhysAddr, FaultIn> {
        loop {
            let seq = self.seq.load(SeqCst);
            let frame = self.shadow.fault_in(mm, va, write)?;
            if self.seq.load(SeqCst) == seq {
                return Ok(frame);
            }
            // An invalidation ran meanwhile: what we cached may be stale.
            self.shadow.invalidate_page(va);
        }
    }
}

impl MmuNotifier for Device {
    fn release(&self) {
        self.bump();
        self.shadow.release();
    }
    fn invalidate_page(&self, addr: VirtAddr) {
        self.bump();
        self.shadow.invalidate_page(addr);
    }
    fn invalidate_pages(&self, range: PageRange) {
        self.bump();
        self.shadow.invalidate_pages(range);
    }
    fn age_page(&self, addr: VirtAddr) -> bool {
        self.shadow.age_page(addr)
    }
    fn invalidate_range_start(&self, range: &InvalidateRange) -> Result<(), Again> {
        self.bump();
        self.shadow.invalidate_range_start(range)
    }
    fn invalidate_range_end(&self, range: &InvalidateRange) {
        self.shadow.invalidate_range_end(range);
    }
}

struct StressCtx<'a> {
    m: &'a KernelMachine,
    mm: &'a Space<'a>,
    dev: &'a Device,
    cpus: usize,
    flow: Flow,
    /// Mutator operations done, device faults that cached a page, CPU reads
    /// that hit.
    ops: AtomicU64,
    cached: AtomicU64,
    hits: AtomicU64,
}

fn concurrent_zap_and_fault_in_stay_coherent() -> Result<(), &'static str> {
    need_cpus()?;
    without_leaks(stress_case)
}

fn stress_case(m: &KernelMachine) -> Result<(), &'static str> {
    let cpus = smp::online();
    let mm = new_space(m)?;
    for p in 0..WINDOW / 2 {
        map_tagged(m, &mm, p * 2, 0, rw()).map_err(|_| "initial map failed")?;
    }
    let sub = pin!(Subscription::new(Device::new()));
    mm.notifiers().register(sub.as_ref()).map_err(|_| "register failed")?;
    let ctx = StressCtx {
        m,
        mm: &mm,
        dev: sub.notifier(),
        cpus,
        flow: Flow::new(),
        ops: AtomicU64::new(0),
        cached: AtomicU64::new(0),
        hits: AtomicU64::new(0),
    };
    let t0 = now_us();
    let r = smp::on_cpus(cpus, &ctx, |c, cpu| c.flow.check(stress_work(c, cpu)), TIMEOUT_US);
    let took = now_us() - t0;
    let torn = teardown(m, &mm);
    r.map_err(|(_, e)| e)?;
    torn?;
    ensure!(sub.notifier().shadow.releases() == 1, "release was not called exactly once");
    ensure!(sub.notifier().shadow.cached_count() == 0, "the secondary kept translations after release");
    note(format_args!(
        "{} CPUs: {} mutators x {STRESS_ITERATIONS} ops, device {} faults cached, {} CPU read hits; {} ms",
        cpus,
        cpus - 1,
        ctx.cached.load(SeqCst),
        ctx.hits.load(SeqCst),
        took / 1000
    ));
    Ok(())
}

/// A CPU read in the middle of the stress: either a fault or the tag of
/// the page (a stale TLB entry to a freed or reused frame reads something
/// else).
fn stress_read(c: &StressCtx<'_>, cpu: usize, p: u64) -> Result<(), &'static str> {
    match c.m.cpu_read(va(p)) {
        Ok(v) => {
            ensure!(
                tag_page(v) == Some(p),
                "a CPU read another page's data or a freed frame (stale TLB entry)",
                "CPU {cpu}, page {p}: read {v:#x}"
            );
            c.hits.fetch_add(1, SeqCst);
            Ok(())
        }
        Err(CpuFault::NotMapped) => Ok(()),
        Err(f) => {
            detail(format_args!("CPU {cpu}, page {p}: {f:?}"));
            Err("a CPU read took an unexpected fault")
        }
    }
}

fn stress_work(c: &StressCtx<'_>, cpu: usize) -> Result<(), &'static str> {
    // SAFETY: the space outlives the job; every CPU leaves it before
    // returning, and CPU 0 tears it down only after all jobs returned.
    unsafe { c.m.activate(c.mm.root()) };
    let r = stress_body(c, cpu);
    c.m.deactivate();
    r
}

fn stress_body(c: &StressCtx<'_>, cpu: usize) -> Result<(), &'static str> {
    let mut rng = Rng::new(cpu, 0xc0);
    let device = cpu == c.cpus - 1;
    if device {
        // The secondary MMU's CPU: fault pages in (reads and writes), use
        // them, and read through this CPU too, until the mutators are done.
        while c.flow.arrived[0].load(SeqCst) < c.cpus - 1 {
            ensure!(!c.flow.abort.load(SeqCst), "another CPU failed");
            let p = rng.below(WINDOW);
            let write = rng.below(2) == 0;
            match c.dev.fault_in(c.mm, va(p), write) {
                Ok(_) => {
                    c.cached.fetch_add(1, SeqCst);
                    let _ = c.dev.shadow.access(va(p), write);
                }
                Err(FaultIn::NotMapped) => {}
                Err(e) => {
                    detail(format_args!("page {p}: {e:?}"));
                    return Err("the secondary MMU could not fault a page in");
                }
            }
            stress_read(c, cpu, rng.below(WINDOW))?;
        }
    } else {
        for serial in 1..=STRESS_ITERATIONS {
            let first = rng.below(WINDOW);
            let count = (1 + rng.below(4)).min(WINDOW - first);
            let range = pages(first, count);
            match rng.below(8) {
                0..=2 => {
                    for p in first..first + count {
                        match map_tagged(c.m, c.mm, p, serial, if rng.below(2) == 0 { rw() } else { Prot::READ }) {
                            Ok(()) | Err(Error::AlreadyMapped { .. }) => {}
                            Err(_) => return Err("map failed"),
                        }
                    }
                }
                3 | 4 => {
                    c.mm.zap_range(range, &mut |f: Reusable| c.m.free_frame(f.into_frame()))
                        .map_err(|_| "zap failed")?;
                }
                5 => {
                    c.mm.change_protection(range, Prot::READ).map_err(|_| "mprotect failed")?;
                }
                6 => {
                    c.mm.change_protection(range, rw()).map_err(|_| "mprotect failed")?;
                }
                _ => {
                    for p in first..first + count {
                        stress_read(c, cpu, p)?;
                    }
                }
            }
            c.ops.fetch_add(1, SeqCst);
        }
    }
    // Everybody stops changing anything; then each CPU checks its own TLB
    // against the tables, and CPU 0 checks the secondary MMU.
    c.flow.barrier(0, c.cpus)?;
    check_cpu_tlb(c.m, c.mm, cpu)?;
    if cpu == 0 {
        if let Err((va, cached, primary)) = c.dev.shadow.check_coherent(c.mm) {
            detail(format_args!("{va} -> {cached}, primary {primary:?}"));
            return Err("the secondary MMU holds a stale translation");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// (d) Registration and unregistration racing invalidations.

/// A notifier that notices being called when it must not be: `gone` is set
/// right after `unregister` returned, and each callback looks at it when
/// it starts and again after a few microseconds of work.
struct Watch {
    inside: AtomicU32,
    gone: AtomicBool,
    /// Set while CPU 0 is inside `unregister`; callbacks that see it when
    /// they finish count as overlapping an unregister (the grace period had
    /// to wait for them).
    unregistering: AtomicBool,
    overlaps: AtomicU32,
    /// Asks the next callback to stay until `unregistering` shows (and a
    /// little longer), so that some unregisters surely meet a running
    /// callback whatever the host's scheduling; `holding` says one does.
    hold: AtomicBool,
    holding: AtomicBool,
    late: AtomicU32,
    calls: AtomicU64,
    /// Range starts minus ends, per CPU; an end without its start shows as
    /// a negative count.
    open: [AtomicI32; MAX_CPUS],
    unpaired: AtomicU32,
}

impl Watch {
    const fn new() -> Self {
        Watch {
            inside: AtomicU32::new(0),
            gone: AtomicBool::new(false),
            unregistering: AtomicBool::new(false),
            overlaps: AtomicU32::new(0),
            hold: AtomicBool::new(false),
            holding: AtomicBool::new(false),
            late: AtomicU32::new(0),
            calls: AtomicU64::new(0),
            open: [const { AtomicI32::new(0) }; MAX_CPUS],
            unpaired: AtomicU32::new(0),
        }
    }

    fn visit(&self) {
        self.inside.fetch_add(1, SeqCst);
        self.calls.fetch_add(1, SeqCst);
        if self.gone.load(SeqCst) {
            self.late.fetch_add(1, SeqCst);
        }
        spin_us(5);
        if self.hold.swap(false, SeqCst) {
            self.holding.store(true, SeqCst);
            let start = now_us();
            while !self.unregistering.load(SeqCst) && now_us() - start < 1_000_000 {
                core::hint::spin_loop();
            }
            // CPU 0 is in (or about to enter) unregister: a grace period
            // must wait for this.
            spin_us(50);
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

impl MmuNotifier for Watch {
    fn invalidate_page(&self, _addr: VirtAddr) {
        self.visit();
    }
    fn invalidate_pages(&self, _range: PageRange) {
        self.visit();
    }
    fn invalidate_range_start(&self, _range: &InvalidateRange) -> Result<(), Again> {
        self.open[smp::cpu_index()].fetch_add(1, SeqCst);
        self.visit();
        Ok(())
    }
    fn invalidate_range_end(&self, _range: &InvalidateRange) {
        if self.open[smp::cpu_index()].fetch_sub(1, SeqCst) <= 0 {
            self.unpaired.fetch_add(1, SeqCst);
        }
        self.visit();
    }
}

/// `'h`: the borrow of the address space (and its head) the subscription
/// is registered for; `'s`: the shorter borrow of the subscription itself.
struct RaceCtx<'s, 'h> {
    m: &'s KernelMachine,
    mm: &'h Space<'h>,
    sub: Pin<&'s Subscription<'h, Watch>>,
    flow: Flow,
    done: AtomicBool,
    /// Unregisters that began while a callback was running, and those that
    /// returned while one still was (a violation).
    overlapped: AtomicU32,
    /// Cycles in which a callback was held across the unregister.
    held: AtomicU32,
    early: AtomicU32,
    invalidations: AtomicU64,
}

fn register_unregister_races_invalidation() -> Result<(), &'static str> {
    need_cpus()?;
    without_leaks(race_case)
}

fn race_case(m: &KernelMachine) -> Result<(), &'static str> {
    let cpus = smp::online();
    let mm = new_space(m)?;
    for p in 0..WINDOW {
        map_tagged(m, &mm, p, 0, rw()).map_err(|_| "initial map failed")?;
    }
    let sub = pin!(Subscription::new(Watch::new()));
    let ctx = RaceCtx {
        m,
        mm: &mm,
        sub: sub.as_ref(),
        flow: Flow::new(),
        done: AtomicBool::new(false),
        overlapped: AtomicU32::new(0),
        held: AtomicU32::new(0),
        early: AtomicU32::new(0),
        invalidations: AtomicU64::new(0),
    };
    let t0 = now_us();
    let r = smp::on_cpus(cpus, &ctx, |c, cpu| c.flow.check(race_work(c, cpu)), TIMEOUT_US);
    let took = now_us() - t0;
    let torn = teardown(m, &mm);
    r.map_err(|(_, e)| e)?;
    torn?;
    let w = sub.notifier();
    ensure!(
        ctx.early.load(SeqCst) == 0,
        "unregister returned while a callback of the notifier was still running (no grace period)",
        "{} of {REGISTER_CYCLES} unregisters",
        ctx.early.load(SeqCst)
    );
    ensure!(
        w.late.load(SeqCst) == 0,
        "a callback saw the flag set after unregister returned",
        "{} times",
        w.late.load(SeqCst)
    );
    ensure!(w.unpaired.load(SeqCst) == 0, "a notifier got an invalidate_range_end without its start");
    ensure!(w.calls.load(SeqCst) > 0, "the notifier was never called: the case proved nothing");
    ensure!(
        ctx.held.load(SeqCst) > 0 && w.overlaps.load(SeqCst) > 0,
        "no callback ever ran while unregister did: the race never happened"
    );
    note(format_args!(
        "{REGISTER_CYCLES} (un)register cycles vs {} CPUs: {} invalidations, {} callbacks, {} overlapped an unregister ({} held), {} unregisters began inside one; {} ms",
        cpus - 1,
        ctx.invalidations.load(SeqCst),
        w.calls.load(SeqCst),
        w.overlaps.load(SeqCst),
        ctx.held.load(SeqCst),
        ctx.overlapped.load(SeqCst),
        took / 1000
    ));
    Ok(())
}

fn race_work(c: &RaceCtx<'_, '_>, cpu: usize) -> Result<(), &'static str> {
    let head = c.mm.notifiers();
    let w = c.sub.notifier();
    if cpu == 0 {
        let mut rng = Rng::new(cpu, 0xd0);
        let r = (|| -> Result<(), &'static str> {
            for cycle in 0..REGISTER_CYCLES {
                w.gone.store(false, SeqCst);
                head.register(c.sub).map_err(|_| "register failed")?;
                // Unregister while a callback runs, if one comes within a
                // while: that is when the grace period has work to do.
                let start = now_us();
                let wait = 20 + rng.below(200);
                while w.inside.load(SeqCst) == 0 && now_us() - start < wait {
                    core::hint::spin_loop();
                }
                if w.inside.load(SeqCst) > 0 {
                    c.overlapped.fetch_add(1, SeqCst);
                }
                // Every third cycle, make sure a callback is running when
                // unregister starts.
                w.holding.store(false, SeqCst);
                if cycle % 3 == 0 {
                    w.hold.store(true, SeqCst);
                    let start = now_us();
                    while !w.holding.load(SeqCst) && now_us() - start < 2_000 {
                        core::hint::spin_loop();
                    }
                    // No callback took the request in time: withdraw it,
                    // unless one took it just now.
                    if !w.hold.swap(false, SeqCst) {
                        c.flow.until(|| w.holding.load(SeqCst), "a held callback never said so")?;
                    }
                    if w.holding.load(SeqCst) {
                        c.held.fetch_add(1, SeqCst);
                    }
                }
                w.unregistering.store(true, SeqCst);
                head.unregister(c.sub).map_err(|_| "unregister failed")?;
                w.gone.store(true, SeqCst);
                w.unregistering.store(false, SeqCst);
                if w.inside.load(SeqCst) != 0 {
                    c.early.fetch_add(1, SeqCst);
                }
                // Let a callback that wrongly still runs trip on `gone`.
                spin_us(5);
                ensure!(!c.flow.abort.load(SeqCst), "another CPU failed");
            }
            Ok(())
        })();
        c.done.store(true, SeqCst);
        r
    } else {
        // Invalidate until CPU 0 is done: through the address space (page
        // `cpu`, under its page-table lock), and straight through the head,
        // where callbacks run on several CPUs at once.
        let mut rng = Rng::new(cpu, 0xd1);
        let own = cpu as u64;
        while !c.done.load(SeqCst) {
            ensure!(!c.flow.abort.load(SeqCst), "another CPU failed");
            let first = rng.below(WINDOW - 4);
            let range = pages(first, 1 + rng.below(4));
            match rng.below(4) {
                0 => {
                    let guard = head.invalidate_range_start(InvalidateRange::new(range, Event::Clear));
                    spin_us(rng.below(10));
                    guard.end();
                }
                1 => head.invalidate_pages(range),
                2 => {
                    c.mm.zap_range(pages(own, 1), &mut |f: Reusable| c.m.free_frame(f.into_frame()))
                        .map_err(|_| "zap failed")?;
                }
                _ => match map_tagged(c.m, c.mm, own, 1, rw()) {
                    Ok(()) | Err(Error::AlreadyMapped { .. }) => {}
                    Err(_) => return Err("map failed"),
                },
            }
            c.invalidations.fetch_add(1, SeqCst);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// (d') Unregister from inside a callback is refused on that CPU, and
// unregister on another CPU waits for that callback.

struct Blocker {
    /// The head and the subscription, by address (the callback needs them
    /// to try unregistering itself).
    head: AtomicUsize,
    sub: AtomicUsize,
    entered: AtomicBool,
    go: AtomicBool,
    left: AtomicBool,
    /// What `unregister` from inside the callback returned: 1 refused with
    /// `InsideCallback`, 2 anything else.
    inside: AtomicU32,
    /// Microseconds the callback keeps running after CPU 0 was told to
    /// unregister.
    hold_us: u64,
}

impl MmuNotifier for Blocker {
    fn invalidate_range_start(&self, _range: &InvalidateRange) -> Result<(), Again> {
        if smp::cpu_index() != 1 || self.entered.load(SeqCst) {
            return Ok(());
        }
        // SAFETY: both addresses were taken from the head of the case's
        // address space and its pinned subscription, which live on CPU 0's
        // stack until after this job returned; the subscription is pinned
        // there, and a shared pinned view of it is all we make.
        let (head, sub) = unsafe {
            (
                &*(self.head.load(SeqCst) as *const NotifierHead),
                Pin::new_unchecked(&*(self.sub.load(SeqCst) as *const Subscription<'_, Blocker>)),
            )
        };
        let r = head.unregister(sub);
        self.inside.store(if r == Err(Error::InsideCallback) { 1 } else { 2 }, SeqCst);
        self.entered.store(true, SeqCst);
        let start = now_us();
        while !self.go.load(SeqCst) && now_us() - start < TIMEOUT_US {
            core::hint::spin_loop();
        }
        // CPU 0 is calling unregister now; a grace period must wait for us.
        spin_us(self.hold_us);
        self.left.store(true, SeqCst);
        Ok(())
    }
}

struct BlockCtx<'s, 'h> {
    head: &'h NotifierHead,
    sub: Pin<&'s Subscription<'h, Blocker>>,
    flow: Flow,
    /// Whether CPU 1 had left the callback when CPU 0's unregister returned.
    left_before_return: AtomicBool,
    waited_us: AtomicU64,
}

fn unregister_from_callback_refused_and_waits_for_other_cpu() -> Result<(), &'static str> {
    need_cpus()?;
    without_leaks(block_case)
}

fn block_case(m: &KernelMachine) -> Result<(), &'static str> {
    let mm = new_space(m)?;
    let blocker = Blocker {
        head: AtomicUsize::new(0),
        sub: AtomicUsize::new(0),
        entered: AtomicBool::new(false),
        go: AtomicBool::new(false),
        left: AtomicBool::new(false),
        inside: AtomicU32::new(0),
        hold_us: 20_000,
    };
    let sub = pin!(Subscription::new(blocker));
    sub.notifier().head.store(mm.notifiers() as *const NotifierHead as usize, SeqCst);
    sub.notifier().sub.store(&*sub as *const Subscription<'_, Blocker> as usize, SeqCst);
    mm.notifiers().register(sub.as_ref()).map_err(|_| "register failed")?;
    let ctx = BlockCtx {
        head: mm.notifiers(),
        sub: sub.as_ref(),
        flow: Flow::new(),
        left_before_return: AtomicBool::new(false),
        waited_us: AtomicU64::new(0),
    };
    let r = smp::on_cpus(2, &ctx, |c, cpu| c.flow.check(block_work(c, cpu)), TIMEOUT_US);
    teardown(m, &mm)?;
    r.map_err(|(_, e)| e)?;
    let b = sub.notifier();
    ensure!(b.inside.load(SeqCst) == 1, "unregister from inside the notifier's own callback was not refused");
    ensure!(
        ctx.left_before_return.load(SeqCst),
        "unregister returned while another CPU was still inside the notifier's callback (no grace period)",
        "returned after {} us, the callback ran {} us longer",
        ctx.waited_us.load(SeqCst),
        b.hold_us
    );
    note(format_args!(
        "CPU 1 refused (InsideCallback); CPU 0's unregister waited {} us for CPU 1's callback",
        ctx.waited_us.load(SeqCst)
    ));
    Ok(())
}

fn block_work(c: &BlockCtx<'_, '_>, cpu: usize) -> Result<(), &'static str> {
    let b = c.sub.notifier();
    if cpu == 1 {
        let guard = c.head.invalidate_range_start(InvalidateRange::new(pages(0, 1), Event::Clear));
        guard.end();
        Ok(())
    } else {
        c.flow.until(|| b.entered.load(SeqCst), "CPU 1 never entered the callback")?;
        b.go.store(true, SeqCst);
        let start = now_us();
        c.head.unregister(c.sub).map_err(|_| "unregister failed")?;
        c.waited_us.store(now_us() - start, SeqCst);
        c.left_before_return.store(b.left.load(SeqCst), SeqCst);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// (e) Teardown on one CPU while the others invalidate and register.

/// Counts how it is called around `release`.
struct Counter {
    releases: AtomicU32,
    inside: AtomicU32,
    /// Callbacks that began after `release` (must be 0), and `release`s
    /// that began while another callback ran (must be 0).
    after_release: AtomicU32,
    during_callback: AtomicU32,
    calls: AtomicU64,
}

impl Counter {
    const fn new() -> Self {
        Counter {
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
        spin_us(2);
        self.inside.fetch_sub(1, SeqCst);
    }

    fn check(&self, registered: bool) -> Result<(), &'static str> {
        let want = u32::from(registered);
        ensure!(
            self.releases.load(SeqCst) == want,
            "release was not called exactly once for a registered notifier (or was for an unregistered one)",
            "registered {registered}, releases {}",
            self.releases.load(SeqCst)
        );
        ensure!(self.after_release.load(SeqCst) == 0, "a notifier was called after its release");
        ensure!(self.during_callback.load(SeqCst) == 0, "release ran while another callback of the notifier ran");
        Ok(())
    }
}

impl MmuNotifier for Counter {
    fn release(&self) {
        if self.inside.load(SeqCst) != 0 {
            self.during_callback.fetch_add(1, SeqCst);
        }
        spin_us(2);
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

struct ReleaseCtx<'a> {
    m: &'a KernelMachine,
    mm: &'a Space<'a>,
    cpus: usize,
    tearer: usize,
    flow: Flow,
    /// Notifiers other CPUs registered before the teardown won the race.
    registered: AtomicU32,
    refused: AtomicU32,
    stage: [AtomicU32; MAX_CPUS],
    iters: [AtomicU32; MAX_CPUS],
}

fn release_exactly_once_under_concurrency() -> Result<(), &'static str> {
    need_cpus()?;
    without_leaks(release_case)
}

fn release_case(m: &KernelMachine) -> Result<(), &'static str> {
    let cpus = smp::online();
    let (mut registered, mut refused, mut calls) = (0, 0, 0);
    let t0 = now_us();
    for round in 0..RELEASE_ROUNDS {
        let mm = new_space(m)?;
        for p in 0..8 {
            map_tagged(m, &mm, p, 0, rw()).map_err(|_| "initial map failed")?;
        }
        let main_sub = pin!(Subscription::new(Counter::new()));
        mm.notifiers().register(main_sub.as_ref()).map_err(|_| "register failed")?;
        let ctx = ReleaseCtx {
            m,
            mm: &mm,
            cpus,
            tearer: round as usize % cpus,
            flow: Flow::new(),
            registered: AtomicU32::new(0),
            refused: AtomicU32::new(0),
            stage: [const { AtomicU32::new(0) }; MAX_CPUS],
            iters: [const { AtomicU32::new(0) }; MAX_CPUS],
        };
        smp::on_cpus(cpus, &ctx, |c, cpu| c.flow.check(release_work(c, cpu)), TIMEOUT_US).map_err(|(_, e)| e)?;
        main_sub.notifier().check(true)?;
        ensure!(mm.is_released(), "the address space was not torn down");
        let late = pin!(Subscription::new(Counter::new()));
        ensure!(
            mm.notifiers().register(late.as_ref()) == Err(Error::Released),
            "registering after teardown was not refused with Released"
        );
        registered += ctx.registered.load(SeqCst);
        refused += ctx.refused.load(SeqCst);
        calls += main_sub.notifier().calls.load(SeqCst);
    }
    let took = now_us() - t0;
    note(format_args!(
        "{RELEASE_ROUNDS} teardowns (rotating CPU) vs {} CPUs: {registered} registrations won the race, {refused} were refused, {calls} callbacks; {} ms",
        cpus - 1,
        took / 1000
    ));
    Ok(())
}

fn release_work(c: &ReleaseCtx<'_>, cpu: usize) -> Result<(), &'static str> {
    let r = release_work2(c, cpu);
    c.stage[cpu].store(99, SeqCst);
    if cpu == 0 {
        let start = now_us();
        while (0..c.cpus).any(|k| c.stage[k].load(SeqCst) != 99) {
            if now_us() - start > 5_000_000 {
                detail(format_args!("stages {:?} iters {:?} tearer {}", [c.stage[0].load(SeqCst), c.stage[1].load(SeqCst), c.stage[2].load(SeqCst), c.stage[3].load(SeqCst)], [c.iters[0].load(SeqCst), c.iters[1].load(SeqCst), c.iters[2].load(SeqCst), c.iters[3].load(SeqCst)], c.tearer));
                return Err("DEBUG hang");
            }
        }
    }
    r
}
fn release_work2(c: &ReleaseCtx<'_>, cpu: usize) -> Result<(), &'static str> {
    c.flow.barrier(0, c.cpus)?;
    c.stage[cpu].store(1, SeqCst);
    let mut rng = Rng::new(cpu, 0xe0 + c.tearer as u64);
    if cpu == c.tearer {
        spin_us(rng.below(200));
        c.m.deactivate();
        c.stage[cpu].store(2, SeqCst);
        c.mm.teardown(&mut |f: Reusable| c.m.free_frame(f.into_frame())).map_err(|_| "teardown refused")?;
        c.stage[cpu].store(3, SeqCst);
        ensure!(
            map_tagged(c.m, c.mm, 9, 0, rw()) == Err(Error::Released),
            "a map after teardown was not refused with Released"
        );
        return Ok(());
    }
    // Dropped when this job returns: after the release, so `Drop` finds it
    // released (or never registered) and returns at once.
    let sub = pin!(Subscription::new(Counter::new()));
    // Sometimes before the teardown, sometimes after it began.
    spin_us(rng.below(200));
    c.stage[cpu].store(10, SeqCst);
    let registered = match c.mm.notifiers().register(sub.as_ref()) {
        Ok(()) => {
            c.registered.fetch_add(1, SeqCst);
            true
        }
        Err(Error::Released) => {
            c.refused.fetch_add(1, SeqCst);
            false
        }
        Err(_) => return Err("register failed with something else than Released"),
    };
    let own = 8 + cpu as u64;
    let head = c.mm.notifiers();
    let mut released = false;
    c.stage[cpu].store(11, SeqCst);
    for _ in 0..100_000 {
        c.iters[cpu].fetch_add(1, SeqCst);
        ensure!(!c.flow.abort.load(SeqCst), "another CPU failed");
        let r = match rng.below(4) {
            0 => {
                let guard = head.invalidate_range_start(InvalidateRange::new(pages(0, 8), Event::Clear));
                spin_us(rng.below(5));
                guard.end();
                Ok(())
            }
            1 => {
                head.invalidate_pages(pages(rng.below(8), 1));
                Ok(())
            }
            2 => c.mm.zap_range(pages(own, 1), &mut |f: Reusable| c.m.free_frame(f.into_frame())).map(|_| ()),
            _ => match map_tagged(c.m, c.mm, own, 1, rw()) {
                Err(Error::AlreadyMapped { .. }) => Ok(()),
                other => other,
            },
        };
        match r {
            Ok(()) => {}
            Err(Error::Released) => {
                released = true;
                break;
            }
            Err(_) => return Err("an operation failed with something else than Released"),
        }
    }
    c.stage[cpu].store(12, SeqCst);
    ensure!(released, "the other CPU's teardown never showed (no Released in 100000 operations)");
    // An operation saw `Released` under the page-table lock, which the
    // whole teardown (release included) holds: every release has returned.
    sub.notifier().check(registered)?;
    let again = pin!(Subscription::new(Counter::new()));
    ensure!(
        c.mm.notifiers().register(again.as_ref()) == Err(Error::Released),
        "registering after teardown was not refused with Released"
    );
    Ok(())
}
