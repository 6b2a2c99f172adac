//! Geofences and their events: `enter` (a fix inside after one outside, or a first fix
//! inside), `exit` (outside after inside) and `cross` (both fixes outside, the segment between
//! them through the fence).
//!
//! A fence is a closed (multi)polygon in WGS 84, treated as planar at city scale: a point on
//! the boundary is inside. Candidate fences come from an R-tree of fence boxes; the exact tests
//! are geo's `Intersects`. `tests` checks them against a brute-force oracle over random tracks.

use geo::{BoundingRect, Intersects};
use geo_types::{Coord, Line, MultiPolygon, Point};
use geozero::ToGeo;
use rstar::{AABB, RTree, RTreeObject};
use serde::{Deserialize, Serialize};

/// A geofence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fence {
    /// Identifier (given or assigned).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Live layers it watches (empty: all).
    pub layers: Vec<String>,
    /// The area, as GeoJSON geometry (Polygon or MultiPolygon) in WGS 84.
    pub geometry: serde_json::Value,
    /// The area, parsed.
    #[serde(skip, default = "no_area")]
    pub area: MultiPolygon<f64>,
}

fn no_area() -> MultiPolygon<f64> {
    MultiPolygon(Vec::new())
}

/// What happened at a fence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum FenceEventKind {
    /// Came inside.
    Enter,
    /// Went outside.
    Exit,
    /// Passed through between two fixes outside.
    Cross,
}

impl Fence {
    /// A fence from a GeoJSON Feature (Polygon or MultiPolygon; `id`, and `name` and `layers`
    /// properties optional) or a bare geometry. Without an id it gets `fence-` and the time
    /// `now` (seconds) in milliseconds.
    pub fn from_geojson(v: &serde_json::Value, now: f64) -> Result<Fence, String> {
        let (geometry, area) = Fence::parse_geometry(v)?;
        let props = v.get("properties");
        let id = match v.get("id") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => format!("fence-{:.0}", now * 1000.0),
        };
        if !super::registry::valid_device_id(&id) {
            return Err(format!("id {id:?}: use 1-64 of A-Z a-z 0-9 . _ : -"));
        }
        let name = props
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or(&id)
            .to_string();
        let layers = props
            .and_then(|p| p.get("layers"))
            .and_then(|l| l.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Fence {
            id,
            name,
            layers,
            geometry,
            area,
        })
    }

    /// The fence as a GeoJSON Feature.
    pub fn to_geojson(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "Feature",
            "id": self.id,
            "properties": {"name": self.name, "layers": self.layers},
            "geometry": self.geometry,
        })
    }

    /// Parses the GeoJSON geometry of a fence (Polygon or MultiPolygon, or a Feature holding
    /// one) and checks it.
    pub fn parse_geometry(
        v: &serde_json::Value,
    ) -> Result<(serde_json::Value, MultiPolygon<f64>), String> {
        let geom = match v.get("type").and_then(|t| t.as_str()) {
            Some("Feature") => v
                .get("geometry")
                .cloned()
                .ok_or("the Feature has no geometry")?,
            Some("Polygon") | Some("MultiPolygon") => v.clone(),
            Some(other) => {
                return Err(format!(
                    "a geofence must be a Polygon or MultiPolygon, not a {other}"
                ));
            }
            None => return Err("the geometry has no \"type\"".into()),
        };
        let text = geom.to_string();
        let g: geo_types::Geometry<f64> = geozero::geojson::GeoJson(&text)
            .to_geo()
            .map_err(|e| format!("geometry: {e}"))?;
        let mp = match g {
            geo_types::Geometry::Polygon(p) => MultiPolygon(vec![p]),
            geo_types::Geometry::MultiPolygon(mp) => mp,
            _ => return Err("a geofence must be a Polygon or MultiPolygon".into()),
        };
        for p in &mp.0 {
            let ext = p.exterior();
            if ext.0.len() < 4 {
                return Err("a polygon ring needs at least 4 positions".into());
            }
            for c in p
                .exterior()
                .0
                .iter()
                .chain(p.interiors().iter().flat_map(|r| r.0.iter()))
            {
                if !((-180.0..=180.0).contains(&c.x) && (-90.0..=90.0).contains(&c.y)) {
                    return Err(format!("position [{}, {}] is out of range", c.x, c.y));
                }
            }
        }
        if mp.bounding_rect().is_none() {
            return Err("the geofence is empty".into());
        }
        Ok((geom, mp))
    }

    /// True if the point is inside or on the boundary.
    pub fn contains(&self, p: [f64; 2]) -> bool {
        self.area.intersects(&Point::new(p[0], p[1]))
    }

    /// True if the segment touches the area.
    pub fn touches_segment(&self, a: [f64; 2], b: [f64; 2]) -> bool {
        if a == b {
            return self.contains(a);
        }
        self.area.intersects(&Line::new(
            Coord { x: a[0], y: a[1] },
            Coord { x: b[0], y: b[1] },
        ))
    }

    /// True if the fence watches `layer`.
    pub fn watches(&self, layer: &str) -> bool {
        self.layers.is_empty() || self.layers.iter().any(|l| l == layer)
    }

    /// The event of a move from `prev` (none for a first fix) to `cur`, if any.
    pub fn event(&self, prev: Option<[f64; 2]>, cur: [f64; 2]) -> Option<FenceEventKind> {
        let now_in = self.contains(cur);
        match prev {
            None => now_in.then_some(FenceEventKind::Enter),
            Some(p) => {
                let was_in = self.contains(p);
                match (was_in, now_in) {
                    (false, true) => Some(FenceEventKind::Enter),
                    (true, false) => Some(FenceEventKind::Exit),
                    (true, true) => None,
                    (false, false) => self
                        .touches_segment(p, cur)
                        .then_some(FenceEventKind::Cross),
                }
            }
        }
    }
}

struct FenceBox {
    index: usize,
    env: AABB<[f64; 2]>,
}

impl RTreeObject for FenceBox {
    type Envelope = AABB<[f64; 2]>;
    fn envelope(&self) -> Self::Envelope {
        self.env
    }
}

/// All fences, with an index of their boxes.
#[derive(Default)]
pub struct FenceSet {
    fences: Vec<Fence>,
    tree: RTree<FenceBox>,
}

impl FenceSet {
    /// Builds the set.
    pub fn new(fences: Vec<Fence>) -> FenceSet {
        let boxes = fences
            .iter()
            .enumerate()
            .filter_map(|(index, f)| {
                let r = f.area.bounding_rect()?;
                Some(FenceBox {
                    index,
                    env: AABB::from_corners([r.min().x, r.min().y], [r.max().x, r.max().y]),
                })
            })
            .collect();
        FenceSet {
            fences,
            tree: RTree::bulk_load(boxes),
        }
    }

    /// The fences.
    pub fn fences(&self) -> &[Fence] {
        &self.fences
    }

    /// The fence with id `id`.
    pub fn get(&self, id: &str) -> Option<&Fence> {
        self.fences.iter().find(|f| f.id == id)
    }

    /// The events of one device of `layer` moving from `prev` to `cur`, by fence order.
    pub fn events(
        &self,
        layer: &str,
        prev: Option<[f64; 2]>,
        cur: [f64; 2],
    ) -> Vec<(usize, FenceEventKind)> {
        let p = prev.unwrap_or(cur);
        let env = AABB::from_corners(
            [p[0].min(cur[0]), p[1].min(cur[1])],
            [p[0].max(cur[0]), p[1].max(cur[1])],
        );
        let mut out: Vec<(usize, FenceEventKind)> = self
            .tree
            .locate_in_envelope_intersecting(&env)
            .filter(|b| self.fences[b.index].watches(layer))
            .filter_map(|b| Some((b.index, self.fences[b.index].event(prev, cur)?)))
            .collect();
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Brute force: orientation tests on every edge, ray casting for inside.
    fn orient(a: [f64; 2], b: [f64; 2], c: [f64; 2]) -> f64 {
        (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
    }
    fn on_segment(a: [f64; 2], b: [f64; 2], p: [f64; 2]) -> bool {
        orient(a, b, p) == 0.0
            && p[0] >= a[0].min(b[0])
            && p[0] <= a[0].max(b[0])
            && p[1] >= a[1].min(b[1])
            && p[1] <= a[1].max(b[1])
    }
    fn segments_meet(a: [f64; 2], b: [f64; 2], c: [f64; 2], d: [f64; 2]) -> bool {
        let (d1, d2, d3, d4) = (
            orient(c, d, a),
            orient(c, d, b),
            orient(a, b, c),
            orient(a, b, d),
        );
        if ((d1 > 0.0 && d2 < 0.0) || (d1 < 0.0 && d2 > 0.0))
            && ((d3 > 0.0 && d4 < 0.0) || (d3 < 0.0 && d4 > 0.0))
        {
            return true;
        }
        on_segment(c, d, a) || on_segment(c, d, b) || on_segment(a, b, c) || on_segment(a, b, d)
    }
    fn oracle_inside(ring: &[[f64; 2]], p: [f64; 2]) -> bool {
        let n = ring.len();
        let mut inside = false;
        for i in 0..n {
            let (a, b) = (ring[i], ring[(i + 1) % n]);
            if on_segment(a, b, p) {
                return true;
            }
            if (a[1] > p[1]) != (b[1] > p[1]) {
                let x = a[0] + (p[1] - a[1]) * (b[0] - a[0]) / (b[1] - a[1]);
                if p[0] < x {
                    inside = !inside;
                }
            }
        }
        inside
    }
    fn oracle_events(ring: &[[f64; 2]], track: &[[f64; 2]]) -> Vec<(usize, FenceEventKind)> {
        let mut out = Vec::new();
        for (i, &p) in track.iter().enumerate() {
            let now_in = oracle_inside(ring, p);
            let ev = if i == 0 {
                now_in.then_some(FenceEventKind::Enter)
            } else {
                let q = track[i - 1];
                match (oracle_inside(ring, q), now_in) {
                    (false, true) => Some(FenceEventKind::Enter),
                    (true, false) => Some(FenceEventKind::Exit),
                    (true, true) => None,
                    (false, false) => (0..ring.len())
                        .any(|k| segments_meet(q, p, ring[k], ring[(k + 1) % ring.len()]))
                        .then_some(FenceEventKind::Cross),
                }
            };
            if let Some(e) = ev {
                out.push((i, e));
            }
        }
        out
    }

    fn fence_of(ring: &[[f64; 2]]) -> Fence {
        let mut coords: Vec<Vec<f64>> = ring.iter().map(|p| vec![p[0], p[1]]).collect();
        coords.push(coords[0].clone());
        let (geometry, area) =
            Fence::parse_geometry(&serde_json::json!({"type": "Polygon", "coordinates": [coords]}))
                .unwrap();
        Fence {
            id: "f".into(),
            name: "f".into(),
            layers: vec![],
            geometry,
            area,
        }
    }

    /// A star-shaped simple ring around (50, 50) on an integer grid (so the oracle's exact
    /// arithmetic and geo's robust predicates agree).
    fn ring() -> impl Strategy<Value = Vec<[f64; 2]>> {
        proptest::collection::vec((5u32..40, 0u32..1000), 3..12).prop_map(|mut rs| {
            rs.sort_by_key(|r| r.1);
            rs.dedup_by_key(|r| r.1);
            let n = rs.len().max(3);
            rs.iter()
                .enumerate()
                .map(|(i, (r, _))| {
                    let a = std::f64::consts::TAU * i as f64 / n as f64;
                    [
                        (50.0 + f64::from(*r) * a.cos()).round(),
                        (50.0 + f64::from(*r) * a.sin()).round(),
                    ]
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn events_match_a_brute_force_oracle(
            ring in ring(),
            track in proptest::collection::vec((0u32..100, 0u32..100).prop_map(|(x, y)| [f64::from(x), f64::from(y)]), 1..40),
        ) {
            let mut r = ring.clone();
            r.dedup();
            prop_assume!(r.len() >= 3);
            // Skip rings that self-touch after rounding (not simple polygons).
            let area2: f64 = (0..r.len()).map(|i| { let (a, b) = (r[i], r[(i + 1) % r.len()]); a[0] * b[1] - b[0] * a[1] }).sum();
            prop_assume!(area2.abs() > 0.0);
            let set = FenceSet::new(vec![fence_of(&r)]);
            let mut got = Vec::new();
            for (i, &p) in track.iter().enumerate() {
                let prev = (i > 0).then(|| track[i - 1]);
                for (_, e) in set.events("any", prev, p) {
                    got.push((i, e));
                }
            }
            prop_assert_eq!(got, oracle_events(&r, &track));
        }
    }

    #[test]
    fn a_fence_watches_its_layers_only() {
        let mut f = fence_of(&[[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]]);
        f.layers = vec!["vehicles".into()];
        let set = FenceSet::new(vec![f]);
        assert_eq!(
            set.events("vehicles", Some([-5.0, 5.0]), [5.0, 5.0]),
            vec![(0, FenceEventKind::Enter)]
        );
        assert!(
            set.events("manholes", Some([-5.0, 5.0]), [5.0, 5.0])
                .is_empty()
        );
        assert_eq!(
            set.events("vehicles", Some([-5.0, 5.0]), [15.0, 5.0]),
            vec![(0, FenceEventKind::Cross)]
        );
    }
}
