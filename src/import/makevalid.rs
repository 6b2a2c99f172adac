//! Repair of invalid polygons on the integer grid with a sweep line: `i_overlay`'s `simplify`
//! (the engine geo's boolean operations run on) over all rings of a polygon at once, with the
//! non-zero fill rule and OGC output, so the cost is O(n log n) in the polygon's vertices.
//!
//! Why not geo's `MakeValid`: it triangulates the whole polygon (a constrained Delaunay
//! triangulation, spade) and took 25 minutes on a 1:10 m world land layer whose largest
//! countries have a million vertices; GEOS's `make_valid` took over 12. This takes seconds.
//!
//! The fill rule: even-odd over every ring of the feature at once, which is what
//! `ST_MakeValid` (GEOS, linework method) gives on the cases it is defined by: an area inside
//! an odd number of rings is land, so reversed rings change nothing, both lobes of a bow-tie
//! are kept, a hole cuts where it overlaps its shell and is land where it lies outside, and a
//! loop of a ring wound twice round is cut out (non-zero would keep it: GEOS does not). On
//! Natural Earth's 10 m countries made invalid four ways, 253 of 254 areas match GEOS within
//! 0.1 % (`tests/import_repair.rs`); the exception is Russia (0.7 % less), whose parts overlap
//! each other: even-odd cuts every overlap, GEOS's iterative linework keeps some, and a union
//! of the parts (non-zero across parts, tried) gives 1.6 % more. All results are valid.
//!
//! Traps handled here (found on real data, see the crate notes): the default options allow
//! rings that touch themselves, so OGC output is asked for; collinear vertices are kept (a
//! vertex dropped from one polygon leaves another's vertex on its edge); and OGC output can
//! attach a hole to the wrong shell, so every hole is checked against its shell with an exact
//! point-in-ring test and moved to the smallest shell that contains it.

use geo::Coord;
use i_overlay::core::fill_rule::FillRule;
use i_overlay::core::overlay::IntOverlayOptions;
use i_overlay::core::simplify::Simplify;
use i_overlay::i_float::int::point::IntPoint;

/// A polygon as rings of grid coordinates: the shell first, then its holes (open rings).
pub type Rings = Vec<Vec<Coord>>;

fn options() -> IntOverlayOptions<u128> {
    let mut o = IntOverlayOptions::ogc();
    o.preserve_input_collinear = true;
    o.preserve_output_collinear = true;
    o
}

/// Twice the signed area of a ring (positive counter-clockwise), exact.
fn area2(r: &[IntPoint<i64>]) -> i128 {
    let n = r.len();
    (0..n)
        .map(|i| {
            let (a, b) = (r[i], r[(i + 1) % n]);
            i128::from(a.x) * i128::from(b.y) - i128::from(b.x) * i128::from(a.y)
        })
        .sum()
}

/// Where `p` lies against ring `r`: `Some(true)` inside, `Some(false)` outside, `None` on
/// its boundary. Exact (integer cross products).
fn locate(p: IntPoint<i64>, r: &[IntPoint<i64>]) -> Option<bool> {
    let n = r.len();
    let mut inside = false;
    for i in 0..n {
        let (a, b) = (r[i], r[(i + 1) % n]);
        let cross = i128::from(b.x - a.x) * i128::from(p.y - a.y)
            - i128::from(b.y - a.y) * i128::from(p.x - a.x);
        let within = p.x >= a.x.min(b.x)
            && p.x <= a.x.max(b.x)
            && p.y >= a.y.min(b.y)
            && p.y <= a.y.max(b.y);
        if cross == 0 && within {
            return None;
        }
        if (a.y > p.y) != (b.y > p.y) {
            // The edge crosses the horizontal through p: right of p?
            let right = if b.y > a.y { cross > 0 } else { cross < 0 };
            if right {
                inside = !inside;
            }
        }
    }
    Some(inside)
}

/// Whether hole `h` lies in shell `s`: the first vertex of `h` not on `s`'s boundary decides.
fn hole_in(h: &[IntPoint<i64>], s: &[IntPoint<i64>]) -> bool {
    h.iter().find_map(|p| locate(*p, s)).unwrap_or(false)
}

fn bbox(r: &[IntPoint<i64>]) -> [i64; 4] {
    r.iter()
        .fold([i64::MAX, i64::MAX, i64::MIN, i64::MIN], |b, p| {
            [b[0].min(p.x), b[1].min(p.y), b[2].max(p.x), b[3].max(p.y)]
        })
}

fn to_int(rings: &[Vec<Coord>]) -> Vec<Vec<IntPoint<i64>>> {
    rings
        .iter()
        .map(|r| {
            r.iter()
                .map(|c| IntPoint::new(c.x.round() as i64, c.y.round() as i64))
                .collect()
        })
        .collect()
}

/// Vertices from which a feature's separate clusters of parts are repaired in parallel.
const PARALLEL_VERTICES: usize = 50_000;

/// Repairs the polygons of one feature (each its shell first, then its holes); returns the
/// valid polygons they become, empty if nothing with an area is left. One even-odd pass over
/// every ring of the feature. Coordinates are rounded to the integer grid.
///
/// Parts whose boxes neither overlap nor touch cannot interact under even-odd, so a large
/// feature (a country of islands) is split into clusters of parts with overlapping boxes,
/// repaired in parallel: the same polygons as one pass, sooner on more cores.
pub fn repair(parts: &[Rings]) -> Vec<Rings> {
    let vertices: usize = parts.iter().flatten().map(Vec::len).sum();
    if vertices >= PARALLEL_VERTICES && parts.len() > 1 {
        let groups = clusters(parts);
        if groups.len() > 1 {
            return repair_groups(parts, &groups);
        }
    }
    repair_rings(parts.iter().flatten().cloned().collect())
}

/// Repairs clusters of parts on scoped threads, one per core, each taking the next cluster
/// (largest first). Not rayon: a large feature is repaired on a thread of its own that the
/// importer watches from a rayon worker (`--feature-timeout`), and work handed back to the
/// busy pool would wait for the very workers that wait for it.
fn repair_groups(parts: &[Rings], groups: &[Vec<usize>]) -> Vec<Rings> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let size = |g: &Vec<usize>| -> usize { g.iter().flat_map(|&i| &parts[i]).map(Vec::len).sum() };
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|&g| std::cmp::Reverse(size(&groups[g])));
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(2, usize::from)
        .min(groups.len());
    let mut done: Vec<(usize, Vec<Rings>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&g) = order.get(k) else { break };
                        let rings: Vec<Vec<Coord>> = groups[g]
                            .iter()
                            .flat_map(|&i| parts[i].iter().cloned())
                            .collect();
                        out.push((g, repair_rings(rings)));
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    // In the order of the clusters, whichever thread repaired them.
    done.sort_by_key(|d| d.0);
    done.into_iter().flat_map(|d| d.1).collect()
}

/// Groups parts whose boxes (over all their rings) overlap or touch, transitively: a sweep
/// along x with a union-find. Groups come in order of their first part.
fn clusters(parts: &[Rings]) -> Vec<Vec<usize>> {
    let boxes: Vec<[f64; 4]> = parts
        .iter()
        .map(|p| {
            p.iter()
                .flatten()
                .fold([f64::MAX, f64::MAX, f64::MIN, f64::MIN], |b, c| {
                    [b[0].min(c.x), b[1].min(c.y), b[2].max(c.x), b[3].max(c.y)]
                })
        })
        .collect();
    let mut parent: Vec<usize> = (0..parts.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by(|&a, &b| boxes[a][0].total_cmp(&boxes[b][0]));
    for (k, &i) in order.iter().enumerate() {
        for &j in &order[k + 1..] {
            if boxes[j][0] > boxes[i][2] {
                break;
            }
            if boxes[j][1] <= boxes[i][3] && boxes[i][1] <= boxes[j][3] {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut slot = vec![usize::MAX; parts.len()];
    for i in 0..parts.len() {
        let r = root(&mut parent, i);
        if slot[r] == usize::MAX {
            slot[r] = groups.len();
            groups.push(Vec::new());
        }
        groups[slot[r]].push(i);
    }
    groups
}

/// One even-odd pass over `rings` (see [`repair`]).
fn repair_rings(rings: Vec<Vec<Coord>>) -> Vec<Rings> {
    let shapes = to_int(&rings).simplify(FillRule::EvenOdd, options());
    // Every shell, and every hole with the shell it came with.
    let mut shells: Vec<Vec<IntPoint<i64>>> = Vec::with_capacity(shapes.len());
    let mut holes: Vec<(usize, Vec<IntPoint<i64>>)> = Vec::new();
    for shape in shapes {
        let mut it = shape.into_iter();
        let Some(s) = it.next() else { continue };
        let i = shells.len();
        shells.push(s);
        holes.extend(it.map(|h| (i, h)));
    }
    // Check each hole against its shell; one in the wrong shell goes to the smallest shell
    // that contains it, found through an index of shell boxes.
    let boxes: Vec<[i64; 4]> = shells.iter().map(|s| bbox(s)).collect();
    let areas: Vec<i128> = shells.iter().map(|s| area2(s).abs()).collect();
    let mut index: Option<
        rstar::RTree<
            rstar::primitives::GeomWithData<rstar::primitives::Rectangle<[i64; 2]>, usize>,
        >,
    > = None;
    let mut placed: Vec<Vec<Vec<IntPoint<i64>>>> = vec![Vec::new(); shells.len()];
    for (owner, h) in holes {
        if hole_in(&h, &shells[owner]) {
            placed[owner].push(h);
            continue;
        }
        let tree = index.get_or_insert_with(|| {
            rstar::RTree::bulk_load(
                boxes
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        rstar::primitives::GeomWithData::new(
                            rstar::primitives::Rectangle::from_corners([b[0], b[1]], [b[2], b[3]]),
                            i,
                        )
                    })
                    .collect(),
            )
        });
        let hb = bbox(&h);
        let env = rstar::AABB::from_corners([hb[0], hb[1]], [hb[2], hb[3]]);
        let best = tree
            .locate_in_envelope_intersecting(&env)
            .map(|c| c.data)
            .filter(|&i| i != owner && hole_in(&h, &shells[i]))
            .min_by_key(|&i| areas[i]);
        // A hole no shell contains is not a hole of this polygon: dropped.
        if let Some(i) = best {
            placed[i].push(h);
        }
    }
    let to_coords = |r: Vec<IntPoint<i64>>| -> Vec<Coord> {
        r.into_iter()
            .map(|p| Coord {
                x: p.x as f64,
                y: p.y as f64,
            })
            .collect()
    };
    shells
        .into_iter()
        .zip(placed)
        .filter(|(s, _)| s.len() >= 3)
        .map(|(s, hs)| {
            let mut rings = vec![to_coords(s)];
            rings.extend(hs.into_iter().filter(|h| h.len() >= 3).map(to_coords));
            rings
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(pts: &[(f64, f64)]) -> Vec<Coord> {
        pts.iter().map(|&(x, y)| Coord { x, y }).collect()
    }

    fn area(rings: &Rings) -> f64 {
        let a = |r: &Vec<Coord>| -> f64 {
            let n = r.len();
            (0..n)
                .map(|i| r[i].x * r[(i + 1) % n].y - r[(i + 1) % n].x * r[i].y)
                .sum::<f64>()
                .abs()
                / 2.0
        };
        a(&rings[0]) - rings[1..].iter().map(a).sum::<f64>()
    }

    #[test]
    fn separate_clusters_of_parts_repair_as_one_pass_would() {
        // Islands (bow-ties, far apart) and two parts whose boxes touch, repaired
        // in clusters, in parallel (over PARALLEL_VERTICES): same area as one pass.
        let mut parts = Vec::new();
        for k in 0..40 {
            let x = f64::from(k) * 1000.0;
            // A bow-tie drawn with many vertices along its edges.
            let mut r = Vec::new();
            for (a, b) in [
                ((0., 0.), (500., 500.)),
                ((500., 500.), (500., 0.)),
                ((500., 0.), (0., 500.)),
            ] {
                for i in 0..500 {
                    let t = f64::from(i) / 500.0;
                    r.push((x + a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t));
                }
            }
            parts.push(vec![ring(&r)]);
        }
        parts.push(vec![ring(&[
            (0., 1000.),
            (100., 1000.),
            (100., 1100.),
            (0., 1100.),
        ])]);
        parts.push(vec![ring(&[
            (100., 1000.),
            (200., 1000.),
            (200., 1100.),
            (100., 1100.),
        ])]);
        assert_eq!(
            clusters(&parts).len(),
            41,
            "the touching squares are one cluster"
        );
        let split: f64 = repair(&parts).iter().map(area).sum();
        let whole: f64 = repair_rings(parts.iter().flatten().cloned().collect())
            .iter()
            .map(area)
            .sum();
        assert_eq!(split, whole);
        assert!(split > 40.0 * 120_000.0, "{split}");
        // Two lobes per bow-tie, and the touching squares merged into one polygon.
        assert_eq!(repair(&parts).len(), 81);
    }

    #[test]
    fn a_bow_tie_keeps_both_lobes() {
        let out = repair(&[vec![ring(&[(0., 0.), (10., 10.), (10., 0.), (0., 10.)])]]);
        assert_eq!(out.len(), 2, "{out:?}");
        let total: f64 = out.iter().map(area).sum();
        assert_eq!(total, 50.0);
    }

    #[test]
    fn a_hole_outside_its_shell_is_land_and_a_crossing_hole_cuts() {
        let shell = ring(&[(0., 0.), (100., 0.), (100., 100.), (0., 100.)]);
        // Half inside, half outside.
        let hole = ring(&[(80., 40.), (120., 40.), (120., 60.), (80., 60.)]);
        let out = repair(&[vec![shell, hole]]);
        let total: f64 = out.iter().map(area).sum();
        // 10,000 - 400 (the part inside) + 400 (the part outside, kept as land by GEOS too).
        assert_eq!(total, 10_000.0, "{out:?}");
    }

    #[test]
    fn reversed_rings_and_a_hole_far_outside_and_holes_land_in_their_shells() {
        // A reversed shell with a hole wound like a shell, and a "hole" far outside (land,
        // as GEOS keeps it).
        let out = repair(&[vec![
            ring(&[(0., 0.), (0., 100.), (100., 100.), (100., 0.)]),
            ring(&[(40., 40.), (60., 40.), (60., 60.), (40., 60.)]),
            ring(&[(200., 200.), (210., 200.), (210., 210.), (200., 210.)]),
        ]]);
        let mut areas: Vec<f64> = out.iter().map(area).collect();
        areas.sort_by(f64::total_cmp);
        assert_eq!(areas, [100.0, 10_000.0 - 400.0], "{out:?}");
        for p in &out {
            for h in &p[1..] {
                // Every hole inside its own shell.
                let s: Vec<IntPoint<i64>> = p[0]
                    .iter()
                    .map(|c| IntPoint::new(c.x as i64, c.y as i64))
                    .collect();
                let h: Vec<IntPoint<i64>> = h
                    .iter()
                    .map(|c| IntPoint::new(c.x as i64, c.y as i64))
                    .collect();
                assert!(hole_in(&h, &s));
            }
        }
    }
}
