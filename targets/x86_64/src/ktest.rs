//! The test-case runner: named cases, a command-line filter, one verdict
//! line per case and a final `N passed, N failed` line that the host runner
//! parses, then the QEMU exit code.

use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use crate::{boot, exit, paging, println};

/// What a case returns.
pub type Outcome = Result<(), Reason>;

/// A test case: a name (matched against the filter) and a function.
pub struct Case {
    /// Printed in the verdict line; the filter matches substrings of it.
    pub name: &'static str,
    /// The test.
    pub run: fn() -> Outcome,
}

impl Case {
    /// A case named `name` that runs `run`.
    pub const fn new(name: &'static str, run: fn() -> Outcome) -> Case {
        Case { name, run }
    }
}

/// A list of cases named after their functions: `cases![a, b]` is
/// `&[Case::new("a", a), Case::new("b", b)]`.
#[macro_export]
macro_rules! cases {
    ($($f:ident),* $(,)?) => {{
        const CASES: &[$crate::Case] = &[$($crate::Case::new(stringify!($f), $f)),*];
        CASES
    }};
}

/// Fails the case with a formatted reason: `fail!("read {:#x}", v)`.
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => {
        return ::core::result::Result::Err($crate::Reason::new(format_args!($($arg)*)))
    };
}

/// Fails the case with a formatted reason unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            $crate::fail!($($arg)+);
        }
    };
}

/// Why a case failed: a message. Formatted messages are copied into a
/// static arena (16 KiB, at most 256 bytes each, truncated) so that a
/// `Reason` stays two words and needs no allocator; failures are rare, and
/// once the arena is full a fixed text replaces the message.
#[derive(Clone, Copy)]
pub struct Reason(&'static str);

const ARENA_SIZE: usize = 16 * 1024;
const REASON_MAX: usize = 256;

/// Bytes below `ARENA_USED` are written once, then only read: each message
/// reserves its own range with `fetch_add` before writing it.
struct Arena(UnsafeCell<[u8; ARENA_SIZE]>);

// SAFETY: writers only touch the range they reserved (see `Reason::new`),
// and readers only read ranges whose writer has finished.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_SIZE]));
static ARENA_USED: AtomicUsize = AtomicUsize::new(0);

/// A stack buffer that keeps the first `REASON_MAX` bytes written to it.
struct Truncating {
    buf: [u8; REASON_MAX],
    len: usize,
}

impl Write for Truncating {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut take = s.len().min(REASON_MAX - self.len);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

impl Reason {
    /// Formats a reason (see [`fail!`](crate::fail)).
    pub fn new(args: fmt::Arguments<'_>) -> Reason {
        let mut text = Truncating { buf: [0; REASON_MAX], len: 0 };
        let _ = text.write_fmt(args); // a failing Display impl just shortens the message
        let len = text.len;
        let start = ARENA_USED.fetch_add(len, Ordering::Relaxed);
        if start + len > ARENA_SIZE {
            return Reason("(reason lost: the message arena is full)");
        }
        let dst = ARENA.0.get().cast::<u8>();
        // SAFETY: [start, start + len) lies inside the arena and was reserved
        // by the fetch_add above for this call alone; nobody reads it yet.
        unsafe { core::ptr::copy_nonoverlapping(text.buf.as_ptr(), dst.add(start), len) };
        // SAFETY: the range is initialised, never written again, and lives in
        // a static. `Truncating` only cuts at char boundaries, so it is UTF-8.
        Reason(unsafe { core::str::from_utf8_unchecked(core::slice::from_raw_parts(dst.add(start), len)) })
    }

    /// The message.
    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl From<&'static str> for Reason {
    fn from(s: &'static str) -> Reason {
        Reason(s)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

/// The case running now, for the panic and exception handlers.
static CURRENT: AtomicPtr<Case> = AtomicPtr::new(core::ptr::null_mut());

/// The name of the case running now, if any.
pub(crate) fn current_case() -> Option<&'static str> {
    let case = CURRENT.load(Ordering::SeqCst);
    // SAFETY: CURRENT only ever holds null or a `&'static Case`.
    unsafe { case.as_ref() }.map(|c| c.name)
}

/// Verdict lines in the runner's format, and their count: `ok   <name>`,
/// `FAIL <name>: <reason>`, `skip <name>: <why>` (not counted), and at the
/// end `N passed, N failed` followed by the QEMU exit code.
///
/// [`run_cases`] uses it; so do kernels that run cases of their own (the
/// conformance suite, the demo), so that every kernel prints alike.
#[derive(Debug, Default)]
pub struct Tally {
    passed: u32,
    failed: u32,
    skipped: u32,
}

impl Tally {
    /// No verdicts yet.
    pub const fn new() -> Tally {
        Tally { passed: 0, failed: 0, skipped: 0 }
    }

    /// Records and prints a pass.
    pub fn pass(&mut self, name: &str) {
        self.passed += 1;
        println!("ok   {name}");
    }

    /// Records and prints a failure.
    pub fn fail(&mut self, name: &str, reason: impl fmt::Display) {
        self.failed += 1;
        println!("FAIL {name}: {reason}");
    }

    /// Prints a case that does not apply here; it counts neither way.
    pub fn skip(&mut self, name: &str, why: impl fmt::Display) {
        self.skipped += 1;
        println!("skip {name}: {why}");
    }

    /// Records a case's outcome.
    pub fn record<E: fmt::Display>(&mut self, name: &str, outcome: Result<(), E>) {
        match outcome {
            Ok(()) => self.pass(name),
            Err(reason) => self.fail(name, reason),
        }
    }

    /// Passes and failures so far.
    pub fn counts(&self) -> (u32, u32) {
        (self.passed, self.failed)
    }

    /// Prints `N passed, N failed` (after a line naming the skipped cases'
    /// count, if any) and exits QEMU: success iff nothing failed and
    /// something passed.
    pub fn finish(&self) -> ! {
        if self.skipped > 0 {
            println!("({} skipped: not applicable on this machine)", self.skipped);
        }
        println!("{} passed, {} failed", self.passed, self.failed);
        if self.failed == 0 && self.passed > 0 {
            exit::exit_success()
        } else {
            exit::exit_failure()
        }
    }
}

/// Runs the cases whose name contains the command-line filter (all of them
/// without one), printing `ok   <name>` or `FAIL <name>: <reason>` for each,
/// then `N passed, N failed`, then exits QEMU: success iff nothing failed and
/// something passed (see [`Tally`]).
///
/// After each case the kernel's own address space is restored, so a case
/// that forgot to switch back cannot break the next one.
pub fn run_cases(cases: &'static [Case]) -> ! {
    let filter = boot::filter();
    let mut tally = Tally::new();
    for case in cases.iter().filter(|c| filter.is_none_or(|f| c.name.contains(f))) {
        CURRENT.store(core::ptr::from_ref(case).cast_mut(), Ordering::SeqCst);
        let outcome = (case.run)();
        if paging::current_root() != paging::kernel_root() {
            paging::deactivate();
        }
        CURRENT.store(core::ptr::null_mut(), Ordering::SeqCst);
        tally.record(case.name, outcome);
    }
    tally.finish()
}
