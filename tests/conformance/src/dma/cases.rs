//! The DMA cases: one per call site, run for every driver style a machine
//! offers. Each one warms the IOTLB with a DMA through the mapping, runs
//! the call site, poisons every frame the call site hands back (as the
//! next owner of the frame would overwrite it), and has the device access
//! the changed address again: the access must fault (the IOMMU's fault
//! record is read) or reach the frame the CPU tables map now. A poisoned
//! frame that changed means DMA went through a translation that should
//! have been invalidated, and the case fails.

use core::sync::atomic::{AtomicU64, Ordering};

use mmu_notifier_core::{CopyMode, PageRange, PhysAddr, Prot, Reusable, VirtAddr};

use super::{note, on_other_cpu, Bound, DmaError, DmaMachine, FaultInError, ReadBack, Style};
use crate::cases::{finish, new_space, page, pages, va, Space};
use crate::requires::{huge_pages, several_cpus};
use crate::{ensure, Case, Failure, Outcome};

/// What a handed-back frame is filled with before anyone may reuse it.
pub const POISON: u64 = 0x504f_4953_4f4e_2121;
/// Where in a page the device accesses (any 8-byte aligned offset).
pub const DMA_OFFSET: u64 = 0x40;
/// Pages the drivers mirror: the first 4 MiB of the test window (the huge
/// page case uses its second 2 MiB).
pub const WINDOW_PAGES: u64 = 1024;

/// What the DMA cases run with: the machine, and the driver style they
/// bind (one of [`DmaMachine::styles`]).
pub struct Binding<'m, M> {
    /// The machine.
    pub machine: &'m M,
    /// The driver style.
    pub style: Style,
}

/// Every DMA case, in the order the kernels print them, for one
/// [`Binding`]: run them with the harness's runner once per style the
/// machine offers. A case that does not apply (to this machine, or to
/// this style) is skipped with what it needs; a failure names the style.
pub fn all<'m, M: DmaMachine>() -> [Case<Binding<'m, M>>; 8] {
    fn another_cpu<M: DmaMachine>(b: &Binding<'_, M>) -> Option<&'static str> {
        several_cpus(b.machine)
    }
    fn huge<M: DmaMachine>(b: &Binding<'_, M>) -> Option<&'static str> {
        huge_pages(b.machine)
    }
    fn shared<M>(b: &Binding<'_, M>) -> Option<&'static str> {
        (b.style != Style::Shared).then_some(
            "needs an IOMMU that sets the CPU entries' accessed bits (the shared-tables driver)",
        )
    }
    macro_rules! case {
        ($name:ident $(if $needs:ident)?) => {
            Case::new(stringify!($name), |b: &Binding<'m, M>| {
                $name(b.machine, b.style).map_err(|why| {
                    Failure::new(format_args!("[{}] {why}", b.style.name()))
                })
            })
            $(.requiring($needs::<M>))?
        };
    }
    [
        case!(zap_then_dma_faults_and_the_freed_frame_stays_poisoned),
        case!(zap_on_another_cpu_then_dma_faults_on_this_one if another_cpu),
        case!(mprotect_read_only_then_device_write_faults),
        case!(fork_cow_then_device_write_faults_until_the_copy_is_mapped),
        case!(remap_pfn_range_then_dma_reaches_the_remapped_frame),
        case!(huge_unmap_then_dma_faults_and_the_huge_frame_stays_poisoned if huge),
        case!(teardown_then_dma_faults_and_every_frame_stays_poisoned),
        case!(device_access_makes_clear_flush_young_report_young if shared),
    ]
}

/// The range the drivers mirror.
pub(crate) fn window<M: DmaMachine>(m: &M) -> PageRange {
    pages(m, 0, WINDOW_PAGES)
}

fn marker(i: u64) -> u64 {
    0x646d_615f_0000_0000 | i
}

/// Maps page `i` to a fresh frame holding `marker(i)` at [`DMA_OFFSET`];
/// returns the frame.
pub(crate) fn map_page<M: DmaMachine>(
    m: &M,
    mm: &Space<'_, M>,
    i: u64,
    prot: Prot,
) -> Result<PhysAddr, Failure> {
    let frame = m
        .alloc_frame()
        .ok_or_else(|| Failure::new(format_args!("out of frames")))?;
    m.write_phys(PhysAddr(frame.0 + DMA_OFFSET), marker(i));
    if let Err(e) = mm.map(va(m, i), frame, prot) {
        m.free_frame(frame);
        return Err(Failure::new(format_args!("map page {i}: {e}")));
    }
    Ok(frame)
}

/// The frame the CPU tables map `va`'s page to.
fn frame_of<M: DmaMachine>(mm: &Space<'_, M>, va: VirtAddr) -> Option<PhysAddr> {
    mm.translate(va).map(|(leaf, level)| {
        PhysAddr(leaf.frame.0 + (va.0 & (level.entry_span() - 1) & !(page::<M>() - 1)))
    })
}

pub(crate) fn fault_in(b: &dyn Bound, va: VirtAddr, write: bool, what: &str) -> Outcome {
    let r = b.fault_in(va, write);
    ensure!(
        r.is_ok(),
        "{what}: the driver's fault path could not map {va}: {r:?}"
    );
    Ok(())
}

/// The device writes to `va`'s page, which the CPU tables map to `frame`:
/// the write must reach `frame`.
pub(crate) fn write_lands<M: DmaMachine>(
    m: &M,
    b: &dyn Bound,
    va: VirtAddr,
    frame: PhysAddr,
    quarantine: Option<&Quarantine<'_, M>>,
    what: &str,
) -> Outcome {
    let at = PhysAddr(frame.0 + DMA_OFFSET);
    let before = m.read_phys(at);
    let r = m.dma_write(b.iova(va) + DMA_OFFSET);
    let after = m.read_phys(at);
    if let Some(q) = quarantine {
        q.check(what)?;
    }
    match r {
        Ok(Some(v)) => ensure!(
            after == v,
            "{what}: device write to {va} missed frame {frame} ({after:#x}): stale translation"
        ),
        Ok(None) => ensure!(
            after != before,
            "{what}: device write to {va} missed frame {frame}: stale translation"
        ),
        Err(e) => {
            return Err(Failure::new(format_args!(
                "{what}: DMA write to {va} (iova {:#x}) failed: {e}",
                b.iova(va) + DMA_OFFSET
            )))
        }
    }
    Ok(())
}

/// The device writes to `va`'s page, which must fault now; the recorded
/// fault must name the address. `frames` must not change (the current
/// frame, if mapped read-only).
pub(crate) fn write_faults<M: DmaMachine>(
    m: &M,
    b: &dyn Bound,
    va: VirtAddr,
    keep: Option<PhysAddr>,
    quarantine: &Quarantine<'_, M>,
    what: &str,
) -> Outcome {
    let iova = b.iova(va) + DMA_OFFSET;
    let kept = keep.map(|f| (f, m.read_phys(PhysAddr(f.0 + DMA_OFFSET))));
    let r = m.dma_write(iova);
    quarantine.check(what)?;
    if let Some((f, v)) = kept {
        let now = m.read_phys(PhysAddr(f.0 + DMA_OFFSET));
        ensure!(
            now == v,
            "{what}: device wrote {now:#x} into frame {f} via a stale translation"
        );
    }
    match r {
        Err(DmaError::Fault(f)) => {
            ensure!(
                f.iova == iova & !(super::IO_PAGE - 1) || f.iova == iova,
                "{what}: the fault record names {:#x}, the DMA went to {iova:#x}",
                f.iova
            );
            ensure!(
                f.write,
                "{what}: the fault record says read, the DMA was a write"
            );
            note(
                m,
                format_args!(
                    "{what}: device write to {iova:#x} faulted, reason {:#x} [{}]",
                    f.reason,
                    b.style().name()
                ),
            );
            Ok(())
        }
        Ok(_) => Err(Failure::new(format_args!(
            "{what}: device write to {iova:#x} completed, no fault (stale IOTLB entry?)"
        ))),
        Err(e) => Err(Failure::new(format_args!(
            "{what}: device write to {iova:#x} failed, no fault record: {e}"
        ))),
    }
}

/// The device writes to `va`'s page right after a call site changed it:
/// the write must fault, or reach `frame` (what the CPU tables map now),
/// and no handed-back frame may change.
pub(crate) fn write_faults_or_lands<M: DmaMachine>(
    m: &M,
    b: &dyn Bound,
    va: VirtAddr,
    frame: PhysAddr,
    quarantine: &Quarantine<'_, M>,
    what: &str,
) -> Outcome {
    let iova = b.iova(va) + DMA_OFFSET;
    let at = PhysAddr(frame.0 + DMA_OFFSET);
    let before = m.read_phys(at);
    let r = m.dma_write(iova);
    let after = m.read_phys(at);
    quarantine.check(what)?;
    match r {
        Err(DmaError::Fault(f)) => {
            note(
                m,
                format_args!(
                    "{what}: device write to {iova:#x} faulted, reason {:#x} [{}]",
                    f.reason,
                    b.style().name()
                ),
            );
            Ok(())
        }
        Ok(Some(v)) => {
            ensure!(
                after == v,
                "{what}: device write to {va} missed frame {frame}: stale translation"
            );
            Ok(())
        }
        Ok(None) => {
            ensure!(
                after != before,
                "{what}: device write to {va} missed frame {frame}: stale translation"
            );
            Ok(())
        }
        Err(e) => Err(Failure::new(format_args!(
            "{what}: device write to {iova:#x} failed, no fault record: {e}"
        ))),
    }
}

/// Frames handed back by a call site: poisoned at once (their next owner
/// writes them), checked after the device's next access, freed at the end.
pub(crate) struct Quarantine<'m, M: DmaMachine> {
    m: &'m M,
    frames: [(u64, u64); 8],
    n: usize,
}

impl<'m, M: DmaMachine> Quarantine<'m, M> {
    pub(crate) fn new(m: &'m M) -> Self {
        Self {
            m,
            frames: [(0, 0); 8],
            n: 0,
        }
    }

    /// Takes a handed-back frame of `bytes` and poisons it.
    pub(crate) fn take(&mut self, r: Reusable, bytes: u64) {
        self.take_frame(r.into_frame(), bytes);
    }

    /// Takes a handed-back frame (given as its address, by a call site
    /// that ran elsewhere) of `bytes` and poisons it.
    pub(crate) fn take_frame(&mut self, frame: PhysAddr, bytes: u64) {
        for off in (0..bytes).step_by(8) {
            self.m.write_phys(PhysAddr(frame.0 + off), POISON);
        }
        assert!(self.n < self.frames.len(), "quarantine full");
        self.frames[self.n] = (frame.0, bytes);
        self.n += 1;
    }

    /// How many frames were handed back.
    pub(crate) fn len(&self) -> usize {
        self.n
    }

    /// Every poisoned frame is still poison.
    pub(crate) fn check(&self, what: &str) -> Outcome {
        for &(frame, bytes) in &self.frames[..self.n] {
            for off in (0..bytes).step_by(8) {
                let v = self.m.read_phys(PhysAddr(frame + off));
                ensure!(
                    v == POISON,
                    "{what}: DMA landed in handed-back frame {:#x} (+{off:#x} = {v:#x})",
                    frame
                );
            }
        }
        Ok(())
    }
}

impl<M: DmaMachine> Drop for Quarantine<'_, M> {
    fn drop(&mut self) {
        for &(frame, bytes) in &self.frames[..self.n] {
            for off in (0..bytes).step_by(page::<M>() as usize) {
                self.m.free_frame(PhysAddr(frame + off));
            }
        }
    }
}

/// Tears `mm` down (frames back to the machine, unless a call site did
/// already) after a case's `outcome`, also when the case failed, so that
/// a failing case gives back what it took; the case's own failure comes
/// first.
pub(crate) fn finishing<M: DmaMachine>(m: &M, mm: &Space<'_, M>, outcome: Outcome) -> Outcome {
    let done = if mm.is_released() {
        Ok(())
    } else {
        finish(m, mm)
    };
    outcome.and(done)
}

/// The invalidation count moved on, and what the driver issued last is
/// noted for the report.
pub(crate) fn invalidated<M: DmaMachine>(m: &M, b: &dyn Bound, before: u32, what: &str) -> Outcome {
    let s = b.stats();
    if super::IOTLB_INVALIDATION {
        ensure!(
            s.count > before,
            "{what}: the driver issued no IOTLB invalidation"
        );
    }
    if let Some(inv) = s.last.filter(|_| s.count > before) {
        note(
            m,
            format_args!(
                "{what}: {} x {}, last {:#x}+{:#x}, from {} [{}]",
                s.count - before,
                inv.kind,
                inv.iova,
                inv.len,
                inv.source(),
                b.style().name()
            ),
        );
    }
    Ok(())
}

fn zap_then_dma_faults_and_the_freed_frame_stays_poisoned<M: DmaMachine>(
    m: &M,
    style: Style,
) -> Outcome {
    let mm = new_space(m)?;
    let frame = map_page(m, &mm, 0, m.dma_prot())?;
    let v = va(m, 0);
    let mut q = Quarantine::new(m);
    let r = m.bind(style, &mm, window(m), &mut |b| {
        fault_in(b, v, true, "before zap")?;
        write_lands(m, b, v, frame, None, "before zap")?;
        let before = b.stats().count;
        let r = mm.zap_range(pages(m, 0, 1), &mut |r| q.take(r, page::<M>()));
        ensure!(r == Ok(1), "zap returned {r:?}");
        write_faults(m, b, v, None, &q, "after zap")?;
        invalidated(m, b, before, "zap")
    });
    finishing(m, &mm, r)
}

fn zap_on_another_cpu_then_dma_faults_on_this_one<M: DmaMachine>(m: &M, style: Style) -> Outcome {
    let mm = new_space(m)?;
    let frame = map_page(m, &mm, 0, m.dma_prot())?;
    let v = va(m, 0);
    let range = pages(m, 0, 1);
    let mut q = Quarantine::new(m);
    let r = m.bind(style, &mm, window(m), &mut |b| {
        fault_in(b, v, true, "before zap")?;
        write_lands(m, b, v, frame, None, "before zap")?;
        let before = b.stats().count;
        // The call site, its notifier callbacks and the IOTLB invalidation
        // run on the other CPU; the device is driven from this one.
        let freed = AtomicU64::new(0);
        let unmapped = AtomicU64::new(u64::MAX);
        on_other_cpu(m, &|| {
            let r = mm.zap_range(range, &mut |r| {
                freed.store(r.into_frame().0, Ordering::Relaxed)
            });
            unmapped.store(r.map_or(u64::MAX, |n| n as u64), Ordering::Release);
        });
        let n = unmapped.load(Ordering::Acquire);
        ensure!(n == 1, "zap on the other CPU unmapped {n} pages");
        q.take_frame(PhysAddr(freed.load(Ordering::Relaxed)), page::<M>());
        write_faults(m, b, v, None, &q, "after a zap on CPU 1")?;
        invalidated(m, b, before, "zap on CPU 1")
    });
    finishing(m, &mm, r)
}

fn mprotect_read_only_then_device_write_faults<M: DmaMachine>(m: &M, style: Style) -> Outcome {
    let mm = new_space(m)?;
    let prot = m.dma_prot();
    let frame = map_page(m, &mm, 0, prot)?;
    let v = va(m, 0);
    let q = Quarantine::new(m);
    let r = m.bind(style, &mm, window(m), &mut |b| {
        fault_in(b, v, true, "before mprotect")?;
        write_lands(m, b, v, frame, None, "before mprotect")?;
        let before = b.stats().count;
        let r = mm.change_protection(pages(m, 0, 1), prot.difference(Prot::WRITE));
        ensure!(r == Ok(1), "mprotect returned {r:?}");
        // The device still holds the writable translation it used: the
        // write must fault.
        write_faults(m, b, v, Some(frame), &q, "after mprotect")?;
        invalidated(m, b, before, "mprotect")?;
        // The device may map it again, read-only only, and still not write.
        if style == Style::Shadow {
            let w = b.fault_in(v, true);
            ensure!(
                w == Err(FaultInError::NotMapped),
                "after mprotect: the driver's write fault on a read-only page gave {w:?}"
            );
            fault_in(b, v, false, "after mprotect")?;
            write_faults(m, b, v, Some(frame), &q, "read-only again")?;
        }
        if let Some(r) = m.dma_read(b.iova(v) + DMA_OFFSET) {
            let want = m.read_phys(PhysAddr(frame.0 + DMA_OFFSET));
            ensure!(
                r == Ok(ReadBack::Value(want)) || r == Ok(ReadBack::Hidden),
                "after mprotect: a device read of the read-only page gave {r:?}, the frame holds {want:#x}"
            );
        }
        Ok(())
    });
    finishing(m, &mm, r)
}

fn fork_cow_then_device_write_faults_until_the_copy_is_mapped<M: DmaMachine>(
    m: &M,
    style: Style,
) -> Outcome {
    let parent = new_space(m)?;
    let child = new_space(m)?;
    let prot = m.dma_prot();
    let shared = map_page(m, &parent, 0, prot)?;
    let v = va(m, 0);
    let q = Quarantine::new(m);
    let r = m.bind(style, &parent, window(m), &mut |b| {
        fault_in(b, v, true, "before fork")?;
        write_lands(m, b, v, shared, None, "before fork")?;
        let before = b.stats().count;
        let r = parent.copy_range(&child, pages(m, 0, 1), CopyMode::Cow);
        ensure!(r.is_ok(), "fork (COW copy) failed: {r:?}");
        // The frame is the child's too now: the device must not write it.
        write_faults(m, b, v, Some(shared), &q, "after fork")?;
        invalidated(m, b, before, "fork COW")?;
        // The parent's write fault breaks the COW: a private copy, mapped
        // writable in place of the shared frame (which the child keeps).
        let copy = m
            .alloc_frame()
            .ok_or_else(|| Failure::new(format_args!("out of frames")))?;
        let word = m.read_phys(PhysAddr(shared.0 + DMA_OFFSET));
        m.write_phys(PhysAddr(copy.0 + DMA_OFFSET), word);
        let mut kept = None;
        let r = parent.zap_range(pages(m, 0, 1), &mut |r| kept = Some(r.into_frame()));
        ensure!(
            r == Ok(1) && kept == Some(shared),
            "COW break: zap returned {r:?}, frame {kept:?}"
        );
        if let Err(e) = parent.map(v, copy, prot) {
            m.free_frame(copy);
            return Err(Failure::new(format_args!("COW break: map the copy: {e}")));
        }
        fault_in(b, v, true, "after the COW break")?;
        write_lands(m, b, v, copy, None, "after the COW break")?;
        let now = m.read_phys(PhysAddr(shared.0 + DMA_OFFSET));
        ensure!(
            now == word,
            "after the COW break: the child's frame changed to {now:#x}"
        );
        Ok(())
    });
    // Until the COW break gave the parent a copy, the child's page is the
    // parent's frame: the parent's teardown gives it back, not the
    // child's (a case that failed before the break would free it twice).
    let child_owns = frame_of::<M>(&parent, v) != Some(shared);
    m.deactivate();
    let torn = child.teardown(&mut |f: Reusable| {
        if child_owns {
            m.free_frame(f.into_frame());
        }
    });
    let r = r.and(match torn {
        Ok(()) => Ok(()),
        Err(e) => Err(Failure::new(format_args!("child teardown failed: {e}"))),
    });
    finishing(m, &parent, r)
}

fn remap_pfn_range_then_dma_reaches_the_remapped_frame<M: DmaMachine>(
    m: &M,
    style: Style,
) -> Outcome {
    let mm = new_space(m)?;
    let prot = m.dma_prot();
    let old = map_page(m, &mm, 0, prot)?;
    let v = va(m, 0);
    let mut q = Quarantine::new(m);
    let device_mem = m
        .alloc_frame()
        .ok_or_else(|| Failure::new(format_args!("out of frames")))?;
    let r = m.bind(style, &mm, window(m), &mut |b| {
        fault_in(b, v, true, "before remap")?;
        write_lands(m, b, v, old, None, "before remap")?;
        let r = mm.zap_range(pages(m, 0, 1), &mut |r| q.take(r, page::<M>()));
        ensure!(r == Ok(1), "zap before remap returned {r:?}");
        let before = b.stats().count;
        let r = mm.remap_pfn_range(pages(m, 0, 1), device_mem, prot);
        ensure!(r.is_ok(), "remap_pfn_range failed: {r:?}");
        let s = b.stats();
        if s.count > before {
            invalidated(m, b, before, "remap_pfn_range")?;
        } else {
            note(
                m,
                format_args!(
                    "remap_pfn_range: no invalidation needed (nothing mirrored in the range) [{}]",
                    style.name()
                ),
            );
        }
        ensure!(
            frame_of::<M>(&mm, v) == Some(device_mem),
            "remap_pfn_range did not map the new frame"
        );
        // Before the device's fault path runs again: its access faults
        // (shadow: nothing mirrored) or reaches the new frame (shared).
        write_faults_or_lands(m, b, v, device_mem, &q, "right after remap")?;
        fault_in(b, v, true, "after remap")?;
        write_lands(m, b, v, device_mem, Some(&q), "after remap")
    });
    // Unmapped before the frame goes back: teardown hands it back.
    finishing(m, &mm, r)
}

fn huge_unmap_then_dma_faults_and_the_huge_frame_stays_poisoned<M: DmaMachine>(
    m: &M,
    style: Style,
) -> Outcome {
    let level = match m.huge_level() {
        Ok(level) => level,
        Err(why) => return Err(Failure::from(why)),
    };
    let span = level.entry_span();
    let per = span / page::<M>();
    ensure!(
        2 * per <= WINDOW_PAGES,
        "a huge page of {span:#x} does not fit the driver's window"
    );
    let mm = new_space(m)?;
    let huge = m
        .alloc_contiguous(per as usize, span)
        .ok_or_else(|| Failure::new(format_args!("no contiguous huge frame")))?;
    // The second huge page of the window (the window starts huge-aligned).
    let base = va(m, per);
    if let Err(e) = mm.map_huge(level, base, huge, m.dma_prot()) {
        for i in 0..per {
            m.free_frame(PhysAddr(huge.0 + i * page::<M>()));
        }
        return Err(Failure::new(format_args!("map_huge failed: {e}")));
    }
    let v = VirtAddr(base.0 + 3 * page::<M>());
    let sub_frame = PhysAddr(huge.0 + 3 * page::<M>());
    let mut q = Quarantine::new(m);
    let r = m.bind(style, &mm, window(m), &mut |b| {
        fault_in(b, v, true, "before huge unmap")?;
        write_lands(m, b, v, sub_frame, None, "before huge unmap")?;
        let before = b.stats().count;
        let range = PageRange::new(base, VirtAddr(base.0 + span), span).expect("aligned");
        let r = mm.unmap_huge_range(level, range, &mut |r| q.take(r, span));
        ensure!(r == Ok(1), "huge unmap returned {r:?}");
        write_faults(m, b, v, None, &q, "after huge unmap")?;
        invalidated(m, b, before, "huge unmap")
    });
    finishing(m, &mm, r)
}

fn teardown_then_dma_faults_and_every_frame_stays_poisoned<M: DmaMachine>(
    m: &M,
    style: Style,
) -> Outcome {
    let mm = new_space(m)?;
    let prot = m.dma_prot();
    let frames = [map_page(m, &mm, 0, prot)?, map_page(m, &mm, 1, prot)?];
    let mut q = Quarantine::new(m);
    let r = m.bind(style, &mm, window(m), &mut |b| {
        for (i, &f) in frames.iter().enumerate() {
            let v = va(m, i as u64);
            fault_in(b, v, true, "before teardown")?;
            write_lands(m, b, v, f, None, "before teardown")?;
        }
        let before = b.stats().count;
        m.deactivate();
        let r = mm.teardown(&mut |r| q.take(r, page::<M>()));
        ensure!(
            r.is_ok() && q.len() == 2,
            "teardown returned {r:?}, {} frames",
            q.len()
        );
        write_faults(m, b, va(m, 1), None, &q, "after teardown")?;
        invalidated(m, b, before, "teardown")
    });
    // Torn down by the case unless it failed before.
    finishing(m, &mm, r)
}

fn device_access_makes_clear_flush_young_report_young<M: DmaMachine>(
    m: &M,
    style: Style,
) -> Outcome {
    let mm = new_space(m)?;
    map_page(m, &mm, 0, m.dma_prot())?;
    let v = va(m, 0);
    let r = m.bind(style, &mm, window(m), &mut |b| {
        // Device reads: a read sets only the accessed bit. (A write would
        // set the dirty bit too, and QEMU 10.0's first-stage walk sets no
        // flag of an entry that already has one of them, so a second write
        // to a dirty page never marks it accessed: see the report.)
        let read = |what: &str| -> Outcome {
            match m.dma_read(b.iova(v) + DMA_OFFSET) {
                Some(Ok(_)) => Ok(()),
                Some(Err(e)) => Err(Failure::new(format_args!(
                    "{what}: device read failed: {e}"
                ))),
                None => Err(Failure::new(format_args!(
                    "{what}: this device cannot read"
                ))),
            }
        };
        let young = mm.clear_flush_young(v);
        ensure!(
            young == Ok(false),
            "a page nobody touched reports {young:?}"
        );
        read("first device access")?;
        let young = mm.clear_flush_young(v);
        ensure!(
            young == Ok(true),
            "after a device read the page is old ({young:?}): IOMMU accessed bit missed"
        );
        let young = mm.clear_flush_young(v);
        ensure!(
            young == Ok(false),
            "clear_flush_young did not clear: {young:?}"
        );
        read("second device access")?;
        let young = mm.clear_flush_young(v);
        ensure!(
            young == Ok(true),
            "2nd device read left the page old ({young:?}): no IOTLB flush, no walk set A"
        );
        Ok(())
    });
    finishing(m, &mm, r)
}
