//! The cross-CPU half of a TLB flush: the hook a kernel gives [`X86_64`]
//! so that [`flush_tlb_page`](mmu_notifier_core::Arch::flush_tlb_page) and
//! [`flush_tlb_all`](mmu_notifier_core::Arch::flush_tlb_all) reach every
//! CPU that may hold a translation, not only the one that runs them.
//!
//! x86 has no broadcast TLB invalidation: `invlpg` and a CR3 load purge the
//! executing CPU only. A kernel sends an inter-processor interrupt to each
//! other CPU that may be running the address space; its handler runs
//! `invlpg` (or reloads CR3) and acknowledges; the initiator waits for
//! every acknowledgement (Linux: `flush_tlb_mm_range` →
//! `flush_tlb_multi`). The arch crate owns no APIC and no CPU list, so this
//! is a trait the kernel implements.
//!
//! [`X86_64`]: crate::X86_64

use mmu_notifier_core::VirtAddr;

/// Purges translations from the TLBs of the *other* CPUs, and returns only
/// once they have done so.
///
/// [`X86_64`](crate::X86_64) calls it after purging the local TLB, from
/// every flush, with the address space's page-table lock held (the
/// reference `AddressSpace` flushes under it) and before the notifiers are
/// told and the frame is handed back.
///
/// An `unsafe` trait: [`X86_64`](crate::X86_64)'s own `unsafe impl Arch`
/// promises that a flush reaches every CPU, and it relies on this
/// implementation to keep that promise.
///
/// # Safety
/// The implementor promises:
/// 1. `flush_remote(Some(va))` returns only once no other CPU that may be
///    running the address space still holds a translation of the page at
///    `va` made before the call (for a 2 MiB leaf any address inside it
///    will do: `invlpg` purges the whole entry); `flush_remote(None)` the
///    same for every non-global translation and the paging-structure
///    caches (a CR3 reload on each target);
/// 2. it may skip a CPU that cannot hold such a translation (it has not run
///    the address space since its last CR3 load, with PCIDs off), but
///    decides that only *after* the entry change it follows is visible (a
///    full fence first), so a CPU that switches to the address space
///    meanwhile walks the new entry;
/// 3. it takes no lock the flushing CPU may hold (the page-table lock, the
///    notifier list lock, the console lock, an allocator's lock): the IPI
///    handler runs whatever the target was doing, and the initiator waits
///    for it;
/// 4. targets acknowledge while the initiator waits: either their
///    interrupts are enabled whenever they spin (on a lock, in a grace
///    period), or every such loop also polls for pending flush requests,
///    and an initiator that waits for another initiator does the same (or
///    two concurrent shootdowns deadlock).
///
/// `flush_remote` may be called from any CPU, concurrently.
///
/// A safe `impl` is refused:
///
/// ```compile_fail,E0200
/// use mmu_notifier_core::VirtAddr;
/// use mmu_notifier_x86::TlbShootdown;
/// struct NoIpi;
/// impl TlbShootdown for NoIpi {
///     fn flush_remote(&self, _: Option<VirtAddr>) {}
/// }
/// ```
pub unsafe trait TlbShootdown: Sync {
    /// Purges `va`'s translation (`None`: every translation) on every other
    /// CPU that may hold it, and waits for each to acknowledge.
    fn flush_remote(&self, va: Option<VirtAddr>);
}
