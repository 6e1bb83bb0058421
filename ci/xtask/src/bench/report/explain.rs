//! The reasons `BENCHMARKS.md` gives next to a figure: what in the core
//! (as it was when these were written: one shared SRCU read-side counter,
//! a linked list with per-node liveness checks) makes a figure what it is.
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
             while the feature-on one, larger by the notifier calls, is an out-of-line call \
             (with its register saves and restores): a cost the hook adds through inlining, \
             beyond its own instructions. A fast path of only the `has_notifiers()` test, \
             with everything else in a `#[cold]` function, would keep both inlinable"
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
    let name = hook.function();
    format!(
        "with nobody listening the hook should be one load, one test and one branch \
         (3 instructions); everything `{name}_notify` computes before that test is paid \
         by every call ({extra:+.0} here). In `generic/src/pgtable.rs` when this was written: \
         the leaf's span (`leaf_range`, a `PageRange::new` with its checks) is \
         built unconditionally{}, which the feature-off build compiles away. Fix: test \
         `head.has_notifiers()` (or `wants(..)`) first and build the span inside the \
         cold path",
        match hook {
            Hook::ClearFlush => ", and the huge-leaf level test runs before anybody is asked",
            Hook::Young => ", and the skipped call's `false` is still merged into the result",
        }
    )
}

/// Figure 2, the list against the slice limit.
pub fn dispatch_vs_limit(op: Op, threads: usize) -> String {
    let mut why = String::from(
        "every walk pays a fixed entry cost the slice loop does not (a read-side section and a \
         generation snapshot) and per notifier a node hop and a liveness check besides the \
         indirect call; the fixed cost weighs most at few notifiers",
    );
    if op == Op::Range {
        why.push_str(
            "; a range does it through `invalidate_range_start` and the guard's drop: two walks of \
             the list and the guard's bookkeeping",
        );
    }
    if threads > 1 {
        why.push_str(
            "; with more threads a shared read-side counter bounces between the cores on every \
             call, which the slice loop never writes",
        );
    }
    why
}

/// Figure 2, the list against the lock-based list.
pub fn dispatch_vs_lock(op: Op) -> String {
    format!(
        "a reader that enters the read side with a locked add on one shared counter and leaves \
         with a locked sub does the same two atomic operations as the reader-writer lock, on a \
         cache line that readers bounce just as much; {}",
        match op {
            Op::Range => "a range also snapshots the generation and walks the list twice",
            Op::Page => {
                "the list is linked nodes (a load per hop plus a liveness check) where the \
                 lock's is a slice"
            }
        }
    )
}

/// Figure 3.
pub fn churn() -> &'static str {
    "every registration publishes a node and waits for grace periods; the readers' counter \
     and the list head are written by the writer's core each time, and half of the time one \
     more notifier is on the list"
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
        "readers that write shared memory on every call ({}) serialise on that cache line: \
         each added thread takes it from the others instead of adding throughput",
        match op {
            Op::Page => "a read-side counter",
            Op::Range => "a read-side counter, and the range's bookkeeping",
        }
    )
}
