//! The test harness of every mmu-notifier QEMU kernel.
//!
//! A kernel binary lists its cases ([`Case`], from the conformance suite,
//! whose vocabulary — [`Outcome`], [`Failure`], [`ensure!`], [`fail!`],
//! [`cases!`] — this crate re-exports), hands them to a [`Runner`], and the
//! runner prints what `cargo xtask qemu` parses:
//!
//! ```text
//! ok   <name>
//! FAIL <name>: <why>
//! skip <name>: <why>                        (counted neither way)
//! (N skipped: not applicable on this machine)  (only if any)
//! N passed, N failed
//! ```
//!
//! then ends the run through the kernel: success iff nothing failed and
//! something passed. A panic or an unexpected exception on any CPU prints
//! [`FatalLine`] (`FAIL <running case>: ...`) and ends the run without a
//! summary, which the runner counts as a failure.
//!
//! What differs between kernels (console, exit, command line, memory
//! accounting, how a CPU leaves a test address space) is the [`Platform`]
//! each kernel implements once, in its `platform.rs`.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use core::fmt;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicUsize, Ordering};

use mmu_notifier_conformance::demo::{self, Words};
use mmu_notifier_conformance::Machine;

pub use mmu_notifier_conformance::sync::{SpinGuard, SpinLock};
pub use mmu_notifier_conformance::{cases, ensure, fail, Case, Failure, Outcome};

/// What the harness needs from the kernel it runs in.
pub trait Platform {
    /// What [`in_use`](Self::in_use) counts, for the leak message
    /// ("frame(s)", "bytes of the pool").
    const IN_USE: &'static str;
    /// Prints on the console (whole lines; takes the console lock).
    fn print(text: fmt::Arguments<'_>);
    /// Ends the run: QEMU exits with the kernel's pass or fail status.
    fn exit(passed: bool) -> !;
    /// The case-name filter from the kernel command line, if any.
    fn filter() -> Option<&'static str>;
    /// Switches this CPU back to the kernel's own address space (after
    /// each case, whatever the case left active).
    fn leave_test_space();
    /// Memory the kernel has handed out (tables and data), for the check
    /// that a case gives back all it took.
    fn in_use() -> u64;
    /// Something the kernel noticed during the case besides its verdict (a
    /// frame given back twice): the case then fails with it.
    fn take_anomaly() -> Option<Failure> {
        None
    }
}

/// The running case's name (pointer, length), for the fatal paths.
static CURRENT_PTR: AtomicUsize = AtomicUsize::new(0);
static CURRENT_LEN: AtomicUsize = AtomicUsize::new(0);

/// Names the case that runs now (`None`: none does), for [`FatalLine`].
/// Only the boot CPU calls it, between cases, while no other CPU runs one.
pub fn set_current_case(name: Option<&'static str>) {
    match name {
        Some(name) => {
            CURRENT_PTR.store(0, Ordering::Relaxed);
            CURRENT_LEN.store(name.len(), Ordering::Relaxed);
            CURRENT_PTR.store(name.as_ptr() as usize, Ordering::Release);
        }
        None => CURRENT_PTR.store(0, Ordering::Release),
    }
}

/// The name of the case that runs now, if any.
pub fn current_case() -> Option<&'static str> {
    let ptr = CURRENT_PTR.load(Ordering::Acquire);
    if ptr == 0 {
        return None;
    }
    let len = CURRENT_LEN.load(Ordering::Relaxed);
    // SAFETY: 1. (ptr, len) were taken from one `&'static str` in
    // `set_current_case`, the length stored before the pointer was
    // published with release ordering (read here with acquire); 2. only
    // the boot CPU stores them, between cases, so no reader sees a pointer
    // with another name's length.
    Some(unsafe { core::str::from_utf8_unchecked(core::slice::from_raw_parts(ptr as *const u8, len)) })
}

/// The line a kernel prints for a panic or an unexpected exception on
/// CPU `cpu`, before it ends the run: `FAIL <case>: [on CPU n: ]<what>`
/// while a case runs (so that the runner names it), `FATAL: ...` otherwise.
pub struct FatalLine<'a> {
    cpu: usize,
    what: fmt::Arguments<'a>,
}

impl<'a> FatalLine<'a> {
    /// The fatal line for `what` on CPU `cpu`.
    pub fn new(cpu: usize, what: fmt::Arguments<'a>) -> Self {
        Self { cpu, what }
    }
}

impl fmt::Display for FatalLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match current_case() {
            Some(name) => write!(f, "FAIL {name}: ")?,
            None => f.write_str("FATAL: ")?,
        }
        if self.cpu != 0 {
            write!(f, "on CPU {}: ", self.cpu)?;
        }
        self.what.fmt(f)
    }
}

/// Verdict lines in the runner's format, and their count.
pub struct Tally<P: Platform> {
    passed: u32,
    failed: u32,
    skipped: u32,
    platform: PhantomData<P>,
}

impl<P: Platform> Tally<P> {
    /// No verdicts yet.
    pub const fn new() -> Self {
        Self {
            passed: 0,
            failed: 0,
            skipped: 0,
            platform: PhantomData,
        }
    }

    /// Records and prints a pass.
    pub fn pass(&mut self, name: &str) {
        self.passed += 1;
        P::print(format_args!("ok   {name}\n"));
    }

    /// Records and prints a failure.
    pub fn fail(&mut self, name: &str, why: impl fmt::Display) {
        self.failed += 1;
        P::print(format_args!("FAIL {name}: {why}\n"));
    }

    /// Prints a case that does not apply here; it counts neither way.
    pub fn skip(&mut self, name: &str, why: impl fmt::Display) {
        self.skipped += 1;
        P::print(format_args!("skip {name}: {why}\n"));
    }

    /// Records a case's outcome.
    pub fn record(&mut self, name: &str, outcome: Outcome) {
        match outcome {
            Ok(()) => self.pass(name),
            Err(why) => self.fail(name, why),
        }
    }

    /// Prints the summary (after a line counting the skipped cases, if
    /// any) and ends the run: success iff nothing failed and something
    /// passed.
    pub fn finish(&self) -> ! {
        if self.skipped > 0 {
            P::print(format_args!("({} skipped: not applicable on this machine)\n", self.skipped));
        }
        P::print(format_args!("{} passed, {} failed\n", self.passed, self.failed));
        P::exit(self.failed == 0 && self.passed > 0)
    }
}

impl<P: Platform> Default for Tally<P> {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs cases, one verdict line each, then the summary.
///
/// Each case runs if its name contains the command-line filter (all
/// without one) and it applies ([`Case::skip`]). Afterwards the CPU is
/// back on the kernel's own address space, and (unless the kernel's own
/// cases keep what they build, see [`run_cases`]) the case must have given
/// back every frame it took, tables and data: a case that passes but leaks
/// fails.
pub struct Runner<P: Platform> {
    tally: Tally<P>,
    filter: Option<&'static str>,
    check_leaks: bool,
    after_each: Option<fn(&'static str)>,
}

impl<P: Platform> Runner<P> {
    /// A runner with the kernel's filter, checking for leaks.
    pub fn new() -> Self {
        Self {
            tally: Tally::new(),
            filter: P::filter(),
            check_leaks: true,
            after_each: None,
        }
    }

    /// Does not check that a case gives back what it took: for cases that
    /// build their tables by hand and keep them for the rest of the run.
    pub fn keeping_memory(mut self) -> Self {
        self.check_leaks = false;
        self
    }

    /// Calls `report(case name)` after each case's verdict line (figures
    /// only the kernel knows, such as IPIs sent).
    pub fn after_each(mut self, report: fn(&'static str)) -> Self {
        self.after_each = Some(report);
        self
    }

    /// Runs `cases` with `ctx`.
    pub fn run<C>(&mut self, ctx: &C, cases: impl IntoIterator<Item = Case<C>>) {
        for case in cases {
            if self.filter.is_some_and(|f| !case.name.contains(f)) {
                continue;
            }
            if let Some(why) = (case.skip)(ctx) {
                self.tally.skip(case.name, why);
                continue;
            }
            set_current_case(Some(case.name));
            let before = P::in_use();
            let outcome = (case.run)(ctx);
            P::leave_test_space();
            set_current_case(None);
            let leaked = if self.check_leaks { P::in_use().wrapping_sub(before) as i64 } else { 0 };
            let outcome = match (outcome, P::take_anomaly()) {
                (Err(why), _) if leaked != 0 => fail_with(format_args!("{why} ({leaked} {} not given back)", P::IN_USE)),
                (Err(why), _) => Err(why),
                (Ok(()), _) if leaked != 0 => fail_with(format_args!("passed, but {leaked} {} not given back", P::IN_USE)),
                (Ok(()), Some(anomaly)) => Err(anomaly),
                (Ok(()), None) => Ok(()),
            };
            self.tally.record(case.name, outcome);
            if let Some(report) = self.after_each {
                report(case.name);
            }
        }
    }

    /// Prints the summary and ends the run (see [`Tally::finish`]).
    pub fn finish(&self) -> ! {
        self.tally.finish()
    }
}

impl<P: Platform> Default for Runner<P> {
    fn default() -> Self {
        Self::new()
    }
}

fn fail_with(why: fmt::Arguments<'_>) -> Outcome {
    Err(Failure::new(why))
}

/// Runs a kernel's own cases (see [`cases!`]), which may keep the memory
/// they take ([`Runner::keeping_memory`]), and ends the run.
pub fn run_cases<P: Platform>(cases: impl IntoIterator<Item = Case<()>>) -> ! {
    let mut runner = Runner::<P>::new().keeping_memory();
    runner.run(&(), cases);
    runner.finish()
}

/// Runs the demo (`mmu_notifier_conformance::demo`) on `m` as one case,
/// `demo`, told in `words`, and ends the run.
pub fn run_demo<P: Platform, M: Machine>(m: &M, words: &Words) -> ! {
    let mut runner = Runner::<P>::new();
    let story = Case::new("demo", |&(m, words): &(&M, &Words)| demo::run(m, words));
    runner.run(&(m, words), [story]);
    runner.finish()
}

/// Declares the kernel's entry point: `entry!(main)` with `fn main() -> !`.
///
/// The kernel's boot code calls it once it can run Rust. A kernel binary
/// uses this macro exactly once; without it, linking fails with an
/// undefined `__harness_kernel_main`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[unsafe(no_mangle)]
        fn __harness_kernel_main() -> ! {
            let main: fn() -> ! = $main;
            main()
        }
    };
}
