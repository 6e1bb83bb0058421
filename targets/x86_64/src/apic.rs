//! The local APIC (xAPIC, memory-mapped), the legacy PIC (masked), and a
//! TSC calibrated against the PIT so that waits are bounded in time.
//!
//! Owns the 2 MiB mapping of the APIC page (PML4 entry 0, the fourth GiB:
//! the kernel's part of every address space), the PIT's channel 2 during
//! calibration, and the PIC masks. Vectors: [`VECTOR_SHOOTDOWN`] and
//! [`VECTOR_SPURIOUS`].

use core::sync::atomic::{AtomicU64, Ordering};

use crate::boot::{HwTable, BOOT_PDPT};
use crate::cpu::{inb, outb, rdmsr, rdtsc};

/// The fixed IPI a TLB shootdown sends.
pub(crate) const VECTOR_SHOOTDOWN: u64 = 0xf0;
/// An IPI that only wakes a halted CPU (a posted job, an acknowledged
/// shootdown): its handler just ends the interrupt.
pub(crate) const VECTOR_WAKE: u64 = 0xf1;
/// The APIC's spurious-interrupt vector (no EOI for it).
pub(crate) const VECTOR_SPURIOUS: u64 = 0xff;

/// Where the xAPIC registers are (IA32_APIC_BASE after reset).
const APIC_BASE: u64 = 0xfee0_0000;
const IA32_APIC_BASE_MSR: u32 = 0x1b;

const REG_ID: u64 = 0x20;
const REG_EOI: u64 = 0xb0;
const REG_SVR: u64 = 0xf0;
const REG_ICR_LOW: u64 = 0x300;
const REG_ICR_HIGH: u64 = 0x310;
const REG_LVT_LINT0: u64 = 0x350;
const ICR_PENDING: u32 = 1 << 12;
const LVT_MASKED: u32 = 1 << 16;
const SVR_ENABLE: u32 = 1 << 8;

/// The page directory of the fourth GiB: only the APIC's 2 MiB page.
static APIC_PD: HwTable = HwTable::zeroed();

fn reg(offset: u64) -> *mut u32 {
    (APIC_BASE + offset) as *mut u32
}

fn read(offset: u64) -> u32 {
    // SAFETY: `init` mapped the APIC page (uncached); reading an APIC
    // register has no side effects for the registers we read.
    unsafe { reg(offset).read_volatile() }
}

fn write(offset: u64, val: u32) {
    // SAFETY: as in `read`; the registers we write are ours to program.
    unsafe { reg(offset).write_volatile(val) }
}

/// Maps the APIC page and calibrates the TSC. Boot CPU, once, before any
/// other CPU runs.
pub(crate) fn init() {
    // SAFETY: the MSR exists on every x86-64 CPU.
    let base = unsafe { rdmsr(IA32_APIC_BASE_MSR) } & 0x000f_ffff_ffff_f000;
    assert_eq!(
        base, APIC_BASE,
        "the local APIC is not at its reset address"
    );
    let pd = APIC_PD.addr() as *mut u64;
    let index = ((APIC_BASE >> 21) & 0x1ff) as usize;
    // present | writable | write-through | cache-disable | 2 MiB page;
    // NX: nothing executes from MMIO.
    let leaf = (APIC_BASE & !0x1f_ffff) | 0x9b | (1 << 63);
    // SAFETY: our own static page directory, not yet reachable by the CPU;
    // then PDPT entry 3 (the fourth GiB, empty until now, so no TLB can
    // cache it) starts pointing to it.
    unsafe {
        pd.add(index).write_volatile(leaf);
        (BOOT_PDPT.addr() as *mut u64)
            .add((APIC_BASE >> 30) as usize)
            .write_volatile(APIC_PD.addr() | 0x3);
    }
    calibrate_tsc();
}

/// Maps the 2 MiB page holding the chipset MMIO at physical `pa` (the fourth
/// GiB, beside the APIC: the VT-d registers at 0xfed9_0000, PCI BARs placed
/// there) uncached into the kernel's part of every address space, and
/// returns the address to access it at (the identity). Idempotent, and
/// independent of `init`: both fill `APIC_PD` and point PDPT entry 3 at
/// it. Boot CPU, before another CPU may use the page.
///
/// # Panics
/// If `pa` lies outside the fourth GiB.
pub fn map_mmio(pa: u64) -> u64 {
    assert!(
        (3 << 30..4 << 30).contains(&pa),
        "map_mmio({pa:#x}): not in the fourth GiB"
    );
    let pd = APIC_PD.addr() as *mut u64;
    let index = ((pa >> 21) & 0x1ff) as usize;
    let leaf = (pa & !0x1f_ffff) | 0x9b | (1 << 63);
    // SAFETY: our own static page directory; the entry was empty (no TLB can
    // cache it) or already holds this very mapping. PDPT entry 3 points to
    // this directory or is empty, and becomes a pointer to it.
    unsafe {
        pd.add(index).write_volatile(leaf);
        (BOOT_PDPT.addr() as *mut u64)
            .add((pa >> 30) as usize)
            .write_volatile(APIC_PD.addr() | 0x3);
    }
    pa
}

/// Enables this CPU's APIC (spurious vector, LINT0 masked) and masks the
/// legacy PIC, so that the only interrupts are IPIs.
pub(crate) fn enable_this_cpu() {
    // SAFETY: the PIC's data ports; masking every line only stops
    // interrupts (they are not needed: the harness polls its devices).
    unsafe {
        outb(0x21, 0xff);
        outb(0xa1, 0xff);
    }
    write(REG_LVT_LINT0, read(REG_LVT_LINT0) | LVT_MASKED);
    write(REG_SVR, SVR_ENABLE | VECTOR_SPURIOUS as u32);
}

/// This CPU's local APIC ID.
pub(crate) fn id() -> u32 {
    read(REG_ID) >> 24
}

/// Ends the interrupt being handled.
pub(crate) fn eoi() {
    write(REG_EOI, 0);
}

/// Sends an IPI (`icr_low`: vector and delivery mode) to APIC `dest` and
/// waits until the APIC accepted it.
pub(crate) fn send_ipi(dest: u32, icr_low: u32) {
    crate::cpu::without_interrupts(|| {
        write(REG_ICR_HIGH, dest << 24);
        write(REG_ICR_LOW, icr_low);
        while read(REG_ICR_LOW) & ICR_PENDING != 0 {
            core::hint::spin_loop();
        }
    });
}

/// INIT, level assert.
pub(crate) const ICR_INIT: u32 = 0x4500;
/// Start-up, level assert; the vector (low byte) is the page the CPU starts at.
pub(crate) const ICR_STARTUP: u32 = 0x4600;
/// Fixed delivery.
pub(crate) const ICR_FIXED: u32 = 0x4000;

/// TSC ticks per millisecond, measured against the PIT.
static TSC_PER_MS: AtomicU64 = AtomicU64::new(1_000_000);

/// Measures the TSC over 10 ms of PIT channel 2 (mode 0: OUT2 rises when
/// the count runs out; port 0x61 bit 5 shows it).
fn calibrate_tsc() {
    const PIT_HZ: u64 = 1_193_182;
    const MS: u64 = 10;
    let count = (PIT_HZ * MS / 1000) as u16;
    // SAFETY: the PIT's channel 2 and its gate in port 0x61 (speaker off);
    // nothing else in the harness uses them.
    let start = unsafe {
        let p61 = inb(0x61);
        outb(0x61, (p61 & !0x02) | 0x01);
        outb(0x43, 0xb0);
        outb(0x42, count as u8);
        outb(0x42, (count >> 8) as u8);
        rdtsc()
    };
    let mut spins = 0u64;
    // SAFETY: reading port 0x61 has no side effects.
    while unsafe { inb(0x61) } & 0x20 == 0 {
        spins += 1;
        if spins > 50_000_000 {
            // No PIT? Keep the default (1 GHz), waits only get shorter or longer.
            return;
        }
    }
    let per_ms = (rdtsc() - start) / MS;
    TSC_PER_MS.store(per_ms.max(1000), Ordering::Relaxed);
}

/// A deadline `ms` milliseconds from now, for [`expired`].
pub(crate) fn deadline_ms(ms: u64) -> u64 {
    rdtsc().saturating_add(ms.saturating_mul(TSC_PER_MS.load(Ordering::Relaxed)))
}

/// Whether the deadline passed.
pub(crate) fn expired(deadline: u64) -> bool {
    rdtsc() >= deadline
}

/// Waits `us` microseconds.
pub(crate) fn delay_us(us: u64) {
    let end = rdtsc() + us * TSC_PER_MS.load(Ordering::Relaxed) / 1000;
    while rdtsc() < end {
        core::hint::spin_loop();
    }
}

/// TSC ticks per millisecond (as calibrated).
pub fn tsc_per_ms() -> u64 {
    TSC_PER_MS.load(Ordering::Relaxed)
}
