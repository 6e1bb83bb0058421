//! Storage keys: the s390 reference (R) and change (C) bits live per 4 KiB
//! frame in the storage key, not in the PTE. These are the instructions the
//! tests use to read and reset them.
//!
//! The kernel runs with PSW key 0, which passes every key-controlled
//! protection check, so changing a frame's access-control bits cannot make
//! the kernel fault: these functions are safe.
//!
//! QEMU (TCG) tracks keys only after the first key instruction; the boot
//! code issues one.

/// Reference bit in a storage key (bit 5 of the key byte).
pub const KEY_REFERENCE: u8 = 0x04;
/// Change bit in a storage key (bit 6 of the key byte).
pub const KEY_CHANGE: u8 = 0x02;

/// INSERT STORAGE KEY EXTENDED: the key of the frame holding real address `pa`.
pub fn iske(pa: u64) -> u8 {
    let key: u64;
    // SAFETY: ISKE reads the storage key of a frame; it changes nothing and
    // accesses no storage. `key` starts at 0 because ISKE only sets bits 56-63.
    unsafe {
        core::arch::asm!("lghi {k},0", "iske {k},{pa}", k = out(reg) key, pa = in(reg) pa, options(nostack, nomem))
    };
    key as u8
}

/// SET STORAGE KEY EXTENDED: sets the key of the frame holding real address
/// `pa` (access-control bits 0xf0, fetch protection 0x08, R 0x04, C 0x02).
pub fn sske(pa: u64, key: u8) {
    // SAFETY: only the storage key changes; with PSW key 0 no kernel access
    // depends on it (module docs). QEMU flushes its TLB so later accesses
    // set R/C again.
    unsafe {
        core::arch::asm!("sske {k},{pa}", k = in(reg) u64::from(key), pa = in(reg) pa, options(nostack, nomem))
    };
}

/// RESET REFERENCE BIT EXTENDED on the frame holding real address `pa`.
/// Returns the condition code, which tells the bits *before* the reset:
/// 0 = R0 C0, 1 = R0 C1, 2 = R1 C0, 3 = R1 C1.
pub fn rrbe(pa: u64) -> u8 {
    let cc: u64;
    // SAFETY: RRBE changes the reference bit of a storage key only; IPM and
    // SRLG extract the condition code.
    unsafe {
        core::arch::asm!(
            "rrbe {pa},{pa}",
            "ipm {cc}",
            "srlg {cc},{cc},28",
            pa = in(reg) pa,
            cc = lateout(reg) cc,
            options(nostack, nomem),
        )
    };
    (cc & 3) as u8
}

/// Issues the first storage-key instruction, from which point on QEMU
/// keeps reference and change bits.
pub(crate) fn enable_tracking() {
    let _ = iske(0);
}
