//! Addresses and page ranges.
//!
//! Virtual and physical addresses are different types so that one cannot be
//! passed for the other; ranges are validated once, at construction, so the
//! walker and the notifiers never see an unaligned, empty or reversed range.

use core::fmt;

use crate::error::Error;

/// A virtual address in the address space being changed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(transparent)]
pub struct VirtAddr(pub u64);

/// A physical address (of a page frame or of a translation table).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(transparent)]
pub struct PhysAddr(pub u64);

macro_rules! addr_common {
    ($t:ident) => {
        impl $t {
            /// The address as an integer.
            #[inline]
            pub const fn as_u64(self) -> u64 {
                self.0
            }
            /// Whether the address is a multiple of `align` (a power of two).
            #[inline]
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & (align - 1) == 0
            }
            /// The address plus `bytes`, or `None` on overflow.
            #[inline]
            pub const fn checked_add(self, bytes: u64) -> Option<Self> {
                match self.0.checked_add(bytes) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($t), "({:#x})"), self.0)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
    };
}
addr_common!(VirtAddr);
addr_common!(PhysAddr);

/// A non-empty, page-aligned half-open range `[start, end)` of virtual
/// addresses.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PageRange {
    start: VirtAddr,
    end: VirtAddr,
}

impl PageRange {
    /// A range of whole pages of `page_size` bytes (a power of two).
    ///
    /// # Errors
    /// [`Error::Unaligned`] if `start` or `end` is not a multiple of
    /// `page_size`; [`Error::EmptyRange`] if `start == end`;
    /// [`Error::ReversedRange`] if `start > end`.
    pub fn new(start: VirtAddr, end: VirtAddr, page_size: u64) -> Result<Self, Error> {
        debug_assert!(page_size.is_power_of_two());
        for a in [start, end] {
            if !a.is_aligned(page_size) {
                return Err(Error::Unaligned {
                    addr: a.0,
                    align: page_size,
                });
            }
        }
        match start.cmp(&end) {
            core::cmp::Ordering::Less => Ok(Self { start, end }),
            core::cmp::Ordering::Equal => Err(Error::EmptyRange { at: start.0 }),
            core::cmp::Ordering::Greater => Err(Error::ReversedRange {
                start: start.0,
                end: end.0,
            }),
        }
    }

    /// `pages` pages of `page_size` bytes from `start`.
    ///
    /// # Errors
    /// As [`PageRange::new`], plus [`Error::OutOfRange`] if the end overflows.
    pub fn from_pages(start: VirtAddr, pages: u64, page_size: u64) -> Result<Self, Error> {
        let end = pages
            .checked_mul(page_size)
            .and_then(|len| start.checked_add(len))
            .ok_or(Error::OutOfRange {
                addr: start.0,
                limit: u64::MAX,
            })?;
        Self::new(start, end, page_size)
    }

    /// First address in the range.
    #[inline]
    pub const fn start(&self) -> VirtAddr {
        self.start
    }

    /// First address after the range.
    #[inline]
    pub const fn end(&self) -> VirtAddr {
        self.end
    }

    /// Length in bytes.
    #[inline]
    pub const fn len(&self) -> u64 {
        self.end.0 - self.start.0
    }

    /// Always `false`: a `PageRange` is never empty. Present for clippy's
    /// `len_without_is_empty` and for readers who expect it.
    #[inline]
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// Whether `addr` lies in the range.
    #[inline]
    pub const fn contains(&self, addr: VirtAddr) -> bool {
        self.start.0 <= addr.0 && addr.0 < self.end.0
    }

    /// Whether the two ranges share at least one address.
    #[inline]
    pub const fn overlaps(&self, other: &PageRange) -> bool {
        self.start.0 < other.end.0 && other.start.0 < self.end.0
    }
}

impl fmt::Debug for PageRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.start.0, self.end.0)
    }
}
