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
/// # Contract for implementors
/// - `flush_remote(Some(va))` returns only once no other CPU that may be
///   running the address space still holds a translation of the page at
///   `va` made before the call (for a 2 MiB leaf any address inside it
///   will do: `invlpg` purges the whole entry); `flush_remote(None)` the
///   same for every non-global translation and the paging-structure
///   caches (a CR3 reload on each target).
/// - It may skip a CPU that cannot hold such a translation (it has not run
///   the address space since its last CR3 load, with PCIDs off), but must
///   decide that *after* the entry change it follows is visible (a full
///   fence first), so a CPU that switches to the address space meanwhile
///   walks the new entry.
/// - It must not take a lock the flushing CPU may hold (the page-table
///   lock, the notifier list lock, the console lock, an allocator's lock):
///   the IPI handler runs whatever the target was doing, and the initiator
///   waits for it.
/// - Targets must acknowledge while the initiator waits: either their
///   interrupts are enabled whenever they spin (on a lock, in a grace
///   period), or every such loop also polls for pending flush requests. An
///   initiator that waits for another initiator must do the same, or two
///   concurrent shootdowns deadlock.
///
/// `flush_remote` may be called from any CPU, concurrently.
pub trait TlbShootdown: Sync {
    /// Purges `va`'s translation (`None`: every translation) on every other
    /// CPU that may hold it, and waits for each to acknowledge.
    fn flush_remote(&self, va: Option<VirtAddr>);
}
