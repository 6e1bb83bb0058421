//! Type-erased entry points into a `Subscription<N>`: one static table per
//! notifier type, so the list can hold subscriptions of any type and reach
//! each notifier with one indirect call.

use core::marker::PhantomData;

use super::node::{Node, Subscription};
use super::sealed::CoreOnly;
use super::{Again, InvalidateRange, MmuNotifier};
use crate::addr::{PageRange, VirtAddr};

/// The entry points of one notifier type. Every function takes the list's
/// pointer to a node and has the same contract: see [`Thunks::notifier`].
pub(super) struct VTable {
    /// The notifier's type, for subscriptions shared by `get`/`put`.
    #[cfg(feature = "alloc")]
    pub(super) type_id: Option<fn() -> core::any::TypeId>,
    pub(super) release: unsafe fn(*const Node),
    pub(super) invalidate_page: unsafe fn(*const Node, VirtAddr),
    pub(super) invalidate_pages: unsafe fn(*const Node, PageRange),
    pub(super) age_page: unsafe fn(*const Node, VirtAddr) -> bool,
    pub(super) clear_flush_young: unsafe fn(*const Node, PageRange) -> bool,
    pub(super) clear_young: unsafe fn(*const Node, PageRange) -> bool,
    pub(super) test_young: unsafe fn(*const Node, VirtAddr) -> bool,
    pub(super) secondary_tlbs: unsafe fn(*const Node, PageRange),
    pub(super) range_start: unsafe fn(*const Node, &InvalidateRange) -> Result<(), Again>,
    pub(super) range_end: unsafe fn(*const Node, &InvalidateRange),
}

pub(super) struct Thunks<N>(PhantomData<N>);

impl<N: MmuNotifier> Thunks<N> {
    pub(super) const VTABLE: &'static VTable = &VTable {
        #[cfg(feature = "alloc")]
        type_id: None,
        release: Self::release,
        invalidate_page: Self::invalidate_page,
        invalidate_pages: Self::invalidate_pages,
        age_page: Self::age_page,
        clear_flush_young: Self::clear_flush_young,
        clear_young: Self::clear_young,
        test_young: Self::test_young,
        secondary_tlbs: Self::secondary_tlbs,
        range_start: Self::range_start,
        range_end: Self::range_end,
    };

    /// # Safety
    /// 1. `node` points to the `node` field of a live `Subscription<'_, N>`
    ///    (the vtable of a node is always the one of its own subscription
    ///    type), with the provenance of the whole subscription (the list's
    ///    own pointer, not one derived from a `&Node`);
    /// 2. the subscription stays live for `'a`.
    #[inline(always)]
    unsafe fn notifier<'a>(node: *const Node) -> &'a N {
        // SAFETY: `Subscription` is `repr(C)` with `node` first, so by 1. a
        // pointer to the node is a pointer to the subscription, valid for
        // `'a` by 2.; `N: Sync` makes the shared reference sound on any CPU.
        unsafe { (*node.cast::<Subscription<'_, N>>()).notifier() }
    }

    unsafe fn release(node: *const Node) {
        // SAFETY: 1. and 2. are this thunk's own contract (that of
        // `notifier`), which every caller answers.
        unsafe { Self::notifier(node) }.__release_from_core(CoreOnly::new());
    }
    unsafe fn invalidate_page(node: *const Node, addr: VirtAddr) {
        // SAFETY: as in `release`.
        unsafe { Self::notifier(node) }.invalidate_page(addr);
    }
    unsafe fn invalidate_pages(node: *const Node, range: PageRange) {
        // SAFETY: as in `release`.
        unsafe { Self::notifier(node) }.invalidate_pages(range);
    }
    unsafe fn age_page(node: *const Node, addr: VirtAddr) -> bool {
        // SAFETY: as in `release`.
        unsafe { Self::notifier(node) }.age_page(addr)
    }
    unsafe fn clear_flush_young(node: *const Node, range: PageRange) -> bool {
        // SAFETY: as in `release`.
        unsafe { Self::notifier(node) }.clear_flush_young(range)
    }
    unsafe fn clear_young(node: *const Node, range: PageRange) -> bool {
        // SAFETY: as in `release`.
        unsafe { Self::notifier(node) }.clear_young(range)
    }
    unsafe fn test_young(node: *const Node, addr: VirtAddr) -> bool {
        // SAFETY: as in `release`.
        unsafe { Self::notifier(node) }.test_young(addr)
    }
    unsafe fn secondary_tlbs(node: *const Node, range: PageRange) {
        // SAFETY: as in `release`.
        unsafe { Self::notifier(node) }.invalidate_secondary_tlbs(range);
    }
    unsafe fn range_start(node: *const Node, range: &InvalidateRange) -> Result<(), Again> {
        // SAFETY: as in `release`.
        unsafe { Self::notifier(node) }.__range_start_from_core(range, CoreOnly::new())
    }
    unsafe fn range_end(node: *const Node, range: &InvalidateRange) {
        // SAFETY: as in `release`.
        unsafe { Self::notifier(node) }.__range_end_from_core(range, CoreOnly::new());
    }
}
