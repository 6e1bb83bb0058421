//! Secondary CPUs: bring-up with SIGP, a mailbox per CPU through which
//! CPU 0 runs a `fn(usize)` on another CPU and waits for it, and the end of
//! a run with several CPUs (only the last running CPU may load the exit
//! PSW).
//!
//! # Life of a secondary CPU
//! [`init`] gives each secondary CPU (1..n) its own 8 KiB prefix area (a
//! lowcore with the same new PSWs as CPU 0's, except restart, which leads
//! to the start stub, and external, which leads to the wake-up stub), a
//! stack, a fatal-path stack, and the CR0 and ASCE it must load; then
//! `SIGP initial CPU reset`, `SIGP set prefix` and `SIGP restart`. The stub
//! loads CR0 (AFP and vector bits, which a reset CPU has off, and the
//! external-call subclass), CR1 (the kernel's identity map), purges the
//! TLB, turns DAT on and enters the idle loop, where the CPU sleeps in an
//! *enabled wait* for an external call (a halted vCPU costs the host
//! nothing). [`start_on`] fills the mailbox and sends `SIGP external
//! call`; the CPU wakes, switches to the kernel's address space, purges
//! its TLB, runs the job, marks it done and sleeps again. [`wait`] waits
//! for the done mark. A case that needs a CPU's TLB across two steps
//! therefore does both steps in one job and synchronises through shared
//! memory.
//!
//! # Why not stop and restart the CPU for each job
//! QEMU runs `SIGP restart`, `stop`, `set prefix` and the resets on the
//! target vCPU's thread while the sender waits inside the instruction
//! (`run_on_cpu`); a global IPTE on a third CPU meanwhile asks for an
//! "exclusive" section, which waits for the sender to leave its
//! instruction. Under MTTCG that sometimes deadlocks (seen: CPU 0 stuck in
//! `SIGP restart` while two CPUs zapped pages). So those orders are sent
//! only while no other CPU runs (bring-up, the end of the run); during
//! cases the only order is `external call`, which QEMU injects without
//! waiting for the target.
//!
//! # Ending the run
//! QEMU ends the run when a CPU loads a disabled wait while no other CPU
//! runs; with another CPU running it only halts that CPU, and the run
//! hangs. [`claim_end`] therefore lets exactly one CPU end the run: it
//! stops every other CPU first (`SIGP stop`, then `SIGP sense` until the
//! stopped bit shows), and any other CPU that tries to end the run too
//! spins until it is stopped. Failures a job finds go back to CPU 0
//! through the job's shared memory ([`on_all_cpus`]); a panic or an unexpected
//! program check on a secondary CPU stops CPU 0 and is reported by the
//! secondary itself. (Stopping CPUs that are still zapping can meet the
//! QEMU deadlock above; the runner's time limit then ends the run, which
//! fails anyway.)
//!
//! Owns the secondary CPUs' prefix areas, stacks and mailboxes; the boot
//! CPU's lowcore belongs to [`crate::boot`].

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use crate::lowcore;

/// Most CPUs the harness drives (CPU addresses 0..MAX_CPUS).
pub const MAX_CPUS: usize = 8;
/// Bytes of a secondary CPU's stack.
const STACK_SIZE: usize = 128 << 10;
/// Bytes of a secondary CPU's stack for the fatal path.
const FATAL_STACK_SIZE: usize = 32 << 10;
/// Bytes of a prefix area (lowcore) in z/Architecture.
const PREFIX_SIZE: usize = 8192;

/// SIGP order codes.
mod order {
    pub const SENSE: u8 = 0x01;
    pub const EXTERNAL_CALL: u8 = 0x02;
    pub const STOP: u8 = 0x05;
    pub const RESTART: u8 = 0x06;
    pub const INITIAL_CPU_RESET: u8 = 0x0b;
    pub const SET_PREFIX: u8 = 0x0d;
}

/// SIGP status bit "stopped" (stored with condition code 1).
const STATUS_STOPPED: u32 = 0x40;
/// SIGP condition codes.
const CC_ACCEPTED: u8 = 0;
const CC_STATUS_STORED: u8 = 1;
const CC_BUSY: u8 = 2;
const CC_NOT_OPERATIONAL: u8 = 3;

/// Memory no Rust reference ever covers: it is handed to the CPU by
/// address (prefix areas, stacks), so only raw addresses are taken from it.
#[repr(C, align(8192))]
struct Raw<T>(UnsafeCell<T>);

// SAFETY: the contents are never accessed through Rust references; CPU 0
// writes a secondary's prefix area with volatile stores before the CPU runs
// (ordered by SIGP, which is a full serialisation), and each stack is used
// by its own CPU only.
unsafe impl<T> Sync for Raw<T> {}

impl<T> Raw<T> {
    fn addr(&self) -> u64 {
        self.0.get() as u64
    }
}

#[repr(C, align(8192))]
struct PrefixArea([u8; PREFIX_SIZE]);
#[repr(C, align(4096))]
struct Stack([u8; STACK_SIZE]);
#[repr(C, align(4096))]
struct FatalStack([u8; FATAL_STACK_SIZE]);

/// Prefix areas of CPUs 1..MAX_CPUS (index 0 unused: CPU 0 runs on
/// absolute 0). Zero-initialised, so in .bss.
static PREFIX_AREAS: Raw<[PrefixArea; MAX_CPUS]> = Raw(UnsafeCell::new(
    [const { PrefixArea([0; PREFIX_SIZE]) }; MAX_CPUS],
));
static STACKS: Raw<[Stack; MAX_CPUS]> = Raw(UnsafeCell::new(
    [const { Stack([0; STACK_SIZE]) }; MAX_CPUS],
));
static FATAL_STACKS: Raw<[FatalStack; MAX_CPUS]> = Raw(UnsafeCell::new(
    [const { FatalStack([0; FATAL_STACK_SIZE]) }; MAX_CPUS],
));

/// Mailbox states.
const IDLE: u32 = 0;
const PENDING: u32 = 1;
const RUNNING: u32 = 2;
const DONE: u32 = 3;

/// What CPU 0 asks a secondary CPU to run.
struct Mailbox {
    /// A `fn(usize)`, as an address.
    func: AtomicUsize,
    arg: AtomicUsize,
    state: AtomicU32,
}

static MAILBOXES: [Mailbox; MAX_CPUS] = [const {
    Mailbox {
        func: AtomicUsize::new(0),
        arg: AtomicUsize::new(0),
        state: AtomicU32::new(IDLE),
    }
}; MAX_CPUS];

/// CPUs brought up (1 until [`init`] ran).
static ONLINE: AtomicUsize = AtomicUsize::new(1);
/// Secondary CPUs that reached their idle loop.
static IDLING: AtomicUsize = AtomicUsize::new(0);

/// CR0 external-call subclass mask (bit 50): lets SIGP external call wake
/// an idle CPU. Service signal (bit 54) stays off: SCLP's completion
/// interrupt must not reach the secondaries either.
const CR0_EXTERNAL_CALL: u64 = 1 << (63 - 50);
/// The idle CPU's wait PSW mask: DAT on, external interruptions on, wait
/// state, 64-bit addressing.
const IDLE_WAIT_MASK: u64 = 0x0502_0001_8000_0000;
/// The CPU ending the run, or `usize::MAX`.
static ENDING: AtomicUsize = AtomicUsize::new(usize::MAX);

/// SIGNAL PROCESSOR once: `(condition code, status)`; status is meaningful
/// with condition code 1 only.
fn sigp_once(cpu: usize, order: u8, param: u64) -> (u8, u32) {
    let cc: u64;
    let status: u64;
    // SAFETY: SIGP R1,R3,D2(B2): R1 = r1, odd, so it holds the parameter
    // and receives the status; R3 = the CPU address; the second-operand
    // *address* is the order code (no storage is accessed). The orders the
    // harness sends change other CPUs' state only, except set prefix,
    // whose target area `init` prepared; no `nomem`, so the compiler
    // completes the stores that prepared it before the instruction.
    unsafe {
        core::arch::asm!(
            "sigp %r1,{cpu},0({order})",
            "ipm {cc}",
            "srlg {cc},{cc},28",
            cpu = in(reg) cpu as u64,
            order = in(reg_addr) u64::from(order),
            inout("r1") param => status,
            cc = lateout(reg) cc,
            options(nostack),
        )
    };
    ((cc & 3) as u8, status as u32)
}

/// SIGNAL PROCESSOR, repeated while the target answers busy (cc 2), which
/// QEMU does many thousands of times in a row when two CPUs signal at once.
///
/// # Panics
/// If the target stays busy for [`SIGP_BUSY_LIMIT_US`].
fn sigp(cpu: usize, order: u8, param: u64) -> (u8, u32) {
    let mut start = None;
    let mut busy = 0u64;
    loop {
        let (cc, status) = sigp_once(cpu, order, param);
        if cc != CC_BUSY {
            return (cc, status);
        }
        busy += 1;
        let t0 = *start.get_or_insert_with(crate::clock::now_us);
        if crate::clock::now_us() - t0 > SIGP_BUSY_LIMIT_US {
            crate::fatal(
                format_args!("SIGP order {order:#x} to CPU {cpu} answered busy {busy} times in {SIGP_BUSY_LIMIT_US} us"),
                0x5e4,
            );
        }
        core::hint::spin_loop();
    }
}

/// How long a CPU may answer SIGP with busy before the run is ended.
const SIGP_BUSY_LIMIT_US: u64 = 10_000_000;

/// STORE CPU ADDRESS: the running CPU's address (its index under QEMU).
/// The CPU-id source the kernels give the notifier core.
pub fn cpu_id() -> usize {
    let mut addr: u16 = 0;
    // SAFETY: STAP stores two bytes at the operand, our local.
    unsafe {
        core::arch::asm!("stap 0({p})", p = in(reg_addr) &mut addr as *mut u16, options(nostack))
    };
    usize::from(addr)
}

/// The running CPU's index, from its lowcore (cheaper than [`cpu_id`];
/// equal to it, which the start path checks).
pub fn cpu_index() -> usize {
    lowcore::read_u64(lowcore::CPU_INDEX) as usize
}

/// How many CPUs [`init`] brought up (1 before).
pub fn online() -> usize {
    ONLINE.load(Ordering::Acquire)
}

/// Whether the CPU at `cpu` is in the stopped state.
fn is_stopped(cpu: usize) -> bool {
    let (cc, status) = sigp(cpu, order::SENSE, 0);
    cc == CC_STATUS_STORED && status & STATUS_STOPPED != 0
}

/// Whether a CPU with address `cpu` exists.
fn exists(cpu: usize) -> bool {
    sigp(cpu, order::SENSE, 0).0 != CC_NOT_OPERATIONAL
}

core::arch::global_asm!(
    ".section .text.harness_secondary,\"ax\",@progbits",
    ".balign 8",
    ".globl __harness_secondary_entry",
    "__harness_secondary_entry:",
    // DAT off, 64-bit, all interruptions off (the restart new PSW): lowcore
    // addresses are this CPU's own prefix area.
    "    lctlg %c0,%c0,{cr0}",
    "    lctlg %c1,%c1,{asce}",
    "    ptlb",
    "    stosm {scratch},0x04",
    "    lg %r15,{stack}",
    "    aghi %r15,-160",
    "    lghi %r0,0",
    "    stg %r0,0(%r15)",
    "    lg %r2,{index}",
    "    brasl %r14,{main}",
    "    j .",
    "",
    // External interruption (the external call that wakes an idle CPU),
    // DAT off: resume the interrupted wait PSW with the external mask
    // (bit 7) and the wait bit (bit 14) cleared, i.e. right after the
    // wait, DAT as it was, interruptions off.
    ".balign 8",
    ".globl __harness_secondary_wake",
    "__harness_secondary_wake:",
    "    ni {ext_old},0xfe",
    "    ni {ext_old}+1,0xfd",
    "    lpswe {ext_old}",
    cr0 = const lowcore::CPU_CR0,
    asce = const lowcore::CPU_ASCE,
    scratch = const lowcore::CPU_SCRATCH,
    stack = const lowcore::CPU_STACK_TOP,
    index = const lowcore::CPU_INDEX,
    ext_old = const lowcore::EXT_OLD_PSW,
    main = sym secondary_main,
);

extern "C" {
    /// The start stub above; only its address is used (restart new PSW).
    fn __harness_secondary_entry();
    /// The wake-up stub above; only its address is used (external new PSW).
    fn __harness_secondary_wake();
}

/// Sleeps until an external interruption (an external call) is pending;
/// returns with interruptions disabled again (the wake-up stub).
fn enabled_wait() {
    let mut psw: [u64; 2] = [IDLE_WAIT_MASK, 0];
    // SAFETY: LPSWE of an 8-aligned PSW whose address is label 1 right
    // after it: the CPU waits with only external interruptions enabled;
    // only external calls are unmasked (CR0), and the wake-up stub resumes
    // at label 1 with every register as it was and interruptions off.
    // The asm writes the PSW's address word (our local) and nothing else.
    unsafe {
        core::arch::asm!(
            "larl {t},1f",
            "stg {t},8({p})",
            "lpswe 0({p})",
            "1:",
            t = out(reg) _,
            p = in(reg_addr) psw.as_mut_ptr(),
            options(nostack),
        )
    };
}

/// A secondary CPU after the start stub: the idle loop. Sleeps until its
/// mailbox has a job, runs it on the kernel's address space with a purged
/// TLB, marks it done, sleeps again.
extern "C" fn secondary_main(index: u64) -> ! {
    let index = index as usize;
    if cpu_id() != index {
        crate::fatal(
            format_args!("CPU index {index} runs on CPU address {}", cpu_id()),
            0x5e1,
        );
    }
    IDLING.fetch_add(1, Ordering::AcqRel);
    let mb = &MAILBOXES[index];
    loop {
        if mb
            .state
            .compare_exchange(PENDING, RUNNING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // An external call that comes before the wait stays pending and
            // ends the wait at once: no wake-up is lost.
            enabled_wait();
            continue;
        }
        // Every job starts on the kernel's space with an empty TLB, whatever
        // the previous one left.
        crate::machine::forget_view();
        // SAFETY: the kernel root is complete and always valid; no job runs
        // on this CPU, so nothing refers to the test window.
        unsafe { crate::dat::activate(crate::dat::kernel_root()) };
        let func = mb.func.load(Ordering::Relaxed);
        let arg = mb.arg.load(Ordering::Relaxed);
        // SAFETY: `start_on` stored a `fn(usize)` here (the only writer),
        // and function pointers are address-sized on s390x.
        let f: fn(usize) = unsafe { core::mem::transmute::<usize, fn(usize)>(func) };
        f(arg);
        mb.state.store(DONE, Ordering::Release);
    }
}

/// Writes a doubleword of CPU `cpu`'s prefix area (absolute = real address
/// on CPU 0, which is outside CPU 0's own prefix area).
fn write_prefix(area: u64, offset: u64, value: u64) {
    debug_assert!(offset < PREFIX_SIZE as u64 && offset % 8 == 0);
    // SAFETY: `area` is a prefix area in PREFIX_AREAS (static, 8 KiB),
    // never referenced by Rust; the target CPU is stopped, so nothing reads
    // it concurrently.
    unsafe { ((area + offset) as *mut u64).write_volatile(value) }
}

/// Brings the secondary CPUs up (stopped, ready for [`start_on`]) and
/// returns how many CPUs there are: `smp=N` from the kernel command line
/// (the runner passes it), else as many as `SIGP sense` finds. Idempotent.
///
/// # Errors
/// `smp=N` is malformed, above [`MAX_CPUS`] or names CPUs that do not
/// exist, or a SIGP order is refused.
pub fn init() -> Result<usize, &'static str> {
    if online() > 1 {
        return Ok(online());
    }
    let present = (1..MAX_CPUS).take_while(|&cpu| exists(cpu)).count() + 1;
    let wanted = match crate::cmdline_arg("smp") {
        Some(n) => n
            .parse::<usize>()
            .map_err(|_| "smp=N on the command line is not a number")?,
        None => present,
    };
    if wanted == 0 || wanted > MAX_CPUS {
        return Err("smp=N is 0 or more CPUs than the harness drives (MAX_CPUS)");
    }
    if wanted > present {
        return Err("smp=N names more CPUs than SIGP sense finds");
    }
    let mut cr0 = 0u64;
    // SAFETY: STCTG stores CR0 into our local.
    unsafe {
        core::arch::asm!("stctg %c0,%c0,0({p})", p = in(reg_addr) &mut cr0 as *mut u64, options(nostack))
    };
    let asce = (crate::dat::kernel_root() & !0xfff) | crate::dat::ASCE_REGION_FIRST;
    for cpu in 1..wanted {
        let area = PREFIX_AREAS.addr() + (cpu * PREFIX_SIZE) as u64;
        // The new PSWs as CPU 0's (failing waits, the program-check handler),
        // but restart leads to the start stub.
        for psw in [
            lowcore::SVC_NEW_PSW,
            lowcore::PROGRAM_NEW_PSW,
            lowcore::MCCK_NEW_PSW,
            lowcore::IO_NEW_PSW,
        ] {
            write_prefix(area, psw, lowcore::read_u64(psw));
            write_prefix(area, psw + 8, lowcore::read_u64(psw + 8));
        }
        write_prefix(area, lowcore::EXTERNAL_NEW_PSW, 0x0000_0001_8000_0000);
        write_prefix(
            area,
            lowcore::EXTERNAL_NEW_PSW + 8,
            __harness_secondary_wake as *const () as usize as u64,
        );
        write_prefix(area, lowcore::RESTART_NEW_PSW, 0x0000_0001_8000_0000);
        write_prefix(
            area,
            lowcore::RESTART_NEW_PSW + 8,
            __harness_secondary_entry as *const () as usize as u64,
        );
        write_prefix(area, lowcore::PROBE_FIXUP, 0);
        write_prefix(
            area,
            lowcore::CPU_STACK_TOP,
            STACKS.addr() + ((cpu + 1) * STACK_SIZE) as u64,
        );
        write_prefix(area, lowcore::CPU_INDEX, cpu as u64);
        write_prefix(area, lowcore::CPU_CR0, cr0 | CR0_EXTERNAL_CALL);
        write_prefix(area, lowcore::CPU_ASCE, asce);
        write_prefix(
            area,
            lowcore::FATAL_STACK_TOP,
            FATAL_STACKS.addr() + ((cpu + 1) * FATAL_STACK_SIZE) as u64,
        );
        // Initial reset first: it clears the prefix register.
        if sigp(cpu, order::INITIAL_CPU_RESET, 0).0 != CC_ACCEPTED {
            return Err("SIGP initial CPU reset refused");
        }
        if sigp(cpu, order::SET_PREFIX, area).0 != CC_ACCEPTED {
            return Err("SIGP set prefix refused (CPU not stopped?)");
        }
        // Into the idle loop, while no other CPU runs (see the module docs).
        if sigp(cpu, order::RESTART, 0).0 != CC_ACCEPTED {
            return Err("SIGP restart refused");
        }
    }
    ONLINE.store(wanted, Ordering::Release);
    let start = crate::clock::now_us();
    while IDLING.load(Ordering::Acquire) < wanted - 1 {
        if crate::clock::now_us() - start > 5_000_000 {
            return Err("a secondary CPU did not reach its idle loop within 5 s");
        }
        core::hint::spin_loop();
    }
    Ok(wanted)
}

/// Starts `f(arg)` on secondary CPU `cpu` (idle: its previous job waited
/// for). Returns at once; [`wait`] waits for it.
///
/// # Panics
/// If `cpu` is 0, not brought up, or still busy; or if SIGP external call
/// is refused.
pub fn start_on(cpu: usize, f: fn(usize), arg: usize) {
    assert!(
        cpu != 0 && cpu < online(),
        "start_on: CPU {cpu} is not a secondary CPU that was brought up"
    );
    let mb = &MAILBOXES[cpu];
    assert!(
        mb.state.load(Ordering::Acquire) == IDLE,
        "start_on: CPU {cpu} still has a job"
    );
    mb.func.store(f as usize, Ordering::Relaxed);
    mb.arg.store(arg, Ordering::Relaxed);
    mb.state.store(PENDING, Ordering::Release);
    // cc 1 with "external call pending" is fine: one call wakes it.
    let (cc, status) = sigp(cpu, order::EXTERNAL_CALL, 0);
    assert!(
        cc == CC_ACCEPTED || cc == CC_STATUS_STORED,
        "SIGP external call to CPU {cpu}: cc {cc} status {status:#x}"
    );
}

/// Waits until CPU `cpu`'s job has returned.
///
/// # Panics
/// After `timeout_us` microseconds (a hung job; the panic stops every CPU
/// and names the running case).
pub fn wait(cpu: usize, timeout_us: u64) {
    let mb = &MAILBOXES[cpu];
    let start = crate::clock::now_us();
    while mb.state.load(Ordering::Acquire) != DONE {
        assert!(
            crate::clock::now_us() - start < timeout_us,
            "CPU {cpu} did not finish its job within {} ms",
            timeout_us / 1000
        );
        core::hint::spin_loop();
    }
    mb.state.store(IDLE, Ordering::Release);
}

/// A job run on every CPU by [`on_all_cpus`].
struct Job<'a, C> {
    ctx: &'a C,
    work: fn(&C, usize),
}

fn trampoline<C: Sync>(arg: usize) {
    // SAFETY: 1. `on_all_cpus` passes the address of its `Job<C>` (with
    // exactly this `C`, as it names `trampoline::<C>`); 2. it keeps the job
    // alive until `wait` has seen this CPU return; 3. `C: Sync` allows the
    // shared access from this CPU.
    let job = unsafe { &*(arg as *const Job<'_, C>) };
    (job.work)(job.ctx, cpu_index());
}

/// Runs `work(ctx, cpu)` on every online CPU at once (CPU 0 is the
/// caller) and waits for all of them.
///
/// # Panics
/// If a CPU does not finish within `timeout_us` (a hung job; the panic
/// stops every CPU and names the running case).
pub fn on_all_cpus<C: Sync>(ctx: &C, work: fn(&C, usize), timeout_us: u64) {
    let job = Job { ctx, work };
    for cpu in 1..online() {
        start_on(cpu, trampoline::<C>, &job as *const Job<'_, C> as usize);
    }
    work(ctx, 0);
    for cpu in 1..online() {
        wait(cpu, timeout_us);
    }
}

/// Makes the running CPU the one that ends the run: stops every other CPU
/// (they cannot run on, or end the run themselves, while QEMU waits for
/// the last CPU). If another CPU already claimed it, spins until that CPU
/// stops this one. Claiming again on the same CPU (a panic on the fatal
/// path) returns at once.
pub(crate) fn claim_end() {
    let me = cpu_index();
    match ENDING.compare_exchange(usize::MAX, me, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {}
        Err(owner) if owner == me => return,
        Err(_) => loop {
            core::hint::spin_loop();
        },
    }
    for cpu in (0..online()).filter(|&c| c != me) {
        sigp(cpu, order::STOP, 0);
        while !is_stopped(cpu) {
            core::hint::spin_loop();
        }
    }
}
