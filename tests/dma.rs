//! The DMA cases on the host: the emulated MMU, and a software IOMMU whose
//! IOTLB keeps every translation it used until it is invalidated, as
//! QEMU's VT-d and zPCI models do. The cases and the shadow driver are the
//! ones the QEMU kernels run against real (emulated) IOMMUs
//! (`tests/conformance/src/dma`); here they run under `cargo test` and
//! Miri. Built with `--cfg mmu_notifier_broken="no-iotlb"` the driver skips
//! its invalidations and these tests must fail.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use mmu_notifier::{PageRange, PhysAddr, VirtAddr};
use mmu_notifier_conformance::dma::cases::{self, Verdict};
use mmu_notifier_conformance::dma::{
    shadow, Bound, DmaError, DmaFault, DmaMachine, DmaSpace, IoDomain, IoError, ReadBack, Style,
    IO_PAGE,
};
use mmu_notifier_conformance::{CpuFault, Machine, Outcome};
use mmu_notifier_emu::{Emu, Fault};

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

/// One emulated CPU, its memory, the software IOMMU and a device.
struct Host {
    emu: Emu,
    iommu: SoftIommu,
    stamp: Mutex<u64>,
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
    fn huge_level(&self) -> Option<usize> {
        Some(2)
    }
}

fn fault(f: Fault) -> CpuFault {
    match f {
        Fault::NotMapped => CpuFault::NotMapped,
        Fault::Protection => CpuFault::Protection,
        Fault::FreedFrame(pa) => CpuFault::Other(pa.0),
    }
}

impl DmaMachine for Host {
    fn styles(&self) -> &[Style] {
        &[Style::Shadow]
    }

    fn bind(
        &self,
        style: Style,
        mm: &DmaSpace<'_, Self>,
        window: PageRange,
        f: &mut dyn FnMut(&dyn Bound) -> Outcome,
    ) -> Outcome {
        assert_eq!(
            style,
            Style::Shadow,
            "the host offers the shadow driver only"
        );
        // As the kernels do: every binding starts from an empty IOTLB.
        self.iommu.iotlb.lock().unwrap().clear();
        shadow::bind(&self.iommu, mm, window, IOVA_BASE, f)
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
        let (frame, writable) = self.iommu.translate(iova).ok_or(fault(NO_TRANSLATION))?;
        if !writable {
            return Err(fault(READ_ONLY));
        }
        let mut stamp = self.stamp.lock().unwrap();
        *stamp += 1;
        let value = 0x686f_7374_0000_0000 | *stamp;
        self.emu
            .write_phys(PhysAddr(frame.0 + (iova & (IO_PAGE - 1))), value);
        Ok(Some(value))
    }

    fn dma_read(&self, iova: u64) -> Option<Result<ReadBack, DmaError>> {
        Some(match self.iommu.translate(iova) {
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

    fn note(&self, _args: fmt::Arguments<'_>) {}
}

fn run(name: &str) {
    let host = Host {
        emu: Emu::new(1),
        iommu: SoftIommu::default(),
        stamp: Mutex::new(0),
    };
    let mut ran = false;
    cases::run(&host, name, &mut |case, style, verdict| {
        if case != name {
            return;
        }
        ran = true;
        match verdict {
            Verdict::Ran(Ok(())) => {}
            Verdict::Ran(Err(failure)) => panic!("{name} [{}]: {failure}", style.name()),
            Verdict::Skipped(needs) => panic!("{name} does not apply on the host: needs {needs}"),
        }
    });
    assert!(ran, "no DMA case named {name}");
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
            for case in cases::all::<Host>() {
                let host_runs_it = !case.name.contains("another_cpu") && !case.name.contains("young");
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
    mprotect_read_only_then_device_write_faults,
    fork_cow_then_device_write_faults_until_the_copy_is_mapped,
    remap_pfn_range_then_dma_reaches_the_remapped_frame,
    huge_unmap_then_dma_faults_and_the_huge_frame_stays_poisoned,
    teardown_then_dma_faults_and_every_frame_stays_poisoned,
}
