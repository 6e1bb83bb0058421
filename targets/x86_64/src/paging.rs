//! Address spaces: the kernel's root table, switching CR3, TLB flushes, and
//! [`TestSpace`], a minimal 4-level table builder for the test window.
//!
//! The kernel owns PML4 entry 0 (the identity map); every address space a
//! test activates shares that entry, so the kernel keeps running whatever
//! the test maps at [`TEST_WINDOW`] and above. `TestSpace` is the harness's
//! own reference walker, independent of the code under test.

use core::arch::asm;
use core::marker::PhantomData;
use core::sync::atomic::Ordering;

use crate::boot::{HwTable, BOOT_PML4, IDENTITY_MAP_END};
use crate::cpu::{read_cr3, write_cr3};
use crate::frames::{alloc_frame, free_frame, FRAME_SIZE};
use crate::percpu::{self, MAX_CPUS};

/// First address of the test window: PML4 entry 1. Tests own everything
/// from here to [`TEST_WINDOW_END`]; the harness maps nothing there.
pub const TEST_WINDOW: u64 = 0x0000_0080_0000_0000;
/// End (exclusive) of the test window: the end of the lower canonical half.
pub const TEST_WINDOW_END: u64 = 0x0000_8000_0000_0000;

/// x86-64 page-table entry bits.
pub mod pte {
    /// The entry maps something.
    pub const PRESENT: u64 = 1 << 0;
    /// Writes allowed (ring 0 too, since CR0.WP is set).
    pub const WRITABLE: u64 = 1 << 1;
    /// User-mode access allowed.
    pub const USER: u64 = 1 << 2;
    /// Write-through caching.
    pub const WRITE_THROUGH: u64 = 1 << 3;
    /// Caching disabled.
    pub const NO_CACHE: u64 = 1 << 4;
    /// Set by the hardware when a walk uses the entry.
    pub const ACCESSED: u64 = 1 << 5;
    /// Set by the hardware on a write through a leaf entry.
    pub const DIRTY: u64 = 1 << 6;
    /// In a PD or PDPT entry: a 2 MiB or 1 GiB leaf.
    pub const HUGE: u64 = 1 << 7;
    /// Survives CR3 loads (only with CR4.PGE, which the harness leaves off).
    pub const GLOBAL: u64 = 1 << 8;
    /// No instruction fetch (EFER.NXE is set).
    pub const NO_EXECUTE: u64 = 1 << 63;
    /// The physical-address bits of an entry.
    pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
}

/// Physical address of the kernel's top-level table (the one the kernel
/// boots with; it maps only PML4 entry 0).
pub fn kernel_root() -> u64 {
    BOOT_PML4.addr()
}

/// Physical address of the active top-level table.
pub fn current_root() -> u64 {
    read_cr3() & pte::ADDR_MASK
}

/// Switches to the address space rooted at `root_pa`: copies the kernel's
/// PML4 entry 0 into it (so the kernel stays mapped), then loads CR3, which
/// also flushes every non-global TLB entry.
///
/// # Safety
/// 1. `root_pa` is a 4 KiB-aligned top-level table below 1 GiB, that
///    nothing but page tables uses, and whose entries 1..=511 are zero or
///    point to valid page tables.
/// 2. Every mapping in those entries points at memory no Rust reference
///    covers (frames from [`alloc_frame`] set aside for the test, MMIO), so
///    that writes through the test window cannot break Rust's aliasing
///    rules.
/// 3. The tables stay valid, and their frames are not freed, while the
///    root is active: switch back with [`deactivate`] first.
pub unsafe fn activate(root_pa: u64) {
    assert!(
        root_pa.is_multiple_of(FRAME_SIZE) && root_pa < IDENTITY_MAP_END,
        "activate({root_pa:#x}): bad root"
    );
    // SAFETY: the kernel's PML4 is a live static table; entry 0 never changes
    // after boot. Volatile: the CPU may set its A bit at any time.
    let kernel_entry = unsafe { (kernel_root() as *const u64).read_volatile() };
    // SAFETY: the caller gives us the table (condition 1: aligned,
    // identity-mapped, only page tables use it).
    unsafe { (root_pa as *mut u64).write_volatile(kernel_entry) };
    // Published before the CR3 load (a shootdown that misses it happened
    // before it, and this CPU then walks the changed entries).
    let active = if root_pa == kernel_root() { 0 } else { root_pa };
    percpu::this().active_root.store(active, Ordering::SeqCst);
    // SAFETY: entry 0 now maps the kernel exactly as before; entries
    // 1..=511 are valid tables (condition 1) mapping only memory no
    // reference covers (2), and stay valid while active (3).
    unsafe { write_cr3(root_pa) };
}

/// Switches back to the kernel's own address space (flushing this CPU's
/// TLB), after which the test's tables may be freed as far as this CPU is
/// concerned.
pub fn deactivate() {
    // SAFETY: the kernel root maps the kernel and nothing else.
    unsafe { write_cr3(kernel_root()) };
    // After the CR3 load: until then this CPU may hold test translations.
    percpu::this().active_root.store(0, Ordering::SeqCst);
}

/// The top-level table each CPU walks while it runs on a *view* of a tree
/// the harness does not own (see [`activate_view`]): one per CPU, so that
/// several CPUs may run (views of) the same tree.
static VIEW_PML4: [HwTable; MAX_CPUS] = [const { HwTable::zeroed() }; MAX_CPUS];

/// This CPU's view table.
fn my_view() -> u64 {
    VIEW_PML4[percpu::cpu_id()].addr()
}

/// Switches to the address space rooted at `root_pa` without writing to
/// that tree: the CPU runs on a harness-owned top-level table whose entry 0
/// is the kernel's and whose entries 1..=511 are copied from `root_pa`'s.
///
/// This is [`activate`] for trees built by code under test (such as
/// `mmu_notifier_core::AddressSpace`), which own their whole top-level
/// table: `activate(root)` would plant the kernel's identity map in entry 0
/// of that tree, and the tree's teardown would then unmap the kernel. Only
/// the top level is copied; everything below it is shared, so changes to
/// the tree's lower tables take effect as in the tree itself, TLB and all.
/// A change to one of its top-level entries reaches the view at the next
/// [`refresh_view`].
///
/// # Safety
/// As for [`activate`]:
/// 1. `root_pa` is a 4 KiB-aligned top-level table below 1 GiB whose
///    entries 1..=511 are zero or point to valid page tables;
/// 2. which map only memory no Rust reference covers;
/// 3. and no table of the tree is freed while the view is active (switch
///    away with [`deactivate`] first).
pub unsafe fn activate_view(root_pa: u64) {
    assert!(
        root_pa.is_multiple_of(FRAME_SIZE) && root_pa < IDENTITY_MAP_END,
        "activate_view({root_pa:#x}): bad root"
    );
    let view = my_view();
    if current_root() == view {
        // Never rewrite the table the CPU is walking: switch away first.
        deactivate();
    }
    percpu::this().view_source.store(root_pa, Ordering::SeqCst);
    for i in 1..512 {
        // SAFETY: both are top-level tables (the caller's, and our static,
        // which the CPU is not using now); volatile since the CPU may set A
        // bits in the caller's entries.
        unsafe { entry(view, i).write_volatile(entry(root_pa, i).read_volatile()) };
    }
    // SAFETY: 1. the view is our static top-level table, below 1 GiB, whose
    // entries 1..=511 are the caller's valid ones (condition 1; entry 0 is
    // written by `activate`); 2. they map what the caller's do (2); 3. they
    // stay valid while active (3).
    unsafe { activate(view) }
}

/// Copies into the active view (see [`activate_view`]) the top-level
/// entries of its tree that changed since, then reloads CR3 if one of the
/// replaced entries was present (x86 may cache a present top-level entry,
/// never a not-present one). Returns whether anything changed. Does nothing
/// unless the CPU runs on a view.
///
/// Call it before a CPU access, so the access sees the tree as it is now.
/// The lower levels need no refresh: they are the tree's own tables.
pub fn refresh_view() -> bool {
    let Some(source) = viewed_root() else {
        return false;
    };
    let view = my_view();
    let (mut changed, mut flush) = (false, false);
    for i in 1..512 {
        // SAFETY: the view is active, so its tree is live (contract of
        // `activate_view`); both are top-level tables.
        let (now, seen) = unsafe {
            (
                entry(source, i).read_volatile(),
                entry(view, i).read_volatile(),
            )
        };
        // The CPU may have set the A bit in the view's copy.
        if now & !pte::ACCESSED != seen & !pte::ACCESSED {
            // SAFETY: as above; `now` is an entry of the tree, whose tables
            // the caller of `activate_view` vouched for.
            unsafe { entry(view, i).write_volatile(now) };
            changed = true;
            flush |= seen & pte::PRESENT != 0;
        }
    }
    if flush {
        reload_cr3();
    }
    changed
}

/// The root of the tree this CPU runs on through a view ([`activate_view`]),
/// or `None` if it runs on anything else.
pub fn viewed_root() -> Option<u64> {
    let source = percpu::this().view_source.load(Ordering::SeqCst);
    (source != 0 && current_root() == my_view()).then_some(source)
}

/// Drops the current CPU's cached translation of the page containing `va`.
pub fn invlpg(va: u64) {
    // SAFETY: invalidating a TLB entry cannot make memory reachable that the
    // tables do not map; the next access simply walks the tables again. No
    // `nomem`: the flush must stay after the caller's page-table stores.
    unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) }
}

/// Reloads CR3 with its current value: flushes all non-global TLB entries of
/// the current CPU.
pub fn reload_cr3() {
    // SAFETY: the same root as now, so the same mappings; only the TLB is
    // emptied. No `nomem`, as for `invlpg`.
    unsafe { write_cr3(read_cr3()) };
}

/// Why [`TestSpace::map_4k`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// No frame left for an intermediate table.
    OutOfFrames,
    /// The virtual address is outside [`TEST_WINDOW`]..[`TEST_WINDOW_END`].
    OutsideTestWindow,
    /// An address is not 4 KiB aligned.
    Misaligned,
    /// A huge-page leaf covers the address.
    HugePageInTheWay,
    /// The page is already mapped.
    AlreadyMapped,
}

impl From<MapError> for crate::Failure {
    fn from(e: MapError) -> Self {
        crate::Failure::new(format_args!("map_4k: {e:?}"))
    }
}

/// A leaf page-table entry of a [`TestSpace`], read and written with
/// volatile accesses (the CPU sets A and D bits in it concurrently).
#[derive(Clone, Copy)]
pub struct Pte<'a> {
    ptr: *mut u64,
    _space: PhantomData<&'a TestSpace>,
}

impl Pte<'_> {
    /// The entry's current value.
    pub fn get(&self) -> u64 {
        // SAFETY: the entry lies in a table its TestSpace owns, alive for 'a.
        unsafe { self.ptr.read_volatile() }
    }

    /// Clears the entry with a plain store: no TLB flush. Cached
    /// translations stay until [`invlpg`] or a CR3 load.
    pub fn clear(&self) {
        // SAFETY: as for `get`; unmapping cannot expose memory.
        unsafe { self.ptr.write_volatile(0) }
    }

    /// Writes the entry with a plain store: no TLB flush.
    ///
    /// # Safety
    /// If `val` maps a frame, the frame must satisfy the contract of
    /// [`TestSpace::map_4k`].
    pub unsafe fn set(&self, val: u64) {
        // SAFETY: as for `get`; what the value maps is the caller's contract.
        unsafe { self.ptr.write_volatile(val) }
    }
}

/// An address space for tests: a top-level table whose entry 0 is the
/// kernel's (filled in on activation) and whose test window the test fills
/// with [`TestSpace::map_4k`]. Dropping it switches back to the kernel root
/// if it is active and frees its page tables (not the mapped frames).
pub struct TestSpace {
    root: u64,
}

const TABLE_FLAGS: u64 = pte::PRESENT | pte::WRITABLE;

fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * level)) & 0x1ff) as usize
}

/// # Safety
/// `table` is an identity-mapped page table the caller may access (one its
/// TestSpace owns, or the view and the tree it follows).
unsafe fn entry(table: u64, i: usize) -> *mut u64 {
    (table + 8 * i as u64) as *mut u64
}

impl TestSpace {
    /// A new, empty address space. `None` if no frame is left.
    pub fn new() -> Option<TestSpace> {
        alloc_frame().map(|root| TestSpace { root })
    }

    /// Physical address of the top-level table.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Maps the 4 KiB page at `va` (in the test window) to the frame `pa`
    /// with the leaf entry `pa | flags`, allocating intermediate tables
    /// (present, writable) on the way. Does not flush, and needs not: the
    /// page was not mapped before, and x86 never caches a not-present
    /// translation.
    ///
    /// # Safety
    /// `pa..pa + 4096` must be memory no Rust reference covers for as long
    /// as this space lives (e.g. a frame from [`alloc_frame`] that is freed
    /// only after the space is dropped), or MMIO.
    ///
    /// # Errors
    /// See [`MapError`].
    pub unsafe fn map_4k(&self, va: u64, pa: u64, flags: u64) -> Result<Pte<'_>, MapError> {
        if !(TEST_WINDOW..TEST_WINDOW_END).contains(&va) {
            return Err(MapError::OutsideTestWindow);
        }
        if !va.is_multiple_of(FRAME_SIZE) || !pa.is_multiple_of(FRAME_SIZE) {
            return Err(MapError::Misaligned);
        }
        let mut table = self.root;
        for level in (1..=3).rev() {
            // SAFETY: `table` is one of our tables (the root, or one we
            // allocated below).
            let e = unsafe { entry(table, index(va, level)) };
            // SAFETY: as above; volatile since the CPU may set A bits.
            let val = unsafe { e.read_volatile() };
            table = if val & pte::PRESENT == 0 {
                let next = alloc_frame().ok_or(MapError::OutOfFrames)?;
                // SAFETY: as above; the new table is zeroed.
                unsafe { e.write_volatile(next | TABLE_FLAGS) };
                next
            } else if val & pte::HUGE != 0 {
                return Err(MapError::HugePageInTheWay);
            } else {
                val & pte::ADDR_MASK
            };
        }
        // SAFETY: `table` is our page table.
        let leaf = unsafe { entry(table, index(va, 0)) };
        // SAFETY: as above.
        if unsafe { leaf.read_volatile() } & pte::PRESENT != 0 {
            return Err(MapError::AlreadyMapped);
        }
        // SAFETY: our table; the frame is the caller's contract.
        unsafe { leaf.write_volatile(pa | flags) };
        Ok(Pte {
            ptr: leaf,
            _space: PhantomData,
        })
    }

    /// The leaf entry for the page at `va`, if the tables down to it exist.
    pub fn pte(&self, va: u64) -> Option<Pte<'_>> {
        if !(TEST_WINDOW..TEST_WINDOW_END).contains(&va) {
            return None;
        }
        let mut table = self.root;
        for level in (1..=3).rev() {
            // SAFETY: `table` is one of our tables.
            let val = unsafe { entry(table, index(va, level)).read_volatile() };
            if val & pte::PRESENT == 0 || val & pte::HUGE != 0 {
                return None;
            }
            table = val & pte::ADDR_MASK;
        }
        Some(Pte {
            // SAFETY: `table` is our page table.
            ptr: unsafe { entry(table, index(va, 0)) },
            _space: PhantomData,
        })
    }

    /// Makes this the current address space (see [`activate`]).
    pub fn activate(&self) {
        // SAFETY: 1. the root is our table, its test-window entries made by
        // `map_4k`; 2. whose contract covers the frames they map; 3. `Drop`
        // switches away before freeing the tables.
        unsafe { activate(self.root) }
    }

    /// Whether this space is the current one.
    pub fn is_active(&self) -> bool {
        current_root() == self.root
    }

    /// Frees the table at `table` and the tables below it. `level` 0 is a
    /// page table (leaves only), 1 a PD, 2 a PDPT.
    ///
    /// # Safety
    /// `table` is one of ours, no longer active nor reachable.
    unsafe fn free_table(table: u64, level: u32) {
        if level > 0 {
            for i in 0..512 {
                // SAFETY: our table.
                let val = unsafe { entry(table, i).read_volatile() };
                if val & pte::PRESENT != 0 && val & pte::HUGE == 0 {
                    // SAFETY: a table we allocated in `map_4k`.
                    unsafe { Self::free_table(val & pte::ADDR_MASK, level - 1) };
                }
            }
        }
        // Level 0 tables hold leaves: the frames they map are the caller's.
        // SAFETY: 1. allocated by `map_4k` with `alloc_frame`; 2. freed once,
        // as its parent entry is; 3. unreachable now (the space is inactive).
        unsafe { free_frame(table) };
    }
}

impl Drop for TestSpace {
    fn drop(&mut self) {
        if self.is_active() {
            deactivate();
        }
        // Entry 0 is the kernel's: only entries 1..=511 hold our tables.
        for i in 1..512 {
            // SAFETY: the root is ours.
            let val = unsafe { entry(self.root, i).read_volatile() };
            if val & pte::PRESENT != 0 {
                // SAFETY: a PDPT we allocated; the space is inactive (CR3 was
                // reloaded above, flushing its translations).
                unsafe { Self::free_table(val & pte::ADDR_MASK, 2) };
            }
        }
        // SAFETY: 1. the root came from `alloc_frame`; 2. `drop` runs once;
        // 3. the space is no longer active and its tables are gone.
        unsafe { free_frame(self.root) };
    }
}
