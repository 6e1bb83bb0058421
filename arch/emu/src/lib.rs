//! An emulated MMU for host tests and benchmarks of `mmu-notifier`.
//!
//! [`Emu`] is an [`Arch`] whose "hardware" is software: translation tables
//! live in host memory, each emulated CPU has a TLB that caches
//! translations **and keeps them after the entry changes, until
//! flushed** (as real TLBs and QEMU's TCG do), and CPU accesses set the
//! accessed and dirty bits the way x86-64 hardware does. A forgotten flush
//! is therefore visible: the stale entry still translates.
//!
//! Physical memory is an arena of 4 KiB frames. A freed frame is never
//! returned to the host allocator while the `Emu` lives: it goes to a free
//! list and is handed out again, so a stale translation reads the *new*
//! owner's data (the bug MMU notifiers exist to prevent), and an access
//! through one is reported as [`Fault::FreedFrame`] when the frame is
//! still free.
//!
//! The entry format is x86-64's subset: 4 levels of 512 entries, present
//! bit 0, writable 1, user 2, accessed 5, dirty 6, huge 7 (2 MiB leaves at
//! level 2), copy-on-write 9 (software), no-execute 63, 48-bit addresses
//! (no canonical upper half), 52-bit physical addresses.
//!
//! Build with `--cfg mmu_notifier_broken="no-flush"` to get an emulator
//! whose flushes do nothing: the negative checks prove the suites fail.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use core::ptr::NonNull;

use mmu_notifier_core::arch::{
    Arch, Entry, Leaf, Level, LevelGeometry, PendingFlush, Prot, PteSlot,
};
use mmu_notifier_core::{Error, PhysAddr, TableMemory, VirtAddr};

/// Size of an emulated frame and of every emulated table.
pub const FRAME_SIZE: u64 = 4096;

const P: u64 = 1 << 0;
const W: u64 = 1 << 1;
const U: u64 = 1 << 2;
const A: u64 = 1 << 5;
const D: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const COW: u64 = 1 << 9;
const NX: u64 = 1 << 63;
const ADDR: u64 = 0x000f_ffff_ffff_f000;
const VA_LIMIT: u64 = 1 << 47;

const LEVELS: &[LevelGeometry] = &[
    LevelGeometry {
        shift: 39,
        index_bits: 9,
        table_bytes: 4096,
        leaf: false,
    },
    LevelGeometry {
        shift: 30,
        index_bits: 9,
        table_bytes: 4096,
        leaf: false,
    },
    LevelGeometry {
        shift: 21,
        index_bits: 9,
        table_bytes: 4096,
        leaf: true,
    },
    LevelGeometry {
        shift: 12,
        index_bits: 9,
        table_bytes: 4096,
        leaf: true,
    },
];

/// Why an emulated access failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No valid translation (a page fault with P = 0).
    NotMapped,
    /// A write through a read-only translation.
    Protection,
    /// The translation leads to a frame that has been freed: a
    /// use-after-free through a stale TLB entry.
    FreedFrame(PhysAddr),
}

#[derive(Debug, Clone, Copy)]
struct TlbEntry {
    frame: u64,
    writable: bool,
    dirty: bool,
}

#[derive(Default)]
struct Arena {
    /// Every host allocation (returned to the host when the `Emu` drops).
    blocks: Vec<(u64, Layout)>,
    /// Every frame of every block.
    all: HashSet<u64>,
    free: Vec<u64>,
    free_set: HashSet<u64>,
}

impl Arena {
    fn new_block(&mut self, frames: usize, align: u64) -> u64 {
        let layout =
            Layout::from_size_align(frames * FRAME_SIZE as usize, align.max(FRAME_SIZE) as usize)
                .expect("frame counts and power-of-two alignments make valid layouts");
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc_zeroed(layout) };
        assert!(!p.is_null(), "host out of memory");
        let pa = p.expose_provenance() as u64;
        self.blocks.push((pa, layout));
        for i in 0..frames as u64 {
            self.all.insert(pa + i * FRAME_SIZE);
        }
        pa
    }
}

struct Cpu {
    root: AtomicU64,
    tlb: Mutex<HashMap<u64, TlbEntry>>,
}

/// The emulated machine: physical memory, CPUs with software TLBs, and the
/// [`Arch`] implementation that drives them.
pub struct Emu {
    arena: Mutex<Arena>,
    cpus: Vec<Cpu>,
    flushes: AtomicU64,
}

impl core::fmt::Debug for Emu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Emu")
            .field("cpus", &self.cpus.len())
            .finish_non_exhaustive()
    }
}

impl Emu {
    /// A machine with `cpus` CPUs, none of them running an address space.
    pub fn new(cpus: usize) -> Self {
        Self {
            arena: Mutex::new(Arena::default()),
            cpus: (0..cpus.max(1))
                .map(|_| Cpu {
                    root: AtomicU64::new(0),
                    tlb: Mutex::new(HashMap::new()),
                })
                .collect(),
            flushes: AtomicU64::new(0),
        }
    }

    /// A zeroed 4 KiB frame.
    ///
    /// # Panics
    /// If the host is out of memory.
    pub fn alloc_frame(&self) -> PhysAddr {
        let mut arena = self.arena.lock().expect("arena lock");
        if let Some(pa) = arena.free.pop() {
            arena.free_set.remove(&pa);
            // SAFETY: `pa` is a live FRAME_SIZE allocation of this arena that
            // nobody owns while it is on the free list.
            unsafe {
                core::ptr::write_bytes(
                    core::ptr::with_exposed_provenance_mut::<u8>(pa as usize),
                    0,
                    FRAME_SIZE as usize,
                )
            };
            return PhysAddr(pa);
        }
        PhysAddr(arena.new_block(1, FRAME_SIZE))
    }

    /// `count` zeroed frames, physically contiguous and aligned to `align`
    /// (a power of two), for remapped ranges and huge pages. Each frame is
    /// freed on its own with [`free_frame`](Self::free_frame).
    pub fn alloc_contiguous(&self, count: usize, align: u64) -> Option<PhysAddr> {
        if count == 0 || !align.is_power_of_two() {
            return None;
        }
        Some(PhysAddr(
            self.arena
                .lock()
                .expect("arena lock")
                .new_block(count, align),
        ))
    }

    /// Gives a frame back. It stays readable (for stale translations to
    /// hit) and is handed out again by a later allocation.
    ///
    /// # Panics
    /// If `pa` is not an allocated frame of this machine (a double free).
    pub fn free_frame(&self, pa: PhysAddr) {
        let mut arena = self.arena.lock().expect("arena lock");
        assert!(
            arena.all.contains(&pa.0),
            "{pa:?} is not a frame of this machine"
        );
        assert!(arena.free_set.insert(pa.0), "double free of {pa:?}");
        arena.free.push(pa.0);
    }

    /// Whether `pa` is currently allocated.
    pub fn is_allocated(&self, pa: PhysAddr) -> bool {
        let arena = self.arena.lock().expect("arena lock");
        let frame = pa.0 & !(FRAME_SIZE - 1);
        arena.all.contains(&frame) && !arena.free_set.contains(&frame)
    }

    /// Frames currently allocated (tables and data).
    pub fn allocated_frames(&self) -> usize {
        let arena = self.arena.lock().expect("arena lock");
        arena.all.len() - arena.free.len()
    }

    fn word(&self, pa: u64) -> &AtomicU64 {
        debug_assert!(pa % 8 == 0);
        // SAFETY: callers pass addresses inside frames of this arena, which
        // stay allocated for the life of `self`, and 8-aligned.
        unsafe { &*core::ptr::with_exposed_provenance::<AtomicU64>(pa as usize) }
    }

    /// Reads physical memory (a frame of this machine).
    pub fn read_phys(&self, pa: PhysAddr) -> u64 {
        self.assert_frame(pa);
        self.word(pa.0).load(Ordering::Acquire)
    }

    /// Writes physical memory (a frame of this machine).
    pub fn write_phys(&self, pa: PhysAddr, value: u64) {
        self.assert_frame(pa);
        self.word(pa.0).store(value, Ordering::Release);
    }

    fn assert_frame(&self, pa: PhysAddr) {
        let arena = self.arena.lock().expect("arena lock");
        assert!(
            arena.all.contains(&(pa.0 & !(FRAME_SIZE - 1))) && pa.0 % 8 == 0,
            "{pa:?} is not in this machine's memory"
        );
    }

    /// Makes CPU `cpu` run on the address space rooted at `root` (like a CR3
    /// load: its TLB is emptied).
    pub fn activate(&self, cpu: usize, root: PhysAddr) {
        self.cpus[cpu].root.store(root.0, Ordering::Release);
        self.cpus[cpu].tlb.lock().expect("tlb lock").clear();
    }

    /// How many page flushes were executed (for the benchmarks).
    pub fn flush_count(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Number of translations cached in CPU `cpu`'s TLB.
    pub fn tlb_entries(&self, cpu: usize) -> usize {
        self.cpus[cpu].tlb.lock().expect("tlb lock").len()
    }

    /// Reads 8 bytes at `va` on CPU `cpu`, through its TLB.
    ///
    /// # Errors
    /// The [`Fault`] the access takes.
    pub fn read(&self, cpu: usize, va: VirtAddr) -> Result<u64, Fault> {
        self.access(cpu, va, false, |word| word.load(Ordering::Acquire))
    }

    /// Writes 8 bytes at `va` on CPU `cpu`, through its TLB.
    ///
    /// # Errors
    /// The [`Fault`] the access takes.
    pub fn write(&self, cpu: usize, va: VirtAddr, value: u64) -> Result<(), Fault> {
        self.access(cpu, va, true, |word| word.store(value, Ordering::Release))
    }

    /// Translates `va` on CPU `cpu` and performs `f` on the word, all under
    /// that CPU's TLB lock: as on a real CPU, an access completes before the
    /// CPU acknowledges a flush (the flush takes the same lock), so no
    /// access that began through a translation lands after the flush that
    /// removed it.
    fn access<R>(
        &self,
        cpu: usize,
        va: VirtAddr,
        write: bool,
        f: impl FnOnce(&AtomicU64) -> R,
    ) -> Result<R, Fault> {
        if va.0 >= VA_LIMIT || va.0 % 8 != 0 {
            return Err(Fault::NotMapped);
        }
        let vpn = va.0 >> 12;
        let offset = va.0 & 0xfff;
        let mut tlb = self.cpus[cpu].tlb.lock().expect("tlb lock");
        if let Some(e) = tlb.get(&vpn).copied() {
            if write && !e.writable {
                // x86 drops the entry on a fault, so a retry walks again.
                tlb.remove(&vpn);
                return Err(Fault::Protection);
            }
            if !write || e.dirty {
                let pa = self.checked(e.frame, offset)?;
                return Ok(f(self.word(pa)));
            }
            // A write through an entry cached clean: walk to set D.
        }
        let (frame, writable) = self.walk(cpu, va, write)?;
        tlb.insert(
            vpn,
            TlbEntry {
                frame,
                writable,
                dirty: write,
            },
        );
        let pa = self.checked(frame, offset)?;
        Ok(f(self.word(pa)))
    }

    fn checked(&self, frame: u64, offset: u64) -> Result<u64, Fault> {
        let arena = self.arena.lock().expect("arena lock");
        if arena.free_set.contains(&frame) {
            return Err(Fault::FreedFrame(PhysAddr(frame)));
        }
        Ok(frame + offset)
    }

    /// The hardware page walk: sets A in upper levels' leaf and D on write.
    fn walk(&self, cpu: usize, va: VirtAddr, write: bool) -> Result<(u64, bool), Fault> {
        let mut table = self.cpus[cpu].root.load(Ordering::Acquire);
        if table == 0 {
            return Err(Fault::NotMapped);
        }
        for (l, level) in LEVELS.iter().enumerate() {
            let e = self.word(table + level.index(va) as u64 * 8);
            let raw = e.load(Ordering::Acquire);
            if raw & P == 0 {
                return Err(Fault::NotMapped);
            }
            let leaf = l == LEVELS.len() - 1 || raw & PS != 0;
            if !leaf {
                e.fetch_or(A, Ordering::AcqRel);
                table = raw & ADDR;
                continue;
            }
            if write && raw & W == 0 {
                return Err(Fault::Protection);
            }
            // Set A (and D) atomically only if the entry did not change
            // under us, as hardware does with a locked update.
            let new = raw | A | if write { D } else { 0 };
            if e.compare_exchange(raw, new, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return self.walk(cpu, va, write);
            }
            let span_mask = level.entry_span() - 1;
            let frame = (raw & ADDR & !span_mask) + (va.0 & span_mask & !0xfff);
            return Ok((frame, raw & W != 0));
        }
        Err(Fault::NotMapped)
    }

    fn flush_page_all_cpus(&self, va: VirtAddr, level: Level<Self>) {
        if cfg!(mmu_notifier_broken = "no-flush") {
            return;
        }
        self.flushes.fetch_add(1, Ordering::Relaxed);
        let span = level.entry_span();
        let first = (va.0 & !(span - 1)) >> 12;
        let pages = span >> 12;
        for cpu in &self.cpus {
            let mut tlb = cpu.tlb.lock().expect("tlb lock");
            if pages <= 512 {
                for vpn in first..first + pages {
                    tlb.remove(&vpn);
                }
            } else {
                tlb.retain(|vpn, _| !(first..first + pages).contains(vpn));
            }
        }
    }
}

impl Drop for Emu {
    fn drop(&mut self) {
        let arena = self.arena.get_mut().expect("arena lock");
        for &(pa, layout) in &arena.blocks {
            // SAFETY: allocated by `new_block` with this layout, freed once.
            unsafe {
                dealloc(
                    core::ptr::with_exposed_provenance_mut::<u8>(pa as usize),
                    layout,
                )
            };
        }
    }
}

// SAFETY: 1. the levels and encodings below match the emulated walker in
// `Emu::walk`, and round-trip (COW and the permissions in their own bits);
// 2. `check_addr` refuses what the walker cannot translate, and entries
// hold 52-bit frames (ADDR); 3. every primitive changes the entry with an
// atomic read-modify-write before returning; 4. `flush_tlb_page` removes
// the translation from every emulated CPU's TLB before returning (except
// in the deliberately broken build).
unsafe impl Arch for Emu {
    const NAME: &'static str = "emu";
    const LEVELS: &'static [LevelGeometry] = LEVELS;
    const PHYS_ADDR_BITS: u32 = 52;

    fn invalid_entry(_level: Level<Self>) -> u64 {
        0
    }

    fn check_addr(va: VirtAddr) -> Result<(), Error> {
        if va.0 < VA_LIMIT {
            Ok(())
        } else {
            Err(Error::OutOfRange {
                addr: va.0,
                limit: VA_LIMIT,
            })
        }
    }

    fn decode(level: Level<Self>, raw: u64) -> Entry {
        if raw & P == 0 {
            return Entry::Invalid;
        }
        let last = level.is_last();
        if !last && raw & PS == 0 {
            return Entry::Table(PhysAddr(raw & ADDR));
        }
        let mut prot = Prot::READ;
        if raw & W != 0 {
            prot = prot | Prot::WRITE;
        }
        if raw & U != 0 {
            prot = prot | Prot::USER;
        }
        if raw & NX == 0 {
            prot = prot | Prot::EXEC;
        }
        Entry::Leaf(Leaf {
            frame: PhysAddr(raw & ADDR),
            prot,
            young: raw & A != 0,
            dirty: raw & D != 0,
            cow: raw & COW != 0,
        })
    }

    fn encode_table(_level: Level<Self>, table: PhysAddr) -> u64 {
        table.0 | P | W | U
    }

    fn encode_leaf(level: Level<Self>, frame: PhysAddr, prot: Prot) -> u64 {
        let huge = if level.is_last() { 0 } else { PS };
        frame.0 | P | huge | Self::prot_bits(prot)
    }

    fn leaf_with_prot(_level: Level<Self>, raw: u64, prot: Prot) -> u64 {
        (raw & !(W | U | NX)) | Self::prot_bits(prot)
    }

    fn leaf_with_cow(_level: Level<Self>, raw: u64, cow: bool) -> u64 {
        if cow {
            raw | COW
        } else {
            raw & !COW
        }
    }

    unsafe fn set_pte_at(&self, slot: &PteSlot<'_, Self>, raw: u64) {
        slot.word().store(raw, Ordering::Release);
    }

    unsafe fn ptep_modify(&self, slot: &PteSlot<'_, Self>, new: u64) -> PendingFlush<'_, Self> {
        let mut old = slot.read();
        // Keep A/D that the walker sets meanwhile.
        while let Err(now) = slot.word().compare_exchange(
            old,
            new | (old & (A | D)),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            old = now;
        }
        PendingFlush::new(self, slot.va(), slot.level(), old)
    }

    unsafe fn ptep_get_and_clear(&self, slot: &PteSlot<'_, Self>) -> PendingFlush<'_, Self> {
        let old = slot.word().swap(0, Ordering::AcqRel);
        PendingFlush::new(self, slot.va(), slot.level(), old)
    }

    unsafe fn ptep_test_and_clear_young(&self, slot: &PteSlot<'_, Self>) -> bool {
        slot.word().fetch_and(!A, Ordering::AcqRel) & A != 0
    }

    fn flush_tlb_page(&self, va: VirtAddr, level: Level<Self>) {
        self.flush_page_all_cpus(va, level);
    }

    fn flush_tlb_all(&self) {
        if cfg!(mmu_notifier_broken = "no-flush") {
            return;
        }
        for cpu in &self.cpus {
            cpu.tlb.lock().expect("tlb lock").clear();
        }
    }
}

impl Emu {
    fn prot_bits(prot: Prot) -> u64 {
        let mut bits = 0;
        if prot.writable() {
            bits |= W;
        }
        if prot.contains(Prot::USER) {
            bits |= U;
        }
        if !prot.contains(Prot::EXEC) {
            bits |= NX;
        }
        bits
    }
}

// SAFETY: 1. tables are frames of the arena: exclusively the caller's until
// freed, 4 KiB long and aligned (every emulated table is 4 KiB); 2. a frame's
// "physical address" is its host address (exposed when allocated), valid
// while the `Emu` lives; 3. the emulated walker reads entries at that same
// address (`Emu::word`).
unsafe impl TableMemory for Emu {
    fn alloc_table(&self, bytes: usize) -> Option<PhysAddr> {
        (bytes as u64 <= FRAME_SIZE).then(|| self.alloc_frame())
    }

    unsafe fn free_table(&self, pa: PhysAddr, _bytes: usize) {
        self.free_frame(pa);
    }

    fn phys_to_virt(&self, pa: PhysAddr) -> NonNull<u8> {
        NonNull::new(core::ptr::with_exposed_provenance_mut(pa.0 as usize))
            .expect("frames are host allocations, never at address 0")
    }
}
