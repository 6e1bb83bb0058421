//! Criterion timings of the notifier paths, one group per figure of
//! `BENCHMARKS.md`. `cargo xtask bench` runs this binary twice (built with
//! and without the core's `notifier` feature) and reads the medians that
//! criterion writes under `$CRITERION_HOME`.
//!
//! - `idle/{ptep_clear_flush,ptep_clear_flush_young}/{on,off}`: figure 1;
//! - `dispatch/{page,range}-{srcu,limit,lock}-{1t,2t}/K`: figure 2, K
//!   notifiers, the real list (`srcu`) against a slice loop (`limit`) and a
//!   `spin::RwLock<Vec<&dyn DynNotifier>>` (`lock`), alone (`1t`) or while
//!   a second thread runs the same operation (`2t`);
//! - `churn/{srcu,lock}-{quiet,churn}/K`: figure 3, `invalidate_page` with
//!   K notifiers while another thread registers and unregisters one more
//!   in a loop (`churn`) or does nothing (`quiet`);
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode};
use mmu_notifier_bench::{
    head_range, machine, map_pages, one_page_range, subscribe, zap, Armed, DynNotifier, LockedList,
    Mm, PageWorker, RangeWorker, Sink, SliceList, ZapWith, BASE, CHURN_COUNTS, DISPATCH_COUNTS,
    LAST, NOTIFIER, ZAP_PAGES,
};
use mmu_notifier_core::{NotifierHead, Subscription};

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

/// Times `iters` calls of `op` on this thread while `rival`, if any, runs
/// in a loop on another thread (started before, stopped after the timing).
fn timed<F: Fn() + Sync, G: Fn() + Sync>(iters: u64, op: &F, rival: Option<&G>) -> Duration {
    let stop = AtomicBool::new(false);
    let running = AtomicBool::new(false);
    std::thread::scope(|s| {
        if let Some(rival) = rival {
            s.spawn(|| {
                running.store(true, Ordering::Release);
                while !stop.load(Ordering::Relaxed) {
                    rival();
                }
            });
            while !running.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
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

/// One benchmark of `op`, with the same operation as rival on a second
/// thread when `threads == 2`.
fn contended<F: Fn() + Sync>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    threads: usize,
    k: usize,
    op: F,
) {
    let id = BenchmarkId::new(format!("{name}-{threads}t"), k);
    g.bench_function(id, |b| {
        b.iter_custom(|iters| timed(iters, &op, (threads == 2).then_some(&op)))
    });
}

fn idle(c: &mut Criterion) {
    let side = if NOTIFIER { "on" } else { "off" };
    let emu = machine();
    let mm = Mm::new(&emu, &emu).expect("root table");
    let armed = Armed::new(&emu, &mm, BASE).expect("map one page");
    let mut g = c.benchmark_group("idle");
    g.bench_function(BenchmarkId::new("ptep_clear_flush", side), |b| {
        b.iter_custom(|iters| {
            cpu_timed(|| {
                for _ in 0..iters {
                    black_box(armed.clear_flush(LAST));
                }
            })
        })
    });
    g.bench_function(BenchmarkId::new("ptep_clear_flush_young", side), |b| {
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
        let head = NotifierHead::new();
        let _subs: Vec<_> = (0..k)
            .map(|_| subscribe(&head, Sink::default()).expect("register"))
            .collect();
        for threads in [1, 2] {
            contended(&mut g, "page-srcu", threads, k, || {
                head.invalidate_page(black_box(BASE))
            });
            contended(&mut g, "page-limit", threads, k, || {
                black_box(slice).invalidate_page(black_box(BASE))
            });
            contended(&mut g, "page-lock", threads, k, || {
                locked.invalidate_page(black_box(BASE))
            });
            contended(&mut g, "range-srcu", threads, k, || {
                head_range(&head, black_box(range))
            });
            contended(&mut g, "range-limit", threads, k, || {
                black_box(slice).invalidate_range(black_box(&range))
            });
            contended(&mut g, "range-lock", threads, k, || {
                locked.invalidate_range(black_box(&range))
            });
        }
    }
    g.finish();
}

fn churn(c: &mut Criterion) {
    let mut g = c.benchmark_group("churn");
    g.measurement_time(Duration::from_millis(1200));
    for k in CHURN_COUNTS {
        let head = NotifierHead::new();
        let _subs: Vec<_> = (0..k)
            .map(|_| subscribe(&head, Sink::default()).expect("register"))
            .collect();
        let extra = Box::pin(Subscription::new(Sink::default()));
        let op = || head.invalidate_page(black_box(BASE));
        let register_unregister = || {
            head.register(extra.as_ref()).expect("register");
            head.unregister(extra.as_ref()).expect("unregister");
        };
        g.bench_function(BenchmarkId::new("srcu-quiet", k), |b| {
            b.iter_custom(|iters| timed(iters, &op, None::<&fn()>))
        });
        g.bench_function(BenchmarkId::new("srcu-churn", k), |b| {
            b.iter_custom(|iters| timed(iters, &op, Some(&register_unregister)))
        });

        let sinks = vec![Sink::default(); k];
        let extra_sink = Sink::default();
        let locked = LockedList::new(sinks.iter().map(|s| s as &dyn DynNotifier).collect());
        let op = || locked.invalidate_page(black_box(BASE));
        let register_unregister = || {
            locked.register(&extra_sink);
            locked.unregister(&extra_sink);
        };
        g.bench_function(BenchmarkId::new("lock-quiet", k), |b| {
            b.iter_custom(|iters| timed(iters, &op, None::<&fn()>))
        });
        g.bench_function(BenchmarkId::new("lock-churn", k), |b| {
            b.iter_custom(|iters| timed(iters, &op, Some(&register_unregister)))
        });
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
            let emu = machine();
            let mm = Mm::new(&emu, &emu).expect("root table");
            let head = mm.notifiers();
            let _range = (with == ZapWith::Range)
                .then(|| subscribe(head, RangeWorker::default()).expect("register"));
            let _page = (with == ZapWith::Page)
                .then(|| subscribe(head, PageWorker::default()).expect("register"));
            map_pages(&mm, BASE, pages).expect("map");
            g.bench_function(BenchmarkId::new(with.name(), pages), |b| {
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
    use mmu_notifier_bench::interval::{interval_of, probe, Device, Scan, COUNTS};
    use mmu_notifier_core::interval::{IntervalNotifiers, IntervalSub};

    let mut g = c.benchmark_group("interval");
    for n in COUNTS {
        let range = probe(n);
        let head = NotifierHead::new();
        let manager = subscribe(&head, IntervalNotifiers::new()).expect("register");
        let _subs: Vec<_> = (0..n)
            .map(|i| {
                let sub = Box::pin(IntervalSub::new(Device));
                let (start, len) = interval_of(i);
                manager
                    .notifier()
                    .insert(sub.as_ref(), start, len)
                    .expect("insert");
                sub
            })
            .collect();
        let scan_head = NotifierHead::new();
        let _scan = subscribe(&scan_head, Scan::new(n)).expect("register");
        g.bench_function(BenchmarkId::new("tree", n), |b| {
            b.iter_custom(|iters| {
                timed(
                    iters,
                    &|| head_range(&head, black_box(range)),
                    None::<&fn()>,
                )
            })
        });
        g.bench_function(BenchmarkId::new("scan", n), |b| {
            b.iter_custom(|iters| {
                timed(
                    iters,
                    &|| head_range(&scan_head, black_box(range)),
                    None::<&fn()>,
                )
            })
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
