//! Criterion timings of the notifier paths, one group per figure of
//! `BENCHMARKS.md`. `cargo xtask bench` runs this binary twice (built with
//! and without the core's `notifier` feature) and reads the medians that
//! criterion writes under `$CRITERION_HOME`. The ids, counts and sizes are
//! those of `mmu-notifier-bench-params`, which xtask reads too:
//!
//! - `idle/{ptep_clear_flush,ptep_clear_flush_young}/{on,off}`: figure 1;
//! - `dispatch/{page,range}-{list,limit,lock}-{T}t/K`: figure 2, K
//!   notifiers, the real list (`list`) against a slice loop (`limit`) and a
//!   `spin::RwLock<Vec<&dyn DynNotifier>>` (`lock`), alone (`1t`) or while
//!   other threads run the same operation;
//! - `churn/{list,lock}-{quiet,churn}-{R}r/K`: figure 3, `invalidate_page`
//!   with K notifiers and R reader threads, while another thread registers
//!   and unregisters one more in a loop (`churn`) or does nothing
//!   (`quiet`); R is 1 and one per CPU but the writer's
//!   (`$MMU_NOTIFIER_BENCH_CHURN_READERS` overrides);
//! - `zap/{nobody,range,page}/PAGES`: figure 4, one `zap_range` of PAGES
//!   mapped pages (mapping them again between zaps is not timed);
//! - `interval/{tree,scan}/N`: figure 5, a one-page range start + end that
//!   overlaps one of N interval subscriptions, through the interval
//!   notifiers (`tree`) or one notifier scanning its own list (`scan`).
//!
//! Only `idle` runs in the build without the feature (nothing can register
//! there). No time is asserted anywhere.
//!
//! Every figure is the measuring thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`), not wall time: the machines this runs on
//! are shared, and time spent preempted by another process is not the
//! code's. Spinning on a contended cache line still counts, as it should.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode};
use mmu_notifier_bench::params::{
    churn_readers, parse_counts, Hook, Id, List, Op, CHURN_COUNTS, CHURN_READERS_ENV,
    DISPATCH_COUNTS, DISPATCH_THREADS, ZAP_PAGES,
};
use mmu_notifier_bench::{
    api, head_range, map_pages, one_page_range, zap, Armed, DynNotifier, LockedList, PageWorker,
    RangeWorker, Sink, SliceList, ZapWith, BASE, LAST, NOTIFIER,
};

/// CPU time consumed by the calling thread so far.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a
    // constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID is supported on Linux");
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Runs `f` and returns the CPU time this thread spent in it.
#[inline(always)]
fn cpu_timed(f: impl FnOnce()) -> Duration {
    let start = thread_cpu_time();
    f();
    thread_cpu_time() - start
}

/// A loop another thread runs while one is timed.
type Rival<'a> = &'a (dyn Fn() + Sync);

/// Times `iters` calls of `op` on this thread while each of `rivals` runs
/// in a loop on a thread of its own (all started before, stopped after the
/// timing).
fn timed<F: Fn() + Sync>(iters: u64, op: &F, rivals: &[Rival<'_>]) -> Duration {
    let stop = AtomicBool::new(false);
    let running = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for rival in rivals {
            let (stop, running) = (&stop, &running);
            s.spawn(move || {
                running.fetch_add(1, Ordering::Release);
                while !stop.load(Ordering::Relaxed) {
                    rival();
                }
            });
        }
        while running.load(Ordering::Acquire) < rivals.len() {
            std::hint::spin_loop();
        }
        let elapsed = cpu_timed(|| {
            for _ in 0..iters {
                op();
            }
        });
        stop.store(true, Ordering::Relaxed);
        elapsed
    })
}

/// Criterion's id of one of ours.
fn bench_id(id: &Id) -> BenchmarkId {
    BenchmarkId::new(id.function.clone(), &id.parameter)
}

/// One benchmark of `op`, with `threads - 1` other threads running the same
/// operation.
fn contended<F: Fn() + Sync>(g: &mut BenchmarkGroup<'_, WallTime>, id: Id, threads: usize, op: F) {
    let rivals: Vec<Rival<'_>> = (1..threads).map(|_| &op as Rival<'_>).collect();
    g.bench_function(bench_id(&id), |b| {
        b.iter_custom(|iters| timed(iters, &op, &rivals))
    });
}

fn idle(c: &mut Criterion) {
    let emu = api::machine();
    let mm = api::address_space(&emu).expect("root table");
    let armed = Armed::new(&emu, &mm, BASE).expect("map one page");
    let mut g = c.benchmark_group("idle");
    // One loop per hook, as the hook's caller would write it (no branch on
    // which hook inside the timed loop).
    g.bench_function(bench_id(&Id::idle(Hook::ClearFlush, NOTIFIER)), |b| {
        b.iter_custom(|iters| {
            // One range around the loop, as a zap opens one for all its
            // pages: the per-page cost is what figure 1 compares.
            let range = armed.range();
            cpu_timed(|| {
                for _ in 0..iters {
                    black_box(armed.clear_flush(&range, LAST));
                }
            })
        })
    });
    g.bench_function(bench_id(&Id::idle(Hook::Young, NOTIFIER)), |b| {
        b.iter_custom(|iters| {
            cpu_timed(|| {
                for _ in 0..iters {
                    black_box(armed.clear_flush_young(LAST));
                }
            })
        })
    });
    g.finish();
}

fn dispatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("dispatch");
    let range = one_page_range();
    for k in DISPATCH_COUNTS {
        let sinks = vec![Sink::default(); k];
        let dyns: Vec<&dyn DynNotifier> = sinks.iter().map(|s| s as &dyn DynNotifier).collect();
        let slice = SliceList(&dyns);
        let locked = LockedList::new(dyns.clone());
        let head = api::head();
        let _subs: Vec<_> = (0..k)
            .map(|_| api::subscribe(&head, Sink::default()).expect("register"))
            .collect();
        for t in DISPATCH_THREADS {
            let id = |op, list| Id::dispatch(op, list, t, k);
            contended(&mut g, id(Op::Page, List::Head), t, || {
                head.invalidate_page(black_box(BASE))
            });
            contended(&mut g, id(Op::Page, List::Limit), t, || {
                black_box(slice).invalidate_page(black_box(BASE))
            });
            contended(&mut g, id(Op::Page, List::Lock), t, || {
                locked.invalidate_page(black_box(BASE))
            });
            contended(&mut g, id(Op::Range, List::Head), t, || {
                head_range(&head, black_box(range))
            });
            contended(&mut g, id(Op::Range, List::Limit), t, || {
                black_box(slice).invalidate_range(black_box(&range))
            });
            contended(&mut g, id(Op::Range, List::Lock), t, || {
                locked.invalidate_range(black_box(&range))
            });
        }
    }
    g.finish();
}

/// Figure 3's reader counts: the environment's, or one and one per CPU
/// but the writer's.
fn readers() -> Vec<usize> {
    match std::env::var(CHURN_READERS_ENV) {
        Ok(list) => {
            parse_counts(&list).unwrap_or_else(|e| panic!("{CHURN_READERS_ENV}={list:?}: {e}"))
        }
        Err(_) => churn_readers(std::thread::available_parallelism().map_or(1, usize::from)),
    }
}

/// Times `op` on this thread with `readers - 1` more readers running it,
/// and the writer `churn` when given.
fn churned<F: Fn() + Sync>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    id: Id,
    readers: usize,
    op: &F,
    churn: Option<Rival<'_>>,
) {
    let mut rivals: Vec<Rival<'_>> = (1..readers).map(|_| op as Rival<'_>).collect();
    rivals.extend(churn);
    g.bench_function(bench_id(&id), |b| {
        b.iter_custom(|iters| timed(iters, op, &rivals))
    });
}

/// Figure 3 on the notifier list `head` (of either kernel): `readers`
/// readers with `k` notifiers registered, quiet and while one more thread
/// registers and unregisters a notifier in a loop.
fn churn_list<K: mmu_notifier_core::kernel::Kernel>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    list: List,
    head: &mmu_notifier_core::NotifierHead<K>,
    readers: usize,
    k: usize,
) {
    let _subs: Vec<_> = (0..k)
        .map(|_| api::subscribe(head, Sink::default()).expect("register"))
        .collect();
    let extra = api::subscription(Sink::default());
    let op = || head.invalidate_page(black_box(BASE));
    let register_unregister = || {
        api::register(head, extra.as_ref()).expect("register");
        api::unregister(head, extra.as_ref()).expect("unregister");
    };
    churned(g, Id::churn(list, readers, false, k), readers, &op, None);
    churned(
        g,
        Id::churn(list, readers, true, k),
        readers,
        &op,
        Some(&register_unregister),
    );
}

fn churn(c: &mut Criterion) {
    let mut g = c.benchmark_group("churn");
    g.measurement_time(Duration::from_millis(1200));
    for r in readers() {
        for k in CHURN_COUNTS {
            churn_list(&mut g, List::Head, &api::head(), r, k);
            // The same with fencing readers: grace periods without a
            // barrier on every CPU, so the writer does not interrupt them.
            churn_list(&mut g, List::HeadFenced, &api::head_fenced(), r, k);

            let sinks = vec![Sink::default(); k];
            let extra_sink = Sink::default();
            let locked = LockedList::new(sinks.iter().map(|s| s as &dyn DynNotifier).collect());
            let op = || locked.invalidate_page(black_box(BASE));
            let register_unregister = || {
                locked.register(&extra_sink);
                locked.unregister(&extra_sink);
            };
            churned(&mut g, Id::churn(List::Lock, r, false, k), r, &op, None);
            churned(
                &mut g,
                Id::churn(List::Lock, r, true, k),
                r,
                &op,
                Some(&register_unregister),
            );
        }
    }
    g.finish();
}

fn zap_range(c: &mut Criterion) {
    let mut g = c.benchmark_group("zap");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(1000));
    for pages in ZAP_PAGES {
        for with in ZapWith::ALL {
            let emu = api::machine();
            let mm = api::address_space(&emu).expect("root table");
            let head = mm.notifiers();
            let _range = (with == ZapWith::Range)
                .then(|| api::subscribe(head, RangeWorker::default()).expect("register"));
            let _page = (with == ZapWith::Page)
                .then(|| api::subscribe(head, PageWorker::default()).expect("register"));
            map_pages(&mm, BASE, pages).expect("map");
            g.bench_function(bench_id(&Id::zap(with, pages)), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let mut n = 0;
                        total += cpu_timed(|| n = zap(&mm, pages));
                        assert_eq!(n, pages, "every page was mapped");
                        map_pages(&mm, BASE, pages).expect("map again");
                    }
                    total
                })
            });
        }
    }
    g.finish();
}

#[cfg(feature = "notifier")]
fn interval(c: &mut Criterion) {
    use mmu_notifier_bench::interval::{interval_of, probe, Device, Scan};
    use mmu_notifier_bench::params::{Interval, INTERVAL_COUNTS};

    let mut g = c.benchmark_group("interval");
    for n in INTERVAL_COUNTS {
        let range = probe(n);
        let head = api::head();
        let manager = api::subscribe(&head, api::interval_manager()).expect("register");
        let _subs: Vec<_> = (0..n)
            .map(|i| {
                let sub = api::interval_sub(Device);
                let (start, len) = interval_of(i);
                manager
                    .notifier()
                    .insert(sub.as_ref(), start, len)
                    .expect("insert");
                sub
            })
            .collect();
        let scan_head = api::head();
        let _scan = api::subscribe(&scan_head, Scan::new(n)).expect("register");
        g.bench_function(bench_id(&Id::interval(Interval::Tree, n)), |b| {
            b.iter_custom(|iters| timed(iters, &|| head_range(&head, black_box(range)), &[]))
        });
        g.bench_function(bench_id(&Id::interval(Interval::Scan, n)), |b| {
            b.iter_custom(|iters| timed(iters, &|| head_range(&scan_head, black_box(range)), &[]))
        });
    }
    g.finish();
}

fn main() {
    // Short runs: the whole suite has to finish in minutes on two shared
    // cores. `cargo xtask bench` repeats what must be compared closely.
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(700))
        .sample_size(20)
        .nresamples(10_000)
        .without_plots()
        .configure_from_args();
    idle(&mut c);
    if NOTIFIER {
        dispatch(&mut c);
        churn(&mut c);
        zap_range(&mut c);
        #[cfg(feature = "notifier")]
        interval(&mut c);
    }
    c.final_summary();
}
