//! Physical memory for the tests: a pool of frames from 16 MiB to the end
//! of the identity map, handed out zeroed. Physical address = usable
//! pointer, because the kernel's identity map covers the whole pool in
//! every address space [`activate`](crate::dat::activate)d.
//!
//! Owns the pool; must not touch memory below [`POOL_START`] (the kernel
//! image, its stacks and the lowcore).

use crate::dat::IDENTITY_MAP_END;
use crate::sync::SpinLock;

/// Size of a frame (and of an s390x page).
pub const FRAME_SIZE: u64 = 4096;
/// First byte of the pool; the linker script asserts the kernel image ends
/// below it.
pub const POOL_START: u64 = 16 << 20;
/// One past the last byte of the pool.
pub const POOL_END: u64 = IDENTITY_MAP_END;

struct Pool {
    /// Bump pointer: everything from here to `POOL_END` was never handed out.
    next: u64,
    /// Head of the list of freed 4 KiB frames (0 = empty); each free frame
    /// holds the address of the next one in its first doubleword.
    free: u64,
}

static POOL: SpinLock<Pool> = SpinLock::new(Pool { next: POOL_START, free: 0 });

fn zero(pa: u64, bytes: u64) {
    // SAFETY: `pa..pa + bytes` was just taken from the pool by the caller,
    // lies in the identity-mapped pool (so the address is a valid pointer),
    // and no Rust object lives there.
    unsafe { core::ptr::write_bytes(pa as *mut u8, 0, bytes as usize) };
}

/// Allocates one zeroed 4 KiB frame.
///
/// Returns `None` when the pool is exhausted.
pub fn alloc_frame() -> Option<u64> {
    let pa = {
        let mut pool = POOL.lock();
        if pool.free != 0 {
            let pa = pool.free;
            // SAFETY: `pa` is a frame on the free list: identity mapped, owned
            // by the pool, with the next link in its first doubleword.
            pool.free = unsafe { core::ptr::read_volatile(pa as *const u64) };
            pa
        } else {
            bump(&mut pool, FRAME_SIZE, FRAME_SIZE)?
        }
    };
    zero(pa, FRAME_SIZE);
    Some(pa)
}

fn bump(pool: &mut Pool, bytes: u64, align: u64) -> Option<u64> {
    let start = pool.next.checked_add(align - 1)? & !(align - 1);
    let end = start.checked_add(bytes)?;
    if end > POOL_END {
        return None;
    }
    pool.next = end;
    Some(start)
}

/// Allocates `bytes` of zeroed, contiguous memory aligned to `align` (a
/// power of two, at least 8): 16 KiB/4 KiB for region and segment tables,
/// 2 KiB/2 KiB for page tables.
///
/// Memory from here is never reused except that, when `bytes` is a multiple
/// of 4 KiB and `align >= 4096`, each of its frames may be given back with
/// [`free_frame`].
///
/// Returns `None` when the pool is exhausted or `align` is not a power of two.
pub fn alloc_aligned(bytes: u64, align: u64) -> Option<u64> {
    if !align.is_power_of_two() || bytes == 0 {
        return None;
    }
    let align = align.max(8);
    let pa = bump(&mut POOL.lock(), bytes, align)?;
    zero(pa, bytes);
    Some(pa)
}

/// Gives a 4 KiB frame back to the pool.
///
/// # Safety
///
/// 1. `pa` came from [`alloc_frame`] (or is a whole, 4 KiB-aligned frame of
///    an [`alloc_aligned`] block) and was not freed since;
/// 2. nothing uses the frame any more: no reference, no page-table entry
///    still mapping it, and no TLB entry (flush first: on s390x, the IPTE
///    that cleared the PTE), because the next owner gets it zeroed and
///    any late access would corrupt that owner's data.
pub unsafe fn free_frame(pa: u64) {
    assert!(
        pa % FRAME_SIZE == 0 && (POOL_START..POOL_END).contains(&pa),
        "free_frame: {pa:#x} is not a frame of the pool"
    );
    let mut pool = POOL.lock();
    // SAFETY: the frame is ours again (caller's contract 1-2) and identity
    // mapped; its first doubleword becomes the free-list link.
    unsafe { core::ptr::write_volatile(pa as *mut u64, pool.free) };
    pool.free = pa;
}
