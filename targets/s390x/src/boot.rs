//! From QEMU's `-kernel` start to the kernel's `main`: the entry stub, the
//! stacks, CR0, the new PSWs, storage-key tracking, the frame pool, the
//! identity map and DAT; and the kernel command line.
//!
//! QEMU loads the ELF at its physical addresses and starts at `_start`
//! (0x10000) with DAT, interrupts and everything else off, in 64-bit mode.
//! Entry 0x10000 makes QEMU treat the image as a Linux kernel and copy the
//! `-append` string to 0x10480, so the stub reserves that area (896 bytes,
//! the size QEMU allows when the image has no "S390EP" header).

use crate::lowcore;

/// Bytes QEMU may write at 0x10480 (its legacy Linux parameter-area size).
pub const CMDLINE_SIZE: usize = 896;

core::arch::global_asm!(
    ".section .head,\"ax\",@progbits",
    ".globl _start",
    "_start:",
    "    jg __harness_boot",
    ".org 0x480",
    ".globl __harness_cmdline",
    "__harness_cmdline:",
    ".space {cmdline_size}",
    "",
    ".section .text.harness_boot,\"ax\",@progbits",
    "__harness_boot:",
    // CR0 bits 45 (AFP registers) and 46 (vector) before any compiled code:
    // LLVM keeps integers in FP registers, and core's formatting uses them.
    // The software save area serves as scratch memory: nothing uses it yet.
    "    stctg %c0,%c0,{scratch}",
    "    oi {scratch}+5,0x06",
    "    lctlg %c0,%c0,{scratch}",
    // Zero .bss (it holds the stacks too, so before any call). QEMU starts
    // with zeroed RAM, but a restarted CPU or a reused image would not.
    "    larl %r2,__bss_start",
    "    larl %r3,__bss_end",
    "0:  clgr %r2,%r3",
    "    jhe 1f",
    "    mvghi 0(%r2),0",
    "    la %r2,8(%r2)",
    "    j 0b",
    "1:  larl %r15,__harness_boot_stack_top",
    "    aghi %r15,-160",
    "    lghi %r0,0",
    "    stg %r0,0(%r15)",
    "    brasl %r14,{boot}",
    "    j .",
    "",
    ".section .bss.harness_stacks,\"aw\",@nobits",
    ".balign 4096",
    "    .space 0x40000",
    "__harness_boot_stack_top:",
    "    .space 0x10000",
    ".globl __harness_fatal_stack_top",
    "__harness_fatal_stack_top:",
    cmdline_size = const CMDLINE_SIZE,
    scratch = const lowcore::SAVE_AREA,
    boot = sym boot,
);

extern "C" {
    /// The parameter area QEMU fills with `-append` (NUL-terminated).
    static __harness_cmdline: [u8; CMDLINE_SIZE];
}

extern "Rust" {
    /// Defined by [`entry!`](crate::entry) in the kernel binary: its main
    /// function, called after boot with DAT on, the identity map active,
    /// the frame pool ready and the console working.
    fn __harness_kernel_main() -> !;
}

extern "C" {
    /// Top of CPU 0's fatal-path stack (in the stub's .bss above).
    static __harness_fatal_stack_top: u8;
}

extern "C" fn boot() -> ! {
    // SAFETY: CPU 0's own lowcore software fields (see `lowcore`): its index
    // and the stack the program-check handler's fatal path switches to.
    unsafe {
        lowcore::write_u64(lowcore::CPU_INDEX, 0);
        lowcore::write_u64(
            lowcore::FATAL_STACK_TOP,
            core::ptr::addr_of!(__harness_fatal_stack_top) as u64,
        );
    }
    install_new_psws();
    crate::skey::enable_tracking();
    crate::dat::init();
    // SAFETY: `__harness_kernel_main` is defined by `entry!` with exactly
    // this signature; the binary does not link without it.
    unsafe { __harness_kernel_main() }
}

/// Every interruption class ends the run with a failing wait whose address
/// names the class (its new-PSW offset, e.g. 0x1a0bad for restart), except
/// program checks, which go to the probe-aware handler.
fn install_new_psws() {
    for slot in [
        lowcore::RESTART_NEW_PSW,
        lowcore::EXTERNAL_NEW_PSW,
        lowcore::SVC_NEW_PSW,
        lowcore::MCCK_NEW_PSW,
        lowcore::IO_NEW_PSW,
    ] {
        let psw = qemu_exit_s390x::S390x::wait_psw(slot as u32);
        // SAFETY: writing the new PSWs is the point; all interruptions are
        // disabled, so none can use a half-written one.
        unsafe {
            lowcore::write_u64(slot, psw.mask);
            lowcore::write_u64(slot + 8, psw.addr);
        }
    }
    // SAFETY: as above. Mask: 64-bit addressing, DAT off (the handler works
    // on real addresses, whatever space was active), all interrupts off.
    unsafe {
        lowcore::write_u64(lowcore::PROGRAM_NEW_PSW, 0x0000_0001_8000_0000);
        lowcore::write_u64(
            lowcore::PROGRAM_NEW_PSW + 8,
            crate::probe::handler_address(),
        );
    }
}

/// The kernel command line (`-append`), empty if none was given or it is
/// not UTF-8.
pub fn cmdline() -> &'static str {
    // SAFETY: the area is a static in our image; QEMU writes it before the
    // first instruction and nothing writes it afterwards, so a shared
    // `'static` view is sound.
    let area: &'static [u8; CMDLINE_SIZE] = unsafe { &*core::ptr::addr_of!(__harness_cmdline) };
    let len = area.iter().position(|&b| b == 0).unwrap_or(CMDLINE_SIZE);
    core::str::from_utf8(&area[..len]).unwrap_or("")
}

/// The value of `key=value` on the command line (whitespace-separated).
pub fn cmdline_arg(key: &str) -> Option<&'static str> {
    cmdline()
        .split_ascii_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}
