//! The reasons `BENCHMARKS.md` gives next to a figure: what in the core
//! (as it was when these were written: per-CPU SRCU reader slots, on
//! `StdThreads` with fence-free readers ordered by `membarrier`; a linked
//! list whose range walks check each node's generation window; the
//! notifier step of the page-table helpers in a cold function) makes a
//! figure what it is.
//! The numbers beside them are measured on every run; these words are
//! not, so they sit here, in one place, to be rewritten when the core
//! changes. Every function names the figure it explains.

use mmu_notifier_bench_params::{Hook, Op};

/// Figure 1, time: why a ratio near 1 is all two shared cores resolve,
/// and what the inlining of the hook does (`inlining`: the nm finding).
pub fn idle_time(rounds: &str, spread: f64, off_insns: f64, inlining: &str) -> String {
    format!(
        "median of the paired rounds (on/off ratios {rounds}, a spread of {spread:.2}); the hook's own \
         instructions are a few on a path of ~{off_insns:.0}, and a ratio within a few percent of 1 is \
         below what two shared cores resolve{inlining}"
    )
}

/// Figure 1, time: the inlining finding, from `nm` on the two timed
/// binaries (`[on, off]`: whether `<hook>_notify` is out of line).
pub fn idle_inlining(hook: Hook, out_of_line: [Option<bool>; 2]) -> String {
    let name = hook.function();
    match out_of_line {
        [Some(true), Some(false)] => format!(
            ". In the timed binaries the feature-off `{name}_notify` is inlined into the loop \
             while the feature-on one is an out-of-line call (with its register saves and \
             restores), although its notifier step is already a `#[cold]` function: the \
             compiler's inlining budget, not the hook's own instructions"
        ),
        [Some(a), Some(b)] if a == b => format!(
            ". `{name}_notify` is {} in both timed binaries",
            if a { "out of line" } else { "inlined" }
        ),
        _ => String::new(),
    }
}

/// Figure 1, instructions.
pub fn idle_insns(hook: Hook, extra: f64) -> String {
    format!(
        "with nobody listening `{}_notify` adds one relaxed load of the head's interest word, \
         one test and one branch (3 instructions); the notifier step is a `#[cold]` function \
         ({extra:+.0} here; beyond 3 is how the compiler arranges the benchmark's loop around \
         the branch: in `ptep_clear_flush_young`'s loop the head pointer is spilled and \
         reloaded and a jump leads back into the loop, as `objdump -d` of \
         `target/bench/icount-on` against `icount-off` shows). {}",
        hook.function(),
        match hook {
            Hook::ClearFlush => {
                "The checks before it (the leaf is inside the announced range, and its span) \
                 run in both builds; a difference below zero is the two builds' code layout"
            }
            Hook::Young => "The leaf check before it runs in both builds",
        }
    )
}

/// Figure 2, the list against the slice limit.
pub fn dispatch_vs_limit(op: Op, threads: usize) -> String {
    let mut why = String::from(
        "every walk pays a fixed cost the slice loop does not: the interest test, a read-side \
         section (the thread's CPU index from thread-local storage, a load and a store to its \
         own reader slot to enter and again to leave) and per notifier a node hop (a dependent \
         load of `next`) and its callback mask besides the indirect call; the fixed cost \
         weighs most at few notifiers",
    );
    if op == Op::Range {
        why.push_str(
            "; a range does it twice, in `invalidate_range_start` and in the guard's `end`, \
             and checks each node's generation window against the start's snapshot so that \
             both halves reach the same notifiers",
        );
    }
    if threads > 1 {
        why.push_str(
            "; more threads write only their own slots, so what a second thread adds here is \
             the machine's (figure 7 shows the slice loop's own scaling on it)",
        );
    }
    why
}

/// Figure 2, the list against the lock-based list.
pub fn dispatch_vs_lock(op: Op) -> String {
    format!(
        "the lock's reader is a locked add and a locked sub on one shared word, the list's \
         two plain stores to its own slot; {}",
        match op {
            Op::Range => {
                "but a range walks the list twice and checks generations, where the lock \
                 walks its slice twice under one read lock"
            }
            Op::Page => {
                "but the list is linked nodes (a dependent load per hop) where the lock's is \
                 a slice, which weighs most with many notifiers"
            }
        }
    )
}

/// Figure 3.
pub fn churn() -> &'static str {
    "every registration and unregistration links or unlinks a node and rewrites the list's \
     head, interest word and generation (the reader's next loads of them miss in its cache), \
     and waits for grace periods whose drain reads every reader slot, the reader's included \
     (its next store to the slot misses too); with `StdThreads` each grace period is also a \
     `membarrier` that interrupts the reader, which the fencing list's row, free of it, \
     separates out; half of the time one more notifier is on the list"
}

/// Figure 4, the range worker's share.
pub fn zap_range_worker(calls: &str, insns_page: f64) -> String {
    format!(
        "callbacks it received: {calls}, so no per-page dispatch; what remains is \
         {insns_page:.1} instructions per page of hook tests, and in the time the \
         noise of a shared machine (the instruction share is the stable figure)"
    )
}

/// Figure 4, the per-page worker's share.
pub fn zap_page_worker(calls: &str, insns_page: f64) -> String {
    format!(
        "callbacks it received: {calls}. Every page of the zap reaches the notifier \
         (a read-side section plus an indirect call each): {insns_page:.1} \
         instructions per page more than with nobody registered, against a zap of a few \
         hundred instructions per page on the emulated MMU"
    )
}

/// Figure 5, speed-up.
pub fn interval_speedup() -> &'static str {
    "the tree walk and the manager's bookkeeping cost more than the scan saves"
}

/// Figure 5, growth.
pub fn interval_growth() -> &'static str {
    "the query visits more than O(log n) nodes, or the larger tree misses the caches on every level"
}

/// Figure 7.
pub fn scaling(op: Op) -> String {
    format!(
        "a reader writes only its own CPU's 128-byte slot and reads lines that only writers \
         change ({}), so the read side has no shared write to serialise on; where the slice \
         loop, which writes nothing, falls short as well, the machine holds the threads back \
         (the vCPUs of a shared virtual machine are not idle cores of their own)",
        match op {
            Op::Page => "the epoch, the list's head and nodes",
            Op::Range => "the epoch, the list's head, nodes and generation",
        }
    )
}
