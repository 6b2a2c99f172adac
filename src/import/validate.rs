//! Per-feature checks, repairs and projection onto the grid.
//!
//! Rules, in order: a feature without geometry is dropped; a NaN or infinite coordinate drops
//! the feature, and so does one outside the CRS's range (longitude ±180, latitude ±90;
//! latitudes beyond Web Mercator's ±85.05° are clamped, not dropped); repeated consecutive
//! points are removed; rings are closed; a ring with fewer than three distinct points drops
//! its polygon (exterior) or itself (hole); an invalid polygon (self-intersection, holes
//! outside the shell...) is repaired on the integer grid by a sweep line (`super::makevalid`)
//! and dropped only if nothing with an area is left; a line with fewer than two distinct points is dropped.

use super::source::{Crs, SourceFeature};
use crate::store::{GeomKind, GridGeometry};
use crate::tile::GridPoint;
use crate::tile::mercator::{MERCATOR_HALF, lonlat_to_grid_f64, mercator_to_grid_f64, snap};
use geo::{Coord, Geometry, LineString, Polygon, Validation};

/// Why a feature was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DropReason {
    /// Null or missing geometry.
    NoGeometry,
    /// The geometry could not be parsed.
    MalformedGeometry,
    /// Empty geometry.
    EmptyGeometry,
    /// NaN or infinite coordinate.
    NonFiniteCoordinate,
    /// Coordinate outside the CRS's valid range.
    OutOfRange,
    /// A polygon's outer ring with fewer than three distinct points.
    DegenerateRing,
    /// A line with fewer than two distinct points.
    DegenerateLine,
    /// An invalid polygon that could not be repaired.
    InvalidPolygon,
    /// Checking and repairing the feature took longer than the import's feature timeout.
    Timeout,
}

impl DropReason {
    /// The reason as the quality report names it.
    pub fn as_str(&self) -> &'static str {
        match self {
            DropReason::NoGeometry => "no geometry",
            DropReason::MalformedGeometry => "malformed geometry",
            DropReason::EmptyGeometry => "empty geometry",
            DropReason::NonFiniteCoordinate => "non-finite coordinate (NaN or infinity)",
            DropReason::OutOfRange => "coordinate out of range",
            DropReason::DegenerateRing => "ring with fewer than 3 distinct points",
            DropReason::DegenerateLine => "line with fewer than 2 distinct points",
            DropReason::InvalidPolygon => "invalid polygon that could not be repaired",
            DropReason::Timeout => "took longer than --feature-timeout to repair",
        }
    }
}

/// A repair made to a kept feature.
pub mod repair {
    /// A ring whose last point differed from its first was closed.
    pub const RING_CLOSED: &str = "ring closed";
    /// A hole with fewer than three distinct points was removed.
    pub const HOLE_REMOVED: &str = "degenerate hole removed";
    /// One part of a multi-geometry was unusable and removed.
    pub const PART_REMOVED: &str = "degenerate part removed";
    /// A geometry collection mixing dimensions kept only its highest-dimension members.
    pub const COLLECTION_REDUCED: &str =
        "mixed geometry collection reduced to its highest dimension";
    /// An invalid polygon was rebuilt by the sweep-line repair (`import::makevalid`).
    pub const POLYGON_REBUILT: &str = "invalid polygon rebuilt (sweep line)";
}

/// The outcome of preparing one feature.
#[derive(Debug)]
pub enum Prepared {
    /// Kept, with the repairs made.
    Kept {
        /// The geometry on the grid.
        geometry: GridGeometry,
        /// Repairs made (names from [`repair`]).
        repairs: Vec<&'static str>,
    },
    /// Dropped, with the reason and a detail for the report.
    Dropped {
        /// Why.
        reason: DropReason,
        /// Where or what exactly.
        detail: String,
    },
}

type Drop = (DropReason, String);

/// The source geometry type's name, for the report.
pub fn geometry_type_name(g: Option<&Geometry<f64>>) -> &'static str {
    match g {
        None => "null",
        Some(Geometry::Point(_)) => "Point",
        Some(Geometry::MultiPoint(_)) => "MultiPoint",
        Some(Geometry::Line(_)) | Some(Geometry::LineString(_)) => "LineString",
        Some(Geometry::MultiLineString(_)) => "MultiLineString",
        Some(Geometry::Polygon(_)) | Some(Geometry::Rect(_)) | Some(Geometry::Triangle(_)) => {
            "Polygon"
        }
        Some(Geometry::MultiPolygon(_)) => "MultiPolygon",
        Some(Geometry::GeometryCollection(_)) => "GeometryCollection",
    }
}

/// Features with more vertices than this are prepared on a thread of their own, under the
/// import's feature timeout; smaller ones take milliseconds.
const WATCHED_VERTICES: usize = 50_000;

/// Like [`prepare`], but a feature with many vertices that takes longer than `timeout` is
/// dropped (reason [`DropReason::Timeout`], its name in the detail) instead of holding the
/// import up; its work is left to finish on its own thread and thrown away. Returns how long
/// it took too.
pub fn prepare_watched(
    f: &SourceFeature,
    crs: Crs,
    timeout: std::time::Duration,
) -> (Prepared, std::time::Duration) {
    use geo::CoordsIter;
    let t0 = std::time::Instant::now();
    let big = f
        .geometry
        .as_ref()
        .is_some_and(|g| g.coords_count() > WATCHED_VERTICES);
    if !big {
        let p = prepare(f, crs);
        return (p, t0.elapsed());
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let owned = f.clone();
    let spawned = std::thread::Builder::new()
        .name("urbis-repair".into())
        .spawn(move || {
            let _ = tx.send(prepare(&owned, crs));
        });
    if spawned.is_err() {
        let p = prepare(f, crs);
        return (p, t0.elapsed());
    }
    match rx.recv_timeout(timeout) {
        Ok(p) => (p, t0.elapsed()),
        Err(_) => (
            Prepared::Dropped {
                reason: DropReason::Timeout,
                detail: format!(
                    "{}: more than {:.1} s",
                    feature_name(f),
                    timeout.as_secs_f64()
                ),
            },
            t0.elapsed(),
        ),
    }
}

/// A feature's name for reports: its `name` (or `NAME`, `name_en`, `ADMIN`) property, else
/// its id, else `-`.
pub fn feature_name(f: &SourceFeature) -> String {
    for key in ["name", "NAME", "name_en", "NAME_EN", "ADMIN", "admin"] {
        if let Some((_, crate::store::PropValue::String(s))) =
            f.properties.iter().find(|(k, _)| k == key)
        {
            return s.clone();
        }
    }
    f.id.map_or_else(|| "-".to_string(), |i| format!("id {i}"))
}

/// Checks, repairs and projects one feature.
pub fn prepare(f: &SourceFeature, crs: Crs) -> Prepared {
    match prepare_inner(f, crs) {
        Ok((geometry, repairs)) => Prepared::Kept { geometry, repairs },
        Err((reason, detail)) => Prepared::Dropped { reason, detail },
    }
}

fn prepare_inner(f: &SourceFeature, crs: Crs) -> Result<(GridGeometry, Vec<&'static str>), Drop> {
    if let Some(e) = &f.geometry_error {
        return Err((DropReason::MalformedGeometry, e.clone()));
    }
    let g = f
        .geometry
        .as_ref()
        .ok_or((DropReason::NoGeometry, String::new()))?;
    let mut repairs = Vec::new();
    check_coords(g, crs)?;
    let Flat {
        kind,
        multi,
        parts: mut polys,
        reduced,
    } = flatten(g)?;
    if reduced {
        repairs.push(repair::COLLECTION_REDUCED);
    }
    // Checks and repairs work on the grid points the layer file stores (units of ~1 cm), not
    // on the exact positions: a polygon valid in degrees can be invalid once its vertices snap
    // to the grid (a vertex within half a unit of another edge lands on it), and a check
    // before the snap passed such polygons through (found on densified coastlines, where
    // GEOS then reported self-intersections in the stored geometry).
    for c in polys.iter_mut().flatten().flatten() {
        let exact = match crs {
            Crs::Wgs84 => lonlat_to_grid_f64(c.x, c.y),
            Crs::WebMercator => mercator_to_grid_f64(c.x, c.y),
        };
        let [x, y] = snap(exact);
        *c = Coord {
            x: f64::from(x),
            y: f64::from(y),
        };
    }
    let parts = match kind {
        GeomKind::Point => polys,
        GeomKind::Line => {
            let n = polys.len();
            let lines: Vec<Vec<Vec<Coord>>> = polys
                .into_iter()
                .filter_map(|mut p| {
                    let mut l = p.pop()?;
                    l.dedup();
                    (l.len() >= 2).then(|| vec![l])
                })
                .collect();
            if lines.is_empty() {
                return Err((DropReason::DegenerateLine, String::new()));
            }
            if lines.len() < n {
                repairs.push(repair::PART_REMOVED);
            }
            lines
        }
        GeomKind::Polygon => fix_polygons(polys, &mut repairs)?,
    };
    let grid = snap_parts(kind, multi, parts, &mut repairs)?;
    repairs.sort_unstable();
    repairs.dedup();
    Ok((grid, repairs))
}

fn check_coords(g: &Geometry<f64>, crs: Crs) -> Result<(), Drop> {
    use geo::CoordsIter;
    for c in g.coords_iter() {
        if !c.x.is_finite() || !c.y.is_finite() {
            return Err((
                DropReason::NonFiniteCoordinate,
                format!("({}, {})", c.x, c.y),
            ));
        }
        let ok = match crs {
            Crs::Wgs84 => c.x.abs() <= 180.0 + 1e-9 && c.y.abs() <= 90.0 + 1e-9,
            Crs::WebMercator => c.x.abs() <= MERCATOR_HALF * (1.0 + 1e-9),
        };
        if !ok {
            return Err((
                DropReason::OutOfRange,
                format!("({}, {}) in {}", c.x, c.y, crs.name()),
            ));
        }
    }
    Ok(())
}

type Parts = Vec<Vec<Vec<Coord>>>;

/// A geometry in uniform nesting, and whether lower-dimension members of a collection were
/// left out.
struct Flat {
    kind: GeomKind,
    multi: bool,
    parts: Parts,
    reduced: bool,
}

/// Uniform nesting: parts → rings/lines → coords.
fn flatten(g: &Geometry<f64>) -> Result<Flat, Drop> {
    let ring = |l: &LineString<f64>| l.0.clone();
    let poly = |p: &Polygon<f64>| {
        let mut rings = vec![ring(p.exterior())];
        rings.extend(p.interiors().iter().map(ring));
        rings
    };
    let (kind, multi, parts): (GeomKind, bool, Parts) = match g {
        Geometry::Point(p) => (GeomKind::Point, false, vec![vec![vec![p.0]]]),
        Geometry::MultiPoint(mp) => (
            GeomKind::Point,
            true,
            mp.0.iter().map(|p| vec![vec![p.0]]).collect(),
        ),
        Geometry::Line(l) => (GeomKind::Line, false, vec![vec![vec![l.start, l.end]]]),
        Geometry::LineString(l) => (GeomKind::Line, false, vec![vec![ring(l)]]),
        Geometry::MultiLineString(ml) => (
            GeomKind::Line,
            true,
            ml.0.iter().map(|l| vec![ring(l)]).collect(),
        ),
        Geometry::Polygon(p) => (GeomKind::Polygon, false, vec![poly(p)]),
        Geometry::Rect(r) => (GeomKind::Polygon, false, vec![poly(&r.to_polygon())]),
        Geometry::Triangle(t) => (GeomKind::Polygon, false, vec![poly(&t.to_polygon())]),
        Geometry::MultiPolygon(mp) => (GeomKind::Polygon, true, mp.0.iter().map(poly).collect()),
        Geometry::GeometryCollection(gc) => {
            // MVT gives a feature one geometry type: keep the members of the highest dimension
            // (a route relation keeps its ways, not its stop nodes) and report the reduction.
            let members =
                gc.0.iter()
                    .map(flatten)
                    .collect::<Result<Vec<Flat>, Drop>>()?;
            let kind = members.iter().map(|m| m.kind).max().ok_or((
                DropReason::EmptyGeometry,
                "empty geometry collection".into(),
            ))?;
            let reduced = members.iter().any(|m| m.kind != kind || m.reduced);
            let parts = members
                .into_iter()
                .filter(|m| m.kind == kind)
                .flat_map(|m| m.parts)
                .collect();
            return non_empty(Flat {
                kind,
                multi: true,
                parts,
                reduced,
            });
        }
    };
    non_empty(Flat {
        kind,
        multi,
        parts,
        reduced: false,
    })
}

fn non_empty(f: Flat) -> Result<Flat, Drop> {
    if f.parts.iter().flatten().all(|r| r.is_empty()) {
        return Err((DropReason::EmptyGeometry, String::new()));
    }
    Ok(f)
}

/// Opens a ring (drops the closing point, noting when the source forgot it) and removes
/// repeated points.
fn open_ring(mut r: Vec<Coord>, repairs: &mut Vec<&'static str>) -> Vec<Coord> {
    if r.len() > 1 && r.first() != r.last() {
        repairs.push(repair::RING_CLOSED);
    }
    r.dedup();
    if r.len() > 1 && r.first() == r.last() {
        r.pop();
    }
    r
}

fn closed(r: &[Coord]) -> LineString<f64> {
    let mut v = r.to_vec();
    if let Some(first) = r.first() {
        v.push(*first);
    }
    LineString::new(v)
}

fn fix_polygons(polys: Parts, repairs: &mut Vec<&'static str>) -> Result<Parts, Drop> {
    let n = polys.len();
    let mut out: Parts = Vec::with_capacity(n);
    let mut first_drop = None;
    let mut invalid = None;
    for rings in polys {
        let mut it = rings.into_iter();
        let Some(ext) = it.next() else { continue };
        let ext = open_ring(ext, repairs);
        if ext.len() < 3 {
            first_drop.get_or_insert((
                DropReason::DegenerateRing,
                format!("outer ring with {} distinct points", ext.len()),
            ));
            continue;
        }
        let mut holes = Vec::new();
        for h in it {
            let h = open_ring(h, repairs);
            if h.len() < 3 {
                repairs.push(repair::HOLE_REMOVED);
            } else {
                holes.push(h);
            }
        }
        if invalid.is_none() {
            // geo's full check compares every pair of edges: affordable on small polygons.
            let small = ext.len() + holes.iter().map(Vec::len).sum::<usize>() <= 2_000;
            if !rings_look_valid(&ext, &holes) {
                let polygon = Polygon::new(closed(&ext), holes.iter().map(|h| closed(h)).collect());
                if !small {
                    invalid =
                        Some("edges cross or touch, or a hole lies outside its shell".to_string());
                } else if let Err(e) = polygon.check_validation() {
                    invalid = Some(e.to_string());
                }
            }
        }
        let mut rings = vec![ext];
        rings.extend(holes);
        out.push(rings);
    }
    // One invalid part and the whole feature is repaired at once: a repaired part may now
    // reach into another, and the sweep line sorts that out in the same pass.
    if let Some(why) = invalid {
        let fixed = super::makevalid::repair(&out);
        if fixed.is_empty() {
            return Err((DropReason::InvalidPolygon, why));
        }
        repairs.push(repair::POLYGON_REBUILT);
        out = fixed;
    }
    if out.is_empty() {
        return Err(first_drop.unwrap_or((DropReason::EmptyGeometry, String::new())));
    }
    if first_drop.is_some() {
        repairs.push(repair::PART_REMOVED);
    }
    Ok(out)
}

/// A fast sufficient check of polygon validity: no two edges of any rings meet except
/// neighbours at their shared vertex, and every hole starts inside the shell and outside the
/// other holes. When it answers `false` the caller falls back to geo's full `Validation`.
///
/// Written here because geo 0.33's ring self-intersection test compares every pair of edges:
/// on Natural Earth's 10 m countries (largest ring 68,099 vertices) it took 70 % of a 9.7 s
/// import; with an R-tree of edges (rstar, which geo already uses) the import takes 1.5 s.
fn rings_look_valid(ext: &[Coord], holes: &[Vec<Coord>]) -> bool {
    use geo::algorithm::line_intersection::{LineIntersection, line_intersection};
    use geo::{
        Line,
        coordinate_position::{CoordPos, CoordinatePosition},
    };
    use rstar::{AABB, RTree, RTreeObject, primitives::GeomWithData, primitives::Rectangle};

    let rings: Vec<&[Coord]> = std::iter::once(ext)
        .chain(holes.iter().map(Vec::as_slice))
        .collect();
    let edge = |r: usize, i: usize| -> Line<f64> {
        let ring = rings[r];
        Line::new(ring[i], ring[(i + 1) % ring.len()])
    };
    type Edge = GeomWithData<Rectangle<[f64; 2]>, (usize, usize)>;
    let edges: Vec<Edge> = rings
        .iter()
        .enumerate()
        .flat_map(|(r, ring)| {
            (0..ring.len()).map(move |i| {
                let (a, b) = (ring[i], ring[(i + 1) % ring.len()]);
                GeomWithData::new(Rectangle::from_corners([a.x, a.y], [b.x, b.y]), (r, i))
            })
        })
        .collect();
    let tree = RTree::bulk_load(edges.clone());
    for e in &edges {
        let (r, i) = e.data;
        let n = rings[r].len();
        let env = e.geom().envelope();
        let query = AABB::from_corners(env.lower(), env.upper());
        for other in tree.locate_in_envelope_intersecting(&query) {
            let (r2, j) = other.data;
            if (r2, j) <= (r, i) {
                continue;
            }
            let adjacent = r2 == r && (j == i + 1 || (i == 0 && j == n - 1));
            match line_intersection(edge(r, i), edge(r2, j)) {
                None => {}
                Some(LineIntersection::SinglePoint { .. }) if adjacent => {}
                Some(_) => return false,
            }
        }
    }
    let shell = Polygon::new(closed(ext), vec![]);
    for (k, h) in holes.iter().enumerate() {
        if shell.coordinate_position(&h[0]) != CoordPos::Inside {
            return false;
        }
        for (m, other) in holes.iter().enumerate() {
            if m != k
                && Polygon::new(closed(other), vec![]).coordinate_position(&h[0])
                    != CoordPos::Outside
            {
                return false;
            }
        }
    }
    true
}

/// Rounds exact grid positions to grid points, removing what collapses.
fn snap_parts(
    kind: GeomKind,
    multi: bool,
    parts: Parts,
    repairs: &mut Vec<&'static str>,
) -> Result<GridGeometry, Drop> {
    let to_grid = |c: &Coord| -> GridPoint { snap([c.x, c.y]) };
    let mut out: Vec<Vec<Vec<GridPoint>>> = Vec::with_capacity(parts.len());
    for part in parts {
        let mut rings = Vec::with_capacity(part.len());
        for (i, r) in part.iter().enumerate() {
            let mut g: Vec<GridPoint> = r.iter().map(to_grid).collect();
            if kind != GeomKind::Point {
                g.dedup();
            }
            if kind == GeomKind::Polygon && g.len() > 1 && g.first() == g.last() {
                g.pop();
            }
            let min = match kind {
                GeomKind::Point => 1,
                GeomKind::Line => 2,
                GeomKind::Polygon => 3,
            };
            if g.len() < min {
                if i == 0 {
                    rings.clear();
                    break;
                }
                repairs.push(repair::HOLE_REMOVED);
                continue;
            }
            rings.push(g);
        }
        if rings.is_empty() {
            repairs.push(repair::PART_REMOVED);
        } else {
            out.push(rings);
        }
    }
    if out.is_empty() {
        let reason = if kind == GeomKind::Line {
            DropReason::DegenerateLine
        } else {
            DropReason::DegenerateRing
        };
        return Err((reason, "collapsed on the 1 cm grid".into()));
    }
    Ok(GridGeometry {
        kind,
        multi,
        parts: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::{line_string, point, polygon};

    fn feature(g: Geometry<f64>) -> SourceFeature {
        SourceFeature {
            geometry: Some(g),
            id: None,
            properties: vec![],
            geometry_error: None,
        }
    }

    fn dropped(p: Prepared) -> DropReason {
        match p {
            Prepared::Dropped { reason, .. } => reason,
            Prepared::Kept { .. } => panic!("expected a drop"),
        }
    }

    #[test]
    fn nan_coordinate_drops_the_feature() {
        let f = feature(point!(x: f64::NAN, y: 60.0).into());
        assert_eq!(
            dropped(prepare(&f, Crs::Wgs84)),
            DropReason::NonFiniteCoordinate
        );
    }

    #[test]
    fn latitude_beyond_ninety_is_out_of_range() {
        let f = feature(point!(x: 24.0, y: 91.0).into());
        assert_eq!(dropped(prepare(&f, Crs::Wgs84)), DropReason::OutOfRange);
    }

    #[test]
    fn two_point_ring_drops_the_polygon() {
        let p = Polygon::new(
            line_string![(x: 0.0, y: 0.0), (x: 1.0, y: 1.0), (x: 0.0, y: 0.0)],
            vec![],
        );
        assert_eq!(
            dropped(prepare(&feature(p.into()), Crs::Wgs84)),
            DropReason::DegenerateRing
        );
    }

    #[test]
    fn bowtie_is_rebuilt_into_two_polygons() {
        let bowtie = polygon![(x: 0.0, y: 0.0), (x: 0.0, y: 1.0), (x: 1.0, y: 0.0), (x: 1.0, y: 1.0), (x: 0.0, y: 0.0)];
        match prepare(&feature(bowtie.into()), Crs::Wgs84) {
            Prepared::Kept { geometry, repairs } => {
                assert_eq!(geometry.parts.len(), 2);
                assert!(repairs.contains(&repair::POLYGON_REBUILT));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fast_check_agrees_with_geo_on_simple_cases() {
        let sq = |x: f64, y: f64, s: f64| {
            vec![
                Coord { x, y },
                Coord { x: x + s, y },
                Coord { x: x + s, y: y + s },
                Coord { x, y: y + s },
            ]
        };
        assert!(rings_look_valid(
            &sq(0.0, 0.0, 10.0),
            &[sq(2.0, 2.0, 2.0), sq(5.0, 5.0, 2.0)]
        ));
        // hole outside the shell
        assert!(!rings_look_valid(
            &sq(0.0, 0.0, 10.0),
            &[sq(20.0, 2.0, 2.0)]
        ));
        // hole inside another hole
        assert!(!rings_look_valid(
            &sq(0.0, 0.0, 10.0),
            &[sq(2.0, 2.0, 6.0), sq(3.0, 3.0, 1.0)]
        ));
        // bow-tie
        let bowtie = vec![
            Coord { x: 0.0, y: 0.0 },
            Coord { x: 1.0, y: 1.0 },
            Coord { x: 1.0, y: 0.0 },
            Coord { x: 0.0, y: 1.0 },
        ];
        assert!(!rings_look_valid(&bowtie, &[]));
        // a spike folding back on itself
        let spike = vec![
            Coord { x: 0.0, y: 0.0 },
            Coord { x: 4.0, y: 0.0 },
            Coord { x: 6.0, y: 0.0 },
            Coord { x: 4.0, y: 0.0 },
            Coord { x: 4.0, y: 4.0 },
        ];
        assert!(!rings_look_valid(&spike, &[]));
    }

    #[test]
    fn open_ring_is_closed_and_reported() {
        let p = Polygon::new(
            LineString::new(vec![
                Coord { x: 0.0, y: 0.0 },
                Coord { x: 1.0, y: 0.0 },
                Coord { x: 1.0, y: 1.0 },
            ]),
            vec![],
        );
        // geo closes rings itself on construction; feed an unclosed ring through flatten's path.
        match prepare(&feature(p.into()), Crs::Wgs84) {
            Prepared::Kept { geometry, .. } => assert_eq!(geometry.parts[0][0].len(), 3),
            other => panic!("{other:?}"),
        }
    }
}
