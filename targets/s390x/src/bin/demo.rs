//! The demo: one address space on QEMU's s390x DAT, one secondary MMU (the
//! conformance suite's shadow TLB, Seed style) attached through a pinned
//! `Subscription`, and the call sites a kernel runs, one after the other:
//! map, access, fork (copy-on-write), mprotect, aging (storage keys),
//! unmap, teardown. For each step it prints what the CPU did (the program
//! interruption it took, if any), what the notifier received, and whether
//! the secondary MMU is still coherent with the CPU tables; then one
//! verdict and the runner's `N passed, N failed` line.
//!
//! Booted by `cargo xtask demo` (`QemuOpts.demo`), or
//! `cargo xtask qemu --arch s390x --demo`.
#![no_std]
#![no_main]

use core::fmt;
use core::pin::pin;

use mmu_notifier_conformance::shadow::{Call, ShadowMmu, Style, LOG};
use mmu_notifier_conformance::{Failure, Machine};
use mmu_notifier_core::{AddressSpace, CopyMode, PageRange, PhysAddr, Prot, Reusable, Subscription, VirtAddr};
use mmu_notifier_kernel_s390x::machine::{refresh_view, KernelMachine};
use mmu_notifier_kernel_s390x::probe::{code, Fault};
use mmu_notifier_kernel_s390x::{self as h, bytes_in_use, println, probe_read, probe_write, TEST_WINDOW};
use mmu_notifier_s390::S390x;

h::entry!(main);

const PAGE: u64 = 4096;
/// Page `i` of the demo's mapping.
const fn va(i: u64) -> VirtAddr {
    VirtAddr(TEST_WINDOW + i * PAGE)
}
/// What page `i` holds when mapped: easy to recognise in a read.
const fn value(i: u64) -> u64 {
    0x1111 * (i + 1)
}

fn pages(first: u64, count: u64) -> PageRange {
    PageRange::from_pages(va(first), count, PAGE).expect("the demo's ranges are page-aligned")
}

/// Which build this is (see the conformance kernel).
const BUILD: &str = if cfg!(mmu_notifier_broken = "no-flush") {
    "broken no-flush build"
} else if cfg!(mmu_notifier_broken = "no-notify") {
    "broken no-notify build"
} else {
    "normal build"
};

/// How the arch removed or downgraded a live PTE in this build.
const FLUSH: &str = if cfg!(mmu_notifier_broken = "no-flush") {
    "plain store of the invalid bit: NO IPTE, no TLB purged (broken build)"
} else {
    "IPTE: invalidated and purged in one instruction (every CPU's TLB)"
};

fn main() -> ! {
    println!("demo s390x: MMU notifiers on QEMU's s390x DAT (TCG, CPU 0, {BUILD})");
    println!("  secondary MMU: a shadow TLB (Seed style) attached through a pinned Subscription");
    let machine = KernelMachine::new();
    let before = bytes_in_use();
    let mut demo = Demo { m: &machine, step: 0, title: "", first_wrong: None };
    let outcome = demo.run().and(demo.first_wrong.map_or(Ok(()), Err));
    machine.deactivate();
    let after = bytes_in_use();
    println!("    pool in use (tables and data): {before} bytes before the demo, {after} after");
    let outcome = outcome.and(if after == before {
        Ok(())
    } else {
        Err(Failure::new(format_args!("{before} bytes of the pool in use before the demo, {after} after")))
    });
    match outcome {
        Ok(()) => {
            println!("demo s390x: coherent at every step");
            println!("ok   demo");
            println!("1 passed, 0 failed");
            h::exit_success()
        }
        Err(why) => {
            println!("demo s390x: NOT coherent");
            println!("FAIL demo: {why}");
            println!("0 passed, 1 failed");
            h::exit_failure()
        }
    }
}

type Space<'m> = AddressSpace<'m, S390x, <KernelMachine as Machine>::Frames>;

/// The demo's state: the machine and the first thing that went wrong.
struct Demo<'m> {
    m: &'m KernelMachine,
    step: u32,
    title: &'static str,
    first_wrong: Option<Failure>,
}

/// A program interruption, as a person reads it.
struct Exception(u16);

impl fmt::Display for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            code::PROTECTION => "protection",
            code::PAGE_TRANSLATION => "page-translation",
            code::SEGMENT_TRANSLATION => "segment-translation",
            code::REGION_FIRST_TRANSLATION => "region-first-translation",
            code::REGION_SECOND_TRANSLATION => "region-second-translation",
            code::REGION_THIRD_TRANSLATION => "region-third-translation",
            _ => "program",
        };
        write!(f, "{name} exception {:#04x}", self.0)
    }
}

/// What the demo expects of an access.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Success (reading this value, for a read).
    Ok(u64),
    /// A program interruption with this code.
    Exception(u16),
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Expect::Ok(v) => write!(f, "{v:#x} ok"),
            Expect::Exception(c) => Exception(c).fmt(f),
        }
    }
}

fn seen<T>(r: Result<T, Fault>, ok: impl FnOnce(T) -> u64) -> Expect {
    match r {
        Ok(v) => Expect::Ok(ok(v)),
        Err(f) => Expect::Exception(f.code),
    }
}

/// How many translations the secondary MMU caches.
struct Cached(usize);

impl fmt::Display for Cached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("caches nothing"),
            1 => f.write_str("caches 1 translation"),
            n => write!(f, "caches {n} translations"),
        }
    }
}

/// One notifier call, as a person reads it.
struct Shown(Call);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Call::Release => f.write_str("release"),
            Call::InvalidatePage(a) => write!(f, "invalidate_page {a}"),
            Call::InvalidatePages(r) => write!(f, "invalidate_pages {r:?}"),
            Call::AgePage(a, young) => write!(f, "age_page {a} -> {}", if young { "young" } else { "old" }),
            Call::RangeStart(r, e) => write!(f, "invalidate_range_start {r:?} {e:?}"),
            Call::RangeEnd(r, e) => write!(f, "invalidate_range_end {r:?} {e:?}"),
        }
    }
}

/// Turns a core error into the demo's failure.
fn core_err<T>(what: &str, r: Result<T, mmu_notifier_core::Error>) -> Result<T, Failure> {
    r.map_err(|e| Failure::new(format_args!("{what}: {e}")))
}

fn young(y: bool) -> &'static str {
    if y {
        "young"
    } else {
        "old"
    }
}

impl Demo<'_> {
    fn step(&mut self, title: &'static str) {
        self.step += 1;
        self.title = title;
        println!("[{}] {title}", self.step);
    }

    /// Remembers the first unexpected observation (the demo goes on, so the
    /// whole story is printed).
    fn wrong(&mut self, args: fmt::Arguments<'_>) {
        println!("      ^ WRONG: {args}");
        if self.first_wrong.is_none() {
            let (step, title) = (self.step, self.title);
            self.first_wrong = Some(Failure::new(format_args!("step {step} ({title}): {args}")));
        }
    }

    /// Checks an access against what was expected.
    fn check(&mut self, got: Expect, expect: Expect) {
        if got != expect {
            let why = match expect {
                Expect::Exception(_) => " (stale TLB entry: missing IPTE?)",
                Expect::Ok(_) => "",
            };
            self.wrong(format_args!("expected {expect}{why}"));
        }
    }

    /// A CPU read through DAT (the harness's probe), no switch before it.
    fn read(i: u64) -> Result<u64, Fault> {
        refresh_view();
        probe_read(va(i).0)
    }

    fn write(i: u64, v: u64) -> Result<(), Fault> {
        refresh_view();
        probe_write(va(i).0, v)
    }

    fn cpu_read(&mut self, i: u64, expect: Expect) {
        let got = seen(Self::read(i), |v| v);
        self.show_read(i, got, expect, "");
    }

    /// Prints a read done earlier (`note` says when) and checks it.
    fn show_read(&mut self, i: u64, got: Expect, expect: Expect, note: &str) {
        println!("    CPU read  {} -> {got}{note}", va(i));
        self.check(got, expect);
    }

    fn cpu_write(&mut self, i: u64, v: u64, expect: Expect) {
        let got = seen(Self::write(i, v), |()| v);
        self.show_write(i, v, got, expect, "");
    }

    /// Prints a write done earlier (`note` says when) and checks it.
    fn show_write(&mut self, i: u64, v: u64, got: Expect, expect: Expect, note: &str) {
        match got {
            Expect::Ok(_) => println!("    CPU write {} <- {v:#x} ok{note}", va(i)),
            Expect::Exception(_) => println!("    CPU write {} <- {v:#x} -> {got}{note}", va(i)),
        }
        self.check(got, expect);
    }

    /// Prints (and forgets) what the secondary MMU was told since last time.
    fn notifier(&mut self, shadow: &ShadowMmu) -> usize {
        let mut calls = [None; LOG];
        let n = shadow.calls(&mut calls);
        shadow.clear_log();
        if n == 0 {
            println!("    notifier: no calls");
        }
        for call in calls.iter().take(n).flatten() {
            println!("    notifier: {}", Shown(*call));
        }
        n
    }

    /// Demands at least one notifier call (an invalidation the secondary MMU
    /// must hear about), printing them.
    fn notified(&mut self, shadow: &ShadowMmu) {
        if self.notifier(shadow) == 0 {
            self.wrong(format_args!("the secondary MMU was told nothing"));
        }
    }

    fn coherent(&mut self, shadow: &ShadowMmu, mm: &Space<'_>) {
        match shadow.check_coherent(mm) {
            Ok(()) => println!("    secondary MMU coherent: yes ({})", Cached(shadow.cached_count())),
            Err((va, cached, _)) => {
                println!("    secondary MMU coherent: NO");
                let rw = |w: bool| if w { "writable" } else { "read-only" };
                let secondary = shadow.cached(va).map_or("", |(_, w)| rw(w));
                match mm.translate(va) {
                    Some((leaf, _)) => self.wrong(format_args!(
                        "secondary maps {va} -> {cached} {secondary}, CPU tables -> {} {}",
                        leaf.frame,
                        rw(leaf.prot.writable())
                    )),
                    None => self.wrong(format_args!("secondary maps {va} -> {cached}, CPU tables: not mapped")),
                }
            }
        }
    }

    fn fault_in(&mut self, shadow: &ShadowMmu, mm: &Space<'_>, first: u64, count: u64, write: bool) -> Result<(), Failure> {
        for i in first..first + count {
            if let Err(e) = shadow.fault_in(mm, va(i), write) {
                return Err(Failure::new(format_args!("secondary fault-in of {}: {e:?}", va(i))));
            }
        }
        let how = if write { "writable" } else { "read-only" };
        if count == 1 {
            println!("    secondary MMU faults in {} ({how})", va(first));
        } else {
            println!("    secondary MMU faults in {:?} ({how})", pages(first, count));
        }
        Ok(())
    }

    fn alloc(&self, i: u64) -> Result<PhysAddr, Failure> {
        let frame = self.m.alloc_frame().ok_or(Failure::new(format_args!("out of frames")))?;
        self.m.write_phys(frame, value(i));
        Ok(frame)
    }

    fn run(&mut self) -> Result<(), Failure> {
        let m = self.m;
        let mm = core_err("address space", AddressSpace::new(m.arch(), m.frames()))?;
        let child = core_err("child address space", AddressSpace::new(m.arch(), m.frames()))?;
        let sub = pin!(Subscription::new(ShadowMmu::new(Style::Seed, PAGE)));
        core_err("register", mm.notifiers().register(sub.as_ref()))?;
        let shadow = sub.notifier();

        self.step("map 4 pages read-write");
        let mut frames = [PhysAddr(0); 4];
        for (i, frame) in (0..4).zip(frames.iter_mut()) {
            *frame = self.alloc(i)?;
            core_err("map", mm.map(va(i), *frame, Prot::WRITE))?;
        }
        let [f0, f1, f2, f3] = frames;
        println!("    {} -> frames {f0} {f1} {f2} {f3}", pages(0, 4).start());
        // SAFETY: `mm` lives until the end of this function, and the CPU
        // leaves it first (`deactivate` below, or `free_table` on an early
        // return, which drops it).
        unsafe { m.activate(mm.root()) };
        self.notifier(shadow);

        self.step("access: the CPU and the secondary MMU use the pages");
        self.cpu_read(0, Expect::Ok(value(0)));
        self.cpu_write(1, 0x2b2b, Expect::Ok(0x2b2b));
        self.fault_in(shadow, &mm, 0, 4, true)?;
        self.coherent(shadow, &mm);

        self.step("fork: copy pages 0-1 copy-on-write into a child");
        // Use the page right up to the operation, so that the TLB holds a
        // writable entry for it (printing in between could evict it).
        let before = seen(Self::write(1, 0x2b2b), |()| 0x2b2b);
        core_err("fork", mm.copy_range(&child, pages(0, 2), CopyMode::Cow))?;
        self.show_write(1, 0x2b2b, before, Expect::Ok(0x2b2b), ", just before: the TLB holds it writable");
        println!("    {FLUSH}, then the read-only PTE stored");
        self.notified(shadow);
        self.cpu_write(1, 0x5555, Expect::Exception(code::PROTECTION));
        self.cpu_read(1, Expect::Ok(0x2b2b));
        let shared = child.translate(va(0)).map(|(leaf, _)| (leaf.frame, leaf.prot.writable()));
        match shared {
            Some((frame, false)) => println!("    child maps {} -> {frame} read-only (shared until a write)", va(0)),
            Some((frame, true)) => println!("    child maps {} -> {frame} writable", va(0)),
            None => println!("    child does not map {}", va(0)),
        }
        if shared != Some((f0, false)) {
            self.wrong(format_args!("the child should share frame {f0} read-only"));
        }
        self.coherent(shadow, &mm);

        self.step("mprotect pages 2-3 read-only");
        let before = seen(Self::write(2, 0x3c3c), |()| 0x3c3c);
        let changed = core_err("mprotect", mm.change_protection(pages(2, 2), Prot::READ))?;
        self.show_write(2, 0x3c3c, before, Expect::Ok(0x3c3c), ", just before: the TLB holds it writable");
        println!("    {changed} PTEs changed. {FLUSH}, then the read-only PTE stored");
        self.notified(shadow);
        self.cpu_write(2, 0x5555, Expect::Exception(code::PROTECTION));
        self.cpu_read(2, Expect::Ok(0x3c3c));
        self.coherent(shadow, &mm);

        self.step("age page 3 (s390: the reference bit is in the storage key; RRBE)");
        // Load the TLB entry, then start from old (setting up touched the
        // frame: write_phys, reads). Aging purges no TLB on s390: the next
        // read may use the cached translation and still sets R in the key.
        // (QEMU emulates that by flushing its TLB in RRBE.)
        let _ = Self::read(3);
        let _ = core_err("age", mm.clear_flush_young(va(3)))?;
        shadow.clear_log();
        self.cpu_read(3, Expect::Ok(value(3)));
        let y = core_err("age", mm.clear_flush_young(va(3)))?;
        println!("    clear_flush_young -> {} (the read set R in the key; RRBE tested and reset it)", young(y));
        self.notifier(shadow);
        if !y {
            self.wrong(format_args!("expected young: the CPU read the page"));
        }
        self.fault_in(shadow, &mm, 3, 1, false)?;
        let y = core_err("age", mm.clear_flush_young(va(3)))?;
        println!("    clear_flush_young -> {} (storage key says old, the secondary says young)", young(y));
        self.notified(shadow);
        if !y {
            self.wrong(format_args!("expected young: the secondary MMU used the page"));
        }
        let again = core_err("age", mm.clear_flush_young(va(3)))?;
        println!("    clear_flush_young again -> {} (nobody used it since)", young(again));
        if again {
            self.wrong(format_args!("expected old: nobody used the page since"));
        }
        shadow.clear_log();
        self.coherent(shadow, &mm);

        self.step("unmap pages 2-3 (zap), frames back to the allocator");
        self.fault_in(shadow, &mm, 2, 2, false)?;
        let mut handed_back = 0;
        let mut still_cached = 0;
        let before = seen(Self::read(2), |v| v);
        core_err(
            "zap",
            mm.zap_range(pages(2, 2), &mut |r: Reusable| {
                // By now the secondary MMU must have let go of the frame.
                if (2..4).any(|i| shadow.cached(va(i)).is_some_and(|(f, _)| f == r.frame())) {
                    still_cached += 1;
                }
                handed_back += 1;
                m.free_frame(r.into_frame());
            }),
        )?;
        self.show_read(2, before, Expect::Ok(0x3c3c), ", just before: the TLB holds it");
        println!("    {FLUSH}; the PTE stays empty");
        self.notified(shadow);
        println!("    {handed_back} frames handed back, {still_cached} of them still cached by the secondary MMU");
        if handed_back != 2 || still_cached != 0 {
            self.wrong(format_args!("expected 2 frames back, none still cached"));
        }
        self.cpu_read(2, Expect::Exception(code::PAGE_TRANSLATION));
        self.cpu_read(0, Expect::Ok(value(0)));
        self.coherent(shadow, &mm);

        self.step("teardown: the child, then the address space");
        m.deactivate();
        // The child shares the parent's frames: the parent frees them.
        core_err("child teardown", child.teardown(&mut |_| {}))?;
        let mut freed = 0;
        let mut freed_early = 0;
        core_err(
            "teardown",
            mm.teardown(&mut |r: Reusable| {
                if shadow.releases() == 0 || shadow.cached_count() != 0 {
                    freed_early += 1;
                }
                freed += 1;
                m.free_frame(r.into_frame());
            }),
        )?;
        self.notified(shadow);
        println!(
            "    {freed} frames handed back, {freed_early} of them before the secondary MMU let go ({})",
            Cached(shadow.cached_count())
        );
        if freed != 2 || freed_early != 0 || shadow.releases() != 1 {
            self.wrong(format_args!("expected release first, then 2 frames back"));
        }
        Ok(())
    }
}
