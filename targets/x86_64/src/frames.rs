//! Physical memory for tests: 4 KiB frames from RAM above the kernel image
//! (from 16 MiB up to the end of the first RAM region or 1 GiB, whichever
//! comes first).
//!
//! A bump pointer plus a free list threaded through the free frames
//! themselves. Every frame lies in the identity map, so its physical address
//! is also a pointer. Owns that range; the kernel image below 16 MiB is not
//! part of it.

use mmu_notifier_kernel_harness::SpinLock;

/// The size of a frame.
pub const FRAME_SIZE: u64 = 4096;
/// Frames start here, well above the kernel image at 1 MiB.
pub(crate) const FIRST_FRAME: u64 = 16 << 20;

struct Frames {
    /// Next never-used frame.
    next: u64,
    /// End of the range.
    end: u64,
    /// Head of the free list (0: empty). Each free frame's first 8 bytes hold
    /// the next one's address.
    free: u64,
    in_use: usize,
}

static FRAMES: SpinLock<Frames> = SpinLock::new(Frames {
    next: 0,
    end: 0,
    free: 0,
    in_use: 0,
});

/// Hands `[start, end)` to the allocator.
///
/// # Safety
/// `[start, end)` must be frame-aligned RAM inside the identity map that
/// nothing else uses.
pub(crate) unsafe fn init(start: u64, end: u64) {
    let mut f = FRAMES.lock();
    f.next = start;
    f.end = end & !(FRAME_SIZE - 1);
}

/// Fills a frame with zeros.
///
/// # Safety
/// The caller owns the frame at `pa` exclusively.
unsafe fn zero(pa: u64) {
    // SAFETY: identity-mapped RAM owned by the caller.
    unsafe { core::ptr::write_bytes(pa as *mut u8, 0, FRAME_SIZE as usize) }
}

/// Allocates a zeroed 4 KiB frame and returns its physical address, which is
/// also a valid pointer (identity map). `None` when RAM is exhausted.
pub fn alloc_frame() -> Option<u64> {
    let pa = {
        let mut f = FRAMES.lock();
        let pa = if f.free != 0 {
            let pa = f.free;
            // SAFETY: a free frame's first word is the free-list link, and
            // free frames belong to the allocator (we hold its lock).
            f.free = unsafe { (pa as *const u64).read() };
            pa
        } else if f.next < f.end {
            let pa = f.next;
            f.next += FRAME_SIZE;
            pa
        } else {
            return None;
        };
        f.in_use += 1;
        pa
    };
    // SAFETY: the frame just left the allocator: it is ours alone.
    unsafe { zero(pa) };
    Some(pa)
}

/// Allocates `count` physically contiguous zeroed frames whose first address
/// is a multiple of `align` (a power of two, at least [`FRAME_SIZE`]), for
/// example a 2 MiB-aligned block to back a huge page. Returns the first
/// frame's address; free each frame with [`free_frame`].
///
/// Takes fresh memory only (not the free list); frames skipped to reach the
/// alignment go to the free list.
pub fn alloc_frames_aligned(count: usize, align: u64) -> Option<u64> {
    assert!(
        align.is_power_of_two() && align >= FRAME_SIZE,
        "bad alignment {align:#x}"
    );
    let start = {
        let mut f = FRAMES.lock();
        let start = f.next.next_multiple_of(align);
        let end = start.checked_add(count as u64 * FRAME_SIZE)?;
        if end > f.end {
            return None;
        }
        let mut skipped = f.next;
        while skipped < start {
            // SAFETY: never-used frames in our range belong to the allocator.
            unsafe { (skipped as *mut u64).write(f.free) };
            f.free = skipped;
            skipped += FRAME_SIZE;
        }
        f.next = end;
        f.in_use += count;
        start
    };
    for i in 0..count as u64 {
        // SAFETY: the frames just left the allocator: they are ours alone.
        unsafe { zero(start + i * FRAME_SIZE) };
    }
    Some(start)
}

/// Returns a frame to the allocator.
///
/// # Safety
/// 1. `pa` comes from [`alloc_frame`] or [`alloc_frames_aligned`];
/// 2. it is not freed twice;
/// 3. it is no longer in use: no references into it, no page-table entry
///    mapping it, and no TLB (of any CPU or secondary MMU) still caching a
///    translation to it.
pub unsafe fn free_frame(pa: u64) {
    assert!(
        pa.is_multiple_of(FRAME_SIZE) && pa >= FIRST_FRAME,
        "free_frame({pa:#x}): not an allocated frame"
    );
    let mut f = FRAMES.lock();
    assert!(pa < f.next, "free_frame({pa:#x}): never allocated");
    // SAFETY: the frame is one of ours (condition 1), handed back once (2)
    // and used by nobody any more (3): its first word may hold the link.
    unsafe { (pa as *mut u64).write(f.free) };
    f.free = pa;
    f.in_use -= 1;
}

/// How many frames are allocated and not yet freed: lets a test check that
/// it gave back everything it took.
pub fn frames_in_use() -> usize {
    FRAMES.lock().in_use
}
