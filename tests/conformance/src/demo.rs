//! The demo: one address space, one secondary MMU (the shadow TLB with
//! per-page callbacks) attached through a pinned `Subscription`, and the
//! call sites a kernel runs, one after the other: map, access, fork
//! (copy-on-write), mprotect, aging, unmap, teardown. For each step it
//! prints ([`Machine::log`]) what the CPU did, what the notifier received,
//! and whether the secondary MMU is still coherent with the CPU tables.
//!
//! The same story on every machine; what only one arch can say (how it
//! flushes, where it records use, how it names a fault) comes in
//! [`Words`]. With the `defmt` feature each step's addresses, ranges,
//! leaves and notifier events also go to the kernel's defmt logger,
//! formatted by the library types' own `defmt::Format`.

use core::fmt;
use core::pin::pin;

use mmu_notifier_core::{
    Arch, CopyMode, PageRange, PhysAddr, Prot, Reusable, Subscription, VirtAddr,
};

use crate::cases::{new_space, page, Space};
use crate::shadow::{Call, ShadowMmu, Style};
use crate::{fail, CpuFault, Failure, Machine, Outcome};

/// A defmt log line, with the `defmt` feature only; otherwise it only
/// borrows its arguments (so that they do not count as unused).
macro_rules! dinfo {
    ($fmt:literal $(, $arg:expr)* $(,)?) => {{
        #[cfg(feature = "defmt")]
        defmt::info!($fmt $(, $arg)*);
        #[cfg(not(feature = "defmt"))]
        let _ = ($(&$arg,)*);
    }};
}

/// What the demo says about the machine it runs on, in that arch's words.
#[derive(Debug, Clone, Copy)]
pub struct Words {
    /// How the arch removes or downgrades a live entry in this build (the
    /// flush, or its absence in a deliberately broken build).
    pub flush: &'static str,
    /// Where the CPU records that it used a page.
    pub young: &'static str,
    /// A CPU fault, as a person reads it.
    pub fault: fn(CpuFault) -> &'static str,
}

/// Runs the demo on `m`, printing every step.
///
/// # Errors
/// The first thing that went wrong (the demo goes on after it, so that
/// the whole story is printed).
pub fn run<M: Machine>(m: &M, words: &Words) -> Outcome {
    m.log(format_args!(
        "  secondary MMU: a shadow TLB (per-page callbacks) attached through a pinned Subscription"
    ));
    let mut demo = Demo {
        m,
        words,
        step: 0,
        title: "",
        first_wrong: None,
    };
    let outcome = demo.run().and(demo.first_wrong.map_or(Ok(()), Err));
    m.deactivate();
    let arch = <M::Arch as Arch>::NAME;
    match outcome {
        Ok(()) => m.log(format_args!("demo {arch}: coherent at every step")),
        Err(_) => m.log(format_args!("demo {arch}: NOT coherent")),
    }
    outcome
}

/// Page `i` of the demo's mapping.
fn va<M: Machine>(m: &M, i: u64) -> VirtAddr {
    crate::cases::va(m, i)
}

/// What page `i` holds when mapped: easy to recognise in a read.
const fn value(i: u64) -> u64 {
    0x1111 * (i + 1)
}

fn young(y: bool) -> &'static str {
    if y {
        "young"
    } else {
        "old"
    }
}

/// A CPU access's result, as a person reads it.
struct Access<'w>(Result<u64, CpuFault>, &'w Words);

impl fmt::Display for Access<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(v) => write!(f, "{v:#x} ok"),
            Err(CpuFault::Other(code)) => {
                write!(f, "{} ({code:#x})", (self.1.fault)(CpuFault::Other(code)))
            }
            Err(fault) => f.write_str((self.1.fault)(fault)),
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
            Call::AgePage(a, y) => write!(f, "age_page {a} -> {}", young(y)),
            Call::RangeStart(r, e) => write!(f, "invalidate_range_start {r:?} {e:?}"),
            Call::RangeEnd(r, e) => write!(f, "invalidate_range_end {r:?} {e:?}"),
        }
    }
}

/// Switches the CPU back to the machine's own address space when dropped.
struct Leave<'m, M: Machine>(&'m M);

impl<M: Machine> Drop for Leave<'_, M> {
    fn drop(&mut self) {
        self.0.deactivate();
    }
}

/// Turns a core error into the demo's failure.
fn core_err<T>(what: &str, r: Result<T, mmu_notifier_core::Error>) -> Result<T, Failure> {
    r.map_err(|e| Failure::new(format_args!("{what}: {e}")))
}

/// The demo's state: the machine and the first thing that went wrong.
struct Demo<'m, M> {
    m: &'m M,
    words: &'m Words,
    step: u32,
    title: &'static str,
    first_wrong: Option<Failure>,
}

impl<M: Machine> Demo<'_, M> {
    fn say(&self, line: fmt::Arguments<'_>) {
        self.m.log(line);
    }

    fn pages(&self, first: u64, count: u64) -> PageRange {
        crate::cases::pages(self.m, first, count)
    }

    fn step(&mut self, title: &'static str) {
        self.step += 1;
        self.title = title;
        self.say(format_args!("[{}] {title}", self.step));
        dinfo!("demo step {=u32}: {=str}", self.step, title);
    }

    /// Remembers the first unexpected observation.
    fn wrong(&mut self, args: fmt::Arguments<'_>) {
        self.say(format_args!("      ^ WRONG: {args}"));
        if self.first_wrong.is_none() {
            let (step, title) = (self.step, self.title);
            self.first_wrong = Some(Failure::new(format_args!("step {step} ({title}): {args}")));
        }
    }

    fn cpu_read(&mut self, i: u64, expect: Result<u64, CpuFault>) {
        let got = self.m.cpu_read(va(self.m, i));
        self.show_read(i, got, expect, "");
    }

    /// Prints a read done earlier (`note` says when) and checks it.
    fn show_read(
        &mut self,
        i: u64,
        got: Result<u64, CpuFault>,
        expect: Result<u64, CpuFault>,
        note: &str,
    ) {
        let w = self.words;
        self.say(format_args!(
            "    CPU read  {} -> {}{note}",
            va(self.m, i),
            Access(got, w)
        ));
        if got != expect {
            let why = if expect.is_err() {
                " (stale TLB entry: missing flush?)"
            } else {
                ""
            };
            self.wrong(format_args!("expected {}{why}", Access(expect, w)));
        }
    }

    fn cpu_write(&mut self, i: u64, v: u64, expect: Result<(), CpuFault>) {
        let got = self.m.cpu_write(va(self.m, i), v);
        self.show_write(i, v, got, expect, "");
    }

    /// Prints a write done earlier (`note` says when) and checks it.
    fn show_write(
        &mut self,
        i: u64,
        v: u64,
        got: Result<(), CpuFault>,
        expect: Result<(), CpuFault>,
        note: &str,
    ) {
        let (w, at) = (self.words, va(self.m, i));
        match got {
            Ok(()) => self.say(format_args!("    CPU write {at} <- {v:#x} ok{note}")),
            Err(f) => self.say(format_args!(
                "    CPU write {at} <- {v:#x} -> {}{note}",
                Access(Err(f), w)
            )),
        }
        if got != expect {
            let why = if expect.is_err() {
                " (stale TLB entry: missing flush?)"
            } else {
                ""
            };
            self.wrong(format_args!(
                "expected {}{why}",
                Access(expect.map(|()| v), w)
            ));
        }
    }

    /// Prints (and forgets) what the secondary MMU was told since last time.
    fn notifier(&mut self, shadow: &ShadowMmu) -> usize {
        let (calls, n) = shadow.calls();
        shadow.clear_log();
        if n == 0 {
            self.say(format_args!("    notifier: no calls"));
        }
        for call in calls.iter().take(n).flatten() {
            self.say(format_args!("    notifier: {}", Shown(*call)));
            match *call {
                Call::Release => dinfo!("notifier: release"),
                Call::InvalidatePage(a) => dinfo!("notifier: invalidate_page {}", a),
                Call::InvalidatePages(r) => dinfo!("notifier: invalidate_pages {}", r),
                Call::AgePage(a, y) => dinfo!("notifier: age_page {} -> young={=bool}", a, y),
                Call::RangeStart(r, e) => dinfo!("notifier: invalidate_range_start {} {}", r, e),
                Call::RangeEnd(r, e) => dinfo!("notifier: invalidate_range_end {} {}", r, e),
            }
        }
        n
    }

    /// Demands at least one notifier call (an invalidation the secondary
    /// MMU must hear about), printing them.
    fn notified(&mut self, shadow: &ShadowMmu) {
        if self.notifier(shadow) == 0 {
            self.wrong(format_args!("the secondary MMU was told nothing"));
        }
    }

    fn coherent(&mut self, shadow: &ShadowMmu, mm: &Space<'_, M>) {
        let rw = |w: bool| if w { "writable" } else { "read-only" };
        match shadow.check_coherent(mm) {
            Ok(()) => self.say(format_args!(
                "    secondary MMU coherent: yes ({})",
                Cached(shadow.cached_count())
            )),
            Err(stale) => {
                self.say(format_args!("    secondary MMU coherent: NO"));
                let secondary = shadow.cached(stale.va).map_or("", |(_, w)| rw(w));
                match mm.translate(stale.va) {
                    Some((leaf, _)) => self.wrong(format_args!(
                        "secondary maps {} -> {} {secondary}, CPU tables -> {} {}",
                        stale.va,
                        stale.cached,
                        leaf.frame,
                        rw(leaf.prot.writable())
                    )),
                    None => self.wrong(format_args!(
                        "secondary maps {} -> {}, CPU tables: not mapped",
                        stale.va, stale.cached
                    )),
                }
            }
        }
    }

    fn fault_in(
        &mut self,
        shadow: &ShadowMmu,
        mm: &Space<'_, M>,
        first: u64,
        count: u64,
        write: bool,
    ) -> Outcome {
        for i in first..first + count {
            if let Err(e) = shadow.fault_in(mm, va(self.m, i), write) {
                fail!("secondary fault-in of {}: {e:?}", va(self.m, i));
            }
        }
        let how = if write { "writable" } else { "read-only" };
        if count == 1 {
            self.say(format_args!(
                "    secondary MMU faults in {} ({how})",
                va(self.m, first)
            ));
        } else {
            self.say(format_args!(
                "    secondary MMU faults in {:?} ({how})",
                self.pages(first, count)
            ));
        }
        Ok(())
    }

    fn alloc(&self, i: u64) -> Result<PhysAddr, Failure> {
        let frame = self
            .m
            .alloc_frame()
            .ok_or(Failure::new(format_args!("out of frames")))?;
        self.m.write_phys(frame, value(i));
        Ok(frame)
    }

    fn run(&mut self) -> Outcome {
        let m = self.m;
        let flush = self.words.flush;
        let mm = new_space(m)?;
        let child = new_space(m)?;
        let sub = pin!(Subscription::new(ShadowMmu::new(
            Style::PerPage,
            page::<M>()
        )));
        core_err("register", mm.notifiers().register(sub.as_ref()))?;
        let shadow = sub.notifier();

        self.step("map 4 pages read-write");
        let mut frames = [PhysAddr(0); 4];
        for (i, frame) in (0..4).zip(frames.iter_mut()) {
            *frame = self.alloc(i)?;
            if let Err(e) = mm.map(va(m, i), *frame, Prot::WRITE) {
                m.free_frame(*frame);
                fail!("map: {e}");
            }
        }
        let [f0, f1, f2, f3] = frames;
        self.say(format_args!(
            "    {} -> frames {f0} {f1} {f2} {f3}",
            va(m, 0)
        ));
        dinfo!(
            "mapped {} -> frames {} {} {} {}",
            self.pages(0, 4),
            f0,
            f1,
            f2,
            f3
        );
        for i in 0..4 {
            if let Some((leaf, level)) = mm.translate(va(m, i)) {
                dinfo!("  {} -> {} (level {=usize})", va(m, i), leaf, level);
            }
        }
        // SAFETY: 1. `mm` is built on `m`'s arch and table allocator;
        // 2. it lives until the end of this function, and `_leave`, dropped
        // before it on every return, switches the CPU away first.
        unsafe { m.activate(mm.root()) };
        let _leave = Leave(m);
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
        // Use the page right up to the operation, so that the CPU's TLB
        // holds a writable entry for it (printing in between could evict it).
        let before = m.cpu_write(va(m, 1), 0x2b2b);
        core_err(
            "fork",
            mm.copy_range(&child, self.pages(0, 2), CopyMode::Cow),
        )?;
        self.show_write(
            1,
            0x2b2b,
            before,
            Ok(()),
            ", just before: the TLB caches it writable",
        );
        self.say(format_args!("    {flush}, then the read-only entry stored"));
        self.notified(shadow);
        self.cpu_write(1, 0x5555, Err(CpuFault::Protection));
        self.cpu_read(1, Ok(0x2b2b));
        let child_leaf = child.translate(va(m, 0));
        if let Some((leaf, _)) = child_leaf {
            dinfo!("child {} -> {}", va(m, 0), leaf);
        }
        let shared = child_leaf.map(|(leaf, _)| (leaf.frame, leaf.prot.writable()));
        match shared {
            Some((frame, false)) => self.say(format_args!(
                "    child maps {} -> {frame} read-only (shared until a write)",
                va(m, 0)
            )),
            Some((frame, true)) => self.say(format_args!(
                "    child maps {} -> {frame} writable",
                va(m, 0)
            )),
            None => self.say(format_args!("    child does not map {}", va(m, 0))),
        }
        if shared != Some((f0, false)) {
            self.wrong(format_args!("the child should share frame {f0} read-only"));
        }
        self.coherent(shadow, &mm);

        self.step("mprotect pages 2-3 read-only");
        let before = m.cpu_write(va(m, 2), 0x3c3c);
        let changed = core_err(
            "mprotect",
            mm.change_protection(self.pages(2, 2), Prot::READ),
        )?;
        self.show_write(
            2,
            0x3c3c,
            before,
            Ok(()),
            ", just before: the TLB caches it writable",
        );
        self.say(format_args!(
            "    {changed} pages changed. {flush}, then the read-only entry stored"
        ));
        dinfo!(
            "mprotect {} to {}: {=usize} pages changed",
            self.pages(2, 2),
            Prot::READ,
            changed
        );
        self.notified(shadow);
        self.cpu_write(2, 0x5555, Err(CpuFault::Protection));
        self.cpu_read(2, Ok(0x3c3c));
        self.coherent(shadow, &mm);

        self.step("age page 3 (reclaim asks: used lately?)");
        // Start from old (setting up touched the page), then let the CPU
        // use it after a context switch, which makes it walk the tables
        // again (an arch whose aging purges no TLB entry would otherwise
        // read through the cached one and record nothing).
        let _ = core_err("age", mm.clear_flush_young(va(m, 3)))?;
        shadow.clear_log();
        m.deactivate();
        // SAFETY: as above (`_leave` is still alive).
        unsafe { m.activate(mm.root()) };
        self.cpu_read(3, Ok(value(3)));
        let y = core_err("age", mm.clear_flush_young(va(m, 3)))?;
        self.say(format_args!(
            "    clear_flush_young {} -> {} ({})",
            va(m, 3),
            young(y),
            self.words.young
        ));
        self.notifier(shadow);
        if !y {
            self.wrong(format_args!("expected young: the CPU read the page"));
        }
        self.fault_in(shadow, &mm, 3, 1, false)?;
        let y = core_err("age", mm.clear_flush_young(va(m, 3)))?;
        self.say(format_args!(
            "    clear_flush_young {} -> {} (only the secondary MMU used it since)",
            va(m, 3),
            young(y)
        ));
        self.notified(shadow);
        if !y {
            self.wrong(format_args!(
                "expected young: the secondary MMU used the page"
            ));
        }
        let again = core_err("age", mm.clear_flush_young(va(m, 3)))?;
        self.say(format_args!(
            "    clear_flush_young {} again -> {} (nobody used it since)",
            va(m, 3),
            young(again)
        ));
        self.notifier(shadow);
        if again {
            self.wrong(format_args!("expected old: nobody used the page since"));
        }
        self.coherent(shadow, &mm);

        self.step("unmap pages 2-3 (zap), frames back to the allocator");
        self.fault_in(shadow, &mm, 2, 2, false)?;
        let mut handed_back = 0;
        let mut still_cached = 0;
        let before = m.cpu_read(va(m, 2));
        core_err(
            "zap",
            mm.zap_range(self.pages(2, 2), &mut |r: Reusable| {
                // By now the secondary MMU must have let go of the frame.
                if (2..4).any(|i| shadow.cached(va(m, i)).is_some_and(|(f, _)| f == r.frame())) {
                    still_cached += 1;
                }
                handed_back += 1;
                m.free_frame(r.into_frame());
            }),
        )?;
        self.show_read(2, before, Ok(0x3c3c), ", just before: the TLB caches it");
        self.say(format_args!("    {flush}; the entry stays empty"));
        self.notified(shadow);
        self.say(format_args!(
            "    {handed_back} frames handed back, {still_cached} of them still cached by the secondary MMU"
        ));
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
        self.say(format_args!(
            "    {freed} frames handed back, {freed_early} of them before the secondary MMU let go ({})",
            Cached(shadow.cached_count())
        ));
        if freed != 2 || freed_early != 0 || shadow.releases() != 1 {
            self.wrong(format_args!("expected release first, then 2 frames back"));
        }
        Ok(())
    }
}
