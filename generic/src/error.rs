//! The one error type of the crate.
//!
//! Every way a caller can get an operation wrong has a variant here, so bad
//! input is reported, never undefined behaviour or a silently wrong page
//! table. An operation that returns an error has changed nothing.

use core::fmt;

/// What went wrong, with the values needed to see why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// An address is not aligned to the page size the operation works in.
    Unaligned {
        /// The offending address.
        addr: u64,
        /// The alignment it needed.
        align: u64,
    },
    /// A range with `start == end`.
    EmptyRange {
        /// Where the empty range sits.
        at: u64,
    },
    /// A range with `start > end`.
    ReversedRange {
        /// Given start.
        start: u64,
        /// Given end.
        end: u64,
    },
    /// An address beyond what the architecture can translate.
    OutOfRange {
        /// The offending address.
        addr: u64,
        /// The first address that cannot be translated.
        limit: u64,
    },
    /// An address the architecture can never translate (x86-64: not
    /// canonical, bits 63..47 not all equal).
    NonCanonical {
        /// The offending address.
        addr: u64,
    },
    /// The notifier is already registered (on this or another address space).
    AlreadyRegistered,
    /// The notifier is not registered on this address space.
    NotRegistered,
    /// The address space has been torn down (`release` ran): it accepts no
    /// new notifier and no further page-table operation.
    Released,
    /// The crate was built without the `notifier` feature, so nothing can
    /// be registered.
    NotifiersDisabled,
    /// The frame allocator could not supply a translation table.
    OutOfMemory,
    /// A page that must be unmapped for this operation is mapped.
    AlreadyMapped {
        /// The mapped address.
        addr: u64,
    },
    /// A huge-page operation met a table of smaller pages at this address,
    /// or a small-page operation met a huge page.
    PageSizeMismatch {
        /// Where the mismatch was found.
        addr: u64,
    },
    /// The architecture (or this machine) has no leaf entries of the size
    /// asked for.
    HugePagesUnsupported,
    /// A non-blocking invalidation met a notifier that would have to sleep;
    /// nothing was changed, try again from a context that may block.
    Again,
    /// A notifier declared both the synchronous secondary-TLB hook and
    /// range start/end; it must choose one.
    ConflictingCallbacks,
    /// An operation between two address spaces was given the same one
    /// twice (fork into itself).
    SameAddressSpace,
    /// Registering, unregistering or releasing from inside a callback, or
    /// inside a range invalidation, of the same kernel would wait for a
    /// grace period that the calling task itself holds open; refused.
    /// Detected where the kernel's grace-period domain can tell
    /// ([`Rcu::task_is_reading`](crate::kernel::Rcu::task_is_reading)).
    InsideCallback,
    /// A physical address (a frame, or a table the allocator gave) lies
    /// beyond what an entry of this architecture can hold.
    PhysOutOfRange {
        /// The offending physical address.
        addr: u64,
        /// The first physical address that cannot be mapped.
        limit: u64,
    },
    /// A per-page helper was given an entry that is not a valid leaf (a
    /// table, or an entry already cleared); nothing was changed.
    NotALeaf {
        /// The address the entry translates.
        addr: u64,
    },
    /// A per-page helper was given a leaf outside the open range
    /// invalidation it was given: range and interval notifiers were not
    /// told about it, so its frame cannot come back; nothing was changed.
    NotAnnounced {
        /// The address the leaf translates.
        addr: u64,
    },
    /// A copy-on-write leaf cannot be made writable in place: its frame is
    /// shared with another address space and must be copied first.
    CopyOnWrite {
        /// The address the leaf translates.
        addr: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Unaligned { addr, align } => {
                write!(f, "address {addr:#x} is not aligned to {align:#x} bytes")
            }
            Error::EmptyRange { at } => write!(f, "empty range at {at:#x}"),
            Error::ReversedRange { start, end } => {
                write!(f, "range start {start:#x} lies after its end {end:#x}")
            }
            Error::OutOfRange { addr, limit } => {
                write!(
                    f,
                    "address {addr:#x} is beyond the translatable limit {limit:#x}"
                )
            }
            Error::NonCanonical { addr } => write!(f, "address {addr:#x} is not canonical"),
            Error::AlreadyRegistered => f.write_str("notifier is already registered"),
            Error::NotRegistered => f.write_str("notifier is not registered on this address space"),
            Error::Released => f.write_str("address space has been released (torn down)"),
            Error::NotifiersDisabled => {
                f.write_str("built without the `notifier` feature: notifiers cannot be registered")
            }
            Error::OutOfMemory => f.write_str("out of memory for translation tables"),
            Error::AlreadyMapped { addr } => write!(f, "address {addr:#x} is already mapped"),
            Error::PageSizeMismatch { addr } => {
                write!(
                    f,
                    "page size at {addr:#x} differs from the one the operation works in"
                )
            }
            Error::HugePagesUnsupported => f.write_str("huge pages are not supported here"),
            Error::Again => {
                f.write_str("a notifier would have to sleep; retry from a blockable context")
            }
            Error::ConflictingCallbacks => f.write_str(
                "a notifier may implement the secondary-TLB hook or range start/end, not both",
            ),
            Error::SameAddressSpace => {
                f.write_str("source and destination are the same address space")
            }
            Error::InsideCallback => f.write_str(
                "cannot register, unregister or release from inside a notifier callback or range invalidation of the same kernel: it would wait for itself",
            ),
            Error::PhysOutOfRange { addr, limit } => write!(
                f,
                "physical address {addr:#x} is beyond what an entry can hold (limit {limit:#x})"
            ),
            Error::NotALeaf { addr } => {
                write!(f, "the entry translating {addr:#x} is not a valid leaf")
            }
            Error::NotAnnounced { addr } => write!(
                f,
                "the leaf at {addr:#x} lies outside the open range invalidation: its notifiers were not told"
            ),
            Error::CopyOnWrite { addr } => write!(
                f,
                "the copy-on-write leaf at {addr:#x} cannot be made writable in place: copy its frame first"
            ),
        }
    }
}

impl core::error::Error for Error {}
