//! The demo: one address space on the real x86-64 MMU, one secondary MMU
//! (the conformance suite's shadow TLB, Seed style) attached through a
//! pinned `Subscription`, and the call sites a kernel runs, one after the
//! other: map, access, fork (copy-on-write), mprotect, aging, unmap,
//! teardown. For each step it prints what the CPU did, what the notifier
//! received, and whether the secondary MMU is still coherent with the CPU
//! tables; then one verdict and the runner's `N passed, N failed` line.
//!
//! Booted by `cargo xtask demo` (`QemuOpts.demo`), or
//! `cargo xtask qemu --arch x86_64 --demo`. With the `defmt` feature
//! (`cargo xtask qemu --arch x86_64 --demo --defmt`) it also logs each step's
//! addresses, ranges, leaves and notifier events through defmt on COM2,
//! formatted by the library types' own `defmt::Format`.
#![no_std]
#![no_main]

use core::fmt;
use core::pin::pin;

use mmu_notifier_conformance::shadow::{Call, ShadowMmu, Style, LOG};
use mmu_notifier_conformance::{CpuFault, Failure, Machine};
use mmu_notifier_core::{AddressSpace, CopyMode, PageRange, PhysAddr, Prot, Reusable, Subscription, VirtAddr};
use mmu_notifier_kernel_x86_64::{self as h, machine::KernelMachine, println, Tally};
use mmu_notifier_x86::X86_64;

h::entry!(main);

/// A defmt log line (COM2), with the `defmt` feature only; otherwise it only
/// borrows its arguments (so that they do not count as unused).
macro_rules! dinfo {
    ($fmt:literal $(, $arg:expr)* $(,)?) => {{
        #[cfg(feature = "defmt")]
        defmt::info!($fmt $(, $arg)*);
        #[cfg(not(feature = "defmt"))]
        let _ = ($(&$arg,)*);
    }};
}

const PAGE: u64 = 4096;
/// Page `i` of the demo's mapping.
const fn va(i: u64) -> VirtAddr {
    VirtAddr(h::TEST_WINDOW + i * PAGE)
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

fn main(_cmdline: &'static str) -> ! {
    println!("demo x86_64: MMU notifiers on the x86-64 MMU ({:?}, {BUILD})", h::accel());
    println!("  secondary MMU: a shadow TLB (Seed style) attached through a pinned Subscription");
    let machine = KernelMachine::new();
    let frames_before = h::frames_in_use();
    let mut demo = Demo { m: &machine, step: 0, title: "", first_wrong: None };
    let outcome = demo.run().and(demo.first_wrong.map_or(Ok(()), Err));
    machine.deactivate();
    let frames_after = h::frames_in_use();
    println!("    frames in use (tables and data): {frames_before} before the demo, {frames_after} after");
    let outcome = outcome.and(if frames_after == frames_before {
        Ok(())
    } else {
        Err(Failure::new(format_args!("{frames_before} frames in use before the demo, {frames_after} after")))
    });
    let mut tally = Tally::new();
    match outcome {
        Ok(()) => {
            println!("demo x86_64: coherent at every step");
            tally.pass("demo");
        }
        Err(why) => {
            println!("demo x86_64: NOT coherent");
            tally.fail("demo", why);
        }
    }
    tally.finish()
}

type Space<'m> = AddressSpace<'m, X86_64, <KernelMachine as Machine>::Frames>;

/// The demo's state: the machine and the first thing that went wrong.
struct Demo<'m> {
    m: &'m KernelMachine,
    step: u32,
    title: &'static str,
    first_wrong: Option<Failure>,
}

/// A CPU access's result, as a person reads it.
struct Access(Result<u64, CpuFault>);

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(v) => write!(f, "{v:#x} ok"),
            Err(CpuFault::NotMapped) => f.write_str("page fault (not present)"),
            Err(CpuFault::Protection) => f.write_str("page fault (protection)"),
            Err(CpuFault::Other(code)) => write!(f, "fault {code:#x}"),
        }
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

impl Demo<'_> {
    fn step(&mut self, title: &'static str) {
        self.step += 1;
        self.title = title;
        println!("[{}] {title}", self.step);
        dinfo!("demo step {=u32}: {=str}", self.step, title);
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

    fn cpu_read(&mut self, i: u64, expect: Result<u64, CpuFault>) {
        let got = self.m.cpu_read(va(i));
        self.show_read(i, got, expect, "");
    }

    /// Prints a read done earlier (`note` says when) and checks it.
    fn show_read(&mut self, i: u64, got: Result<u64, CpuFault>, expect: Result<u64, CpuFault>, note: &str) {
        println!("    CPU read  {} -> {}{note}", va(i), Access(got));
        if got != expect {
            let why = if expect.is_err() { " (stale TLB entry: missing flush?)" } else { "" };
            self.wrong(format_args!("expected {}{why}", Access(expect)));
        }
    }

    fn cpu_write(&mut self, i: u64, v: u64, expect: Result<(), CpuFault>) {
        let got = self.m.cpu_write(va(i), v);
        self.show_write(i, v, got, expect, "");
    }

    /// Prints a write done earlier (`note` says when) and checks it.
    fn show_write(&mut self, i: u64, v: u64, got: Result<(), CpuFault>, expect: Result<(), CpuFault>, note: &str) {
        match got {
            Ok(()) => println!("    CPU write {} <- {v:#x} ok{note}", va(i)),
            Err(f) => println!("    CPU write {} <- {v:#x} -> {}{note}", va(i), Access(Err(f))),
        }
        if got != expect {
            let why = if expect.is_err() { " (stale TLB entry: missing flush?)" } else { "" };
            self.wrong(format_args!("expected {}{why}", Access(expect.map(|()| v))));
        }
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
            match *call {
                Call::Release => dinfo!("notifier: release"),
                Call::InvalidatePage(a) => dinfo!("notifier: invalidate_page {}", a),
                Call::InvalidatePages(r) => dinfo!("notifier: invalidate_pages {}", r),
                Call::AgePage(a, young) => dinfo!("notifier: age_page {} -> young={=bool}", a, young),
                Call::RangeStart(r, e) => dinfo!("notifier: invalidate_range_start {} {}", r, e),
                Call::RangeEnd(r, e) => dinfo!("notifier: invalidate_range_end {} {}", r, e),
            }
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
        dinfo!("mapped {} -> frames {} {} {} {}", pages(0, 4), f0, f1, f2, f3);
        for i in 0..4 {
            if let Some((leaf, level)) = mm.translate(va(i)) {
                dinfo!("  {} -> {} (level {=usize})", va(i), leaf, level);
            }
        }
        // SAFETY: `mm` lives until the end of this function, and the CPU
        // leaves it first (`deactivate` below, or `free_table` on an early
        // return).
        unsafe { m.activate(mm.root()) };
        self.notifier(shadow);
        self.coherent(shadow, &mm);

        self.step("access: the CPU and the secondary MMU use the pages");
        self.cpu_read(0, Ok(value(0)));
        self.cpu_write(1, 0x2b2b, Ok(()));
        self.cpu_write(2, 0x3c3c, Ok(()));
        self.fault_in(shadow, &mm, 0, 4, true)?;
        self.notifier(shadow);
        self.coherent(shadow, &mm);

        self.step("fork: copy pages 0-1 copy-on-write into a child");
        // Use the page right up to the operation, so that the CPU's TLB holds
        // a writable entry for it (printing in between could evict it).
        let before = m.cpu_write(va(1), 0x2b2b);
        core_err("fork", mm.copy_range(&child, pages(0, 2), CopyMode::Cow))?;
        self.show_write(1, 0x2b2b, before, Ok(()), ", just before: the TLB caches it writable");
        self.notified(shadow);
        self.cpu_write(1, 0x5555, Err(CpuFault::Protection));
        self.cpu_read(1, Ok(0x2b2b));
        let child_leaf = child.translate(va(0));
        if let Some((leaf, _)) = child_leaf {
            dinfo!("child {} -> {}", va(0), leaf);
        }
        let shared = child_leaf.map(|(leaf, _)| (leaf.frame, leaf.prot.writable()));
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
        let before = m.cpu_write(va(2), 0x3c3c);
        let changed = core_err("mprotect", mm.change_protection(pages(2, 2), Prot::READ))?;
        self.show_write(2, 0x3c3c, before, Ok(()), ", just before: the TLB caches it writable");
        println!("    {changed} pages changed");
        dinfo!("mprotect {} to {}: {=usize} pages changed", pages(2, 2), Prot::READ, changed);
        self.notified(shadow);
        self.cpu_write(2, 0x5555, Err(CpuFault::Protection));
        self.cpu_read(2, Ok(0x3c3c));
        self.coherent(shadow, &mm);

        self.step("age page 3 (reclaim asks: used lately?); only the secondary MMU used it");
        self.fault_in(shadow, &mm, 3, 1, false)?;
        let young = core_err("age", mm.clear_flush_young(va(3)))?;
        println!("    clear_flush_young {} -> {}", va(3), if young { "young" } else { "old" });
        self.notified(shadow);
        if !young {
            self.wrong(format_args!("expected young: the secondary MMU used the page"));
        }
        let again = core_err("age", mm.clear_flush_young(va(3)))?;
        println!("    clear_flush_young {} again -> {}", va(3), if again { "young" } else { "old" });
        self.notifier(shadow);
        if again {
            self.wrong(format_args!("expected old: nobody used the page since"));
        }
        self.coherent(shadow, &mm);

        self.step("unmap pages 2-3 (zap), frames back to the allocator");
        self.fault_in(shadow, &mm, 2, 2, false)?;
        let mut handed_back = 0;
        let mut still_cached = 0;
        let before = m.cpu_read(va(2));
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
        self.show_read(2, before, Ok(0x3c3c), ", just before: the TLB caches it");
        self.notified(shadow);
        println!("    {handed_back} frames handed back, {still_cached} of them still cached by the secondary MMU");
        if handed_back != 2 || still_cached != 0 {
            self.wrong(format_args!("expected 2 frames back, none still cached"));
        }
        self.cpu_read(2, Err(CpuFault::NotMapped));
        self.cpu_read(0, Ok(value(0)));
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

