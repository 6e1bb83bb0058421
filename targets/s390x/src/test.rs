//! A minimal test-case framework with a fixed output format the runner
//! (`cargo xtask qemu`) parses:
//!
//! ```text
//! ok   <name>
//! FAIL <name>: <reason>[ (<detail>)]
//! N passed, M failed
//! ```
//!
//! One line per case, then the summary line, then a successful exit iff
//! nothing failed and something passed. The filter comes from the kernel
//! command line (`-append filter=SUBSTRING`); a case runs if its name
//! contains it.
//!
//! After every case the kernel's address space is activated again, so a
//! case may leave any space active. A case that panics or takes an
//! unexpected program check still gets its `FAIL` line (from the fatal
//! path), but the run ends there without a summary, which the runner
//! counts as a failure.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::sync::SpinLock;

/// A test case: a name and a function returning why it failed.
#[derive(Clone, Copy)]
pub struct TestCase {
    /// Name, printed and matched by the filter.
    pub name: &'static str,
    /// The test; `Err` carries a short reason.
    pub run: fn() -> Result<(), &'static str>,
}

/// Builds a [`TestCase`] named after the function.
#[macro_export]
macro_rules! case {
    ($f:ident) => {
        $crate::TestCase { name: stringify!($f), run: $f }
    };
}

/// Returns `Err($reason)` from the enclosing test unless `$cond` holds;
/// extra format arguments become the detail printed after the reason.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $reason:expr) => {
        if !$cond {
            return Err($reason);
        }
    };
    ($cond:expr, $reason:expr, $($detail:tt)+) => {
        if !$cond {
            $crate::test::detail(format_args!($($detail)+));
            return Err($reason);
        }
    };
}

/// The running case's name (pointer, length), for the fatal paths.
static CURRENT_PTR: AtomicUsize = AtomicUsize::new(0);
static CURRENT_LEN: AtomicUsize = AtomicUsize::new(0);

/// The name of the case that is running, if any.
pub fn current_case() -> Option<&'static str> {
    let ptr = CURRENT_PTR.load(Ordering::Acquire);
    if ptr == 0 {
        return None;
    }
    let len = CURRENT_LEN.load(Ordering::Relaxed);
    // SAFETY: (ptr, len) were taken from one `&'static str` in
    // `set_current_case`, length first, pointer published with release
    // ordering (read above with acquire). Only CPU 0 sets it, between
    // cases, while no secondary CPU runs, so the pair cannot be torn.
    Some(unsafe { core::str::from_utf8_unchecked(core::slice::from_raw_parts(ptr as *const u8, len)) })
}

/// Names the case that is running, for the `FAIL` line of the fatal paths
/// (a panic or an unexpected program check), in kernels that run cases
/// through their own loop instead of [`run_tests`]; `None` when none runs.
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

struct Detail {
    buf: [u8; 200],
    len: usize,
}

impl Write for Detail {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

static DETAIL: SpinLock<Detail> = SpinLock::new(Detail { buf: [0; 200], len: 0 });

/// Attaches a formatted detail (values seen, codes...) to the current
/// case's `FAIL` line; truncated to 200 bytes. Used by [`ensure!`](crate::ensure).
pub fn detail(args: fmt::Arguments<'_>) {
    let mut d = DETAIL.lock();
    d.len = 0;
    let _ = d.write_fmt(args);
}

fn take_detail() -> ([u8; 200], usize) {
    let mut d = DETAIL.lock();
    let out = (d.buf, d.len);
    d.len = 0;
    out
}

static NOTE: SpinLock<Detail> = SpinLock::new(Detail { buf: [0; 200], len: 0 });

/// Attaches a note (iterations, time...) that [`run_tests`] prints on its
/// own indented line after the case's `ok`/`FAIL` line; truncated to 200
/// bytes; the last note of a case wins.
pub fn note(args: fmt::Arguments<'_>) {
    let mut n = NOTE.lock();
    n.len = 0;
    let _ = n.write_fmt(args);
}

fn take_note() -> ([u8; 200], usize) {
    let mut n = NOTE.lock();
    let out = (n.buf, n.len);
    n.len = 0;
    out
}

/// Runs the cases the command-line filter selects, prints one line each
/// and the summary, and exits: success iff none failed and at least one
/// passed.
pub fn run_tests(cases: &[TestCase]) -> ! {
    let filter = crate::boot::cmdline_arg("filter").unwrap_or("");
    let (mut passed, mut failed) = (0u32, 0u32);
    for case in cases.iter().filter(|c| c.name.contains(filter)) {
        set_current_case(Some(case.name));
        let _ = take_detail();
        let _ = take_note();
        let result = (case.run)();
        // SAFETY: the kernel root is complete and always valid; the case is
        // over, so nothing refers to the test window any more.
        unsafe { crate::dat::activate(crate::dat::kernel_root()) };
        set_current_case(None);
        match result {
            Ok(()) => {
                passed += 1;
                crate::println!("ok   {}", case.name);
            }
            Err(reason) => {
                failed += 1;
                let (buf, len) = take_detail();
                match core::str::from_utf8(&buf[..len]) {
                    Ok(d) if !d.is_empty() => crate::println!("FAIL {}: {} ({})", case.name, reason, d),
                    _ => crate::println!("FAIL {}: {}", case.name, reason),
                }
            }
        }
        let (buf, len) = take_note();
        if let Ok(n) = core::str::from_utf8(&buf[..len]) {
            if !n.is_empty() {
                crate::println!("     {n}");
            }
        }
    }
    crate::println!("{} passed, {} failed", passed, failed);
    if failed == 0 && passed > 0 {
        crate::exit_success()
    } else {
        crate::exit_failure()
    }
}
