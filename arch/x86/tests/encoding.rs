//! The x86-64 entry format, bit by bit: flags, leaf and table encodings,
//! decode/encode round trips, and which addresses are translatable.

use mmu_notifier_core::{Arch, Entry, Error, Leaf, Level, PhysAddr, Prot, VirtAddr};
use mmu_notifier_x86::{PteFlags, ADDR_MASK, X86_64};
use proptest::prelude::*;

const PT: Level<X86_64> = X86_64::PT;
const PD: Level<X86_64> = X86_64::PD;
const PDPT: Level<X86_64> = X86_64::PDPT;
const PML4: Level<X86_64> = X86_64::PML4;

const RW: Prot = Prot::WRITE;
const RWXU: Prot = Prot::WRITE.union(Prot::EXEC).union(Prot::USER);

fn flags(raw: u64) -> PteFlags {
    PteFlags::from_bits_retain(raw)
}

// ---- flag positions -------------------------------------------------------

#[test]
fn every_flag_sits_at_its_architectural_bit() {
    let expected = [
        (PteFlags::PRESENT, 0, "PRESENT"),
        (PteFlags::WRITABLE, 1, "WRITABLE"),
        (PteFlags::USER, 2, "USER"),
        (PteFlags::WRITE_THROUGH, 3, "WRITE_THROUGH"),
        (PteFlags::CACHE_DISABLE, 4, "CACHE_DISABLE"),
        (PteFlags::ACCESSED, 5, "ACCESSED"),
        (PteFlags::DIRTY, 6, "DIRTY"),
        (PteFlags::HUGE_PAGE, 7, "HUGE_PAGE"),
        (PteFlags::GLOBAL, 8, "GLOBAL"),
        (PteFlags::SOFTWARE_9, 9, "SOFTWARE_9"),
        (PteFlags::SOFTWARE_10, 10, "SOFTWARE_10"),
        (PteFlags::SOFTWARE_11, 11, "SOFTWARE_11"),
        (PteFlags::NO_EXECUTE, 63, "NO_EXECUTE"),
    ];
    for (flag, bit, name) in expected {
        assert_eq!(flag.bits(), 1u64 << bit, "{name} must be bit {bit}");
        assert_eq!(
            PteFlags::from_name(name),
            Some(flag),
            "{name} must be named so"
        );
    }
    assert_eq!(
        PteFlags::all().iter().count(),
        expected.len(),
        "no flag beyond the architectural ones"
    );
}

#[test]
fn flags_are_single_bits_and_disjoint_from_the_address_field() {
    for (name, f) in PteFlags::all().iter_names() {
        assert_eq!(f.bits().count_ones(), 1, "{name} must be exactly one bit");
        assert_eq!(
            f.bits() & ADDR_MASK,
            0,
            "{name} must not overlap the address field"
        );
    }
}

#[test]
fn address_mask_is_bits_12_to_51() {
    assert_eq!(ADDR_MASK, ((1u64 << 52) - 1) & !((1u64 << 12) - 1));
    assert_eq!(ADDR_MASK.trailing_zeros(), 12);
    assert_eq!(64 - ADDR_MASK.leading_zeros(), 52);
    assert_eq!(ADDR_MASK.count_ones(), 40);
}

#[test]
fn from_bits_retain_keeps_unknown_bits_and_the_address() {
    // Protection key 0b1010 in bits 59..=62, software bit 52, address, flags.
    let raw = (0b1010u64 << 59) | (1 << 52) | 0x1234_5000 | 0x63;
    let f = flags(raw);
    assert_eq!(f.bits(), raw, "reading a hardware word must keep every bit");
    assert_eq!(f.addr_bits(), 0x1234_5000);
    assert!(
        f.contains(PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::ACCESSED | PteFlags::DIRTY)
    );
    assert!(!f.contains(PteFlags::USER));
}

#[test]
fn debug_lists_flag_names() {
    let s = format!("{:?}", PteFlags::PRESENT | PteFlags::NO_EXECUTE);
    assert!(s.contains("PRESENT") && s.contains("NO_EXECUTE"), "{s}");
    assert_eq!(format!("{:?}", PteFlags::empty()), "PteFlags(0x0)");
    let s = format!("{:?}", flags(0x1000 | 1));
    assert!(
        s.contains("PRESENT") && s.contains("0x1000"),
        "unknown bits shown in hex: {s}"
    );
}

// ---- geometry --------------------------------------------------------------

#[test]
fn four_levels_of_512_entry_4k_tables() {
    let shifts: Vec<u32> = X86_64::LEVELS.iter().map(|l| l.shift).collect();
    assert_eq!(shifts, [39, 30, 21, 12]);
    for l in X86_64::LEVELS {
        assert_eq!(l.index_bits, 9);
        assert_eq!(l.table_bytes, 4096);
    }
    let leaf: Vec<bool> = X86_64::LEVELS.iter().map(|l| l.leaf).collect();
    assert_eq!(
        leaf,
        [false, false, true, true],
        "2 MiB leaves at the PD, no 1 GiB leaves"
    );
    assert_eq!(X86_64::PAGE_SIZE, 4096);
    assert_eq!(PD.entry_span(), X86_64::HUGE_PAGE_SIZE);
    assert_eq!(X86_64::HUGE_PAGE_SIZE, 2 << 20);
}

#[test]
fn level_index_takes_nine_bits_per_level() {
    let va = VirtAddr((0x0a5 << 39) | (0x0f3 << 30) | (0x111 << 21) | (0x1ff << 12) | 0xabc);
    let idx: Vec<usize> = X86_64::LEVELS.iter().map(|l| l.index(va)).collect();
    assert_eq!(idx, [0x0a5, 0x0f3, 0x111, 0x1ff]);
}

#[test]
fn invalid_entry_is_zero_at_every_level() {
    for level in (0..4).map(Level::<X86_64>::new) {
        assert_eq!(X86_64::invalid_entry(level), 0);
        assert_eq!(X86_64::decode(level, 0), Entry::Invalid);
    }
}

// ---- leaf encodings --------------------------------------------------------

#[test]
fn base_leaf_read_only_kernel_no_exec() {
    let raw = X86_64::encode_leaf(PT, PhysAddr(0x1234_5000), Prot::READ);
    assert_eq!(raw, 0x8000_0000_1234_5001, "P and NX only, plus the frame");
}

#[test]
fn leaf_writable_iff_prot_write() {
    for prot in [Prot::READ, Prot::EXEC, Prot::USER] {
        let f = flags(X86_64::encode_leaf(PT, PhysAddr(0x1000), prot));
        assert!(
            !f.contains(PteFlags::WRITABLE),
            "{prot:?} must not be writable"
        );
        let f = flags(X86_64::encode_leaf(
            PT,
            PhysAddr(0x1000),
            prot | Prot::WRITE,
        ));
        assert!(
            f.contains(PteFlags::WRITABLE),
            "{prot:?}+w must be writable"
        );
    }
}

#[test]
fn leaf_user_iff_prot_user() {
    assert!(!flags(X86_64::encode_leaf(PT, PhysAddr(0x1000), RW)).contains(PteFlags::USER));
    assert!(
        flags(X86_64::encode_leaf(PT, PhysAddr(0x1000), RW | Prot::USER)).contains(PteFlags::USER)
    );
}

#[test]
fn leaf_no_execute_unless_prot_exec() {
    assert!(flags(X86_64::encode_leaf(PT, PhysAddr(0x1000), RW)).contains(PteFlags::NO_EXECUTE));
    assert!(
        !flags(X86_64::encode_leaf(PT, PhysAddr(0x1000), RW | Prot::EXEC))
            .contains(PteFlags::NO_EXECUTE)
    );
}

#[test]
fn new_leaf_is_present_old_clean_cached_and_not_global() {
    for level in [PT, PD] {
        let f = flags(X86_64::encode_leaf(level, PhysAddr(0), RWXU));
        assert!(f.contains(PteFlags::PRESENT));
        for bit in [
            PteFlags::ACCESSED,
            PteFlags::DIRTY,
            PteFlags::GLOBAL,
            PteFlags::WRITE_THROUGH,
            PteFlags::CACHE_DISABLE,
            PteFlags::SOFTWARE_9,
            PteFlags::SOFTWARE_10,
            PteFlags::SOFTWARE_11,
        ] {
            assert!(
                !f.contains(bit),
                "a new leaf at level {level:?} must not have {bit:?}"
            );
        }
    }
}

#[test]
fn base_leaf_never_sets_bit_7_which_is_pat_there() {
    let f = flags(X86_64::encode_leaf(PT, PhysAddr(0x1000), RWXU));
    assert!(
        !f.contains(PteFlags::HUGE_PAGE),
        "bit 7 of a 4 KiB leaf is PAT, not PS"
    );
}

#[test]
fn pd_leaf_sets_page_size() {
    let raw = X86_64::encode_leaf(PD, PhysAddr(0x4020_0000), RWXU);
    assert_eq!(raw, 0x4020_0000 | 0x87, "P|W|U|PS, executable, 2 MiB frame");
}

#[test]
fn leaf_frame_goes_into_the_address_field_unchanged() {
    let frame = PhysAddr(0x000f_ffff_ffff_f000);
    assert_eq!(X86_64::encode_leaf(PT, frame, RW) & ADDR_MASK, frame.0);
    let frame = PhysAddr(0x000f_ffff_ffe0_0000);
    assert_eq!(X86_64::encode_leaf(PD, frame, RW) & ADDR_MASK, frame.0);
}

// ---- table encodings -------------------------------------------------------

#[test]
fn table_entry_is_present_writable_user_and_the_address() {
    for level in [PML4, PDPT, PD] {
        let raw = X86_64::encode_table(level, PhysAddr(0x7654_3000));
        assert_eq!(
            raw,
            0x7654_3000 | 0b111,
            "level {level:?}: permissions are decided at the leaf"
        );
        assert_eq!(
            X86_64::decode(level, raw),
            Entry::Table(PhysAddr(0x7654_3000))
        );
    }
}

#[test]
fn table_entry_decodes_ignoring_a_and_nx_bits() {
    let raw = 0x7654_3000 | (PteFlags::PRESENT | PteFlags::ACCESSED | PteFlags::NO_EXECUTE).bits();
    assert_eq!(
        X86_64::decode(PDPT, raw),
        Entry::Table(PhysAddr(0x7654_3000))
    );
}

// ---- decode ----------------------------------------------------------------

#[test]
fn not_present_decodes_invalid_whatever_else_is_set() {
    let raw = !PteFlags::PRESENT.bits();
    for level in (0..4).map(Level::<X86_64>::new) {
        assert_eq!(
            X86_64::decode(level, raw),
            Entry::Invalid,
            "level {level:?}"
        );
    }
}

#[test]
fn decode_reads_accessed_as_young_and_dirty_as_dirty() {
    let base = X86_64::encode_leaf(PT, PhysAddr(0x3000), RW);
    let a = PteFlags::ACCESSED.bits();
    let d = PteFlags::DIRTY.bits();
    for (raw, young, dirty) in [
        (base, false, false),
        (base | a, true, false),
        (base | d, false, true),
        (base | a | d, true, true),
    ] {
        let Entry::Leaf(leaf) = X86_64::decode(PT, raw) else {
            panic!("leaf expected")
        };
        assert_eq!((leaf.young, leaf.dirty), (young, dirty), "raw {raw:#x}");
    }
}

#[test]
fn base_leaf_with_pat_bit_7_is_still_a_4k_leaf() {
    let raw = X86_64::encode_leaf(PT, PhysAddr(0x5000), RW) | PteFlags::HUGE_PAGE.bits();
    let Entry::Leaf(leaf) = X86_64::decode(PT, raw) else {
        panic!("leaf expected")
    };
    assert_eq!(leaf.frame, PhysAddr(0x5000));
}

#[test]
fn pd_leaf_frame_ignores_its_pat_bit_12() {
    let raw = X86_64::encode_leaf(PD, PhysAddr(0x20_0000), RW) | (1 << 12);
    let Entry::Leaf(leaf) = X86_64::decode(PD, raw) else {
        panic!("leaf expected")
    };
    assert_eq!(
        leaf.frame,
        PhysAddr(0x20_0000),
        "bit 12 of a 2 MiB leaf is PAT, not address"
    );
}

#[test]
fn decode_ignores_protection_keys_and_high_software_bits() {
    let raw =
        X86_64::encode_leaf(PT, PhysAddr(0x000f_0000_0000_1000), RW) | (0xf << 59) | (0x7f << 52);
    assert_eq!(
        X86_64::decode(PT, raw),
        Entry::Leaf(Leaf {
            frame: PhysAddr(0x000f_0000_0000_1000),
            prot: RW,
            young: false,
            dirty: false,
            cow: false,
        })
    );
}

#[test]
fn page_size_bit_above_the_pd_decodes_as_a_leaf_never_a_table() {
    // Never created here (no 1 GiB pages), but a walker must not treat the
    // frame of a 1 GiB page as a table.
    let raw = 0x4000_0000 | (PteFlags::PRESENT | PteFlags::HUGE_PAGE).bits();
    assert!(
        matches!(X86_64::decode(PDPT, raw), Entry::Leaf(l) if l.frame == PhysAddr(0x4000_0000))
    );
    assert!(
        matches!(X86_64::decode(PML4, raw), Entry::Leaf(_)),
        "PS in a PML4E is reserved: stop there"
    );
}

// ---- leaf_with_prot --------------------------------------------------------

#[test]
fn leaf_with_prot_keeps_frame_accessed_dirty_and_page_size() {
    let raw = X86_64::encode_leaf(PD, PhysAddr(0x60_0000), RWXU)
        | (PteFlags::ACCESSED | PteFlags::DIRTY).bits();
    let new = X86_64::leaf_with_prot(PD, raw, Prot::USER);
    assert_eq!(new, 0x60_0000 | 0x8000_0000_0000_00e5, "P|U|A|D|PS|NX");
    assert_eq!(
        X86_64::decode(PD, new),
        Entry::Leaf(Leaf {
            frame: PhysAddr(0x60_0000),
            prot: Prot::USER,
            young: true,
            dirty: true,
            cow: false,
        })
    );
}

#[test]
fn leaf_with_prot_keeps_caching_global_software_and_key_bits() {
    let extra = (PteFlags::WRITE_THROUGH
        | PteFlags::CACHE_DISABLE
        | PteFlags::GLOBAL
        | PteFlags::SOFTWARE_9
        | PteFlags::SOFTWARE_10
        | PteFlags::SOFTWARE_11)
        .bits()
        | (0b0110 << 59)
        | (1 << 55);
    let raw = X86_64::encode_leaf(PT, PhysAddr(0x9000), RW) | extra;
    let new = X86_64::leaf_with_prot(PT, raw, RWXU);
    assert_eq!(new & extra, extra, "only W, U and NX may change");
    assert_eq!(new, X86_64::encode_leaf(PT, PhysAddr(0x9000), RWXU) | extra);
}

#[test]
fn leaf_with_prot_replaces_each_permission_bit() {
    let raw = X86_64::encode_leaf(PT, PhysAddr(0x9000), RWXU);
    let ro = flags(X86_64::leaf_with_prot(PT, raw, Prot::READ));
    assert!(
        !ro.contains(PteFlags::WRITABLE)
            && !ro.contains(PteFlags::USER)
            && ro.contains(PteFlags::NO_EXECUTE)
    );
    assert!(ro.contains(PteFlags::PRESENT));
    let back = X86_64::leaf_with_prot(PT, ro.bits(), RWXU);
    assert_eq!(back, raw);
}

// ---- check_addr --------------------------------------------------------------

#[test]
fn check_addr_accepts_the_user_half_up_to_its_last_byte() {
    for va in [0, 0x1000, 0x0000_7fff_ffff_f000, 0x0000_7fff_ffff_ffff] {
        assert_eq!(X86_64::check_addr(VirtAddr(va)), Ok(()), "{va:#x}");
    }
}

#[test]
fn check_addr_rejects_the_canonical_upper_half_as_out_of_range() {
    for va in [0xffff_8000_0000_0000, 0xffff_ffff_ffff_f000, u64::MAX] {
        assert_eq!(
            X86_64::check_addr(VirtAddr(va)),
            Err(Error::OutOfRange {
                addr: va,
                limit: 0x0000_8000_0000_0000
            }),
            "{va:#x}"
        );
    }
}

#[test]
fn check_addr_rejects_non_canonical_addresses() {
    for va in [
        0x0000_8000_0000_0000,
        0x0000_ffff_ffff_ffff,
        0x0001_0000_0000_0000,
        0x8000_0000_0000_0000,
        0xffff_7fff_ffff_ffff,
        0x7fff_ffff_ffff_ffff,
    ] {
        assert_eq!(
            X86_64::check_addr(VirtAddr(va)),
            Err(Error::NonCanonical { addr: va }),
            "{va:#x}"
        );
    }
}

// ---- properties --------------------------------------------------------------

fn any_prot() -> impl Strategy<Value = Prot> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(w, x, u)| {
        let mut p = Prot::READ;
        if w {
            p = p | Prot::WRITE;
        }
        if x {
            p = p | Prot::EXEC;
        }
        if u {
            p = p | Prot::USER;
        }
        p
    })
}

proptest! {
    // Under Miri: few cases, and no failure file (isolation forbids the
    // file system).
    #![proptest_config(if cfg!(miri) {
        ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() }
    } else {
        ProptestConfig::default()
    })]

    #[test]
    fn base_leaf_round_trips(pfn in 0u64..(1 << 40), prot in any_prot()) {
        let frame = PhysAddr(pfn << 12);
        let raw = X86_64::encode_leaf(PT, frame, prot);
        prop_assert_eq!(X86_64::decode(PT, raw), Entry::Leaf(Leaf { frame, prot, young: false, dirty: false, cow: false }));
    }

    #[test]
    fn huge_leaf_round_trips(pfn in 0u64..(1 << 31), prot in any_prot()) {
        let frame = PhysAddr(pfn << 21);
        let raw = X86_64::encode_leaf(PD, frame, prot);
        prop_assert!(flags(raw).contains(PteFlags::HUGE_PAGE));
        prop_assert_eq!(X86_64::decode(PD, raw), Entry::Leaf(Leaf { frame, prot, young: false, dirty: false, cow: false }));
    }

    #[test]
    fn table_round_trips(pfn in 0u64..(1 << 40), level in (0usize..3).prop_map(Level::<X86_64>::new)) {
        let table = PhysAddr(pfn << 12);
        prop_assert_eq!(X86_64::decode(level, X86_64::encode_table(level, table)), Entry::Table(table));
    }

    #[test]
    fn leaf_with_prot_changes_only_permissions(raw in any::<u64>(), prot in any_prot()) {
        let raw = raw | PteFlags::PRESENT.bits();
        let new = X86_64::leaf_with_prot(PT, raw, prot);
        let perm = (PteFlags::WRITABLE | PteFlags::USER | PteFlags::NO_EXECUTE).bits();
        prop_assert_eq!(new & !perm, raw & !perm);
        let Entry::Leaf(before) = X86_64::decode(PT, raw) else { unreachable!() };
        let Entry::Leaf(after) = X86_64::decode(PT, new) else { unreachable!() };
        prop_assert_eq!(after, Leaf { prot, ..before });
    }

    #[test]
    fn check_addr_agrees_with_the_definition(va in any::<u64>()) {
        let top = va >> 47;
        let expected = match top {
            0 => Ok(()),
            0x1_ffff => Err(Error::OutOfRange { addr: va, limit: 1 << 47 }),
            _ => Err(Error::NonCanonical { addr: va }),
        };
        prop_assert_eq!(X86_64::check_addr(VirtAddr(va)), expected);
    }
}
