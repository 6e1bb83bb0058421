//! The zPCI instructions, one wrapper each: CLP (call logical processor),
//! PCILG / PCISTG (PCI load and store, config space and BARs), MPCIFC and
//! STPCIFC (modify / store PCI function controls), RPCIT (refresh PCI
//! translations), and CHSC (for the store-event-information command that
//! hands out zPCI error events).
//!
//! Owns nothing; each wrapper returns the condition code and, where the
//! machine reports one, the status byte it put into the request register.
//! The assembler knows none of these mnemonics, hence `.insn`.

use core::arch::asm;

/// A condition code, and the status the instruction stored in bits 24..32
/// of its request register (meaningful with condition code 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Condition code: 0 done, 1 error (see `status`), 2 busy, 3 not
    /// operational (bad function handle).
    pub cc: u8,
    /// The status byte.
    pub status: u8,
}

impl Status {
    /// Whether the instruction completed.
    pub const fn ok(self) -> bool {
        self.cc == 0
    }
}

/// The address space a PCI load or store targets: a BAR (0..6) or config
/// space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Memory BAR `n`.
    Bar(u8),
    /// Configuration space (PCI address space 15).
    Config,
}

impl Space {
    const fn number(self) -> u64 {
        match self {
            Space::Bar(n) => n as u64,
            Space::Config => 15,
        }
    }
}

fn request(fh: u32, space: Space, len: u8) -> u64 {
    (u64::from(fh) << 32) | (space.number() << 16) | u64::from(len)
}

/// CLP: runs the command in the request/response block at `block` (one
/// 4 KiB page, request at its start, response right after the request).
/// Returns the condition code.
///
/// # Safety
/// `block` is a 4 KiB-aligned page, identity mapped, that nothing else
/// uses: the machine rewrites it.
pub unsafe fn clp(block: u64) -> u8 {
    let cc: u64;
    // SAFETY: CLP reads and writes only the block the caller hands over;
    // R1 is ignored, R2 holds the block's address.
    unsafe {
        asm!(
            ".insn rrf,0xb9a00000,{ign},{blk},0,2",
            "ipm {cc}",
            "srlg {cc},{cc},28",
            ign = out(reg) _,
            blk = in(reg) block,
            cc = out(reg) cc,
            options(nostack),
        );
    }
    (cc & 3) as u8
}

/// PCILG: loads `len` (1, 2, 4 or 8) bytes at `offset` of `space`. The
/// value is in PCI (little-endian) byte order, right-aligned.
///
/// # Safety
/// Loading from this register of the device has no effect the caller did
/// not plan for (the registers read here have none).
pub unsafe fn pcilg(fh: u32, space: Space, offset: u64, len: u8) -> (u64, Status) {
    let mut req = request(fh, space, len);
    let data: u64;
    let cc: u64;
    // SAFETY: R2/R3 are the even/odd pair PCILG takes (request, offset);
    // R1 (here r4) receives the data. Only device state changes.
    unsafe {
        asm!(
            ".insn rre,0xb9d20000,%r4,%r2",
            "ipm {cc}",
            "srlg {cc},{cc},28",
            inout("r2") req,
            in("r3") offset,
            out("r4") data,
            cc = out(reg) cc,
            options(nostack, nomem),
        );
    }
    (
        data,
        Status {
            cc: (cc & 3) as u8,
            status: (req >> 24) as u8,
        },
    )
}

/// PCISTG: stores `len` (1, 2, 4 or 8) bytes of `data` (PCI byte order,
/// right-aligned) at `offset` of `space`.
///
/// # Safety
/// The store must not make the device touch memory the caller did not set
/// aside for it (its DMA goes through the function's translations).
pub unsafe fn pcistg(fh: u32, space: Space, offset: u64, len: u8, data: u64) -> Status {
    let mut req = request(fh, space, len);
    let cc: u64;
    // SAFETY: as for `pcilg`; R1 (r4) holds the data.
    unsafe {
        asm!(
            ".insn rre,0xb9d00000,%r4,%r2",
            "ipm {cc}",
            "srlg {cc},{cc},28",
            inout("r2") req,
            in("r3") offset,
            in("r4") data,
            cc = out(reg) cc,
            options(nostack, nomem),
        );
    }
    Status {
        cc: (cc & 3) as u8,
        status: (req >> 24) as u8,
    }
}

/// RPCIT: makes the function's translations of `[iova, iova + len)` match
/// its DMA tables: entries now valid are loaded, entries now invalid are
/// dropped from its IOTLB.
///
/// # Safety
/// The DMA tables registered for the function are valid tables (and every
/// valid entry maps memory set aside for the device).
pub unsafe fn rpcit(fh: u32, iova: u64, len: u64) -> Status {
    let mut req = u64::from(fh) << 32;
    let cc: u64;
    // SAFETY: R1 (r4) the function handle (status returned there), R2/R3
    // the even/odd pair address and length. Reads the DMA tables.
    unsafe {
        asm!(
            ".insn rre,0xb9d30000,%r4,%r2",
            "ipm {cc}",
            "srlg {cc},{cc},28",
            inout("r4") req,
            in("r2") iova,
            in("r3") len,
            cc = out(reg) cc,
            options(nostack, readonly),
        );
    }
    Status {
        cc: (cc & 3) as u8,
        status: (req >> 24) as u8,
    }
}

/// MPCIFC: the operation `oc` on the function, with the function
/// information block at `fib` (80 bytes, 8-byte aligned).
///
/// # Safety
/// `fib` is readable, and the operation keeps every DMA of the function
/// inside memory set aside for it (a registered translation table must be
/// valid).
pub unsafe fn mpcifc(fh: u32, oc: u8, fib: u64) -> Status {
    let mut req = (u64::from(fh) << 32) | u64::from(oc);
    let cc: u64;
    // SAFETY: R1 the request (status returned there), the second operand
    // the FIB address; the machine only reads the FIB.
    unsafe {
        asm!(
            ".insn rxy,0xe300000000d0,{req},0({fib})",
            "ipm {cc}",
            "srlg {cc},{cc},28",
            req = inout(reg) req,
            fib = in(reg_addr) fib,
            cc = out(reg) cc,
            options(nostack, readonly),
        );
    }
    Status {
        cc: (cc & 3) as u8,
        status: (req >> 24) as u8,
    }
}

/// STPCIFC: stores the function's controls into the FIB at `fib`.
///
/// # Safety
/// `fib` is 80 writable bytes, 8-byte aligned, nothing else uses.
pub unsafe fn stpcifc(fh: u32, fib: u64) -> Status {
    let mut req = u64::from(fh) << 32;
    let cc: u64;
    // SAFETY: the machine writes the FIB only.
    unsafe {
        asm!(
            ".insn rxy,0xe300000000d4,{req},0({fib})",
            "ipm {cc}",
            "srlg {cc},{cc},28",
            req = inout(reg) req,
            fib = in(reg_addr) fib,
            cc = out(reg) cc,
            options(nostack),
        );
    }
    Status {
        cc: (cc & 3) as u8,
        status: (req >> 24) as u8,
    }
}

/// CHSC: runs the channel-subsystem command in the 4 KiB page at `block`
/// (request at its start, response after it). Returns the condition code.
///
/// # Safety
/// `block` is a 4 KiB-aligned page, identity mapped, that nothing else
/// uses.
pub unsafe fn chsc(block: u64) -> u8 {
    let cc: u64;
    // SAFETY: CHSC reads the request and writes the response in the block.
    unsafe {
        asm!(
            ".insn rre,0xb25f0000,{blk},0",
            "ipm {cc}",
            "srlg {cc},{cc},28",
            blk = in(reg) block,
            cc = out(reg) cc,
            options(nostack),
        );
    }
    (cc & 3) as u8
}
