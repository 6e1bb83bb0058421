//! Physical memory for the tests: a pool of frames from 16 MiB to the end
//! of the identity map, handed out zeroed. Physical address = usable
//! pointer, because the kernel's identity map covers the whole pool in
//! every address space [`activate`](crate::dat::activate)d.
//!
//! Three kinds of allocation: 4 KiB frames ([`alloc_frame`]/[`free_frame`],
//! reused), aligned blocks ([`alloc_aligned`], never reused but for their
//! whole frames), and DAT table blocks of 16 KiB and 2 KiB
//! ([`alloc_table_block`]/[`free_table_block`], reused). [`bytes_in_use`]
//! counts all three, so a test can check it gave back what it took.
//!
//! Owns the pool; must not touch memory below [`POOL_START`] (the kernel
//! image, its stacks and the lowcore).

use crate::dat::IDENTITY_MAP_END;
use mmu_notifier_kernel_harness::SpinLock;

/// Size of a frame (and of an s390x page).
pub const FRAME_SIZE: u64 = 4096;
/// First byte of the pool; the linker script asserts the kernel image ends
/// below it.
pub const POOL_START: u64 = 16 << 20;
/// One past the last byte of the pool.
pub const POOL_END: u64 = IDENTITY_MAP_END;

/// Frames in the pool, and words of the bitmap that tracks them.
const POOL_FRAMES: usize = ((POOL_END - POOL_START) / FRAME_SIZE) as usize;
const BITMAP_WORDS: usize = POOL_FRAMES.div_ceil(64);

/// Size of a region or segment table block ([`alloc_table_block`]).
pub const TABLE_BLOCK_LARGE: u64 = 16 << 10;
/// Size of a page-table block ([`alloc_table_block`]).
pub const TABLE_BLOCK_SMALL: u64 = 2 << 10;

struct Pool {
    /// Bump pointer: everything from here to `POOL_END` was never handed out.
    next: u64,
    /// Head of the list of freed 4 KiB frames (0 = empty); each free frame
    /// holds the address of the next one in its first doubleword.
    free: u64,
    /// Free 16 KiB table blocks, linked the same way.
    free_large: u64,
    /// Free 2 KiB table blocks, linked the same way. Two of them are carved
    /// from one 4 KiB frame, which then belongs to this list for good.
    free_small: u64,
    /// Bytes handed out and not given back (every kind of allocation).
    in_use: u64,
    /// One bit per pool frame: set while the frame is allocated as a whole
    /// 4 KiB frame ([`alloc_frame`], whole frames of [`alloc_aligned`]), or
    /// owned by the 2 KiB table-block list. Catches double frees.
    allocated: [u64; BITMAP_WORDS],
}

impl Pool {
    fn bit(pa: u64) -> (usize, u64) {
        let n = ((pa - POOL_START) / FRAME_SIZE) as usize;
        (n / 64, 1 << (n % 64))
    }
    fn is_allocated(&self, pa: u64) -> bool {
        let (w, b) = Self::bit(pa);
        self.allocated[w] & b != 0
    }
    fn mark(&mut self, pa: u64, allocated: bool) {
        let (w, b) = Self::bit(pa);
        if allocated {
            self.allocated[w] |= b;
        } else {
            self.allocated[w] &= !b;
        }
    }
    /// Pops the head of a free list whose links live in the blocks.
    fn pop(head: &mut u64) -> Option<u64> {
        if *head == 0 {
            return None;
        }
        let pa = *head;
        // SAFETY: `pa` is a block on a free list: identity mapped, owned by
        // the pool, with the next link in its first doubleword.
        *head = unsafe { core::ptr::read_volatile(pa as *const u64) };
        Some(pa)
    }
    /// Pushes a block the pool owns again onto a free list.
    fn push(head: &mut u64, pa: u64) {
        // SAFETY: the block is the pool's (callers' contracts), identity
        // mapped, at least 8 bytes; its first doubleword becomes the link.
        unsafe { core::ptr::write_volatile(pa as *mut u64, *head) };
        *head = pa;
    }
    /// A whole 4 KiB frame: a freed one, or a new one from the bump pointer.
    fn frame(&mut self) -> Option<u64> {
        let pa = match Self::pop(&mut self.free) {
            Some(pa) => pa,
            None => bump(self, FRAME_SIZE, FRAME_SIZE)?,
        };
        self.mark(pa, true);
        Some(pa)
    }
}

static POOL: SpinLock<Pool> = SpinLock::new(Pool {
    next: POOL_START,
    free: 0,
    free_large: 0,
    free_small: 0,
    in_use: 0,
    allocated: [0; BITMAP_WORDS],
});

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
        let pa = pool.frame()?;
        pool.in_use += FRAME_SIZE;
        pa
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
/// Memory from here is never reused (see [`alloc_table_block`] for tables
/// that are) except that, when `bytes` is a multiple
/// of 4 KiB and `align >= 4096`, each of its frames may be given back with
/// [`free_frame`].
///
/// Returns `None` when the pool is exhausted or `align` is not a power of two.
pub fn alloc_aligned(bytes: u64, align: u64) -> Option<u64> {
    if !align.is_power_of_two() || bytes == 0 {
        return None;
    }
    let align = align.max(8);
    let pa = {
        let mut pool = POOL.lock();
        let pa = bump(&mut pool, bytes, align)?;
        if bytes % FRAME_SIZE == 0 && align >= FRAME_SIZE {
            for frame in (pa..pa + bytes).step_by(FRAME_SIZE as usize) {
                pool.mark(frame, true);
            }
        }
        pool.in_use += bytes;
        pa
    };
    zero(pa, bytes);
    Some(pa)
}

/// Allocates a zeroed table block of [`TABLE_BLOCK_LARGE`] (16 KiB: region
/// and segment tables) or [`TABLE_BLOCK_SMALL`] (2 KiB: page tables) bytes,
/// aligned to its size. Unlike [`alloc_aligned`], blocks are reused after
/// [`free_table_block`]: 16 KiB blocks on a list of their own, 2 KiB blocks
/// carved two from a 4 KiB frame.
///
/// Returns `None` for any other size, or when the pool is exhausted.
pub fn alloc_table_block(bytes: u64) -> Option<u64> {
    let pa = {
        let mut pool = POOL.lock();
        let pa = match bytes {
            TABLE_BLOCK_LARGE => match Pool::pop(&mut pool.free_large) {
                Some(pa) => pa,
                None => bump(&mut pool, TABLE_BLOCK_LARGE, TABLE_BLOCK_LARGE)?,
            },
            TABLE_BLOCK_SMALL => match Pool::pop(&mut pool.free_small) {
                Some(pa) => pa,
                None => {
                    let frame = pool.frame()?;
                    Pool::push(&mut pool.free_small, frame + TABLE_BLOCK_SMALL);
                    frame
                }
            },
            _ => return None,
        };
        pool.in_use += bytes;
        pa
    };
    zero(pa, bytes);
    Some(pa)
}

/// Gives a table block back for reuse.
///
/// # Safety
///
/// 1. `pa` came from [`alloc_table_block`]`(bytes)` and was not freed since;
/// 2. no DAT table entry refers to it any more and no CPU's TLB holds
///    entries formed from it (purged: IDTE, CSP or PTLB on every CPU that
///    used it), and no reference points into it.
pub unsafe fn free_table_block(pa: u64, bytes: u64) {
    assert!(
        (bytes == TABLE_BLOCK_LARGE || bytes == TABLE_BLOCK_SMALL)
            && pa % bytes == 0
            && (POOL_START..POOL_END).contains(&pa),
        "free_table_block: {pa:#x} ({bytes} bytes) is not a table block of the pool"
    );
    let mut pool = POOL.lock();
    let list = if bytes == TABLE_BLOCK_LARGE {
        &mut pool.free_large
    } else {
        &mut pool.free_small
    };
    Pool::push(list, pa);
    pool.in_use -= bytes;
}

/// Bytes of the pool handed out and not given back: frames, aligned blocks
/// and table blocks. A test that frees everything it took leaves this
/// unchanged (memory parked on the free lists is not in use).
pub fn bytes_in_use() -> u64 {
    POOL.lock().in_use
}

/// Bytes of the pool ever taken from its bump pointer (alignment gaps
/// included): the high-water mark. Stable across repeated runs of a test
/// iff freed memory is reused.
pub fn high_water() -> u64 {
    POOL.lock().next - POOL_START
}

/// Whether the 4 KiB frame at `pa` is currently allocated as a whole frame
/// ([`alloc_frame`], or a whole frame of an [`alloc_aligned`] block), i.e.
/// whether [`free_frame`] of it would be legal as far as the pool can tell.
pub fn is_allocated(pa: u64) -> bool {
    pa % FRAME_SIZE == 0 && (POOL_START..POOL_END).contains(&pa) && POOL.lock().is_allocated(pa)
}

/// Gives a 4 KiB frame back to the pool.
///
/// # Panics
///
/// If `pa` is not a frame of the pool, or not allocated (a double free).
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
    assert!(
        pool.is_allocated(pa),
        "free_frame: {pa:#x} is not allocated (freed twice?)"
    );
    pool.mark(pa, false);
    Pool::push(&mut pool.free, pa);
    pool.in_use -= FRAME_SIZE;
}
