//! What the loom test files share: running one model under a preemption
//! bound, and saying how many interleavings it took.
#![allow(dead_code, reason = "each loom test file uses part of it")]

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

/// Runs `model` under loom with `bound` preemptions (or
/// `LOOM_PREEMPTION_BOUND`), and prints how many interleavings it took
/// (`--nocapture`).
pub fn check(name: &str, bound: usize, model: impl Fn() + Sync + Send + 'static) {
    check_with(name, bound, None, model);
}

/// [`check`], allowing `max_branches` scheduling decisions per execution
/// instead of loom's default 1 000 (models whose threads spin-wait, each
/// turn a yield to loom, need more).
pub fn check_with(
    name: &str,
    bound: usize,
    max_branches: Option<usize>,
    model: impl Fn() + Sync + Send + 'static,
) {
    let bound = std::env::var("LOOM_PREEMPTION_BOUND")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(bound);
    let iterations = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&iterations);
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(bound);
    if let Some(max) = max_branches {
        builder.max_branches = max;
    }
    let started = Instant::now();
    builder.check(move || {
        counter.fetch_add(1, Relaxed);
        model();
    });
    println!(
        "loom model {name}: preemption bound {bound}, {} interleavings, {:.2?}",
        iterations.load(Relaxed),
        started.elapsed()
    );
}
