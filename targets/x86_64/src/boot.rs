//! Boot: the PVH entry point, the 32-bit to long-mode trampoline, the boot
//! stack, page tables and GDT, the `hvm_start_info` command line, and the
//! hand-off to the kernel binary's `main` (declared with [`entry!`]).
//!
//! Owns PML4 entry 0 (the identity map of the first GiB, 2 MiB pages) and the
//! kernel image. It must never map anything in PML4 entries 1..=511: those
//! are the tests' window.
//!
//! [`entry!`]: crate::entry

use core::arch::global_asm;
use core::cell::UnsafeCell;

use crate::sync::BootCell;
use crate::{exit, frames, interrupts, percpu, println, serial};

const STACK_SIZE: usize = 256 * 1024;

/// A page-table page the hardware walks (and writes A bits into). Rust code
/// touches it only through raw pointers with volatile accesses, never
/// through references, since the CPU writes behind the compiler's back.
#[repr(C, align(4096))]
pub(crate) struct HwTable(UnsafeCell<[u64; 512]>);

// SAFETY: after boot the tables are only read (volatile); the CPU's own A-bit
// updates are atomic read-modify-writes that do not disturb those reads.
unsafe impl Sync for HwTable {}

impl HwTable {
    pub(crate) const fn zeroed() -> Self {
        Self(UnsafeCell::new([0; 512]))
    }

    /// Physical (= virtual, identity-mapped) address of the table.
    pub(crate) fn addr(&self) -> u64 {
        self.0.get() as u64
    }
}

#[repr(C, align(16))]
struct Stack(UnsafeCell<[u8; STACK_SIZE]>);

// SAFETY: only the boot CPU uses the stack, and only through `rsp`.
unsafe impl Sync for Stack {}

static BOOT_STACK: Stack = Stack(UnsafeCell::new([0; STACK_SIZE]));
/// The kernel's top-level table. Entry 0 is the only one ever used.
pub(crate) static BOOT_PML4: HwTable = HwTable::zeroed();
/// Its only PDPT (the identity map's first GiB; `apic` adds the fourth).
pub(crate) static BOOT_PDPT: HwTable = HwTable::zeroed();
/// 512 entries of 2 MiB: the first GiB.
static BOOT_PD: HwTable = HwTable::zeroed();

// The PVH entry point. QEMU enters at `pvh_start32` in 32-bit flat protected
// mode, paging off, EBX = physical address of `hvm_start_info`, no stack.
global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .p2align 2
    .long 4                 /* name size: "Xen\0" */
    .long 8                 /* descriptor size: QEMU reads a 64-bit address */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .p2align 2
    .quad pvh_start32
    .p2align 2

    .section .rodata.boot_gdt, "a"
    .p2align 3
boot_gdt:
    .quad 0
    .quad 0x00af9b000000ffff    /* 0x08: 64-bit code, accessed bit preset */
    .quad 0x00cf93000000ffff    /* 0x10: data, accessed bit preset */
boot_gdt_end:
boot_gdt_ptr:
    .short boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .text.boot, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    /* .bss holds the stack and the tables: zero it before using either.
       EBX (start info) survives: rep stos uses EDI, ECX, EAX. */
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    shr $2, %ecx
    xor %eax, %eax
    rep stosl
    mov $({stack} + {stack_size}), %esp

    /* The identity map of the first GiB, all under PML4 entry 0. */
    mov ${pdpt}, %eax
    or $0x3, %eax               /* present, writable */
    mov %eax, {pml4}
    mov ${pd}, %eax
    or $0x3, %eax
    mov %eax, {pdpt}
    xor %ecx, %ecx
2:
    mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax              /* present, writable, 2 MiB page */
    mov %eax, {pd}(,%ecx,8)
    inc %ecx
    cmp $512, %ecx
    jne 2b

    mov ${pml4}, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x20, %eax              /* CR4.PAE */
    mov %eax, %cr4
    mov $0xc0000080, %ecx       /* EFER */
    rdmsr
    or $0x900, %eax             /* LME | NXE */
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax        /* PG | WP | PE: WP makes read-only PTEs bind ring 0 */
    mov %eax, %cr0
    lgdt boot_gdt_ptr
    ljmp $0x08, $3f

    .code64
3:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    /* The upper halves of the registers are undefined after the switch:
       reload RSP in full, and zero-extend the start-info address. */
    mov $({stack} + {stack_size}), %rsp
    mov %ebx, %edi
    call {entry}
    ud2
    "#,
    stack = sym BOOT_STACK,
    stack_size = const STACK_SIZE,
    pml4 = sym BOOT_PML4,
    pdpt = sym BOOT_PDPT,
    pd = sym BOOT_PD,
    entry = sym rust_entry,
    options(att_syntax)
);

/// `hvm_start_info` (Xen's PVH ABI), the fields we read.
mod start_info {
    pub(super) const MAGIC: u32 = 0x336e_c578;
    pub(super) const OFF_MAGIC: usize = 0;
    pub(super) const OFF_VERSION: usize = 4;
    pub(super) const OFF_CMDLINE: usize = 24;
    pub(super) const OFF_MEMMAP: usize = 40;
    pub(super) const OFF_MEMMAP_ENTRIES: usize = 48;
    /// `hvm_memmap_table_entry`: addr u64, size u64, type u32, reserved u32.
    pub(super) const MEMMAP_ENTRY_SIZE: usize = 24;
    pub(super) const MEMMAP_RAM: u32 = 1;
}

const CMDLINE_MAX: usize = 256;
static CMDLINE_BUF: BootCell<[u8; CMDLINE_MAX]> = BootCell::new([0; CMDLINE_MAX]);
static CMDLINE_LEN: BootCell<usize> = BootCell::new(0);

/// End of the identity map: frames must lie below it to be usable as pointers.
pub(crate) const IDENTITY_MAP_END: u64 = 1 << 30;

/// Reads a field of the start info or the memory map.
///
/// # Safety
/// `pa + offset` must be readable physical memory below 1 GiB.
unsafe fn read_phys<T: Copy>(pa: u64, offset: usize) -> T {
    // SAFETY: identity-mapped, readable per the caller; unaligned-safe read.
    unsafe { ((pa as usize + offset) as *const T).read_unaligned() }
}

fn fatal(msg: &str) -> ! {
    println!("boot: {msg}");
    exit::exit_failure()
}

/// Called by the trampoline in long mode, on the boot stack.
extern "C" fn rust_entry(start_info_pa: u32) -> ! {
    percpu::init_this_cpu(0);
    serial::init();
    #[cfg(feature = "defmt")]
    crate::defmt_log::init();
    interrupts::init();

    let info = u64::from(start_info_pa);
    if info == 0 || info >= IDENTITY_MAP_END {
        fatal("no hvm_start_info (not booted through PVH?)");
    }
    // SAFETY: QEMU placed the start info in low RAM; checked above that it is
    // inside the identity map.
    let (magic, version): (u32, u32) = unsafe {
        (
            read_phys(info, start_info::OFF_MAGIC),
            read_phys(info, start_info::OFF_VERSION),
        )
    };
    if magic != start_info::MAGIC {
        fatal("bad hvm_start_info magic");
    }
    // SAFETY: the magic matched, so the structure is there.
    let cmdline_pa: u64 = unsafe { read_phys(info, start_info::OFF_CMDLINE) };
    // SAFETY: 1. we are alone on the boot CPU and `main` has not run yet;
    // 2. `cmdline_pa` is the start info's command-line field.
    unsafe { store_cmdline(cmdline_pa) };

    if version < 1 {
        fatal("hvm_start_info has no memory map (version 0)");
    }
    // SAFETY: version >= 1 has the memory-map fields.
    let (memmap, entries): (u64, u32) = unsafe {
        (
            read_phys(info, start_info::OFF_MEMMAP),
            read_phys(info, start_info::OFF_MEMMAP_ENTRIES),
        )
    };
    let start = frames::FIRST_FRAME.max(kernel_end().next_multiple_of(frames::FRAME_SIZE));
    let mut end = None;
    for i in 0..entries as usize {
        let off = i * start_info::MEMMAP_ENTRY_SIZE;
        // SAFETY: QEMU's memory map has `entries` entries at `memmap`, in low RAM.
        let (addr, size, kind): (u64, u64, u32) = unsafe {
            (
                read_phys(memmap, off),
                read_phys(memmap, off + 8),
                read_phys(memmap, off + 16),
            )
        };
        if kind == start_info::MEMMAP_RAM && addr <= start && start < addr + size {
            end = Some((addr + size).min(IDENTITY_MAP_END));
        }
    }
    let Some(end) = end else {
        fatal("no RAM above 16 MiB: give QEMU more memory (-m 512M)")
    };
    // SAFETY: [start, end) is RAM above the kernel image, below the end of the
    // identity map, and nothing else uses it.
    unsafe { frames::init(start, end) };

    unsafe extern "Rust" {
        /// Defined by the kernel binary through `entry!`.
        fn __harness_kernel_main() -> !;
    }
    // SAFETY: `entry!` defines the symbol with exactly this signature.
    unsafe { __harness_kernel_main() }
}

fn kernel_end() -> u64 {
    unsafe extern "C" {
        /// Set by linker.ld: the end of the kernel image, `.bss` included.
        static __kernel_end: u8;
    }
    (&raw const __kernel_end) as u64
}

/// Copies the NUL-terminated command line into `CMDLINE_BUF`.
///
/// # Safety
/// 1. Boot only (see [`BootCell::set`]);
/// 2. `pa` is 0 or QEMU's command line.
unsafe fn store_cmdline(pa: u64) {
    if pa == 0 || pa >= IDENTITY_MAP_END {
        return;
    }
    let mut buf = [0u8; CMDLINE_MAX];
    let mut len = 0;
    while len < CMDLINE_MAX {
        // SAFETY: condition 2: the string is NUL-terminated in low RAM; we
        // stop at NUL.
        let b: u8 = unsafe { read_phys(pa, len) };
        if b == 0 {
            break;
        }
        buf[len] = b;
        len += 1;
    }
    // Keep only a valid UTF-8 prefix, so that `cmdline` never fails.
    let len = match core::str::from_utf8(&buf[..len]) {
        Ok(s) => s.len(),
        Err(e) => e.valid_up_to(),
    };
    // SAFETY: `BootCell::set`'s one condition is this function's
    // condition 1: boot only, no readers yet.
    unsafe {
        CMDLINE_BUF.set(buf);
        CMDLINE_LEN.set(len);
    }
}

/// The kernel command line, as given to QEMU with `-append` (at most 255
/// bytes). The runner passes the test-name filter followed by `key=value`
/// options such as `accel=tcg`.
pub fn cmdline() -> &'static str {
    let buf = CMDLINE_BUF.get();
    core::str::from_utf8(&buf[..*CMDLINE_LEN.get()]).unwrap_or("")
}

/// The value of `key=value` on the command line, if present.
pub fn cmdline_option(key: &str) -> Option<&'static str> {
    cmdline()
        .split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

/// The test-name filter: the first command-line word that is not a
/// `key=value` option. `None` runs every case.
pub fn filter() -> Option<&'static str> {
    cmdline()
        .split_whitespace()
        .find(|word| !word.contains('='))
}

/// The accelerator QEMU runs the kernel under, as the runner reports it
/// (`accel=tcg` or `accel=kvm` on the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// QEMU's binary translator: its software TLB keeps stale entries until
    /// they are flushed, so a missing flush is visible.
    Tcg,
    /// Hardware (or kernel-assisted) virtualization: stale TLB entries may
    /// or may not survive, as on real hardware.
    Kvm,
    /// Not stated: tests must assume only architectural guarantees.
    Unknown,
}

/// See [`Accel`].
pub fn accel() -> Accel {
    match cmdline_option("accel") {
        Some("tcg") => Accel::Tcg,
        Some("kvm") => Accel::Kvm,
        _ => Accel::Unknown,
    }
}
