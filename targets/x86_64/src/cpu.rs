//! Thin wrappers around the privileged instructions the harness needs.
//!
//! Owns no state. Port I/O is `unsafe` because a port can be a device with
//! side effects (the exit device ends the VM).

use core::arch::asm;

/// Writes a byte to an I/O port.
///
/// # Safety
/// `port` must be a port whose device tolerates this write (the caller knows
/// what is there); port I/O cannot touch Rust-visible memory by itself.
pub(crate) unsafe fn outb(port: u16, val: u8) {
    // SAFETY: the caller vouches for the device; `out` touches no memory.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") val, options(nomem, nostack, preserves_flags))
    }
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// As for [`outb`]: reading some device registers has side effects.
pub(crate) unsafe fn inb(port: u16) -> u8 {
    let val: u8;
    // SAFETY: the caller vouches for the device; `in` touches no memory.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") val, options(nomem, nostack, preserves_flags))
    }
    val
}

/// The faulting linear address of the last page fault.
pub(crate) fn read_cr2() -> u64 {
    let val: u64;
    // SAFETY: reading CR2 has no side effects; we run at CPL 0.
    unsafe { asm!("mov {}, cr2", out(reg) val, options(nomem, nostack, preserves_flags)) }
    val
}

/// The current CR3 (root table address and flags).
pub(crate) fn read_cr3() -> u64 {
    let val: u64;
    // SAFETY: reading CR3 has no side effects; we run at CPL 0.
    unsafe { asm!("mov {}, cr3", out(reg) val, options(nomem, nostack, preserves_flags)) }
    val
}

/// Loads CR3, which switches the address space and flushes all non-global
/// TLB entries.
///
/// # Safety
/// `val` must address a valid top-level table that maps the kernel (code,
/// stack, statics, the identity map) exactly as the current one does, and
/// whose other mappings do not alias memory Rust code holds references to.
pub(crate) unsafe fn write_cr3(val: u64) {
    // SAFETY: the caller guarantees the new tables keep the kernel mapped.
    // No `nomem`: page-table stores before this must not be moved after it.
    unsafe { asm!("mov cr3, {}", in(reg) val, options(nostack, preserves_flags)) }
}

/// Writes a model-specific register.
///
/// # Safety
/// The MSR must exist and the value must not break what the kernel relies
/// on (paging, the GS base it addresses per-CPU data with).
pub(crate) unsafe fn wrmsr(msr: u32, val: u64) {
    // SAFETY: the caller vouches for the register and the value.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") val as u32, in("edx") (val >> 32) as u32, options(nostack, preserves_flags))
    }
}

/// Reads a model-specific register.
///
/// # Safety
/// The MSR must exist (or the read raises #GP).
pub(crate) unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller vouches for the register; reading has no effect.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: `rdtsc` only reads the counter (CR4.TSD is clear: ring 0 anyway).
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Enables maskable interrupts on this CPU.
///
/// # Safety
/// Every vector that can arrive has a gate (the IDT is loaded), and no
/// legacy interrupt source is unmasked.
pub(crate) unsafe fn sti() {
    // SAFETY: the caller guarantees every arriving interrupt is handled.
    // No `nomem`: memory accesses must not move across it.
    unsafe { asm!("sti", options(nostack)) }
}

/// Waits for an interrupt unless `ready()` holds: checks with interrupts
/// off, then enables them and halts in one step (`sti` delays interrupts
/// by one instruction, so none can slip in between the check and `hlt`).
/// Interrupts are enabled afterwards. Under TCG a halted vCPU sleeps, which
/// leaves the host's cores to the vCPUs that work.
///
/// # Safety
/// As [`sti`]; and something must send this CPU an interrupt once
/// `ready()` may have become true.
pub(crate) unsafe fn halt_until(ready: impl Fn() -> bool) {
    // SAFETY: only masks interrupts.
    unsafe { asm!("cli", options(nomem, nostack)) };
    if ready() {
        // SAFETY: the caller's contract (as `sti`).
        unsafe { asm!("sti", options(nomem, nostack)) };
    } else {
        // SAFETY: the caller's contract; `hlt` returns at the next interrupt.
        unsafe { asm!("sti", "hlt", options(nomem, nostack)) };
    }
}

/// Whether maskable interrupts are enabled on this CPU.
pub(crate) fn interrupts_enabled() -> bool {
    let flags: u64;
    // SAFETY: reads RFLAGS only.
    unsafe { asm!("pushfq", "pop {}", out(reg) flags, options(nomem, preserves_flags)) };
    flags & (1 << 9) != 0
}

/// Runs `f` with maskable interrupts disabled on this CPU, restoring the
/// previous state afterwards.
pub(crate) fn without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    let flags: u64;
    // SAFETY: saving RFLAGS and clearing IF only delays interrupts.
    unsafe { asm!("pushfq", "pop {}", "cli", out(reg) flags, options(preserves_flags)) };
    let r = f();
    if flags & (1 << 9) != 0 {
        // SAFETY: interrupts were enabled before: the caller's context
        // handles them.
        unsafe { asm!("sti", options(nostack)) };
    }
    r
}
