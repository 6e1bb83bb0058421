//! The privileged instructions, and nothing else.
//!
//! Real only on a bare-metal x86-64 target (`target_os = "none"`, a
//! kernel). Elsewhere (host tests, Miri) they are no-ops: `invlpg` and CR3
//! writes fault outside ring 0, and no hardware walker reads the tables a
//! host test builds.
//!
//! Both are safe functions, as in the `x86_64` crate: they only drop cached
//! translations, and run outside ring 0 they raise #GP, a fault the kernel
//! handles, not undefined behaviour.

/// Purges the current CPU's TLB entries (and paging-structure cache
/// entries) for the page containing `va`.
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
#[inline]
pub(crate) fn invlpg(va: u64) {
    // SAFETY: `invlpg` only drops cached translations; it changes no
    // register, flag or memory (outside ring 0 it raises #GP instead). It
    // is not marked `nomem`, so the compiler keeps the preceding entry
    // store before it; the instruction itself orders after that store.
    unsafe { core::arch::asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) }
}

/// Host stand-in for [`invlpg`]: nothing to purge.
#[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
#[inline]
pub(crate) fn invlpg(_va: u64) {}

/// Writes CR3 back with its current value, purging the current CPU's
/// non-global TLB entries and paging-structure caches (of the current PCID:
/// CR3 reads return bit 63 clear, so the write never asks to keep them).
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
#[inline]
pub(crate) fn reload_cr3() {
    // SAFETY: the same root is written back, so the address space and every
    // mapping the running code uses stay; only cached translations go
    // (outside ring 0 it raises #GP instead). No `nomem`: entry stores
    // before it stay before it.
    unsafe {
        core::arch::asm!(
            "mov {tmp}, cr3",
            "mov cr3, {tmp}",
            tmp = out(reg) _,
            options(nostack, preserves_flags),
        )
    }
}

/// Host stand-in for [`reload_cr3`]: nothing to purge.
#[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
#[inline]
pub(crate) fn reload_cr3() {}
