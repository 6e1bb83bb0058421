//! The interval tree: an intrusive AVL tree of closed intervals
//! `[start, last]`, ordered by `(start, node address)` and augmented with
//! each subtree's greatest `last`, so a query prunes every subtree that
//! ends before it and every right subtree that starts after it.
//!
//! The tree owns no memory: its nodes are the [`Links`] embedded at the
//! start of each subscription, and it stores pointers that carry the
//! provenance of the whole subscription (the manager casts them back).
//!
//! It knows nothing about locks. Its callers (the manager in `super`)
//! guarantee the two rules every `unsafe fn` here states: a mutation runs
//! alone (the manager's lock is held and no invalidation walks the tree),
//! and a query runs with no mutation (the lock is held, or the tree is
//! frozen by an odd invalidate sequence). Every field is a [`LockCell`],
//! so under loom and Miri a broken rule is reported as a data race.
//!
//! Recursion depth is the tree height, at most 1.44·log2(n + 2): under 50
//! for every subscription a machine could hold.

use core::ops::ControlFlow;
use core::ptr;

use super::LockCell;

/// A tree node: embedded, first, in every subscription.
pub(super) struct Links {
    left: LockCell<*const Links>,
    right: LockCell<*const Links>,
    height: LockCell<u8>,
    /// The greatest `last` in this node's subtree.
    max_last: LockCell<u64>,
    /// First address of the interval.
    pub(super) start: LockCell<u64>,
    /// Last address of the interval (inclusive, so `u64::MAX` fits).
    pub(super) last: LockCell<u64>,
}

impl Links {
    pub(super) fn new() -> Self {
        Self {
            left: LockCell::new(ptr::null()),
            right: LockCell::new(ptr::null()),
            height: LockCell::new(0),
            max_last: LockCell::new(0),
            start: LockCell::new(0),
            last: LockCell::new(0),
        }
    }
}

/// The root of an interval tree.
pub(super) struct Tree {
    root: LockCell<*const Links>,
}

// Helpers on raw nodes. Contract for all of them: `n` is null or a live node
// of this tree, and the caller has the access (exclusive for writes, no
// concurrent writer for reads) that the public methods below require.

unsafe fn height(n: *const Links) -> u8 {
    // SAFETY: helper contract.
    unsafe { n.as_ref().map_or(0, |n| n.height.get()) }
}

unsafe fn max_last(n: *const Links) -> Option<u64> {
    // SAFETY: helper contract.
    unsafe { n.as_ref().map(|n| n.max_last.get()) }
}

/// The total order of the tree: by start, ties broken by address, so every
/// node has a unique key and removal finds exactly its node.
unsafe fn less(a: *const Links, b: *const Links) -> bool {
    // SAFETY: helper contract; both are live nodes.
    let (sa, sb) = unsafe { ((*a).start.get(), (*b).start.get()) };
    (sa, a.addr()) < (sb, b.addr())
}

/// Recomputes `n`'s height and max from its children.
unsafe fn update(n: *const Links) {
    // SAFETY: helper contract; `n` is not null.
    unsafe {
        let node = &*n;
        let (l, r) = (node.left.get(), node.right.get());
        node.height.set(1 + height(l).max(height(r)));
        let mut m = node.last.get();
        for c in [max_last(l), max_last(r)].into_iter().flatten() {
            m = m.max(c);
        }
        node.max_last.set(m);
    }
}

unsafe fn rotate_right(n: *const Links) -> *const Links {
    // SAFETY: helper contract; `n` has a left child (its caller checked
    // the balance factor).
    unsafe {
        let l = (*n).left.get();
        (*n).left.set((*l).right.get());
        update(n);
        (*l).right.set(n);
        update(l);
        l
    }
}

unsafe fn rotate_left(n: *const Links) -> *const Links {
    // SAFETY: helper contract; `n` has a right child.
    unsafe {
        let r = (*n).right.get();
        (*n).right.set((*r).left.get());
        update(n);
        (*r).left.set(n);
        update(r);
        r
    }
}

/// Restores the AVL property at `n`, whose subtrees are AVL trees whose
/// heights differ by at most 2; returns the subtree's new root.
unsafe fn balance(n: *const Links) -> *const Links {
    // SAFETY: helper contract; `n` is not null, and a child exists on the
    // heavy side (its height exceeds the other side's by 2).
    unsafe {
        update(n);
        let (l, r) = ((*n).left.get(), (*n).right.get());
        let (hl, hr) = (height(l), height(r));
        if hl > hr + 1 {
            if height((*l).left.get()) < height((*l).right.get()) {
                (*n).left.set(rotate_left(l));
            }
            rotate_right(n)
        } else if hr > hl + 1 {
            if height((*r).right.get()) < height((*r).left.get()) {
                (*n).right.set(rotate_right(r));
            }
            rotate_left(n)
        } else {
            n
        }
    }
}

unsafe fn insert_at(root: *const Links, n: *const Links) -> *const Links {
    // SAFETY: helper contract; `n` is live and not in the tree.
    unsafe {
        if root.is_null() {
            (*n).left.set(ptr::null());
            (*n).right.set(ptr::null());
            update(n);
            return n;
        }
        if less(n, root) {
            (*root).left.set(insert_at((*root).left.get(), n));
        } else {
            (*root).right.set(insert_at((*root).right.get(), n));
        }
        balance(root)
    }
}

/// Detaches the leftmost node of the non-empty subtree `root`: (new
/// root, detached node).
unsafe fn remove_min(root: *const Links) -> (*const Links, *const Links) {
    // SAFETY: helper contract; `root` is not null.
    unsafe {
        let l = (*root).left.get();
        if l.is_null() {
            return ((*root).right.get(), root);
        }
        let (l, min) = remove_min(l);
        (*root).left.set(l);
        (balance(root), min)
    }
}

unsafe fn remove_at(root: *const Links, n: *const Links) -> *const Links {
    // SAFETY: helper contract; `n` is a node of the subtree `root` (if
    // not, the search ends at null and nothing changes).
    unsafe {
        if root.is_null() {
            debug_assert!(false, "removing a node that is not in the tree");
            return root;
        }
        if ptr::eq(root, n) {
            let (l, r) = ((*n).left.get(), (*n).right.get());
            (*n).left.set(ptr::null());
            (*n).right.set(ptr::null());
            if r.is_null() {
                return l;
            }
            // The intrusive way to delete an inner node: move its in-order
            // successor (a node, not a value) into its place.
            let (r, succ) = remove_min(r);
            (*succ).left.set(l);
            (*succ).right.set(r);
            return balance(succ);
        }
        if less(n, root) {
            (*root).left.set(remove_at((*root).left.get(), n));
        } else {
            (*root).right.set(remove_at((*root).right.get(), n));
        }
        balance(root)
    }
}

unsafe fn visit(
    n: *const Links,
    first: u64,
    last: u64,
    f: &mut dyn FnMut(*const Links) -> ControlFlow<()>,
) -> ControlFlow<()> {
    // SAFETY: helper contract, for `n` and its children.
    unsafe {
        let Some(node) = n.as_ref() else {
            return ControlFlow::Continue(());
        };
        if node.max_last.get() < first {
            // Nothing in this subtree reaches the query.
            return ControlFlow::Continue(());
        }
        visit(node.left.get(), first, last, f)?;
        if node.start.get() > last {
            // This node and its whole right subtree start after the query.
            return ControlFlow::Continue(());
        }
        if node.last.get() >= first {
            f(n)?;
        }
        visit(node.right.get(), first, last, f)
    }
}

impl Tree {
    pub(super) fn new() -> Self {
        Self {
            root: LockCell::new(ptr::null()),
        }
    }

    /// Inserts `n`, whose `start` and `last` are set.
    ///
    /// # Safety
    /// 1. Nothing else reads or writes the tree or `n` meanwhile.
    /// 2. Every node of the tree, and `n`, stays alive until removed.
    /// 3. `n` is not in the tree.
    pub(super) unsafe fn insert(&self, n: *const Links) {
        // SAFETY: `insert_at`'s conditions are ours: 1. exclusive access to
        // the tree and `n`; 2. every node alive; 3. `n` not yet in it.
        unsafe { self.root.set(insert_at(self.root.get(), n)) };
    }

    /// Removes `n`.
    ///
    /// # Safety
    /// 1. and 2. as [`insert`](Self::insert); 3. `n` is in the tree.
    pub(super) unsafe fn remove(&self, n: *const Links) {
        // SAFETY: `remove_at`'s conditions are ours: 1. exclusive access;
        // 2. every node alive; 3. `n` is in the tree.
        unsafe { self.root.set(remove_at(self.root.get(), n)) };
    }

    /// Whether any node overlaps `[first, last]`, in O(log n).
    ///
    /// # Safety
    /// Nothing writes the tree meanwhile, and its nodes are alive.
    pub(super) unsafe fn any_overlap(&self, first: u64, last: u64) -> bool {
        // SAFETY: our one condition: nothing writes the tree while we read
        // it, and every node we reach from the root is alive.
        unsafe {
            let mut n = self.root.get();
            while let Some(node) = n.as_ref() {
                if node.max_last.get() < first {
                    return false;
                }
                let l = node.left.get();
                if max_last(l).is_some_and(|m| m >= first) {
                    // Something on the left reaches `first`; if it does
                    // not overlap, it starts after `last`, and so does
                    // everything at and right of `node`.
                    n = l;
                    continue;
                }
                if node.start.get() > last {
                    return false;
                }
                if node.last.get() >= first {
                    return true;
                }
                n = node.right.get();
            }
            false
        }
    }

    /// Calls `f` on every node overlapping `[first, last]`, in order of
    /// start, until it breaks. Visits O(log n) nodes per node reported.
    ///
    /// # Safety
    /// As [`any_overlap`](Self::any_overlap), for the whole walk
    /// (including while `f` runs).
    pub(super) unsafe fn for_each_overlap(
        &self,
        first: u64,
        last: u64,
        f: &mut dyn FnMut(*const Links) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        // SAFETY: `visit` needs what we are promised: no writer for the
        // whole walk (`f` included) and live nodes.
        unsafe { visit(self.root.get(), first, last, f) }
    }

    /// Checks every invariant (order, AVL balance, heights, maxima);
    /// returns the number of nodes.
    ///
    /// # Safety
    /// As [`any_overlap`](Self::any_overlap).
    #[cfg(all(test, not(loom)))]
    pub(super) unsafe fn check(&self) -> Result<usize, &'static str> {
        /// (count, height, max_last, min key, max key)
        type Summary = (usize, u8, u64, (u64, usize), (u64, usize));
        unsafe fn go(n: *const Links) -> Result<Option<Summary>, &'static str> {
            // SAFETY: `check`'s condition (no writer, live nodes), which
            // holds for `n` and every node below it.
            unsafe {
                let Some(node) = n.as_ref() else {
                    return Ok(None);
                };
                let key = (node.start.get(), n.addr());
                let (l, r) = (go(node.left.get())?, go(node.right.get())?);
                let (hl, hr) = (l.map_or(0, |s| s.1), r.map_or(0, |s| s.1));
                if hl.abs_diff(hr) > 1 {
                    return Err("unbalanced");
                }
                if node.height.get() != 1 + hl.max(hr) {
                    return Err("wrong height");
                }
                let mut max = node.last.get();
                let (mut lo, mut hi) = (key, key);
                if let Some(l) = l {
                    if l.4 >= key {
                        return Err("left subtree not below its root");
                    }
                    max = max.max(l.2);
                    lo = l.3;
                }
                if let Some(r) = r {
                    if r.3 <= key {
                        return Err("right subtree not above its root");
                    }
                    max = max.max(r.2);
                    hi = r.4;
                }
                if node.max_last.get() != max {
                    return Err("wrong subtree max");
                }
                let count = 1 + l.map_or(0, |s| s.0) + r.map_or(0, |s| s.0);
                Ok(Some((count, node.height.get(), max, lo, hi)))
            }
        }
        // SAFETY: our condition (no writer, live nodes) is `go`'s.
        Ok(unsafe { go(self.root.get()) }?.map_or(0, |s| s.0))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    /// The nodes, never moved again (the vector is not grown after).
    fn nodes(intervals: &[(u64, u64)]) -> Vec<Links> {
        intervals
            .iter()
            .map(|&(s, l)| {
                let n = Links::new();
                // SAFETY: not shared yet.
                unsafe {
                    n.start.set(s);
                    n.last.set(l);
                }
                n
            })
            .collect()
    }

    fn ptr_of(n: &Links) -> *const Links {
        n
    }

    fn query(tree: &Tree, first: u64, last: u64) -> Vec<*const Links> {
        let mut seen = Vec::new();
        // SAFETY: single-threaded test; nodes outlive the tree's use.
        let _ = unsafe {
            tree.for_each_overlap(first, last, &mut |n| {
                seen.push(n);
                ControlFlow::Continue(())
            })
        };
        seen
    }

    /// Cases, nodes and operations per case: Miri interprets every step
    /// (and the full `check` after each), so it gets a smaller sample.
    const CASES: u32 = if cfg!(miri) { 8 } else { 256 };
    const MAX_NODES: usize = if cfg!(miri) { 16 } else { 40 };
    const MAX_OPS: usize = if cfg!(miri) { 48 } else { 120 };

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: CASES,
            // Persisting failures needs the working directory, which
            // Miri's isolation hides.
            failure_persistence: if cfg!(miri) {
                None
            } else {
                ProptestConfig::default().failure_persistence
            },
            ..ProptestConfig::default()
        })]

        /// Random inserts, removes and queries agree with a linear scan,
        /// and every invariant holds after every step.
        #[test]
        fn tree_agrees_with_linear_scan(
            intervals in prop::collection::vec((0u64..200, 0u64..40), 1..MAX_NODES),
            ops in prop::collection::vec(
                (0usize..3, 0usize..MAX_NODES, 0u64..240, 0u64..60),
                1..MAX_OPS,
            ),
        ) {
            let intervals: Vec<(u64, u64)> =
                intervals.into_iter().map(|(s, len)| (s, s + len)).collect();
            let all = nodes(&intervals);
            let mut member = vec![false; all.len()];
            let tree = Tree::new();
            for (op, i, first, len) in ops {
                let i = i % all.len();
                match op {
                    0 if !member[i] => {
                        // SAFETY: single-threaded; `all` outlives the tree.
                        unsafe { tree.insert(ptr_of(&all[i])) };
                        member[i] = true;
                    }
                    1 if member[i] => {
                        // SAFETY: as above; node `i` is in the tree.
                        unsafe { tree.remove(ptr_of(&all[i])) };
                        member[i] = false;
                    }
                    _ => {
                        let last = first + len;
                        let mut want: Vec<(u64, usize)> = (0..all.len())
                            .filter(|&j| member[j])
                            .filter(|&j| intervals[j].0 <= last && intervals[j].1 >= first)
                            .map(|j| (intervals[j].0, ptr_of(&all[j]).addr()))
                            .collect();
                        want.sort_unstable();
                        let got: Vec<(u64, usize)> = query(&tree, first, last)
                            .into_iter()
                            // SAFETY: reported nodes are members, alive.
                            .map(|n| (unsafe { (*n).start.get() }, n.addr()))
                            .collect();
                        prop_assert_eq!(&got, &want, "query [{}, {}]", first, last);
                        // SAFETY: as above.
                        let any = unsafe { tree.any_overlap(first, last) };
                        prop_assert_eq!(any, !want.is_empty());
                    }
                }
                // SAFETY: as above.
                let count = unsafe { tree.check() };
                prop_assert_eq!(count, Ok(member.iter().filter(|m| **m).count()));
            }
        }
    }

    #[test]
    fn height_stays_logarithmic_for_sorted_inserts() {
        // (nodes, the AVL bound on the height: 1.44 log2(n + 2) - 0.33).
        // Miri gets a smaller tree: each insert is a full interpreted walk.
        let (n, bound) = if cfg!(miri) { (127, 9) } else { (1023, 14) };
        let intervals: Vec<(u64, u64)> = (0..n).map(|i| (i, i)).collect();
        let all = nodes(&intervals);
        let tree = Tree::new();
        for n in &all {
            // SAFETY: single-threaded; `all` outlives the tree.
            unsafe { tree.insert(ptr_of(n)) };
        }
        // SAFETY: as above.
        assert_eq!(unsafe { tree.check() }, Ok(all.len()));
        // SAFETY: as above; the root exists.
        let h = unsafe { height(tree.root.get()) };
        assert!(h <= bound, "AVL height {h} for {n} sorted inserts");
        assert_eq!(query(&tree, n / 2, n / 2 + 9).len(), 10);
    }
}
