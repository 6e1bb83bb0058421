//! The DMA story `cargo xtask demo` tells, step by step, on any
//! [`DmaMachine`]: map a page, let the device read it (or write it, for a
//! device that cannot read), unmap it, show the IOTLB invalidation the
//! driver issued, let the device try again and read the fault record, and
//! give the frame back once nothing can reach it.

use mmu_notifier_core::{PhysAddr, Reusable};

use super::cases::{finishing, map_page, window, Binding, Quarantine, DMA_OFFSET};
use super::{note, DmaError, DmaMachine, ReadBack, Style};
use crate::cases::{new_space, page, pages, va};
use crate::{ensure, Case, Failure, Outcome};

/// The story as one case, `dma_story`, for the harness's runner (once per
/// style the machine offers).
pub fn case<'m, M: DmaMachine>() -> Case<Binding<'m, M>> {
    Case::new("dma_story", |b: &Binding<'m, M>| story(b.machine, b.style))
}

/// Tells the story for one driver style, one [`note`] per step.
///
/// # Errors
/// The step that did not go as told.
pub fn story<M: DmaMachine>(m: &M, style: Style) -> Outcome {
    let mm = new_space(m)?;
    let frame = map_page(m, &mm, 0, m.dma_prot())?;
    let v = va(m, 0);
    let word = PhysAddr(frame.0 + DMA_OFFSET);
    note(
        m,
        format_args!(
        "1. map: the CPU tables map {v} to frame {frame}, which holds {:#x} at +{DMA_OFFSET:#x}",
        m.read_phys(word)
    ),
    );
    let mut q = Quarantine::new(m);
    let r = m.bind(style, &mm, window(m), &mut |b| {
        let iova = b.iova(v) + DMA_OFFSET;
        match style {
            Style::Shadow => {
                let r = b.fault_in(v, true);
                ensure!(r.is_ok(), "the driver's fault path failed: {r:?}");
                note(m, format_args!(
                    "   the driver's fault path (read_begin, translate, read_retry) programs its IO page table: iova {:#x} -> {frame}",
                    b.iova(v)
                ));
            }
            Style::Shared => note(m, format_args!(
                "   the IOMMU walks the CPU tables themselves (PASID entry -> their root): iova = {v}"
            )),
        }
        match m.dma_read(iova) {
            Some(r) => {
                let got = r.map_err(|e| Failure::new(format_args!("device read failed: {e}")))?;
                match got {
                    ReadBack::Value(got) => {
                        ensure!(got == m.read_phys(word), "the device read {got:#x}");
                        note(m, format_args!(
                            "2. the device reads {iova:#x}: {got:#x}, through a translation its IOTLB now caches"
                        ));
                    }
                    ReadBack::Hidden => note(m, format_args!(
                        "2. the device reads {iova:#x} (into its own buffer) through a translation its IOTLB now caches"
                    )),
                }
            }
            None => {
                let r = m.dma_write(iova);
                ensure!(r.is_ok(), "device write failed: {r:?}");
                note(m, format_args!(
                    "2. the device writes {iova:#x}: the frame holds {:#x} now; its IOTLB caches the translation",
                    m.read_phys(word)
                ));
            }
        }
        let before = b.stats().count;
        let r = mm.zap_range(pages(m, 0, 1), &mut |r: Reusable| {
            q.take(r, page::<M>())
        });
        ensure!(r == Ok(1), "zap returned {r:?}");
        note(m, format_args!(
            "3. unmap {v}: the CPU entry is cleared and flushed, the notifiers run, and the frame comes back; it is poisoned at once, as its next owner would overwrite it"
        ));
        let s = b.stats();
        match s.last.filter(|_| s.count > before) {
            Some(inv) => note(m, format_args!(
                "4. the driver's invalidation, from {}: {} for iova {:#x}+{:#x}, completed before unmap returned",
                inv.source(),
                inv.kind,
                inv.iova,
                inv.len
            )),
            None => note(m, format_args!(
                "4. the driver issued NO invalidation: its IOTLB still holds the old translation"
            )),
        }
        let r = m.dma_write(iova);
        match r {
            Err(DmaError::Fault(f)) => note(m, format_args!(
                "5. the device writes {iova:#x} again: blocked, fault record: {} at {:#x}, reason {:#x}",
                if f.write { "write" } else { "read" },
                f.iova,
                f.reason
            )),
            other => note(m, format_args!(
                "5. the device writes {iova:#x} again: {other:?} (no fault!)"
            )),
        }
        q.check("6. the frame")?;
        note(m, format_args!(
            "6. the frame {frame} still holds only poison: nothing reached it after it was handed back; it goes back to the allocator"
        ));
        ensure!(
            matches!(r, Err(DmaError::Fault(_))),
            "the device's access after unmap did not fault"
        );
        Ok(())
    });
    finishing(m, &mm, r)
}
