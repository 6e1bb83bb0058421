//! Several CPUs on the real x86-64 MMU (`-smp N`, N ≥ 2): the multi-CPU
//! cases of the conformance suite (`mmu_notifier_conformance::smp`, the
//! same scenarios and parameters as on the host and on s390x), after the
//! one case about this arch's hardware: TLB shootdown by IPI.
//!
//! The runner boots this kernel only with `--smp 2` or more; with one CPU
//! every case is skipped (and the kernel reports failure: nothing ran).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};

use mmu_notifier_conformance::cases::{new_space, pages, va, Space};
use mmu_notifier_conformance::requires::several_cpus;
use mmu_notifier_conformance::smp::{map_range, tag, wait_until, Pool, Verdict, WINDOW};
use mmu_notifier_conformance::{CpuFault, Cpus, Machine};
use mmu_notifier_core::Prot;
use mmu_notifier_kernel_x86_64::machine::KernelMachine;
use mmu_notifier_kernel_x86_64::{self as h, ensure, println, smp, Case, Outcome, BUILD};

h::entry!(main);

/// Pages zapped under the other CPUs' TLBs, one at a time.
const SHOOTDOWN_PAGES: u64 = 200;

fn main() -> ! {
    let cpus = smp::start();
    println!(
        "smp: x86_64, {cpus} CPU(s) online, accelerator {:?}, {BUILD} build, TSC {} kHz",
        h::accel(),
        h::tsc_per_ms()
    );
    let machine = KernelMachine::new();
    let mut runner = h::Runner::new().after_each(report_ipis);
    let own = Case::new(
        "shootdown_makes_other_cpu_fault",
        shootdown_makes_other_cpu_fault,
    )
    .requiring(several_cpus);
    runner.run(&machine, [own]);
    runner.run(&machine, mmu_notifier_conformance::several_cpu_cases());
    runner.finish()
}

/// Shootdown IPIs sent before the case that just ended.
static IPIS_BEFORE: AtomicU64 = AtomicU64::new(0);

/// After each case: how many shootdown IPIs it cost.
fn report_ipis(_case: &'static str) {
    let now = smp::shootdown_ipis();
    println!(
        "     {} shootdown IPIs",
        now - IPIS_BEFORE.swap(now, SeqCst)
    );
}

/// The lock-step of the shootdown case.
struct Rounds {
    /// The current round (0: not started, `u64::MAX`: over), published by
    /// CPU 0 once its page is mapped.
    round: AtomicU64,
    /// Readers that have the current page in their TLB.
    filled: AtomicUsize,
    /// The round whose `zap_range` has returned.
    zapped: AtomicU64,
    /// Readers done with the current round.
    done: AtomicUsize,
    /// Reads that hit between the entry's clear and the shootdown (the
    /// window exists; informational).
    late_hits: AtomicU64,
}

/// CPU 0 maps a page; every other CPU reads it (its TLB filled) and keeps
/// reading; CPU 0 zaps it, and the frame is poisoned when the core hands it
/// back. After `zap_range` returned, every other CPU's next read must
/// fault, and no read may ever see the poison.
fn shootdown_makes_other_cpu_fault(m: &KernelMachine) -> Outcome {
    let pool = Pool::fill(m)?;
    let mm = new_space(m)?;
    let v = Verdict::new();
    let rounds = Rounds {
        round: AtomicU64::new(0),
        filled: AtomicUsize::new(0),
        zapped: AtomicU64::new(0),
        done: AtomicUsize::new(0),
        late_hits: AtomicU64::new(0),
    };
    m.run_on_each(&|cpu| {
        if cpu == 0 {
            zapper(m, &mm, &pool, &v, &rounds)
        } else {
            reader(m, &mm, &v, &rounds, cpu)
        }
    });
    println!(
        "     {SHOOTDOWN_PAGES} pages zapped under {} reader CPU(s); reads that hit before the shootdown: {}",
        m.count() - 1,
        rounds.late_hits.load(SeqCst)
    );
    v.outcome()?;
    let torn = mm.teardown(&mut |r| pool.reuse(r));
    ensure!(torn.is_ok(), "teardown: {torn:?}");
    Ok(())
}

fn zapper(
    m: &KernelMachine,
    mm: &Space<'_, KernelMachine>,
    pool: &Pool<'_, KernelMachine>,
    v: &Verdict,
    r: &Rounds,
) {
    let readers = m.count() - 1;
    for round in 1..=SHOOTDOWN_PAGES {
        let page = round % WINDOW;
        match map_range(m, mm, pool, (page, 1), Prot::WRITE) {
            Ok(1) => {}
            other => {
                v.fail(format_args!(
                    "map of page {page} gave {other:?}, expected Ok(1)"
                ));
                break;
            }
        }
        r.filled.store(0, SeqCst);
        r.done.store(0, SeqCst);
        r.round.store(round, SeqCst);
        if !wait_until(m, v, "the readers to fill their TLBs", || {
            r.filled.load(SeqCst) == readers
        }) {
            break;
        }
        match mm.zap_range(pages(m, page, 1), &mut |f| pool.reuse(f)) {
            Ok(1) => {}
            other => v.fail(format_args!(
                "zap of page {page} gave {other:?}, expected Ok(1)"
            )),
        }
        r.zapped.store(round, SeqCst);
        if !wait_until(m, v, "the readers to see the zap", || {
            r.done.load(SeqCst) == readers
        }) || v.failed()
        {
            break;
        }
    }
    r.round.store(u64::MAX, SeqCst);
}

fn reader(m: &KernelMachine, mm: &Space<'_, KernelMachine>, v: &Verdict, r: &Rounds, cpu: usize) {
    // SAFETY: 1. `mm` is built on `m`'s arch and table allocator; 2. it
    // lives until after `run_on_each` returned, and this CPU leaves it in
    // the mailbox loop before then.
    unsafe { m.activate(mm.root()) };
    let mut last = 0;
    loop {
        if !wait_until(m, v, "the next round", || r.round.load(SeqCst) != last) {
            return;
        }
        let round = r.round.load(SeqCst);
        if round == u64::MAX {
            return;
        }
        last = round;
        let page = va(m, round % WINDOW);
        match m.cpu_read(page) {
            Ok(x) if x == tag(page) => {}
            other => v.fail(format_args!(
                "CPU {cpu}: the first read of freshly mapped {page} gave {other:?}"
            )),
        }
        r.filled.fetch_add(1, SeqCst);
        loop {
            let zapped_before = r.zapped.load(SeqCst) == round;
            match m.cpu_read(page) {
                Err(CpuFault::NotMapped) => break,
                Ok(x) if x == tag(page) && !zapped_before => {
                    r.late_hits.fetch_add(1, SeqCst);
                }
                Ok(x) if x == tag(page) => {
                    v.fail(format_args!(
                        "CPU {cpu} still read {page} after zap_range returned: its TLB kept the translation (no shootdown?)"
                    ));
                    break;
                }
                Ok(x) => {
                    v.fail(format_args!(
                        "CPU {cpu} read {x:#x} at {page} after its frame was handed back: a stale translation"
                    ));
                    break;
                }
                Err(f) => {
                    v.fail(format_args!("CPU {cpu}: read of {page}: unexpected {f:?}"));
                    break;
                }
            }
            if v.failed() {
                break;
            }
        }
        r.done.fetch_add(1, SeqCst);
    }
}
