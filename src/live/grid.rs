//! The index of a live layer's current positions: a uniform grid of cells one zoom-16 tile
//! wide (about 600 m at the equator), each a small vector of points. Hand-written rather than
//! rstar's R-tree, which the layer files keep using: live points move all the time, and an
//! R-tree built by single inserts of a million points took 124 MB here (64-byte nodes per
//! point, half-full children vectors), where the grid takes 12 bytes a point and a move is a
//! swap-remove in one cell and a push in another. A query visits the cells its envelope
//! covers, or every occupied cell when that is fewer (low zooms).

use super::state::LivePoint;
use rstar::AABB;
use std::collections::HashMap;

/// Cell width: 2^16 grid units (the grid is 2^32 units around the world), a z16 tile.
const SHIFT: u32 = 16;

/// One point as a cell keeps it: slot and grid position, 12 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    slot: u32,
    g: [u32; 2],
}

impl Entry {
    fn of(p: &LivePoint) -> Entry {
        let c = |v: i64| v.clamp(0, i64::from(u32::MAX)) as u32;
        let g = p.geom();
        Entry {
            slot: p.data,
            g: [c(g[0]), c(g[1])],
        }
    }

    fn point(self) -> LivePoint {
        LivePoint::new([i64::from(self.g[0]), i64::from(self.g[1])], self.slot)
    }
}

/// Points by cell.
#[derive(Debug, Default)]
pub struct PointGrid {
    cells: HashMap<u64, Vec<Entry>, foldhash::fast::RandomState>,
    len: usize,
}

fn cell_of(g: &[i64; 2]) -> u64 {
    let c = |v: i64| (v.clamp(0, i64::from(u32::MAX)) as u64) >> SHIFT;
    (c(g[0]) << 32) | c(g[1])
}

impl PointGrid {
    /// Number of points.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// Adds a point.
    pub fn insert(&mut self, p: LivePoint) {
        self.cells
            .entry(cell_of(p.geom()))
            .or_default()
            .push(Entry::of(&p));
        self.len += 1;
    }

    /// Removes a point equal to `p`; false if there was none.
    pub fn remove(&mut self, p: &LivePoint) -> bool {
        let key = cell_of(p.geom());
        let Some(cell) = self.cells.get_mut(&key) else {
            return false;
        };
        let e = Entry::of(p);
        let Some(i) = cell.iter().position(|q| *q == e) else {
            return false;
        };
        cell.swap_remove(i);
        if cell.is_empty() {
            self.cells.remove(&key);
        } else if cell.capacity() > 4 * cell.len() {
            cell.shrink_to(2 * cell.len());
        }
        self.len -= 1;
        true
    }

    /// The points inside `env` (bounds included), cell by cell.
    pub fn locate_in_envelope<'a>(
        &'a self,
        env: &AABB<[i64; 2]>,
    ) -> impl Iterator<Item = LivePoint> + 'a {
        let (lo, hi) = (env.lower(), env.upper());
        let (a, b) = (cell_of(&lo), cell_of(&hi));
        let (x0, y0, x1, y1) = (a >> 32, a & 0xffff_ffff, b >> 32, b & 0xffff_ffff);
        let span = (x1.saturating_sub(x0) + 1).saturating_mul(y1.saturating_sub(y0) + 1);
        let mut cells: Vec<(u64, &Vec<Entry>)> = if span > self.cells.len() as u64 {
            self.cells
                .iter()
                .filter(|(k, _)| {
                    let (x, y) = (*k >> 32, *k & 0xffff_ffff);
                    x >= x0 && x <= x1 && y >= y0 && y <= y1
                })
                .map(|(k, v)| (*k, v))
                .collect()
        } else {
            (x0..=x1)
                .flat_map(|x| (y0..=y1).map(move |y| (x << 32) | y))
                .filter_map(|k| self.cells.get(&k).map(|v| (k, v)))
                .collect()
        };
        // The same order whichever way the cells were found.
        cells.sort_unstable_by_key(|(k, _)| *k);
        cells
            .into_iter()
            .flat_map(|(_, v)| v.iter().map(|e| e.point()))
            .filter(move |p| {
                let g = p.geom();
                g[0] >= lo[0] && g[0] <= hi[0] && g[1] >= lo[1] && g[1] <= hi[1]
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstar::Envelope;

    #[test]
    fn queries_agree_with_a_scan_and_removals_remove_one_point() {
        let mut g = PointGrid::default();
        let mut all = Vec::new();
        let mut x: u64 = 7;
        for i in 0..20_000u32 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            // Clustered around a city, some far away.
            let spread = if i % 10 == 0 { 1 << 31 } else { 1 << 22 };
            let p = LivePoint::new(
                [
                    (1 << 31) + ((x >> 20) % spread) as i64,
                    (1 << 30) + ((x >> 40) % spread) as i64,
                ],
                i,
            );
            g.insert(p);
            all.push(p);
        }
        for (i, p) in all.iter().enumerate() {
            if i % 3 == 0 {
                assert!(g.remove(p));
                assert!(!g.remove(p), "a point is removed once");
            }
        }
        let left: Vec<LivePoint> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(_, p)| *p)
            .collect();
        assert_eq!(g.len(), left.len());
        for env in [
            AABB::from_corners([0, 0], [i64::from(u32::MAX), i64::from(u32::MAX)]),
            AABB::from_corners(
                [(1 << 31) + 1000, (1 << 30)],
                [(1 << 31) + 900_000, (1 << 30) + 2_000_000],
            ),
            AABB::from_corners([-50, -50], [(1 << 31) + 70_000, (1 << 30) + 70_000]),
            AABB::from_corners(
                [(1 << 31) + 65_536, (1 << 30) + 65_536],
                [(1 << 31) + 65_536, (1 << 30) + 65_536],
            ),
        ] {
            let mut got: Vec<u32> = g.locate_in_envelope(&env).map(|p| p.data).collect();
            let as_in: std::collections::HashSet<([i64; 2], u32)> =
                left.iter().map(|p| (*p.geom(), p.data)).collect();
            assert!(
                g.locate_in_envelope(&env)
                    .all(|p| as_in.contains(&(*p.geom(), p.data))),
                "points come back as they went in"
            );
            let mut want: Vec<u32> = left
                .iter()
                .filter(|p| env.contains_point(p.geom()))
                .map(|p| p.data)
                .collect();
            got.sort();
            want.sort();
            assert_eq!(got, want);
        }
    }
}
