//! The memory intrinsics LLVM calls (`memcpy`, `memmove`, `memset`,
//! `memcmp`, `bcmp`): on `s390x-unknown-linux-gnu` they normally come from
//! libc, which a kernel does not have, and the prebuilt `compiler_builtins`
//! does not export them.
//!
//! Every access is volatile so that LLVM cannot recognise the loops as the
//! very idioms they implement and turn them back into calls to themselves.
//! Doubleword steps when both pointers allow it: zeroing 16 KiB region
//! tables byte by byte is noticeably slow under TCG.

use core::ptr::{read_volatile, write_volatile};

fn both_aligned(a: *const u8, b: *const u8) -> bool {
    (a as usize | b as usize) % 8 == 0
}

/// Copies `n` bytes forward.
///
/// # Safety
///
/// `src` valid for `n` bytes of reads, `dst` for `n` bytes of writes, and
/// if they overlap then `dst <= src`.
unsafe fn copy_forward(dst: *mut u8, src: *const u8, n: usize) {
    let mut i = 0;
    if both_aligned(dst, src) {
        while i + 8 <= n {
            // SAFETY: `i + 8 <= n` keeps both accesses in bounds (caller),
            // and both pointers are 8-aligned plus a multiple of 8.
            unsafe {
                write_volatile(
                    dst.add(i).cast::<u64>(),
                    read_volatile(src.add(i).cast::<u64>()),
                )
            };
            i += 8;
        }
    }
    while i < n {
        // SAFETY: `i < n`, in bounds by the caller's contract.
        unsafe { write_volatile(dst.add(i), read_volatile(src.add(i))) };
        i += 1;
    }
}

/// # Safety
///
/// The C contract: both ranges valid for `n` bytes, not overlapping.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: non-overlapping ranges valid for `n` bytes (caller).
    unsafe { copy_forward(dst, src, n) };
    dst
}

/// # Safety
///
/// The C contract: both ranges valid for `n` bytes; they may overlap.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: valid ranges (caller); a forward copy is correct when the
        // destination starts at or before the source, or does not overlap.
        unsafe { copy_forward(dst, src, n) };
    } else {
        let mut i = n;
        while i > 0 {
            i -= 1;
            // SAFETY: `i < n`, in bounds (caller); copying backwards never
            // reads a byte that was already overwritten when `dst > src`.
            unsafe { write_volatile(dst.add(i), read_volatile(src.add(i))) };
        }
    }
    dst
}

/// # Safety
///
/// The C contract: `s` valid for `n` bytes of writes.
#[no_mangle]
pub unsafe extern "C" fn memset(s: *mut u8, c: i32, n: usize) -> *mut u8 {
    let byte = c as u8;
    let mut i = 0;
    if (s as usize) % 8 == 0 {
        let word = u64::from_ne_bytes([byte; 8]);
        while i + 8 <= n {
            // SAFETY: in bounds (`i + 8 <= n`) and 8-aligned.
            unsafe { write_volatile(s.add(i).cast::<u64>(), word) };
            i += 8;
        }
    }
    while i < n {
        // SAFETY: `i < n`, in bounds (caller).
        unsafe { write_volatile(s.add(i), byte) };
        i += 1;
    }
    s
}

/// # Safety
///
/// The C contract: both ranges valid for `n` bytes of reads.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: `i < n`, in bounds (caller).
        let (x, y) = unsafe { (read_volatile(a.add(i)), read_volatile(b.add(i))) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// # Safety
///
/// The C contract: both ranges valid for `n` bytes of reads.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// Referenced by the prebuilt `core` (built for unwinding); never called
/// because everything here is built with `panic=abort`.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}
