//! Levels of detail: how a layer's geometry is generalized for each zoom at import time.
//!
//! Every rule has a name and a number, in tile units of a 4096-extent tile at the level's zoom
//! (one unit is `2^(20 - z)` grid units). MapLibre draws a vector tile 512 CSS pixels wide, so
//! a pixel is [`PIXEL`] = 8 units.
//!
//! - **simplification**: Douglas–Peucker (geo's `Simplify`) with tolerance [`SIMPLIFY`] = ¼ px;
//! - **tiny features**: a line or polygon whose box is smaller than one pixel in both
//!   directions is dropped, and so is a hole of that size; a ring left with fewer than three
//!   distinct points or no area is dropped;
//! - **point thinning**: points keep a stable rank (a hash of their feature number); within
//!   each cell of a tile split 4 × 4, only the [`POINTS_PER_CELL`] lowest ranks stay, so a tile
//!   holds at most 16 × 256 points at its own zoom, and the points kept at zoom `z` are always a
//!   subset of those kept at `z + 1` (nothing blinks while zooming in).
//!
//! Levels are built from the maximum zoom downwards, each from the one above it (by the layer
//! writer, which also makes the thinning choice in one pass over each level).

use super::geometry::{GeomKind, GridGeometry};
use crate::tile::GridPoint;
use crate::tile::mercator::tile_unit;
use geo::{Coord, LineString, Simplify};

/// A CSS pixel in tile units (a 4096-extent tile drawn 512 pixels wide).
pub const PIXEL: u64 = 8;
/// Simplification tolerance in tile units.
pub const SIMPLIFY: u64 = 2;
/// Points kept per cell (a tile is split into 4 × 4 cells).
pub const POINTS_PER_CELL: usize = 256;

/// Vertices from which the parts of one geometry are generalized in parallel.
const PARALLEL_VERTICES: usize = 100_000;

/// Generalizes one geometry for zoom `z`; `None` when nothing visible is left. A large
/// geometry (a country of many islands) has its parts generalized in parallel, so one feature
/// does not hold a level back while the other cores wait.
pub fn generalize(g: &GridGeometry, z: u8) -> Option<GridGeometry> {
    use rayon::prelude::*;
    let unit = tile_unit(z);
    let tiny = PIXEL * unit;
    let tolerance = (SIMPLIFY * unit) as f64;
    let line = |part: &Vec<Vec<GridPoint>>| -> Option<Vec<Vec<GridPoint>>> {
        let line = part.first()?;
        if is_tiny(line, tiny) {
            return None;
        }
        let s = simplify(line, tolerance, false);
        (s.len() >= 2).then(|| vec![s])
    };
    let polygon = |rings: &Vec<Vec<GridPoint>>| -> Option<Vec<Vec<GridPoint>>> {
        let mut out = Vec::with_capacity(rings.len());
        for (i, ring) in rings.iter().enumerate() {
            if is_tiny(ring, tiny) {
                if i == 0 {
                    return None;
                }
                continue;
            }
            let s = simplify(ring, tolerance, true);
            if s.len() < 3 || ring_area2(&s) == 0 {
                if i == 0 {
                    return None;
                }
                continue;
            }
            out.push(s);
        }
        Some(out)
    };
    let parallel = g.parts.len() > 1 && g.num_coords() >= PARALLEL_VERTICES;
    let parts: Vec<Vec<Vec<GridPoint>>> = match (g.kind, parallel) {
        (GeomKind::Point, _) => return Some(g.clone()),
        (GeomKind::Line, false) => g.parts.iter().filter_map(line).collect(),
        (GeomKind::Line, true) => g.parts.par_iter().filter_map(line).collect(),
        (GeomKind::Polygon, false) => g.parts.iter().filter_map(polygon).collect(),
        (GeomKind::Polygon, true) => g.parts.par_iter().filter_map(polygon).collect(),
    };
    (!parts.is_empty()).then_some(GridGeometry {
        kind: g.kind,
        multi: g.multi,
        parts,
    })
}

fn is_tiny(pts: &[GridPoint], tiny: u64) -> bool {
    let (mut min, mut max) = ([u32::MAX; 2], [0u32; 2]);
    for p in pts {
        min = [min[0].min(p[0]), min[1].min(p[1])];
        max = [max[0].max(p[0]), max[1].max(p[1])];
    }
    u64::from(max[0].saturating_sub(min[0])) < tiny
        && u64::from(max[1].saturating_sub(min[1])) < tiny
}

/// Douglas–Peucker through geo, in grid units; rings go in closed and come back open.
fn simplify(pts: &[GridPoint], tolerance: f64, ring: bool) -> Vec<GridPoint> {
    if pts.is_empty() {
        return Vec::new();
    }
    let mut coords: Vec<Coord<f64>> = pts
        .iter()
        .map(|p| Coord {
            x: f64::from(p[0]),
            y: f64::from(p[1]),
        })
        .collect();
    if ring {
        coords.push(coords[0]);
    }
    let simplified = LineString::new(coords).simplify(tolerance);
    let mut out: Vec<GridPoint> = simplified
        .0
        .iter()
        .map(|c| [c.x as u32, c.y as u32])
        .collect();
    out.dedup();
    if ring && out.len() > 1 && out.first() == out.last() {
        out.pop();
    }
    out
}

/// Twice the signed area of an open ring, exactly, in grid units².
pub fn ring_area2(ring: &[GridPoint]) -> i128 {
    let n = ring.len();
    let mut s: i128 = 0;
    for i in 0..n {
        let (a, b) = (ring[i], ring[(i + 1) % n]);
        s += i128::from(a[0]) * i128::from(b[1]) - i128::from(b[0]) * i128::from(a[1]);
    }
    s
}

/// A stable pseudo-random rank for feature number `i` (splitmix64).
pub fn point_rank(i: u32) -> u64 {
    let mut z = u64::from(i).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The thinning cell of a point at zoom `z`: the tile at `z + 2` that holds it.
pub fn point_cell(p: GridPoint, z: u8) -> (u32, u32) {
    let shift = 32u32.saturating_sub(u32::from(z) + 2);
    if shift >= 32 {
        (0, 0)
    } else {
        (p[0] >> shift, p[1] >> shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(x: u32, y: u32, side: u32) -> Vec<GridPoint> {
        vec![[x, y], [x + side, y], [x + side, y + side], [x, y + side]]
    }

    #[test]
    fn polygon_below_a_pixel_is_dropped_and_above_is_kept() {
        let z = 10;
        let px = (PIXEL * tile_unit(z)) as u32;
        let small = GridGeometry {
            kind: GeomKind::Polygon,
            multi: false,
            parts: vec![vec![square(0, 0, px - 1)]],
        };
        let big = GridGeometry {
            kind: GeomKind::Polygon,
            multi: false,
            parts: vec![vec![square(0, 0, px * 3)]],
        };
        assert!(generalize(&small, z).is_none());
        assert_eq!(generalize(&big, z).unwrap().parts[0][0].len(), 4);
    }

    #[test]
    fn small_hole_goes_but_polygon_stays() {
        let z = 10;
        let px = (PIXEL * tile_unit(z)) as u32;
        let g = GridGeometry {
            kind: GeomKind::Polygon,
            multi: false,
            parts: vec![vec![square(0, 0, px * 10), square(px, px, px / 2)]],
        };
        let out = generalize(&g, z).unwrap();
        assert_eq!(out.parts[0].len(), 1);
    }

    #[test]
    fn nearly_straight_line_loses_its_middle_vertex() {
        let z = 12;
        let unit = tile_unit(z) as u32;
        let line = vec![[0, 0], [100 * unit, unit], [200 * unit, 0]];
        let g = GridGeometry {
            kind: GeomKind::Line,
            multi: false,
            parts: vec![vec![line]],
        };
        assert_eq!(
            generalize(&g, z).unwrap().parts[0][0],
            vec![[0, 0], [200 * unit, 0]]
        );
    }
}
