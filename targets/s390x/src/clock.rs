//! Time from the TOD clock, for time limits and for reporting how long a
//! case ran. The TOD clock runs under TCG at host speed; bit 51 counts
//! microseconds.

/// Microseconds since an arbitrary epoch (the TOD clock's).
pub fn now_us() -> u64 {
    let mut tod = 0u64;
    // SAFETY: STCK stores the 8-byte TOD clock into our local; the condition
    // code (clock state) is ignored: QEMU's clock is always set and running.
    unsafe {
        core::arch::asm!("stck 0({p})", p = in(reg_addr) &mut tod as *mut u64, options(nostack))
    };
    tod >> 12
}
