//! The conformance suite on the host's emulated MMU: one test per case,
//! named after the behaviour it checks. The same cases run in the QEMU
//! kernels of every arch (`cargo xtask qemu`).

use mmu_notifier::{PhysAddr, VirtAddr};
use mmu_notifier_conformance::{CpuFault, Machine, Outcome};
use mmu_notifier_emu::{Emu, Fault};

/// One emulated CPU (index 0) over the emulator's memory.
struct Host {
    emu: Emu,
}

impl Machine for Host {
    type Arch = Emu;
    type Frames = Emu;

    fn arch(&self) -> &Emu {
        &self.emu
    }
    fn frames(&self) -> &Emu {
        &self.emu
    }
    fn alloc_frame(&self) -> Option<PhysAddr> {
        Some(self.emu.alloc_frame())
    }
    fn alloc_contiguous(&self, count: usize, align: u64) -> Option<PhysAddr> {
        self.emu.alloc_contiguous(count, align)
    }
    fn free_frame(&self, frame: PhysAddr) {
        self.emu.free_frame(frame);
    }
    fn write_phys(&self, pa: PhysAddr, value: u64) {
        self.emu.write_phys(pa, value);
    }
    unsafe fn activate(&self, root: PhysAddr) {
        self.emu.activate(0, root);
    }
    fn deactivate(&self) {
        self.emu.activate(0, PhysAddr(0));
    }
    fn cpu_read(&self, va: VirtAddr) -> Result<u64, CpuFault> {
        self.emu.read(0, va).map_err(fault)
    }
    fn cpu_write(&self, va: VirtAddr, value: u64) -> Result<(), CpuFault> {
        self.emu.write(0, va, value).map_err(fault)
    }
    fn test_base(&self) -> VirtAddr {
        VirtAddr(0x0000_0080_0000_0000)
    }
    fn huge_level(&self) -> Option<mmu_notifier::Level<Emu>> {
        Some(mmu_notifier::Level::new(2))
    }
}

fn fault(f: Fault) -> CpuFault {
    match f {
        Fault::NotMapped => CpuFault::NotMapped,
        Fault::Protection => CpuFault::Protection,
        Fault::FreedFrame(pa) => CpuFault::Other(pa.0),
    }
}

fn run(name: &str) {
    let host = Host { emu: Emu::new(1) };
    let case = mmu_notifier_conformance::every_case::<Host>()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no conformance case named {name}"));
    let outcome: Outcome = (case.run)(&host);
    host.deactivate();
    if let Err(failure) = outcome {
        panic!("{name}: {failure}");
    }
    assert_eq!(
        host.emu.allocated_frames(),
        0,
        "{name} leaked frames (tables or data)"
    );
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run(stringify!($name));
            }
        )*

        #[test]
        fn every_case_has_a_host_test() {
            let names = [$(stringify!($name)),*];
            for case in mmu_notifier_conformance::every_case::<Host>() {
                assert!(names.contains(&case.name), "conformance case {} has no host test", case.name);
            }
        }
    };
}

conformance! {
    zap_faults_on_cpu_and_invalidates_secondary_before_frame_reuse,
    zap_calls_invalidate_page_per_page_inside_one_range_pair,
    ptep_clear_flush_young_reports_cpu_access,
    ptep_clear_flush_young_reports_secondary_access,
    fork_cow_write_protects_parent_and_invalidates_its_range,
    fork_of_shared_mapping_calls_no_notifier,
    mprotect_read_only_faults_writes_and_invalidates_range,
    remap_pfn_range_maps_frames_and_invalidates_range,
    huge_unmap_faults_and_invalidates_each_huge_entry,
    teardown_releases_secondaries_before_any_frame_is_freed,
    unregistered_notifier_is_not_called,
    range_style_secondary_stays_coherent_through_every_call_site,
    bad_input_is_refused_and_changes_nothing,
    operations_after_teardown_are_refused,
    interval_device_stays_coherent_through_every_call_site,
    interval_invalidation_visits_only_overlapping_subscriptions,
    device_fault_during_invalidation_retries,
    device_fault_racing_an_invalidation_elsewhere_does_not_retry,
    device_cannot_fault_while_a_colliding_invalidation_runs,
    interval_inserted_during_invalidation_waits_for_its_end,
    removed_interval_is_not_invalidated,
}
