//! CPU exceptions: the IDT, the entry stubs, and the fault probes built on
//! them.
//!
//! A probe arms a "this instruction may fault" record, executes one access,
//! and disarms. The exception handler checks the faulting RIP against the
//! record: a match is a probed fault (recorded, resumed at the fix-up label
//! after the access); anything else is a kernel bug and ends the run with a
//! diagnostic. Owns the IDT, vectors 0..=31, and the gates of the two
//! interrupts the harness uses once several CPUs run (see `smp`): the TLB
//! shootdown IPI and the APIC's spurious vector. No device interrupt is
//! ever enabled.
//!
//! The probe record is per CPU (in the CPU's `percpu` slot, addressed
//! through GS), so every CPU may probe, concurrently.

use core::arch::{asm, global_asm};
use core::fmt;
use core::mem::offset_of;
use core::sync::atomic::Ordering::SeqCst;

use crate::apic::{self, VECTOR_SHOOTDOWN, VECTOR_SPURIOUS, VECTOR_WAKE};
use crate::cpu::read_cr2;
use crate::paging::TEST_WINDOW;
use crate::percpu::{self, PerCpu};
use crate::sync::BootCell;
use crate::{exit, serial, smp};
use mmu_notifier_kernel_harness::FatalLine;

const VECTOR_GP: u64 = 13;
const VECTOR_PF: u64 = 14;

/// #PF error code: the page was present (protection violation).
pub const PF_PRESENT: u64 = 1 << 0;
/// #PF error code: the access was a write.
pub const PF_WRITE: u64 = 1 << 1;
/// #PF error code: the access came from user mode.
pub const PF_USER: u64 = 1 << 2;
/// #PF error code: a reserved bit was set in a paging entry.
pub const PF_RESERVED: u64 = 1 << 3;
/// #PF error code: the access was an instruction fetch.
pub const PF_INSTR: u64 = 1 << 4;

/// A fault taken by a probe.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Exception vector: 14 (#PF), or 13 (#GP, e.g. a non-canonical address).
    pub vector: u8,
    /// For #PF: CR2, the faulting address. Otherwise the probed address.
    pub addr: u64,
    /// The exception's error code (for #PF: the `PF_*` bits).
    pub code: u64,
}

impl Fault {
    /// Whether this is a page fault at `addr` with exactly error code `code`.
    pub fn is_page_fault(&self, addr: u64, code: u64) -> bool {
        u64::from(self.vector) == VECTOR_PF && self.addr == addr && self.code == code
    }
}

impl fmt::Debug for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {:#x} (error code {:#x})",
            vector_name(u64::from(self.vector)),
            self.addr,
            self.code
        )
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

fn vector_name(vector: u64) -> &'static str {
    const NAMES: [&str; 32] = [
        "#DE",
        "#DB",
        "NMI",
        "#BP",
        "#OF",
        "#BR",
        "#UD",
        "#NM",
        "#DF",
        "vector 9",
        "#TS",
        "#NP",
        "#SS",
        "#GP",
        "#PF",
        "vector 15",
        "#MF",
        "#AC",
        "#MC",
        "#XM",
        "#VE",
        "#CP",
        "vector 22",
        "vector 23",
        "vector 24",
        "vector 25",
        "vector 26",
        "vector 27",
        "#HV",
        "#VC",
        "#SX",
        "vector 31",
    ];
    NAMES.get(vector as usize).copied().unwrap_or("interrupt")
}

/// The saved state the common stub builds on the stack, lowest address
/// first. Must match `__harness_isr_common`'s push order.
#[repr(C)]
struct ExceptionFrame {
    r15: u64,
    r14: u64,
    r13: u64,
    r12: u64,
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rdi: u64,
    rsi: u64,
    rbp: u64,
    rbx: u64,
    rdx: u64,
    rcx: u64,
    rax: u64,
    vector: u64,
    error_code: u64,
    // Pushed by the CPU.
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

// One stub per exception vector. Vectors without a CPU-pushed error code
// push a zero so that every frame has the same layout.
global_asm!(
    r#"
    .macro HARNESS_ISR vec, has_error_code
    .p2align 4
__harness_isr_\vec:
    .if \has_error_code == 0
    pushq $0
    .endif
    pushq $\vec
    jmp __harness_isr_common
    .endm

    .section .text.harness_isr, "ax"
    HARNESS_ISR 0, 0
    HARNESS_ISR 1, 0
    HARNESS_ISR 2, 0
    HARNESS_ISR 3, 0
    HARNESS_ISR 4, 0
    HARNESS_ISR 5, 0
    HARNESS_ISR 6, 0
    HARNESS_ISR 7, 0
    HARNESS_ISR 8, 1
    HARNESS_ISR 9, 0
    HARNESS_ISR 10, 1
    HARNESS_ISR 11, 1
    HARNESS_ISR 12, 1
    HARNESS_ISR 13, 1
    HARNESS_ISR 14, 1
    HARNESS_ISR 15, 0
    HARNESS_ISR 16, 0
    HARNESS_ISR 17, 1
    HARNESS_ISR 18, 0
    HARNESS_ISR 19, 0
    HARNESS_ISR 20, 0
    HARNESS_ISR 21, 1
    HARNESS_ISR 22, 0
    HARNESS_ISR 23, 0
    HARNESS_ISR 24, 0
    HARNESS_ISR 25, 0
    HARNESS_ISR 26, 0
    HARNESS_ISR 27, 0
    HARNESS_ISR 28, 0
    HARNESS_ISR 29, 1
    HARNESS_ISR 30, 1
    HARNESS_ISR 31, 0
    .global __harness_isr_240
    HARNESS_ISR 240, 0
    .global __harness_isr_241
    HARNESS_ISR 241, 0
    .global __harness_isr_255
    HARNESS_ISR 255, 0

__harness_isr_common:
    push %rax
    push %rcx
    push %rdx
    push %rbx
    push %rbp
    push %rsi
    push %rdi
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi              /* &mut ExceptionFrame */
    mov %rsp, %rbx              /* callee-saved: survives the call */
    and $-16, %rsp              /* the SysV ABI wants a 16-byte aligned call */
    cld
    call {handler}
    mov %rbx, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rdi
    pop %rsi
    pop %rbp
    pop %rbx
    pop %rdx
    pop %rcx
    pop %rax
    add $16, %rsp               /* vector and error code */
    iretq

    .section .rodata.harness_isr_table, "a"
    .p2align 3
    .global __harness_isr_table
__harness_isr_table:
    .irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad __harness_isr_\vec
    .endr
    "#,
    handler = sym handle_exception,
    options(att_syntax)
);

/// An IDT gate descriptor (64-bit interrupt gate).
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const MISSING: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        attributes: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    fn interrupt(handler: u64) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector: 0x08, // the boot GDT's 64-bit code segment
            ist: 0,
            attributes: 0x8e, // present, DPL 0, 64-bit interrupt gate (IF cleared on entry)
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static IDT: BootCell<Idt> = BootCell::new(Idt([Gate::MISSING; 256]));

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Fills and loads the IDT. Boot only.
pub(crate) fn init() {
    unsafe extern "C" {
        /// The stub addresses, by vector (defined in the asm above).
        static __harness_isr_table: [u64; 32];
    }
    let mut idt = Idt([Gate::MISSING; 256]);
    // SAFETY: the table is immutable data defined by our asm.
    let stubs = unsafe { &__harness_isr_table };
    for (gate, &stub) in idt.0.iter_mut().zip(stubs.iter()) {
        *gate = Gate::interrupt(stub);
    }
    unsafe extern "C" {
        fn __harness_isr_240();
        fn __harness_isr_241();
        fn __harness_isr_255();
    }
    idt.0[VECTOR_SHOOTDOWN as usize] = Gate::interrupt(__harness_isr_240 as *const () as u64);
    idt.0[VECTOR_WAKE as usize] = Gate::interrupt(__harness_isr_241 as *const () as u64);
    idt.0[VECTOR_SPURIOUS as usize] = Gate::interrupt(__harness_isr_255 as *const () as u64);
    // SAFETY: called once from `rust_entry`, alone on the boot CPU, before
    // anything reads the IDT.
    unsafe { IDT.set(idt) };
    load_idt();
}

/// Loads the IDT on this CPU (the boot CPU in `init`, each secondary CPU
/// in its entry). The table is shared: it never changes after `init`.
pub(crate) fn load_idt() {
    let ptr = DescriptorPointer {
        limit: (size_of::<Idt>() - 1) as u16,
        base: IDT.as_ptr() as u64,
    };
    // SAFETY: the IDT is a static (lives forever) of valid gates whose stubs
    // follow the frame layout `handle_exception` expects.
    unsafe { asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags)) }
}

extern "C" fn handle_exception(frame: &mut ExceptionFrame) {
    match frame.vector {
        VECTOR_SHOOTDOWN => return smp::handle_shootdown_ipi(),
        VECTOR_WAKE => return apic::eoi(),
        VECTOR_SPURIOUS => return,
        _ => {}
    }
    let cr2 = if frame.vector == VECTOR_PF {
        read_cr2()
    } else {
        0
    };
    let me = percpu::this();
    let armed = me.probe_ip.load(SeqCst);
    if armed != 0 && frame.rip == armed && (frame.vector == VECTOR_PF || frame.vector == VECTOR_GP)
    {
        let addr = if frame.vector == VECTOR_PF {
            cr2
        } else {
            me.probe_va.load(SeqCst)
        };
        me.fault_vector.store(frame.vector, SeqCst);
        me.fault_addr.store(addr, SeqCst);
        me.fault_code.store(frame.error_code, SeqCst);
        me.faulted.store(true, SeqCst);
        me.probe_ip.store(0, SeqCst);
        frame.rip = me.probe_fixup.load(SeqCst);
        return;
    }

    // Not a probe: a bug in the kernel or in a test. The console lock may be
    // held by the code that faulted.
    let f = &*frame;
    let what = vector_name(f.vector);
    let cpu = percpu::cpu_id();
    exit::print_fatal(FatalLine::new(
        cpu,
        format_args!(
            "unexpected {what} at rip {:#x} (error code {:#x}, cr2 {cr2:#x})",
            f.rip, f.error_code
        ),
    ));
    serial::emergency_print(format_args!(
        "\nunexpected exception {what} (vector {}) on CPU {cpu}, error code {:#x}, cr2 {cr2:#x}\n\
         rip {:#018x} cs {:#x} rflags {:#x} rsp {:#018x} ss {:#x}\n\
         rax {:#018x} rbx {:#018x} rcx {:#018x} rdx {:#018x}\n\
         rsi {:#018x} rdi {:#018x} rbp {:#018x} r8  {:#018x}\n\
         r9  {:#018x} r10 {:#018x} r11 {:#018x} r12 {:#018x}\n\
         r13 {:#018x} r14 {:#018x} r15 {:#018x}\n",
        f.vector,
        f.error_code,
        f.rip,
        f.cs,
        f.rflags,
        f.rsp,
        f.ss,
        f.rax,
        f.rbx,
        f.rcx,
        f.rdx,
        f.rsi,
        f.rdi,
        f.rbp,
        f.r8,
        f.r9,
        f.r10,
        f.r11,
        f.r12,
        f.r13,
        f.r14,
        f.r15
    ));
    exit::exit_failure()
}

fn probe_result(va: u64) -> Result<(), Fault> {
    let me = percpu::this();
    if me.faulted.swap(false, SeqCst) {
        let fault = Fault {
            vector: me.fault_vector.load(SeqCst) as u8,
            addr: me.fault_addr.load(SeqCst),
            code: me.fault_code.load(SeqCst),
        };
        debug_assert!(fault.vector != VECTOR_PF as u8 || fault.addr == va);
        Err(fault)
    } else {
        Ok(())
    }
}

/// Reads 8 bytes at virtual address `va` in the current address space,
/// reporting a page fault (or #GP, for a non-canonical address) instead of
/// dying from it.
///
/// # Errors
/// The fault the read took.
pub fn probe_read(va: u64) -> Result<u64, Fault> {
    let me = percpu::this();
    me.probe_va.store(va, SeqCst);
    me.faulted.store(false, SeqCst);
    let val: u64;
    // SAFETY: the only instruction that touches `va` is the one at label 2,
    // which the exception handler recognises and resumes past (label 3). A
    // read has no effect on memory Rust owns; if `va` aliases Rust data, we
    // read a plain integer. No `nomem`: this orders the access with the
    // caller's page-table stores and flushes.
    unsafe {
        asm!(
            "lea {tmp}, [rip + 3f]",
            "mov qword ptr gs:[{fixup}], {tmp}",
            "lea {tmp}, [rip + 2f]",
            "mov qword ptr gs:[{ip}], {tmp}",
            "2:",
            "mov {val}, qword ptr [{va}]",
            "3:",
            "mov qword ptr gs:[{ip}], 0",
            va = in(reg) va,
            val = out(reg) val,
            tmp = out(reg) _,
            fixup = const offset_of!(PerCpu, probe_fixup),
            ip = const offset_of!(PerCpu, probe_ip),
            options(nostack, preserves_flags),
        );
    }
    probe_result(va).map(|()| val)
}

/// Writes the 8 bytes `val` at virtual address `va` in the current address
/// space, reporting a fault instead of dying from it.
///
/// # Panics
/// If `va` is below [`TEST_WINDOW`]: the kernel's own memory is not a probe
/// target. What the test window maps is the caller's business (see
/// [`activate`](crate::activate)).
///
/// # Errors
/// The fault the write took.
pub fn probe_write(va: u64, val: u64) -> Result<(), Fault> {
    assert!(
        va >= TEST_WINDOW,
        "probe_write({va:#x}) outside the test window"
    );
    let me = percpu::this();
    me.probe_va.store(va, SeqCst);
    me.faulted.store(false, SeqCst);
    // SAFETY: as in `probe_read`, only the instruction at label 2 may fault
    // and the handler resumes at label 3. The write lands in the test window,
    // whose mappings must not alias Rust-owned memory (the contract of
    // `activate` and `TestSpace::map_4k`).
    unsafe {
        asm!(
            "lea {tmp}, [rip + 3f]",
            "mov qword ptr gs:[{fixup}], {tmp}",
            "lea {tmp}, [rip + 2f]",
            "mov qword ptr gs:[{ip}], {tmp}",
            "2:",
            "mov qword ptr [{va}], {val}",
            "3:",
            "mov qword ptr gs:[{ip}], 0",
            va = in(reg) va,
            val = in(reg) val,
            tmp = out(reg) _,
            fixup = const offset_of!(PerCpu, probe_fixup),
            ip = const offset_of!(PerCpu, probe_ip),
            options(nostack, preserves_flags),
        );
    }
    probe_result(va)
}
