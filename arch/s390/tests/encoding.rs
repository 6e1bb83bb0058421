//! The s390x DAT formats as the hardware reads them: geometry, every
//! entry encoding bit by bit, and what decodes as invalid.

mod common;
use common::*;

#[test]
fn levels_are_region_first_to_page_table_with_s390_shifts() {
    let shape: Vec<_> = S390x::LEVELS
        .iter()
        .map(|l| (l.shift, l.index_bits, l.table_bytes, l.leaf))
        .collect();
    assert_eq!(
        shape,
        [(53, 11, 16384, false), (42, 11, 16384, false), (31, 11, 16384, false), (20, 11, 16384, true), (12, 8, 2048, true)],
        "region-first/second/third and segment tables are 2048 x 8 B; page tables 256 x 8 B; segments may be 1 MiB leaves"
    );
    assert_eq!(S390x::PAGE_SIZE, 4096);
    let top: u32 = S390x::LEVELS.iter().map(|l| l.index_bits).sum::<u32>() + 12;
    assert_eq!(
        top, 64,
        "a region-first root translates all 64 address bits"
    );
}

#[test]
fn every_address_is_translatable_there_is_no_canonical_form() {
    for va in [0, 0x0000_8000_0000_0000, 0x8000_0000_0000_0000, u64::MAX] {
        assert_eq!(
            S390x::check_addr(VirtAddr(va)),
            Ok(()),
            "{va:#x} must be accepted"
        );
    }
}

#[test]
fn empty_entries_are_the_invalid_pattern_of_their_table_never_zero() {
    assert_eq!(
        S390x::invalid_entry(Level::new(0)),
        0x2c,
        "region-first: I | TT=11"
    );
    assert_eq!(
        S390x::invalid_entry(Level::new(1)),
        0x28,
        "region-second: I | TT=10"
    );
    assert_eq!(
        S390x::invalid_entry(Level::new(2)),
        0x24,
        "region-third: I | TT=01"
    );
    assert_eq!(
        S390x::invalid_entry(Level::new(3)),
        0x20,
        "segment: I | TT=00"
    );
    assert_eq!(
        S390x::invalid_entry(Level::new(4)),
        0x400,
        "page: I (IBM bit 53)"
    );
    for l in (0..S390x::LEVELS.len()).map(Level::<S390x>::new) {
        assert_eq!(S390x::decode(l, S390x::invalid_entry(l)), Entry::Invalid);
    }
}

// ---------------------------------------------------------------- encodings

#[test]
fn pte_encoding_bit_by_bit() {
    let f = PhysAddr(0x1234_5000);
    assert_eq!(
        S390x::encode_leaf(PAGE, f, Prot::READ),
        0x1234_5000 | 0x200 | 0x010 | 0x001,
        "frame | PROTECT | READ | PRESENT"
    );
    assert_eq!(
        S390x::encode_leaf(PAGE, f, Prot::READ | Prot::WRITE),
        0x1234_5000 | 0x020 | 0x010 | 0x001,
        "writable: WRITE, no PROTECT"
    );
    assert_eq!(
        S390x::encode_leaf(PAGE, f, Prot::READ | Prot::EXEC) & 0x140,
        0x040,
        "EXEC is the software bit 57, never IEP bit 55"
    );
    assert_eq!(
        S390x::encode_leaf(PAGE, f, Prot::READ | Prot::USER) & 0x080,
        0x080,
        "USER is software bit 56"
    );
    for prot in [Prot::READ, Prot::WRITE | Prot::EXEC | Prot::USER] {
        let raw = S390x::encode_leaf(PAGE, f, prot);
        assert_eq!(raw & 0xc00, 0, "a valid PTE has I (53) and bit 52 clear");
        assert_eq!(
            raw & Pte::NOEXEC.bits(),
            0,
            "no IEP facility assumed: bit 55 stays zero"
        );
    }
}

#[test]
fn large_segment_encoding_bit_by_bit() {
    let f = PhysAddr(0x4030_0000);
    assert_eq!(
        S390x::encode_leaf(SEGMENT, f, Prot::READ),
        0x4030_0000 | 0x400 | 0x200 | 0x1,
        "frame | FC | PROTECT | READ"
    );
    assert_eq!(
        S390x::encode_leaf(SEGMENT, f, Prot::READ | Prot::WRITE),
        0x4030_0000 | 0x400 | 0x2 | 0x1,
        "frame | FC | WRITE | READ"
    );
    let raw = S390x::encode_leaf(SEGMENT, f, Prot::WRITE | Prot::EXEC | Prot::USER);
    assert_eq!(raw & 0xc, 0, "TT of a segment entry is 00");
    assert_eq!(raw & 0x20, 0, "valid");
    assert_eq!(
        raw & 0x1_0000,
        0,
        "ACCF-validity (bit 47) stays clear so the ACC software bits are ignored"
    );
}

#[test]
fn table_entries_bit_by_bit() {
    let t = PhysAddr(0x7654_4000);
    assert_eq!(
        S390x::encode_table(Level::new(0), t),
        0x7654_4000 | 0xc | 0x3,
        "region-first: origin | TT=11 | TL=3"
    );
    assert_eq!(
        S390x::encode_table(Level::new(1), t),
        0x7654_4000 | 0x8 | 0x3,
        "region-second: TT=10"
    );
    assert_eq!(
        S390x::encode_table(Level::new(2), t),
        0x7654_4000 | 0x4 | 0x3,
        "region-third: TT=01"
    );
    assert_eq!(
        S390x::encode_table(Level::new(3), PhysAddr(0x7654_4800)),
        0x7654_4800,
        "segment: 2 KiB page-table origin, TT=00"
    );
}

#[test]
fn words_the_cpu_would_reject_decode_as_invalid() {
    let table = 0x10_0000;
    assert_eq!(
        S390x::decode(Level::new(0), table | 0x8 | 0x3),
        Entry::Invalid,
        "region-second TT in a region-first table"
    );
    assert_eq!(
        S390x::decode(Level::new(3), table | 0x4),
        Entry::Invalid,
        "region TT in a segment table"
    );
    assert_eq!(
        S390x::decode(PAGE, 0x5000 | 0x800 | 0x1),
        Entry::Invalid,
        "PTE bit 52 set"
    );
    assert_eq!(
        S390x::decode(PAGE, 0x5000 | 0x400 | 0x31),
        Entry::Invalid,
        "hardware-invalid PTE"
    );
    assert_eq!(
        S390x::decode(Level::new(3), 0x10_0000 | 0x400 | 0x20),
        Entry::Invalid,
        "invalid large segment"
    );
}

#[test]
fn decode_reports_software_young_and_dirty_and_hardware_write_protection() {
    let raw = 0x9000 | 0x001 | 0x010 | 0x020 | 0x004 | 0x008;
    assert_eq!(
        S390x::decode(PAGE, raw),
        Entry::Leaf(Leaf {
            frame: PhysAddr(0x9000),
            prot: Prot::READ | Prot::WRITE,
            young: true,
            dirty: true,
            cow: false,
        })
    );
    let protected = raw | Pte::PROTECT.bits();
    let Entry::Leaf(leaf) = S390x::decode(PAGE, protected) else {
        panic!()
    };
    assert!(
        !leaf.prot.writable(),
        "PROTECT (the bit the CPU enforces) wins over the software WRITE bit"
    );
    let iep = 0x9000 | 0x001 | 0x040 | 0x100;
    let Entry::Leaf(leaf) = S390x::decode(PAGE, iep) else {
        panic!()
    };
    assert!(
        !leaf.prot.contains(Prot::EXEC),
        "an IEP-protected word is not executable"
    );
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn pte_round_trips(frame in 0u64..(1 << 52), prot in prot_strategy()) {
        let frame = PhysAddr(frame << 12);
        let raw = S390x::encode_leaf(PAGE, frame, prot);
        prop_assert_eq!(S390x::decode(PAGE, raw), Entry::Leaf(Leaf { frame, prot, young: false, dirty: false, cow: false }));
    }

    #[test]
    fn large_segment_round_trips(frame in 0u64..(1 << 44), prot in prot_strategy()) {
        let frame = PhysAddr(frame << 20);
        let raw = S390x::encode_leaf(SEGMENT, frame, prot);
        prop_assert_eq!(S390x::decode(SEGMENT, raw), Entry::Leaf(Leaf { frame, prot, young: false, dirty: false, cow: false }));
    }

    #[test]
    fn table_pointers_round_trip(level in (0usize..4).prop_map(Level::<S390x>::new), table in 0u64..(1 << 52)) {
        let table = if level == SEGMENT { PhysAddr((table << 11) & !0x7ff) } else { PhysAddr(table << 12) };
        prop_assert_eq!(S390x::decode(level, S390x::encode_table(level, table)), Entry::Table(table));
    }

    #[test]
    fn leaf_with_prot_keeps_frame_and_young_dirty(
        level in (3usize..5).prop_map(Level::<S390x>::new), frame in 0u64..(1 << 44), from in prot_strategy(), to in prot_strategy(),
        young in any::<bool>(), dirty in any::<bool>(),
    ) {
        let frame = PhysAddr(frame << 20);
        let (y, d) = if level == PAGE { (Pte::YOUNG.bits(), Pte::DIRTY.bits()) } else { (Ste::YOUNG.bits(), Ste::DIRTY.bits()) };
        let raw = S390x::encode_leaf(level, frame, from) | if young { y } else { 0 } | if dirty { d } else { 0 };
        let new = S390x::leaf_with_prot(level, raw, to);
        prop_assert_eq!(S390x::decode(level, new), Entry::Leaf(Leaf { frame, prot: to, young, dirty, cow: false }));
    }
}
