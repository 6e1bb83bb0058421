//! Several CPUs: bringing up the secondary CPUs (APs), running work on
//! them, and the TLB shootdown that keeps their TLBs coherent.
//!
//! # Bring-up
//! [`start`] copies a real-mode trampoline to [`TRAMPOLINE`] (16 → 32 →
//! 64 bit, the kernel's page tables, a stack per AP) and wakes each AP with
//! the xAPIC sequence INIT, SIPI, SIPI, one at a time, waiting (bounded by
//! the TSC) until it checks in. The number of CPUs comes from the runner
//! (`smp=N` on the command line, what it passed to QEMU's `-smp`); the APs
//! are tried at APIC IDs 1..N (QEMU numbers them so). An AP that does not
//! check in is reported and left out.
//!
//! Once up, every CPU runs with interrupts enabled (the only interrupts are
//! IPIs; the legacy PIC is masked), which is what lets a CPU spinning on a
//! lock still acknowledge a shootdown.
//!
//! # Work
//! [`on_all_cpus`] runs a function on every online CPU (the caller's
//! included) and returns when all have finished; each AP polls its mailbox
//! in between. Sharing goes through the context reference it passes.
//!
//! # Shootdown
//! [`SHOOTDOWN`] is the harness's [`TlbShootdown`]: a fixed IPI
//! ([`VECTOR_SHOOTDOWN`](crate::apic::VECTOR_SHOOTDOWN)) to every other
//! online CPU that runs a test address space (its per-CPU `active_root`
//! is not 0: CPUs on the kernel's root hold no test translation, there are
//! no global test mappings and no PCIDs); each target runs `invlpg` (or
//! reloads CR3) in the handler and clears its `flush_pending`; the
//! initiator returns once all have. One shootdown at a time (a lock);
//! while it waits for the lock or the acknowledgements, the initiator
//! serves requests addressed to itself, so two CPUs shooting at each other
//! cannot deadlock.

use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};

use mmu_notifier_core::VirtAddr;
use mmu_notifier_x86::TlbShootdown;

use crate::apic::{self, ICR_FIXED, ICR_INIT, ICR_STARTUP, VECTOR_SHOOTDOWN, VECTOR_WAKE};
use crate::percpu::{self, MAX_CPUS};
use crate::{boot, cpu, exit, interrupts, paging, println, serial};

/// Physical address the APs start at (a page below 1 MiB: SIPI vector 8).
const TRAMPOLINE: u64 = 0x8000;
/// Stack of each AP.
const AP_STACK_SIZE: usize = 128 * 1024;
/// How long an AP has to check in.
const CHECK_IN_MS: u64 = 2000;
/// How long a shootdown waits for its acknowledgements before declaring
/// the machine broken.
const SHOOTDOWN_MS: u64 = 10_000;

#[repr(C, align(16))]
struct Stacks(UnsafeCell<[[u8; AP_STACK_SIZE]; MAX_CPUS]>);

// SAFETY: AP `i` uses `[i]` only, through `rsp`; nothing else touches it.
unsafe impl Sync for Stacks {}

static AP_STACKS: Stacks = Stacks(UnsafeCell::new([[0; AP_STACK_SIZE]; MAX_CPUS]));

/// CPUs running the harness (the boot CPU included).
static ONLINE: AtomicUsize = AtomicUsize::new(1);
/// An AP sets this when it reached Rust and no longer needs the
/// trampoline's parameters.
static CHECKED_IN: AtomicBool = AtomicBool::new(false);
static STARTED: AtomicBool = AtomicBool::new(false);

// The trampoline, assembled here and copied to TRAMPOLINE: every address
// in it is computed relative to its start. Real mode (CS = 0x800, IP = 0),
// then a flat 32-bit segment, then long mode on the kernel's tables, then
// a call into `ap_entry(cpu)` on the AP's stack.
global_asm!(
    r#"
    .section .rodata.ap_trampoline, "a"
    .p2align 12
    .global __ap_tramp_start
    .global __ap_tramp_end
    .global __ap_param_cr3
    .global __ap_param_stack
    .global __ap_param_cpu
    .global __ap_param_entry
    .code16
__ap_tramp_start:
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ds
    lgdtl ap_gdt_ptr - __ap_tramp_start + {base}
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x18, $(ap_pm32 - __ap_tramp_start + {base})

    .code32
ap_pm32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl __ap_param_cr3 - __ap_tramp_start + {base}, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $0x20, %eax             /* PAE */
    movl %eax, %cr4
    movl $0xc0000080, %ecx      /* EFER */
    rdmsr
    orl $0x900, %eax            /* LME | NXE */
    wrmsr
    movl %cr0, %eax
    orl $0x80010001, %eax       /* PG | WP | PE */
    movl %eax, %cr0
    ljmpl $0x08, $(ap_lm64 - __ap_tramp_start + {base})

    .code64
ap_lm64:
    movl $0x10, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    xorl %eax, %eax
    movl %eax, %fs
    movl %eax, %gs
    movq __ap_param_stack - __ap_tramp_start + {base}, %rsp
    movq __ap_param_cpu - __ap_tramp_start + {base}, %rdi
    movq __ap_param_entry - __ap_tramp_start + {base}, %rax
    call *%rax
    ud2

    .p2align 3
ap_gdt:
    .quad 0
    .quad 0x00af9b000000ffff    /* 0x08: 64-bit code */
    .quad 0x00cf93000000ffff    /* 0x10: flat data */
    .quad 0x00cf9b000000ffff    /* 0x18: flat 32-bit code */
ap_gdt_ptr:
    .short ap_gdt_ptr - ap_gdt - 1
    .long ap_gdt - __ap_tramp_start + {base}
    .p2align 3
__ap_param_cr3:
    .quad 0
__ap_param_stack:
    .quad 0
__ap_param_cpu:
    .quad 0
__ap_param_entry:
    .quad 0
__ap_tramp_end:
    "#,
    base = const TRAMPOLINE,
    options(att_syntax)
);

unsafe extern "C" {
    static __ap_tramp_start: u8;
    static __ap_tramp_end: u8;
    static __ap_param_cr3: u8;
    static __ap_param_stack: u8;
    static __ap_param_cpu: u8;
    static __ap_param_entry: u8;
}

/// Where a trampoline symbol lands in the copy at TRAMPOLINE.
fn in_copy(sym: *const u8) -> *mut u64 {
    let start = (&raw const __ap_tramp_start) as u64;
    (TRAMPOLINE + (sym as u64 - start)) as *mut u64
}

/// Brings up the secondary CPUs (as many as `smp=N` on the command line
/// says, at most [`MAX_CPUS`]), enables interrupts everywhere, and returns
/// how many CPUs are online. Call once, from the boot CPU, before anything
/// else uses the APs; on a 1-CPU machine it only enables the APIC and
/// interrupts.
pub fn start() -> usize {
    assert!(
        !STARTED.swap(true, Ordering::SeqCst),
        "smp::start called twice"
    );
    assert_eq!(percpu::cpu_id(), 0, "smp::start runs on the boot CPU");
    let wanted = boot::cmdline_option("smp")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(1);
    if wanted > MAX_CPUS {
        println!("smp: {wanted} CPUs asked for, the harness runs at most {MAX_CPUS}");
    }
    let wanted = wanted.clamp(1, MAX_CPUS);

    apic::init();
    apic::enable_this_cpu();
    let bsp = percpu::slot(0);
    bsp.apic_id.store(u64::from(apic::id()), Ordering::Relaxed);
    bsp.online.store(true, Ordering::Release);
    // SAFETY: the IDT is loaded with gates for the IPI and spurious
    // vectors, and the PIC is masked: IPIs are the only interrupts.
    unsafe { cpu::sti() };
    if wanted == 1 {
        return 1;
    }

    let len = (&raw const __ap_tramp_end) as usize - (&raw const __ap_tramp_start) as usize;
    // SAFETY: low memory below 1 MiB is not handed out by the frame
    // allocator (frames start at 16 MiB) and QEMU's start info was read
    // during boot; the source is our own rodata.
    unsafe {
        core::ptr::copy_nonoverlapping(&raw const __ap_tramp_start, TRAMPOLINE as *mut u8, len);
        in_copy(&raw const __ap_param_cr3).write_volatile(paging::kernel_root());
        in_copy(&raw const __ap_param_entry).write_volatile(ap_entry as *const () as u64);
    }
    let bsp_apic = apic::id();
    for cpu in 1..wanted {
        let apic_id = bsp_apic + cpu as u32;
        let stack_top = AP_STACKS.0.get() as u64 + ((cpu + 1) * AP_STACK_SIZE) as u64;
        percpu::slot(cpu)
            .apic_id
            .store(u64::from(apic_id), Ordering::Relaxed);
        CHECKED_IN.store(false, Ordering::SeqCst);
        // SAFETY: the trampoline copy is ours; the previous AP checked in
        // (or was given up on), so nobody reads these parameters now.
        unsafe {
            in_copy(&raw const __ap_param_stack).write_volatile(stack_top);
            in_copy(&raw const __ap_param_cpu).write_volatile(cpu as u64);
        }
        apic::send_ipi(apic_id, ICR_INIT);
        apic::delay_us(10_000);
        for _ in 0..2 {
            apic::send_ipi(apic_id, ICR_STARTUP | (TRAMPOLINE >> 12) as u32);
            apic::delay_us(200);
            if CHECKED_IN.load(Ordering::SeqCst) {
                break;
            }
        }
        let deadline = apic::deadline_ms(CHECK_IN_MS);
        while !CHECKED_IN.load(Ordering::SeqCst) && !apic::expired(deadline) {
            core::hint::spin_loop();
        }
        if !CHECKED_IN.load(Ordering::SeqCst) {
            println!("smp: CPU {cpu} (APIC ID {apic_id}) did not check in within {CHECK_IN_MS} ms");
            break;
        }
        while !percpu::is_online(cpu) {
            core::hint::spin_loop();
        }
    }
    ONLINE.load(Ordering::SeqCst)
}

/// How many CPUs run the harness (1 until [`start`] brought up more).
pub fn cpus() -> usize {
    ONLINE.load(Ordering::SeqCst)
}

/// Where the trampoline hands over: long mode, the kernel's tables, the
/// AP's own stack, interrupts off.
extern "C" fn ap_entry(cpu: u64) -> ! {
    let cpu = cpu as usize;
    percpu::init_this_cpu(cpu);
    CHECKED_IN.store(true, Ordering::SeqCst);
    interrupts::load_idt();
    apic::enable_this_cpu();
    let me = percpu::this();
    if u64::from(apic::id()) != me.apic_id.load(Ordering::Relaxed) {
        serial::emergency_print(format_args!(
            "smp: CPU {cpu} woke with an unexpected APIC ID {}\n",
            apic::id()
        ));
        exit::exit_failure();
    }
    ONLINE.fetch_add(1, Ordering::SeqCst);
    me.online.store(true, Ordering::Release);
    // SAFETY: as on the boot CPU: IDT loaded, PIC masked.
    unsafe { cpu::sti() };
    loop {
        let seq = me.job_seq.load(Ordering::Acquire);
        if seq == me.done_seq.load(Ordering::Relaxed) {
            // Idle: sleep until `on_all_cpus` (or a shootdown) wakes us.
            // SAFETY: IDT loaded, PIC masked; `on_all_cpus` sends a wake
            // IPI after posting a job.
            unsafe {
                cpu::halt_until(|| {
                    me.job_seq.load(Ordering::Acquire) != me.done_seq.load(Ordering::Relaxed)
                })
            };
            continue;
        }
        let call = me.job_call.load(Ordering::Relaxed);
        // SAFETY: `post` stored a `Thunk` there before publishing `seq`.
        let call: Thunk = unsafe { core::mem::transmute::<usize, Thunk>(call) };
        // SAFETY: `post`'s contract: the context and work are valid until
        // `done_seq` reaches `seq`.
        unsafe {
            call(
                me.job_ctx.load(Ordering::Relaxed),
                me.job_work.load(Ordering::Relaxed),
                cpu,
            )
        };
        if paging::current_root() != paging::kernel_root() {
            paging::deactivate();
        }
        me.done_seq.store(seq, Ordering::Release);
    }
}

type Thunk = unsafe fn(usize, *mut (), usize);

/// # Safety
/// 1. `ctx` points to a live `T`;
/// 2. `work` was made from a `fn(&T, usize)`.
unsafe fn thunk<T: Sync>(ctx: usize, work: *mut (), cpu: usize) {
    // SAFETY: condition 2: `work` was made from a `fn(&T, usize)`.
    let work = unsafe { core::mem::transmute::<*mut (), fn(&T, usize)>(work) };
    // SAFETY: condition 1: `ctx` points to a live `T`, shared (`Sync`).
    work(unsafe { &*(ctx as *const T) }, cpu);
}

/// Runs `work(ctx, cpu)` on every online CPU (`cpu` is its index; the
/// caller's CPU runs it too, as CPU 0), and returns once all have
/// returned. Each AP switches back to the kernel's address space after
/// its part. A panic or an unexpected fault on any CPU ends the run.
pub fn on_all_cpus<T: Sync>(ctx: &T, work: fn(&T, usize)) {
    assert_eq!(percpu::cpu_id(), 0, "on_all_cpus runs from the boot CPU");
    let n = cpus();
    let mut seqs = [0u64; MAX_CPUS];
    for (cpu, seq) in seqs.iter_mut().enumerate().take(n).skip(1) {
        let slot = percpu::slot(cpu);
        *seq = slot.job_seq.load(Ordering::Relaxed) + 1;
        slot.job_call
            .store(thunk::<T> as Thunk as usize, Ordering::Relaxed);
        slot.job_ctx
            .store(core::ptr::from_ref(ctx) as usize, Ordering::Relaxed);
        slot.job_work.store(work as *mut (), Ordering::Relaxed);
        slot.job_seq.store(*seq, Ordering::Release);
        wake(cpu);
    }
    work(ctx, 0);
    for (cpu, &seq) in seqs.iter().enumerate().take(n).skip(1) {
        while percpu::slot(cpu).done_seq.load(Ordering::Acquire) != seq {
            core::hint::spin_loop();
        }
    }
}

/// Sends CPU `cpu` the wake IPI.
fn wake(cpu: usize) {
    apic::send_ipi(
        percpu::slot(cpu).apic_id.load(Ordering::Relaxed) as u32,
        ICR_FIXED | VECTOR_WAKE as u32,
    );
}

/// The harness's TLB shootdown (see the module docs).
pub struct IpiShootdown {
    busy: AtomicBool,
    /// The address to flush, or [`FLUSH_ALL`].
    request: AtomicU64,
    /// The CPU waiting for the acknowledgements (woken by each).
    initiator: AtomicUsize,
}

const FLUSH_ALL: u64 = u64::MAX;
/// A request for a full memory barrier only (the notifier core's grace
/// period, see `platform`): not a valid address to flush either.
const BARRIER: u64 = u64::MAX - 1;

/// The one shootdown of the machine; `machine::KernelMachine` builds its
/// arch with it.
pub static SHOOTDOWN: IpiShootdown = IpiShootdown {
    busy: AtomicBool::new(false),
    request: AtomicU64::new(0),
    initiator: AtomicUsize::new(0),
};

/// How many shootdown IPIs were sent (for the report).
static IPIS_SENT: AtomicU64 = AtomicU64::new(0);

/// Shootdown IPIs sent so far.
pub fn shootdown_ipis() -> u64 {
    IPIS_SENT.load(Ordering::Relaxed)
}

impl IpiShootdown {
    /// Flushes this CPU if a shootdown asked it to, acknowledges, and wakes
    /// the initiator (which may be halted). Interrupts are off meanwhile so
    /// that the IPI handler and a polling initiator never serve the same
    /// request halfway each.
    fn serve(&self) {
        cpu::without_interrupts(|| {
            let me = percpu::this();
            if me.flush_pending.load(Ordering::Acquire) {
                match self.request.load(Ordering::Relaxed) {
                    FLUSH_ALL => paging::reload_cr3(),
                    BARRIER => fence(Ordering::SeqCst),
                    va => paging::invlpg(va),
                }
                // Read before the acknowledgement: afterwards another
                // shootdown may own the request.
                let initiator = self.initiator.load(Ordering::Relaxed);
                me.flush_pending.store(false, Ordering::Release);
                wake(initiator);
            }
        });
    }
}

impl IpiShootdown {
    /// Asks every other online CPU to serve `request` (an address to flush,
    /// [`FLUSH_ALL`] or [`BARRIER`]) and waits until each has. A flush skips
    /// CPUs that run no test address space; a barrier reaches every one.
    fn request_remote(&self, request: u64) {
        if cpus() <= 1 {
            return;
        }
        // The entry change (or the list change) we follow must be visible
        // before we read which CPUs to ask: a CPU that switches to a test
        // address space after this walks the new entry.
        fence(Ordering::SeqCst);
        while self
            .busy
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.serve();
            core::hint::spin_loop();
        }
        self.request.store(request, Ordering::Relaxed);
        let me = percpu::cpu_id();
        self.initiator.store(me, Ordering::Relaxed);
        let mut targets = 0u32;
        for cpu in (0..MAX_CPUS).filter(|&c| c != me && percpu::is_online(c)) {
            let slot = percpu::slot(cpu);
            if request == BARRIER || slot.active_root.load(Ordering::SeqCst) != 0 {
                slot.flush_pending.store(true, Ordering::Release);
                targets |= 1 << cpu;
            }
        }
        for cpu in (0..MAX_CPUS).filter(|&c| targets & (1 << c) != 0) {
            let dest = percpu::slot(cpu).apic_id.load(Ordering::Relaxed) as u32;
            apic::send_ipi(dest, ICR_FIXED | VECTOR_SHOOTDOWN as u32);
            IPIS_SENT.fetch_add(1, Ordering::Relaxed);
        }
        let deadline = apic::deadline_ms(SHOOTDOWN_MS);
        let can_halt = cpu::interrupts_enabled();
        for cpu in (0..MAX_CPUS).filter(|&c| targets & (1 << c) != 0) {
            let pending = &percpu::slot(cpu).flush_pending;
            while pending.load(Ordering::Acquire) {
                self.serve();
                if can_halt {
                    // Sleep until an acknowledgement (each one wakes us),
                    // or a request for us (its IPI wakes us, and the
                    // handler serves it).
                    // SAFETY: interrupts were enabled: the kernel handles
                    // them; the target's `serve` sends the wake IPI.
                    unsafe { cpu::halt_until(|| !pending.load(Ordering::Acquire)) };
                }
                if apic::expired(deadline) {
                    serial::emergency_print(format_args!(
                        "\nsmp: CPU {cpu} did not acknowledge a TLB shootdown within {SHOOTDOWN_MS} ms (from CPU {me})\n"
                    ));
                    exit::exit_failure();
                }
                core::hint::spin_loop();
            }
        }
        self.busy.store(false, Ordering::Release);
    }
}

// SAFETY: 1. `flush_remote` asks every other online CPU that runs a test
// address space (`active_root`) to run `invlpg` (CR3 reload for `None`)
// and waits for each acknowledgement; 2. it reads `active_root` after a
// full fence; 3. it takes no lock but `busy`, which it polls while serving
// requests for itself; 4. CPUs spin with interrupts enabled or serve
// pending requests (`serve`) in every wait, and an initiator waiting for
// `busy` serves too.
unsafe impl TlbShootdown for IpiShootdown {
    fn flush_remote(&self, va: Option<VirtAddr>) {
        self.request_remote(va.map_or(FLUSH_ALL, |v| v.0));
    }
}

impl IpiShootdown {
    /// A full memory barrier on every other online CPU: each executes
    /// `mfence` in its IPI handler before it acknowledges (what the core's
    /// grace period needs so that readers fence nothing).
    pub fn barrier_remote(&self) {
        self.request_remote(BARRIER);
    }
}

/// The shootdown IPI's handler (called from the interrupt stub, interrupts
/// off): flush as asked, acknowledge, end the interrupt.
pub(crate) fn handle_shootdown_ipi() {
    SHOOTDOWN.serve();
    apic::eoi();
}
