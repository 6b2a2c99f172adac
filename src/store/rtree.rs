//! A static, packed Hilbert R-tree over grid boxes, laid out as flat arrays for memory mapping.
//!
//! Items are sorted along a Hilbert curve (by the centre of their box) before packing, so that
//! neighbours on the map are neighbours in the file. Level 0 is the items' own boxes; level
//! `k + 1` holds one box per run of [`NODE_SIZE`] boxes of level `k`, up to a single root.
//! Only levels ≥ 1 are stored as "nodes" (level 1 first); their sizes follow from the item
//! count, so no pointers are stored. The same layout as FlatGeobuf's index, bottom-up.

use crate::tile::GridBox;

/// Children per node.
pub const NODE_SIZE: usize = 16;
/// Bytes of one stored box: `min_x, min_y, max_x, max_y` as `u32` LE.
pub const BOX_BYTES: usize = 16;

/// Number of boxes on each level, level 0 (the items) first, the root level last.
pub fn level_sizes(items: usize) -> Vec<usize> {
    let mut sizes = vec![items];
    let mut n = items;
    while n > 1 || sizes.len() == 1 {
        if n == 0 {
            break;
        }
        n = n.div_ceil(NODE_SIZE);
        sizes.push(n);
    }
    sizes
}

/// Position along a Hilbert curve of order 32, over the whole grid (2³² × 2³² cells).
///
/// Over the whole grid rather than stretched over a layer's extent, so that a feature's key
/// is known as soon as the feature is read (the external sort writes sorted runs before the
/// layer's extent is known) and so that every aligned square block of the grid (a tile, a
/// thinning cell) is one unbroken stretch of the curve at every zoom.
pub fn hilbert(mut x: u32, mut y: u32) -> u64 {
    let mut d: u64 = 0;
    let mut s: u32 = 1 << 31;
    while s > 0 {
        let rx = u32::from(x & s > 0);
        let ry = u32::from(y & s > 0);
        d += u64::from(s) * u64::from(s) * u64::from((3 * rx) ^ ry);
        if ry == 0 {
            if rx == 1 {
                // Reflect: `N - 1 - x` with N = 2³²; only the bits below `s` matter from here.
                x = !x;
                y = !y;
            }
            std::mem::swap(&mut x, &mut y);
        }
        s /= 2;
    }
    d
}

/// The centre of a box, rounded down to the grid.
#[inline]
pub fn centre(b: &GridBox) -> [u32; 2] {
    [
        ((u64::from(b.min_x) + u64::from(b.max_x)) / 2) as u32,
        ((u64::from(b.min_y) + u64::from(b.max_y)) / 2) as u32,
    ]
}

/// The Hilbert key of a box's centre.
#[inline]
pub fn hilbert_key(b: &GridBox) -> u64 {
    let [x, y] = centre(b);
    hilbert(x, y)
}

/// Builds the node boxes (levels ≥ 1, level 1 first) over items already in Hilbert order.
pub fn build_nodes(items: &[GridBox]) -> Vec<GridBox> {
    let mut nodes = Vec::new();
    let mut below: Vec<GridBox> = items.to_vec();
    while below.len() > 1 || (nodes.is_empty() && !below.is_empty()) {
        let level: Vec<GridBox> = below
            .chunks(NODE_SIZE)
            .map(|c| {
                let mut b = GridBox::EMPTY;
                c.iter().for_each(|x| b.union(x));
                b
            })
            .collect();
        nodes.extend_from_slice(&level);
        below = level;
    }
    nodes
}

/// Appends boxes in their stored form.
pub fn put_boxes(out: &mut Vec<u8>, boxes: &[GridBox]) {
    out.reserve(boxes.len() * BOX_BYTES);
    for b in boxes {
        for v in [b.min_x, b.min_y, b.max_x, b.max_y] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// Reads box `i` of a stored box array.
#[inline]
pub fn box_at(bytes: &[u8], i: usize) -> GridBox {
    let at = i * BOX_BYTES;
    let b = &bytes[at..at + BOX_BYTES];
    let v = |k: usize| u32::from_le_bytes([b[k], b[k + 1], b[k + 2], b[k + 3]]);
    GridBox {
        min_x: v(0),
        min_y: v(4),
        max_x: v(8),
        max_y: v(12),
    }
}

/// A read-only view of a packed tree inside a memory map.
#[derive(Debug, Clone, Copy)]
pub struct PackedRTree<'a> {
    items: &'a [u8],
    nodes: &'a [u8],
    len: usize,
}

impl<'a> PackedRTree<'a> {
    /// A view over `len` item boxes and their node boxes; `None` if the sizes disagree.
    pub fn new(items: &'a [u8], nodes: &'a [u8], len: usize) -> Option<Self> {
        let node_count: usize = level_sizes(len).iter().skip(1).sum();
        (items.len() == len * BOX_BYTES && nodes.len() == node_count * BOX_BYTES)
            .then_some(PackedRTree { items, nodes, len })
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the tree holds no item.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The box of item `i`.
    pub fn item_box(&self, i: usize) -> GridBox {
        box_at(self.items, i)
    }

    /// Calls `found` with the index of every item whose box intersects `query`, in ascending
    /// item order (which is Hilbert order).
    pub fn search(&self, query: &GridBox, mut found: impl FnMut(usize)) {
        if self.len == 0 {
            return;
        }
        let sizes = level_sizes(self.len);
        // Start offset (in boxes) of each node level inside `nodes`; level 0 lives in `items`.
        let mut starts = vec![0usize; sizes.len()];
        for l in 2..sizes.len() {
            starts[l] = starts[l - 1] + sizes[l - 1];
        }
        let top = sizes.len() - 1;
        let mut stack: Vec<(usize, usize)> = vec![(top, 0)];
        while let Some((level, i)) = stack.pop() {
            if level == 0 {
                if box_at(self.items, i).intersects(query) {
                    found(i);
                }
                continue;
            }
            if !box_at(self.nodes, starts[level] + i).intersects(query) {
                continue;
            }
            let first = i * NODE_SIZE;
            let end = (first + NODE_SIZE).min(sizes[level - 1]);
            // Push in reverse so children pop in ascending order.
            for c in (first..end).rev() {
                stack.push((level - 1, c));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn boxes() -> impl Strategy<Value = Vec<GridBox>> {
        proptest::collection::vec(
            (0u32..1_000_000, 0u32..1_000_000, 0u32..50_000, 0u32..50_000)
                .prop_map(|(x, y, w, h)| GridBox::new(x, y, x + w, y + h)),
            0..600,
        )
    }

    proptest! {
        #[test]
        fn search_equals_brute_force(items in boxes(), q in (0u32..1_100_000, 0u32..1_100_000, 0u32..300_000, 0u32..300_000)) {
            let mut sorted = items.clone();
            sorted.sort_by_key(hilbert_key);
            let nodes = build_nodes(&sorted);
            let (mut ib, mut nb) = (Vec::new(), Vec::new());
            put_boxes(&mut ib, &sorted);
            put_boxes(&mut nb, &nodes);
            let tree = PackedRTree::new(&ib, &nb, sorted.len()).unwrap();
            let query = GridBox::new(q.0, q.1, q.0 + q.2, q.1 + q.3);
            let mut got = Vec::new();
            tree.search(&query, |i| got.push(i));
            let want: Vec<usize> = (0..sorted.len()).filter(|&i| sorted[i].intersects(&query)).collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn hilbert_walks_a_block_cell_by_neighbouring_cell() {
        // The 16 cells of the 4 x 4 block at the origin take positions 0..16, and each step
        // along the curve moves to an edge-adjacent cell.
        let mut cells: Vec<(u64, u32, u32)> = (0..4)
            .flat_map(|x| (0..4).map(move |y| (hilbert(x, y), x, y)))
            .collect();
        cells.sort();
        assert_eq!(
            cells.iter().map(|c| c.0).collect::<Vec<_>>(),
            (0..16).collect::<Vec<_>>()
        );
        for w in cells.windows(2) {
            assert_eq!(
                w[0].1.abs_diff(w[1].1) + w[0].2.abs_diff(w[1].2),
                1,
                "{w:?}"
            );
        }
    }

    #[test]
    fn every_aligned_block_is_one_stretch_of_the_curve() {
        // Blocks of side 2^k anywhere on the grid, including its far corners: the keys of
        // their cells are consecutive, which is what point thinning relies on.
        for (x0, y0, k) in [
            (0u32, 0u32, 2u32),
            (u32::MAX - 7, u32::MAX - 7, 3),
            (0x8000_0000, 0x4000_0000, 3),
            (0x1234_5600, 0x6543_2100, 4),
        ] {
            let side = 1u32 << k;
            let (x0, y0) = (x0 & !(side - 1), y0 & !(side - 1));
            let mut keys: Vec<u64> = (0..side)
                .flat_map(|dx| (0..side).map(move |dy| hilbert(x0 + dx, y0 + dy)))
                .collect();
            keys.sort_unstable();
            keys.dedup();
            assert_eq!(keys.len() as u64, u64::from(side) * u64::from(side));
            assert_eq!(
                keys[keys.len() - 1] - keys[0] + 1,
                keys.len() as u64,
                "{x0} {y0}"
            );
        }
        assert_eq!(
            hilbert(u32::MAX, 0),
            u64::MAX,
            "the curve ends at the far corner"
        );
    }

    #[test]
    fn level_sizes_reach_a_single_root() {
        assert_eq!(level_sizes(0), vec![0]);
        assert_eq!(level_sizes(1), vec![1, 1]);
        assert_eq!(level_sizes(16), vec![16, 1]);
        assert_eq!(level_sizes(17), vec![17, 2, 1]);
        assert_eq!(level_sizes(300), vec![300, 19, 2, 1]);
    }
}
