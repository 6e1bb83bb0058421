//! Per-CPU state: one [`PerCpu`] slot per CPU, reached through the GS base.
//!
//! Each CPU points its GS base at its own slot (the boot CPU in
//! `rust_entry`, a secondary CPU in its entry), so `gs:[0]` is the CPU's
//! index and the fault probes address their record as `gs:[offset]` in
//! one instruction, whichever CPU runs them. Owns the slots; the fields
//! belong to the modules that use them (the probe record to
//! `interrupts`, the address-space fields to `paging`, the mailbox and the
//! flush request to `smp`).

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// How many CPUs the harness can run (the runner passes at most this many
/// with `-smp`; more are left in wait-for-SIPI).
pub const MAX_CPUS: usize = 8;

/// One CPU's slot. `repr(C)`: the probe stubs address fields by offset.
#[repr(C, align(64))]
pub(crate) struct PerCpu {
    /// This slot's index; must stay the first field (`gs:[0]`).
    pub(crate) index: u64,
    // The probe record (see `interrupts`): the RIP of the one instruction
    // allowed to fault (0 = disarmed), where to resume, what it accessed,
    // and the fault it took.
    pub(crate) probe_ip: AtomicU64,
    pub(crate) probe_fixup: AtomicU64,
    pub(crate) probe_va: AtomicU64,
    pub(crate) faulted: AtomicBool,
    pub(crate) fault_vector: AtomicU64,
    pub(crate) fault_addr: AtomicU64,
    pub(crate) fault_code: AtomicU64,
    /// Root of the test address space this CPU may hold translations of
    /// (its CR3, or the tree its view follows); 0 while it runs on the
    /// kernel's root. A shootdown skips CPUs at 0.
    pub(crate) active_root: AtomicU64,
    /// Root of the tree this CPU's view follows (see `paging::activate_view`).
    pub(crate) view_source: AtomicU64,
    /// Local APIC ID (the IPI destination).
    pub(crate) apic_id: AtomicU64,
    /// Running the harness (checked in), so it takes IPIs.
    pub(crate) online: AtomicBool,
    /// A shootdown asks this CPU to flush and waits for it to clear this.
    pub(crate) flush_pending: AtomicBool,
    // The mailbox (see `smp::on_all_cpus`): a job is posted by bumping
    // `job_seq`, and finished when `done_seq` catches up.
    pub(crate) job_call: AtomicUsize,
    pub(crate) job_ctx: AtomicUsize,
    pub(crate) job_work: AtomicPtr<()>,
    pub(crate) job_seq: AtomicU64,
    pub(crate) done_seq: AtomicU64,
}

impl PerCpu {
    const fn new(index: u64) -> Self {
        Self {
            index,
            probe_ip: AtomicU64::new(0),
            probe_fixup: AtomicU64::new(0),
            probe_va: AtomicU64::new(0),
            faulted: AtomicBool::new(false),
            fault_vector: AtomicU64::new(0),
            fault_addr: AtomicU64::new(0),
            fault_code: AtomicU64::new(0),
            active_root: AtomicU64::new(0),
            view_source: AtomicU64::new(0),
            apic_id: AtomicU64::new(0),
            online: AtomicBool::new(false),
            flush_pending: AtomicBool::new(false),
            job_call: AtomicUsize::new(0),
            job_ctx: AtomicUsize::new(0),
            job_work: AtomicPtr::new(core::ptr::null_mut()),
            job_seq: AtomicU64::new(0),
            done_seq: AtomicU64::new(0),
        }
    }
}

static SLOTS: [PerCpu; MAX_CPUS] = {
    let mut slots = [const { PerCpu::new(0) }; MAX_CPUS];
    let mut i = 0;
    while i < MAX_CPUS {
        slots[i].index = i as u64;
        i += 1;
    }
    slots
};

const IA32_GS_BASE: u32 = 0xc000_0101;

/// Points this CPU's GS base at slot `index`. Called once per CPU, first
/// thing in its Rust entry (before any probe or exception).
pub(crate) fn init_this_cpu(index: usize) {
    assert!(index < MAX_CPUS);
    let base = core::ptr::from_ref(&SLOTS[index]) as u64;
    // SAFETY: ring 0; the GS base is ours (nothing else uses GS), and the
    // slot is a static that lives forever.
    unsafe { crate::cpu::wrmsr(IA32_GS_BASE, base) };
}

/// The index of the CPU running this (0 is the boot CPU).
pub fn cpu_id() -> usize {
    let index: u64;
    // SAFETY: `init_this_cpu` pointed GS at this CPU's slot, whose first
    // field is the index (written once, at compile time).
    unsafe {
        core::arch::asm!("mov {}, qword ptr gs:[0]", out(reg) index, options(nostack, preserves_flags, readonly))
    };
    index as usize
}

/// This CPU's slot.
pub(crate) fn this() -> &'static PerCpu {
    &SLOTS[cpu_id()]
}

/// Slot `index`.
pub(crate) fn slot(index: usize) -> &'static PerCpu {
    &SLOTS[index]
}

/// Whether slot `index` belongs to a CPU that runs the harness.
pub(crate) fn is_online(index: usize) -> bool {
    index < MAX_CPUS && SLOTS[index].online.load(Ordering::Acquire)
}
