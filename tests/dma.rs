//! The DMA cases on the host: the emulated MMU, and a software IOMMU whose
//! IOTLB keeps every translation it used until it is invalidated, as
//! QEMU's VT-d and zPCI models do. The cases and the shadow driver are the
//! ones the QEMU kernels run against real (emulated) IOMMUs
//! (`tests/conformance/src/dma`); here they run under `cargo test` and
//! Miri. Built with `--cfg mmu_notifier_broken="no-iotlb"` the driver skips
//! its invalidations and these tests must fail.

mod host;

use std::collections::BTreeMap;
use std::sync::Mutex;

use host::Host;
use mmu_notifier::{PageRange, PhysAddr};
use mmu_notifier_conformance::cases::Space;
use mmu_notifier_conformance::dma::cases::{self, Binding};
use mmu_notifier_conformance::dma::{
    shadow, Bound, DmaError, DmaFault, DmaMachine, IoDomain, IoError, ReadBack, Style, IO_PAGE,
};
use mmu_notifier_conformance::{Machine, Outcome};

/// Where the shadow driver's window starts on the bus.
const IOVA_BASE: u64 = 0x10_0000;
/// Fault reasons of the software IOMMU.
const NO_TRANSLATION: u32 = 1;
const READ_ONLY: u32 = 2;

/// One translation: frame and writability.
type Translation = (PhysAddr, bool);

/// An IO page table and an IOTLB that caches every translation it used.
#[derive(Default)]
struct SoftIommu {
    table: Mutex<BTreeMap<u64, Translation>>,
    iotlb: Mutex<BTreeMap<u64, Translation>>,
}

impl SoftIommu {
    /// The translation a device access to `iova` uses: the IOTLB's, or
    /// the table's (then cached).
    fn translate(&self, iova: u64) -> Option<Translation> {
        let page = iova & !(IO_PAGE - 1);
        let mut iotlb = self.iotlb.lock().unwrap();
        if let Some(&t) = iotlb.get(&page) {
            return Some(t);
        }
        let t = *self.table.lock().unwrap().get(&page)?;
        iotlb.insert(page, t);
        Some(t)
    }
}

impl IoDomain for SoftIommu {
    fn name(&self) -> &'static str {
        "software IO page table"
    }
    fn invalidation_name(&self) -> &'static str {
        "software IOTLB invalidation"
    }
    fn set_pte(&self, iova: u64, frame: PhysAddr, writable: bool) -> Result<(), IoError> {
        self.table.lock().unwrap().insert(iova, (frame, writable));
        Ok(())
    }
    fn clear_pte(&self, iova: u64) -> bool {
        self.table.lock().unwrap().remove(&iova).is_some()
    }
    fn invalidate(&self, iova: u64, len: u64) -> Result<(), IoError> {
        self.iotlb
            .lock()
            .unwrap()
            .retain(|&page, _| page < iova || page >= iova + len);
        Ok(())
    }
}

/// The software IOMMU and the device behind it, beside the host's CPUs.
#[derive(Default)]
struct Devices {
    iommu: SoftIommu,
    /// The value the device's next write stores (they all differ).
    stamp: Mutex<u64>,
}

/// The host's DMA machine: emulated CPUs (threads) and memory, and the
/// devices beside them.
type DmaHost = Host<Devices>;

impl DmaMachine for DmaHost {
    fn styles(&self) -> &[Style] {
        &[Style::Shadow]
    }

    fn bind(
        &self,
        style: Style,
        mm: &Space<'_, Self>,
        window: PageRange,
        f: &mut dyn FnMut(&dyn Bound) -> Outcome,
    ) -> Outcome {
        assert_eq!(
            style,
            Style::Shadow,
            "the host offers the shadow driver only"
        );
        // As the kernels do: every binding starts from an empty IOTLB.
        let iommu = &self.devices.iommu;
        iommu.iotlb.lock().unwrap().clear();
        shadow::bind(iommu, mm, window, IOVA_BASE, f)
    }

    fn read_phys(&self, pa: PhysAddr) -> u64 {
        self.emu.read_phys(pa)
    }

    fn dma_write(&self, iova: u64) -> Result<Option<u64>, DmaError> {
        let fault = |reason| {
            DmaError::Fault(DmaFault {
                iova: iova & !(IO_PAGE - 1),
                write: true,
                reason,
            })
        };
        let (frame, writable) = self
            .devices
            .iommu
            .translate(iova)
            .ok_or(fault(NO_TRANSLATION))?;
        if !writable {
            return Err(fault(READ_ONLY));
        }
        let mut stamp = self.devices.stamp.lock().unwrap();
        *stamp += 1;
        let value = 0x686f_7374_0000_0000 | *stamp;
        self.emu
            .write_phys(PhysAddr(frame.0 + (iova & (IO_PAGE - 1))), value);
        Ok(Some(value))
    }

    fn dma_read(&self, iova: u64) -> Option<Result<ReadBack, DmaError>> {
        Some(match self.devices.iommu.translate(iova) {
            Some((frame, _)) => Ok(ReadBack::Value(
                self.emu
                    .read_phys(PhysAddr(frame.0 + (iova & (IO_PAGE - 1)))),
            )),
            None => Err(DmaError::Fault(DmaFault {
                iova: iova & !(IO_PAGE - 1),
                write: false,
                reason: NO_TRANSLATION,
            })),
        })
    }
}

/// How many emulated CPUs the DMA cases run on: the case that unmaps on
/// another CPU needs two.
const CPUS: usize = 2;

/// Runs the DMA case `name`: it must apply, pass, and give back every
/// frame.
fn run(name: &str) {
    let host = DmaHost::with_devices(CPUS, Devices::default());
    let binding = Binding {
        machine: &host,
        style: Style::Shadow,
    };
    let case = cases::all()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no DMA case named {name}"));
    if let Some(why) = (case.skip)(&binding) {
        panic!("{name} does not run on the host: {why}");
    }
    let outcome = (case.run)(&binding);
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

macro_rules! dma_cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run(stringify!($name));
            }
        )*

        #[test]
        fn every_applicable_dma_case_has_a_host_test() {
            let names = [$(stringify!($name)),*];
            for case in cases::all::<DmaHost>() {
                // The shared-tables driver needs an IOMMU that walks the
                // CPU tables: not the host's.
                let host_runs_it = !case.name.contains("young");
                assert_eq!(
                    names.contains(&case.name),
                    host_runs_it,
                    "DMA case {} and the host's test list disagree",
                    case.name
                );
            }
        }
    };
}

dma_cases! {
    zap_then_dma_faults_and_the_freed_frame_stays_poisoned,
    zap_on_another_cpu_then_dma_faults_on_this_one,
    mprotect_read_only_then_device_write_faults,
    fork_cow_then_device_write_faults_until_the_copy_is_mapped,
    remap_pfn_range_then_dma_reaches_the_remapped_frame,
    huge_unmap_then_dma_faults_and_the_huge_frame_stays_poisoned,
    teardown_then_dma_faults_and_every_frame_stays_poisoned,
}
