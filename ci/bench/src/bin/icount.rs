//! The hot paths in a loop, for callgrind's instruction counts.
//!
//! `icount OP N` runs OP N times after a fixed setup; `cargo xtask bench`
//! runs it under `valgrind --tool=callgrind` for two values of N and takes
//! the difference, so the setup cancels and what remains is exactly N2 - N1
//! calls: a deterministic count that a noisy machine cannot move.
//!
//! - `clear-flush N [K]`, `young N [K]`: figure 1's `ptep_clear_flush` and
//!   `ptep_clear_flush_young` (with the notifier step) on one page, with K
//!   do-nothing notifiers registered (default 0: the idle cost);
//! - `zap PAGES nobody|range|page`: one `zap_range` of PAGES pages with that
//!   worker registered, inside `bench_zap_once`, the only function counted
//!   (`--toggle-collect=bench_zap_once`); prints the callbacks the worker
//!   received.
//!
//! Build it with and without `--no-default-features` for the two sides of
//! figure 1.

use std::hint::black_box;
use std::process::ExitCode;

use mmu_notifier_bench::params::Hook;
use mmu_notifier_bench::{
    api, map_pages, zap, Armed, Mm, PageWorker, RangeWorker, Sink, ZapWith, BASE, LAST,
};
use mmu_notifier_core::Error;

#[inline(never)]
fn clear_flush_loop(armed: &Armed<'_>, n: u64) {
    // One range around the loop, as a zap opens one for all its pages.
    let range = armed.range();
    for _ in 0..n {
        black_box(armed.clear_flush(&range, LAST));
    }
}

#[inline(never)]
fn young_loop(armed: &Armed<'_>, n: u64) {
    for _ in 0..n {
        black_box(armed.clear_flush_young(LAST));
    }
}

/// The one function callgrind counts for `zap`.
#[no_mangle]
#[inline(never)]
pub fn bench_zap_once(mm: &Mm<'_>, pages: usize) -> usize {
    zap(mm, pages)
}

fn zap_op(pages: usize, with: ZapWith) -> Result<String, String> {
    let emu = api::machine();
    let mm = api::address_space(&emu).map_err(|e| format!("address space: {e:?}"))?;
    let head = mm.notifiers();
    let err = |e: Error| format!("{e:?}");
    map_pages(&mm, BASE, pages).map_err(err)?;
    let range = match with {
        ZapWith::Range => Some(api::subscribe(head, RangeWorker::default()).map_err(err)?),
        _ => None,
    };
    let page = match with {
        ZapWith::Page => Some(api::subscribe(head, PageWorker::default()).map_err(err)?),
        _ => None,
    };
    let n = bench_zap_once(&mm, pages);
    if n != pages {
        return Err(format!("zapped {n} of {pages} pages"));
    }
    let calls = match (&range, &page) {
        (Some(r), _) => r.notifier().calls.summary(),
        (_, Some(p)) => p.notifier().calls.summary(),
        _ => "none (nobody registered)".into(),
    };
    Ok(format!("calls: {calls}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parse = |i: usize| args.get(i).and_then(|s| s.parse::<u64>().ok());
    let result = match (args.first().map(String::as_str), parse(1)) {
        (Some(op), Some(n)) if Hook::parse_op(op).is_some() => {
            let emu = api::machine();
            let mm = api::address_space(&emu).expect("root table");
            let armed = Armed::new(&emu, &mm, BASE).expect("map one page");
            let k = parse(2).unwrap_or(0);
            let _subs = (0..k)
                .map(|_| api::subscribe(mm.notifiers(), Sink::default()))
                .collect::<Result<Vec<_>, _>>()
                .expect("registering needs the notifier feature");
            match Hook::parse_op(op) {
                Some(Hook::Young) => young_loop(&armed, n),
                _ => clear_flush_loop(&armed, n),
            }
            Ok(format!("{op} x{n}"))
        }
        (Some("zap"), Some(pages)) => match args.get(2).and_then(|s| ZapWith::parse(s)) {
            Some(with) => zap_op(pages as usize, with),
            None => Err("zap PAGES nobody|range|page".into()),
        },
        _ => Err("usage: icount clear-flush|young N [K] | zap PAGES nobody|range|page".into()),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("icount: {e}");
            ExitCode::from(2)
        }
    }
}
