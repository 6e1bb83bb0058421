//! DAT (dynamic address translation) table entries and the ASCE, as words.
//!
//! Owns the bit layouts only: which bit means what, how a word is built
//! from an origin and flags, and how fields are read back. It executes no
//! instruction and knows nothing of the walker or the notifiers.
//!
//! IBM numbers the bits of a 64-bit word from the most significant one:
//! IBM bit *n* is `1 << (63 - n)` ([`ibm_bit`]). Every flag below is defined
//! through [`ibm_bit`], and its doc line names the IBM bit, so the code can
//! be checked against the *Principles of Operation* directly.
//!
//! Software bits sit where the hardware ignores them (bits 56–63 of a page
//! table entry; the ACC field 48–51 and bits 62–63 of a large segment
//! entry), in the places Linux keeps its own. A valid entry is always
//! readable; `READ` is kept for Linux's layout only.
//!
//! Words are read with `from_bits_retain`: origins and bits not named here
//! are kept, never truncated.

use core::fmt;

use mmu_notifier_core::{Error, PhysAddr};

/// The mask of IBM bit `n` (0 = most significant) of a 64-bit word.
///
/// # Panics
/// At compile time (in const context) if `n > 63`.
pub const fn ibm_bit(n: u32) -> u64 {
    assert!(n < 64, "IBM bit numbers of a doubleword are 0..=63");
    1 << (63 - n)
}

/// The table a region or segment entry belongs to: the value of the
/// two-bit table-type field (TT, IBM bits 60–61) of its entries, and of the
/// designation-type field (DT) of an ASCE that designates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum TableType {
    /// Segment table (TT 0b00): indexes VA bits 33–43 (`va >> 20`).
    Segment = 0,
    /// Region-third table (TT 0b01): VA bits 22–32 (`va >> 31`).
    RegionThird = 1,
    /// Region-second table (TT 0b10): VA bits 11–21 (`va >> 42`).
    RegionSecond = 2,
    /// Region-first table (TT 0b11): VA bits 0–10 (`va >> 53`).
    RegionFirst = 3,
}

impl TableType {
    /// The TT field in place (IBM bits 60–61, i.e. `value << 2`).
    pub const fn field(self) -> u64 {
        (self as u64) << 2
    }

    /// The table type a TT (or DT) field holds (any other bits ignored).
    pub const fn from_word(word: u64) -> TableType {
        match (word >> 2) & 3 {
            0 => TableType::Segment,
            1 => TableType::RegionThird,
            2 => TableType::RegionSecond,
            _ => TableType::RegionFirst,
        }
    }
}

/// A region-table entry (region-first, -second or -third table).
///
/// Valid form: `origin of the next table (4 KiB aligned, IBM bits 0–51) |
/// TF (52–53, table offset, 0 here) | I | TT | TL`. The TT field must match
/// the table the entry sits in, even when the entry is invalid, or the CPU
/// raises a translation-specification exception: so an empty region entry is
/// `INVALID | TT`, never 0 (a zero word would be a *valid* entry of a
/// segment-typed table pointing at address 0).
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RegionTableEntry(u64);

bitflags::bitflags! {
    impl RegionTableEntry: u64 {
        /// Region invalid (IBM bit 58): the entry translates nothing.
        const INVALID = ibm_bit(58);
        /// High bit of the table-type field TT (IBM bit 60).
        const TT_HIGH = ibm_bit(60);
        /// Low bit of the table-type field TT (IBM bit 61).
        const TT_LOW = ibm_bit(61);
        /// High bit of the table-length field TL (IBM bit 62): with `TL_LOW`,
        /// TL = 3, the next table is all four 4 KiB quarters (2048 entries).
        const TL_HIGH = ibm_bit(62);
        /// Low bit of the table-length field TL (IBM bit 63).
        const TL_LOW = ibm_bit(63);
    }
}

impl RegionTableEntry {
    /// Origin bits of the next-lower table (IBM bits 0–51).
    pub const ORIGIN_MASK: u64 = !0xfff;
    /// TL = 3: the next-lower table has all 2048 entries.
    pub const TL_FULL: u64 = 0x3;

    /// The empty entry of a table of type `tt`.
    pub const fn invalid(tt: TableType) -> Self {
        Self(Self::INVALID.bits() | tt.field())
    }

    /// A valid entry of a table of type `tt` pointing to a full-length
    /// next-lower table at `next` (its low 12 bits are dropped).
    pub const fn table(tt: TableType, next: PhysAddr) -> Self {
        Self((next.0 & Self::ORIGIN_MASK) | tt.field() | Self::TL_FULL)
    }

    /// The raw word.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Reads a raw word, keeping every bit.
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The origin of the next-lower table.
    pub const fn origin(self) -> PhysAddr {
        PhysAddr(self.0 & Self::ORIGIN_MASK)
    }

    /// The table type the TT field claims.
    pub const fn table_type(self) -> TableType {
        TableType::from_word(self.0)
    }

    /// The table-length field TL (0–3: the next table has `TL + 1` quarters).
    pub const fn table_length(self) -> u8 {
        (self.0 & 3) as u8
    }

    /// Whether the invalid bit is set.
    pub const fn is_invalid(self) -> bool {
        self.0 & Self::INVALID.bits() != 0
    }
}

/// A segment-table entry.
///
/// With `LARGE` (FC) clear it points to a page table: `origin (2 KiB
/// aligned, IBM bits 0–52) | P | I | CS | TT = 00`. With `LARGE` set (needs
/// EDAT-1) it maps a 1 MiB segment frame: `frame (IBM bits 0–43) | ACC
/// (48–51) | FC | P | IEP | I | TT = 00`; this crate never sets the ACCF
/// validity bit (47), so the hardware ignores ACC and F and the software
/// bits below live there, as in Linux.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SegmentTableEntry(u64);

bitflags::bitflags! {
    impl SegmentTableEntry: u64 {
        /// Software, large only: the leaf allows user access (IBM bit 48).
        /// s390 separates user and kernel by address space, not by entry;
        /// kept so the portable permission round-trips.
        const SW_USER = ibm_bit(48);
        /// Software, large only: the leaf allows execution (IBM bit 49);
        /// see [`PageTableEntry::SW_EXEC`].
        const SW_EXEC = ibm_bit(49);
        /// Software, large only: dirty (IBM bit 50, Linux's
        /// `_SEGMENT_ENTRY_DIRTY`).
        const DIRTY = ibm_bit(50);
        /// Software, large only: young (IBM bit 51, Linux's
        /// `_SEGMENT_ENTRY_YOUNG`).
        const YOUNG = ibm_bit(51);
        /// Format control FC (IBM bit 53): the entry maps a 1 MiB frame
        /// itself (EDAT-1) instead of pointing to a page table.
        const LARGE = ibm_bit(53);
        /// Segment protection (IBM bit 54): stores through it are refused.
        const PROTECT = ibm_bit(54);
        /// Instruction-execution protection (IBM bit 55), large only and
        /// only with facility 130; never set by this crate.
        const NOEXEC = ibm_bit(55);
        /// Segment invalid (IBM bit 58).
        const INVALID = ibm_bit(58);
        /// Software, large only: copy-on-write (IBM bit 56, ignored by the
        /// CPU in a large entry): the frame is shared with another address
        /// space and must be copied before it is written.
        const SW_COW = ibm_bit(56);
        /// Software, large only: writable (IBM bit 62, Linux's
        /// `_SEGMENT_ENTRY_WRITE`); mirrors `!PROTECT`.
        const WRITE = ibm_bit(62);
        /// Software, large only: readable (IBM bit 63, Linux's
        /// `_SEGMENT_ENTRY_READ`).
        const READ = ibm_bit(63);
    }
}

impl SegmentTableEntry {
    /// Page-table origin bits (IBM bits 0–52) of a non-large entry.
    pub const ORIGIN_MASK: u64 = !0x7ff;
    /// Segment-frame bits (IBM bits 0–43) of a large entry.
    pub const FRAME_MASK: u64 = !0xf_ffff;
    /// The table-type field (IBM bits 60–61): must be 00 in a segment table.
    pub const TT_MASK: u64 = 0xc;
    /// The empty entry.
    pub const EMPTY: Self = Self(Self::INVALID.bits());

    /// A valid entry pointing to the page table at `pt` (low 11 bits
    /// dropped).
    pub const fn table(pt: PhysAddr) -> Self {
        Self(pt.0 & Self::ORIGIN_MASK)
    }

    /// The raw word.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Reads a raw word, keeping every bit.
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The page-table origin (meaningful when not large).
    pub const fn origin(self) -> PhysAddr {
        PhysAddr(self.0 & Self::ORIGIN_MASK)
    }

    /// The 1 MiB frame (meaningful when large).
    pub const fn frame(self) -> PhysAddr {
        PhysAddr(self.0 & Self::FRAME_MASK)
    }

    /// Whether the invalid bit is set.
    pub const fn is_invalid(self) -> bool {
        self.0 & Self::INVALID.bits() != 0
    }

    /// Whether it maps a 1 MiB frame (FC = 1).
    pub const fn is_large(self) -> bool {
        self.0 & Self::LARGE.bits() != 0
    }
}

/// A page-table entry (256 per 2 KiB page table).
///
/// Hardware: `frame (IBM bits 0–51) | 0 (52) | I (53) | P (54) | IEP (55)`;
/// bits 56–63 are ignored by the CPU and hold Linux-style software bits.
/// There is **no** hardware referenced or changed bit in a PTE: s390 keeps
/// them per frame, in the storage key.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PageTableEntry(u64);

bitflags::bitflags! {
    impl PageTableEntry: u64 {
        /// Page invalid (IBM bit 53): the entry translates nothing. IPTE
        /// sets it (and purges every TLB) on a live entry.
        const INVALID = ibm_bit(53);
        /// Page protection (IBM bit 54): stores through it are refused.
        const PROTECT = ibm_bit(54);
        /// Instruction-execution protection (IBM bit 55). Only with facility
        /// 130 (and CR0 bit 20); without it the bit must be zero or the CPU
        /// raises a translation-specification exception. Never set by this
        /// crate (see [`PageTableEntry::SW_EXEC`]); a word carrying it decodes
        /// as not executable.
        const NOEXEC = ibm_bit(55);
        /// Software: user access allowed (IBM bit 56). s390 separates user
        /// and kernel by address space, not per entry; kept so the portable
        /// permission round-trips.
        const SW_USER = ibm_bit(56);
        /// Software: execution allowed (IBM bit 57). Hardware without
        /// facility 130 executes from any valid page; the permission is
        /// recorded so it round-trips and secondary MMUs can enforce it.
        const SW_EXEC = ibm_bit(57);
        /// Software: writable (IBM bit 58, Linux's `_PAGE_WRITE`); mirrors
        /// `!PROTECT`, since dirty state comes from the storage key.
        const WRITE = ibm_bit(58);
        /// Software: readable (IBM bit 59, Linux's `_PAGE_READ`); set in
        /// every leaf.
        const READ = ibm_bit(59);
        /// Software: dirty (IBM bit 60, Linux's `_PAGE_DIRTY`). On s390x
        /// hardware set only in the *old* word a clear returns, from the
        /// frame's storage-key change bit.
        const DIRTY = ibm_bit(60);
        /// Software: young (IBM bit 61, Linux's `_PAGE_YOUNG`). On s390x
        /// hardware set only in the *old* word a clear returns (storage-key
        /// reference bit); on the host it is the accessed state itself.
        const YOUNG = ibm_bit(61);
        /// Software: copy-on-write (IBM bit 62): the frame is shared with
        /// another address space and must be copied before it is written.
        const SW_COW = ibm_bit(62);
        /// Software: present (IBM bit 63, Linux's `_PAGE_PRESENT`); set in
        /// every leaf this crate encodes.
        const PRESENT = ibm_bit(63);
    }
}

impl PageTableEntry {
    /// Page-frame bits (IBM bits 0–51).
    pub const FRAME_MASK: u64 = !0xfff;
    /// IBM bit 52: must be zero in a PTE (translation-specification
    /// exception otherwise; Linux uses it only in the PTE view of a huge
    /// segment entry).
    pub const RESERVED_52: u64 = ibm_bit(52);
    /// The empty entry: invalid, nothing else.
    pub const EMPTY: Self = Self(Self::INVALID.bits());

    /// The raw word.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Reads a raw word, keeping every bit.
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The 4 KiB frame.
    pub const fn frame(self) -> PhysAddr {
        PhysAddr(self.0 & Self::FRAME_MASK)
    }

    /// Whether the invalid bit is set.
    pub const fn is_invalid(self) -> bool {
        self.0 & Self::INVALID.bits() != 0
    }
}

macro_rules! debug_entry {
    ($t:ident, $addr:ident) => {
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    concat!(stringify!($t), "({:#018x}: {:?} ["),
                    self.0,
                    self.$addr()
                )?;
                bitflags::parser::to_writer(&Self::from_bits_truncate(self.0), &mut *f)?;
                f.write_str("])")
            }
        }
    };
}
debug_entry!(RegionTableEntry, origin);
debug_entry!(SegmentTableEntry, origin);
debug_entry!(PageTableEntry, frame);

/// An address-space-control element: what CR1 (primary space) holds to
/// designate a translation-table tree.
///
/// `origin of the top table (4 KiB aligned, IBM bits 0–51) | G (54) | P (55)
/// | S (56) | X (57) | R (58) | DT (60–61) | TL (62–63)`. This crate builds
/// only the form its trees need: a region-first table of full length,
/// every control bit clear.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Asce(u64);

impl Asce {
    /// Table-origin bits (IBM bits 0–51).
    pub const ORIGIN_MASK: u64 = !0xfff;
    /// DT = region-first (0b11 in IBM bits 60–61).
    pub const DT_REGION_FIRST: u64 = TableType::RegionFirst.field();
    /// TL = 3: the region-first table has all 2048 entries.
    pub const TL_FULL: u64 = 0x3;

    /// The ASCE of the region-first table at `root` (the
    /// [`mmu_notifier_core::AddressSpace::root`] of an [`crate::S390x`]
    /// tree), to load into CR1 with LCTLG.
    ///
    /// # Errors
    /// [`Error::Unaligned`] if `root` is not 4 KiB aligned (the low bits of
    /// an ASCE are control fields, not address).
    pub const fn region_first(root: PhysAddr) -> Result<Self, Error> {
        if root.0 & !Self::ORIGIN_MASK != 0 {
            return Err(Error::Unaligned {
                addr: root.0,
                align: 4096,
            });
        }
        Ok(Self(root.0 | Self::DT_REGION_FIRST | Self::TL_FULL))
    }

    /// The word for CR1.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// The origin of the designated table.
    pub const fn origin(self) -> PhysAddr {
        PhysAddr(self.0 & Self::ORIGIN_MASK)
    }

    /// The designation type.
    pub const fn designation_type(self) -> TableType {
        TableType::from_word(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ibm_bit_numbers_from_the_most_significant_bit() {
        assert_eq!(ibm_bit(0), 0x8000_0000_0000_0000, "IBM bit 0 is the MSB");
        assert_eq!(ibm_bit(63), 1, "IBM bit 63 is the LSB");
        assert_eq!(ibm_bit(52), 0x800);
    }

    #[test]
    fn page_table_entry_hardware_bits_sit_at_their_ibm_numbers() {
        assert_eq!(
            PageTableEntry::INVALID.bits(),
            0x400,
            "PTE invalid is IBM bit 53"
        );
        assert_eq!(
            PageTableEntry::PROTECT.bits(),
            0x200,
            "PTE protect is IBM bit 54"
        );
        assert_eq!(
            PageTableEntry::NOEXEC.bits(),
            0x100,
            "PTE IEP is IBM bit 55"
        );
        assert_eq!(
            PageTableEntry::RESERVED_52,
            0x800,
            "PTE bit 52 must stay zero"
        );
        assert_eq!(
            PageTableEntry::FRAME_MASK,
            0xffff_ffff_ffff_f000,
            "frame is IBM bits 0-51"
        );
    }

    #[test]
    fn page_table_entry_software_bits_match_linux_and_stay_in_ignored_bits() {
        assert_eq!(PageTableEntry::PRESENT.bits(), 0x001);
        assert_eq!(PageTableEntry::YOUNG.bits(), 0x004);
        assert_eq!(PageTableEntry::DIRTY.bits(), 0x008);
        assert_eq!(PageTableEntry::READ.bits(), 0x010);
        assert_eq!(PageTableEntry::WRITE.bits(), 0x020);
        assert_eq!(PageTableEntry::SW_EXEC.bits(), 0x040);
        assert_eq!(PageTableEntry::SW_USER.bits(), 0x080);
        let software = PageTableEntry::PRESENT
            | PageTableEntry::YOUNG
            | PageTableEntry::DIRTY
            | PageTableEntry::READ
            | PageTableEntry::WRITE
            | PageTableEntry::SW_EXEC
            | PageTableEntry::SW_USER;
        assert_eq!(
            software.bits() & !0xff,
            0,
            "software bits must lie in IBM bits 56-63, which DAT ignores"
        );
    }

    #[test]
    fn segment_table_entry_bits_sit_at_their_ibm_numbers() {
        assert_eq!(
            SegmentTableEntry::INVALID.bits(),
            0x20,
            "segment invalid is IBM bit 58"
        );
        assert_eq!(
            SegmentTableEntry::PROTECT.bits(),
            0x200,
            "segment protect is IBM bit 54"
        );
        assert_eq!(SegmentTableEntry::LARGE.bits(), 0x400, "FC is IBM bit 53");
        assert_eq!(SegmentTableEntry::NOEXEC.bits(), 0x100);
        assert_eq!(SegmentTableEntry::YOUNG.bits(), 0x1000);
        assert_eq!(SegmentTableEntry::DIRTY.bits(), 0x2000);
        assert_eq!(SegmentTableEntry::READ.bits(), 0x1);
        assert_eq!(SegmentTableEntry::WRITE.bits(), 0x2);
        let sw = SegmentTableEntry::SW_USER
            | SegmentTableEntry::SW_EXEC
            | SegmentTableEntry::DIRTY
            | SegmentTableEntry::YOUNG;
        assert_eq!(
            sw.bits() & !0xf000,
            0,
            "large software bits live in the ACC field, IBM bits 48-51"
        );
        assert_eq!(
            SegmentTableEntry::FRAME_MASK & 0xf_ffff,
            0,
            "a large frame is 1 MiB aligned"
        );
        assert_eq!(SegmentTableEntry::EMPTY.raw(), 0x20);
    }

    #[test]
    fn region_entries_carry_their_table_type_even_when_invalid() {
        assert_eq!(
            RegionTableEntry::INVALID.bits(),
            0x20,
            "region invalid is IBM bit 58"
        );
        assert_eq!(
            (RegionTableEntry::TT_HIGH | RegionTableEntry::TT_LOW).bits(),
            0xc,
            "TT is IBM bits 60-61"
        );
        assert_eq!(
            (RegionTableEntry::TL_HIGH | RegionTableEntry::TL_LOW).bits(),
            0x3,
            "TL is IBM bits 62-63"
        );
        assert_eq!(
            RegionTableEntry::invalid(TableType::RegionFirst).raw(),
            0x2c
        );
        assert_eq!(
            RegionTableEntry::invalid(TableType::RegionSecond).raw(),
            0x28
        );
        assert_eq!(
            RegionTableEntry::invalid(TableType::RegionThird).raw(),
            0x24
        );
        let e = RegionTableEntry::table(TableType::RegionSecond, PhysAddr(0x1234_5000));
        assert_eq!(e.raw(), 0x1234_5000 | 0x8 | 0x3);
        assert_eq!(e.origin(), PhysAddr(0x1234_5000));
        assert_eq!(e.table_type(), TableType::RegionSecond);
        assert_eq!(e.table_length(), 3);
        assert!(!e.is_invalid());
    }

    #[test]
    fn asce_for_a_region_first_root() {
        let asce = Asce::region_first(PhysAddr(0x8_0000)).unwrap();
        assert_eq!(
            asce.bits(),
            0x8_0000 | 0x0c | 0x3,
            "origin | DT=region-first | TL=3"
        );
        assert_eq!(asce.designation_type(), TableType::RegionFirst);
        assert_eq!(asce.origin(), PhysAddr(0x8_0000));
        assert_eq!(
            Asce::region_first(PhysAddr(0x8_0800)),
            Err(Error::Unaligned {
                addr: 0x8_0800,
                align: 4096
            }),
            "an ASCE origin must be 4 KiB aligned"
        );
    }

    #[test]
    fn debug_shows_the_word_the_address_and_the_flags() {
        extern crate std;
        let s = std::format!("{:?}", PageTableEntry::from_raw(0x5000 | 0x400 | 0x1));
        assert!(
            s.contains("0x0000000000005401") && s.contains("INVALID") && s.contains("PRESENT"),
            "{s}"
        );
    }
}
