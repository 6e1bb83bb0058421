//! Property test: random sequences of map / touch / fault-in / zap /
//! mprotect / fork-COW / age / register / unregister / teardown on the
//! emulated MMU, checked after every step against the oracle:
//! - no secondary MMU caches a translation the primary tables do not give
//!   (same frame, no more permission);
//! - the CPU faults on every page the primary tables do not map (a
//!   missing TLB flush would show as a stale hit);
//! - a page the CPU used since it was last aged, or that a secondary still
//!   caches as accessed, ages young,
//!   and a page aged twice with no use in between ages old.
//!
//! 256 sequences of up to 48 operations each (proptest's default case
//! count; `PROPTEST_CASES` raises it).

use std::pin::pin;

use mmu_notifier::{
    AddressSpace, CopyMode, PageRange, PhysAddr, Prot, Reusable, Subscription, VirtAddr,
};
use mmu_notifier_conformance::shadow::{ShadowMmu, Style};
use mmu_notifier_emu::{Emu, Fault};
use proptest::prelude::*;

const PAGES: u64 = 6;
const BASE: u64 = 0x0000_0080_0000_0000;
const PAGE: u64 = 4096;

#[derive(Debug, Clone)]
enum Op {
    Map(u64, bool),
    Touch(u64),
    FaultIn(usize, u64, bool),
    DeviceAccess(usize, u64),
    Zap(u64, u64),
    Mprotect(u64, u64, bool),
    ForkCow(u64, u64),
    Age(u64),
    Register(usize),
    Unregister(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let page = 0..PAGES;
    let len = 1..5u64;
    prop_oneof![
        (page.clone(), any::<bool>()).prop_map(|(p, w)| Op::Map(p, w)),
        page.clone().prop_map(Op::Touch),
        (0..2usize, page.clone(), any::<bool>()).prop_map(|(s, p, w)| Op::FaultIn(s, p, w)),
        (0..2usize, page.clone()).prop_map(|(s, p)| Op::DeviceAccess(s, p)),
        (page.clone(), len.clone()).prop_map(|(p, n)| Op::Zap(p, n)),
        (page.clone(), len.clone(), any::<bool>()).prop_map(|(p, n, w)| Op::Mprotect(p, n, w)),
        (page.clone(), len).prop_map(|(p, n)| Op::ForkCow(p, n)),
        page.prop_map(Op::Age),
        (0..2usize).prop_map(Op::Register),
        (0..2usize).prop_map(Op::Unregister),
    ]
}

fn va(p: u64) -> VirtAddr {
    VirtAddr(BASE + p * PAGE)
}

fn range(p: u64, n: u64) -> PageRange {
    let n = n.min(PAGES - p);
    PageRange::from_pages(va(p), n.max(1), PAGE).expect("valid range")
}

fn run(ops: &[Op], teardown_at_end: bool) -> Result<(), TestCaseError> {
    let emu = Emu::new(1);
    let mm = AddressSpace::new(&emu, &emu).expect("root table");
    let subs = [
        pin!(Subscription::new(ShadowMmu::new(Style::PerPage, PAGE))),
        pin!(Subscription::new(ShadowMmu::new(Style::Range, PAGE))),
    ];
    emu.activate(0, mm.root());
    // Both secondaries start attached; the sequence may detach and
    // re-attach them.
    for sub in &subs {
        mm.notifiers()
            .register(sub.as_ref())
            .expect("register on a live address space");
    }
    let mut cpu_used = [false; PAGES as usize];
    let free = |r: Reusable, emu: &Emu| emu.free_frame(r.into_frame());
    for op in ops {
        match *op {
            Op::Map(p, w) => {
                let f = emu.alloc_frame();
                emu.write_phys(f, p);
                let prot = if w { Prot::WRITE } else { Prot::READ };
                if mm.map(va(p), f, prot).is_err() {
                    emu.free_frame(f);
                }
            }
            Op::Touch(p) => {
                if emu.read(0, va(p)).is_ok() {
                    cpu_used[p as usize] = true;
                }
            }
            Op::FaultIn(s, p, w) => {
                if subs[s].is_registered() {
                    let _ = subs[s].notifier().fault_in(&mm, va(p), w);
                }
            }
            Op::DeviceAccess(s, p) => {
                let _ = subs[s].notifier().access(va(p), false);
            }
            Op::Zap(p, n) => {
                let r = range(p, n);
                mm.zap_range(r, &mut |f| free(f, &emu))
                    .expect("zap of a valid range");
                for q in p..(p + n).min(PAGES) {
                    cpu_used[q as usize] = false;
                }
            }
            Op::Mprotect(p, n, w) => {
                let prot = if w { Prot::WRITE } else { Prot::READ };
                mm.change_protection(range(p, n), prot)
                    .expect("mprotect of a valid range");
            }
            Op::ForkCow(p, n) => {
                let child = AddressSpace::new(&emu, &emu).expect("child root");
                mm.copy_range(&child, range(p, n), CopyMode::Cow)
                    .expect("fork of a valid range");
                // The child exits at once; its frames stay the parent's.
                child.teardown(&mut |_| {}).expect("child teardown");
            }
            Op::Age(p) => {
                let mapped = mm.translate(va(p)).is_some();
                let device_used = subs
                    .iter()
                    .any(|s| s.is_registered() && s.notifier().accessed(va(p)));
                let young = mm.clear_flush_young(va(p)).expect("aging a valid page");
                prop_assert!(
                    !(mapped && (cpu_used[p as usize] || device_used)) || young,
                    "page {p} was used since it was last aged (CPU {}, device {device_used}) but aged old",
                    cpu_used[p as usize]
                );
                let again = mm.clear_flush_young(va(p)).expect("aging a valid page");
                prop_assert!(
                    !again,
                    "page {p} aged twice with no use in between, second time young"
                );
                cpu_used[p as usize] = false;
            }
            Op::Register(s) => {
                let _ = mm.notifiers().register(subs[s].as_ref());
            }
            Op::Unregister(s) => {
                if mm.notifiers().unregister(subs[s].as_ref()).is_ok() {
                    subs[s].notifier().detach();
                }
            }
        }
        for (i, sub) in subs.iter().enumerate() {
            if let Err(stale) = sub.notifier().check_coherent(&mm) {
                if sub.is_registered() {
                    return Err(TestCaseError::fail(format!(
                        "after {op:?}: shadow {i} stale: {stale}"
                    )));
                }
            }
        }
        for p in 0..PAGES {
            if mm.translate(va(p)).is_none() {
                let got = emu.read(0, va(p));
                prop_assert!(
                    got == Err(Fault::NotMapped),
                    "after {op:?}: CPU read of unmapped page {p} gave {got:?}"
                );
            }
        }
    }
    if teardown_at_end {
        emu.activate(0, PhysAddr(0));
        mm.teardown(&mut |f| emu.free_frame(f.into_frame()))
            .expect("teardown");
        for sub in &subs {
            prop_assert!(
                sub.notifier().cached_count() == 0,
                "a secondary kept translations after release"
            );
        }
    }
    Ok(())
}

proptest! {
    // No regression file: the deliberately broken builds run this test too
    // and must not write into the source tree.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_operation_sequences_keep_every_secondary_coherent(ops in prop::collection::vec(op(), 1..48), teardown in any::<bool>()) {
        run(&ops, teardown)?;
    }
}

#[test]
fn zap_after_secondary_fault_in_is_seen_by_the_oracle() {
    run(
        &[
            Op::Register(0),
            Op::Map(1, true),
            Op::FaultIn(0, 1, false),
            Op::Zap(0, 4),
        ],
        false,
    )
    .expect("coherent");
}
