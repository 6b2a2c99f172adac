//! Live tiles: the current positions of a live layer's devices as an MVT layer, clustered
//! below [`CLUSTER_BELOW`] so that a city's fleet stays readable at low zoom.
//!
//! Clusters are cells of a fixed grid aligned to tiles ([`CELL`] tile units, 16 px on a
//! 256 px tile), so a cluster is the same in every tile that shows it and tiles need no
//! cross-tile merging; a cell with one device shows the device itself. Cluster points carry
//! `cluster = true` and `point_count` (as supercluster and tippecanoe name it) and the count of
//! devices per state.
//!
//! The [`TileCache`] keeps rendered tiles per layer until a device they show changes: the
//! committer drops exactly the tiles (at every cached zoom) whose buffered area holds a
//! changed position, so a busy fleet does not empty the cache of the quiet parts of a city.

use super::state::{DevState, LiveState};
use crate::tile::mercator::lonlat_to_grid;
use crate::tile::mvt::{EncodedLayer, MvtLayer, TileGeometry, TileValue};
use crate::tile::{EXTENT, LayerView, TileBody, TileId};
use rstar::AABB;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Highest zoom advertised for live layers.
pub const LIVE_MAXZOOM: u8 = 22;
/// Zooms below this are clustered.
pub const CLUSTER_BELOW: u8 = 15;
/// Cluster cell size in tile units (of 4096).
pub const CELL: i64 = 256;

/// Live tiles cached, at most (then the cache starts over).
const MAX_CACHED_TILES: usize = 20_000;

/// The properties of a live layer's devices, with their TileJSON types.
pub const FIELDS: [(&str, &str); 6] = [
    ("id", "String"),
    ("kind", "String"),
    ("state", "String"),
    ("t", "Number"),
    ("cluster", "Boolean"),
    ("point_count", "Number"),
];

/// Names a device property may not take from telemetry.
const RESERVED: [&str; 8] = [
    "id",
    "kind",
    "state",
    "t",
    "cluster",
    "point_count",
    "layer",
    "interval_s",
];

/// The tiles at zoom `z` whose buffered area holds grid point `g`.
pub fn tiles_showing(g: [u32; 2], z: u8, buffer: u32) -> Vec<TileId> {
    let shift = 32 - u32::from(z.min(31));
    let b = (u64::from(buffer) << shift) / EXTENT as u64;
    let span = |v: u32| {
        let lo = (u64::from(v).saturating_sub(b)) >> shift;
        let hi = ((u64::from(v) + b).min(u64::from(u32::MAX))) >> shift;
        lo..=hi
    };
    let mut out = Vec::new();
    for x in span(g[0]) {
        for y in span(g[1]) {
            if let Ok(t) = TileId::new(u32::from(z), x, y) {
                out.push(t);
            }
        }
    }
    out
}

/// Renders one live layer's tile within `budget` bytes, with the properties `view` keeps
/// (cluster counts always: they are the drawing, not data).
pub fn render<'s>(
    st: &'s LiveState,
    layer: &str,
    tile: TileId,
    buffer: u32,
    budget: usize,
    view: &LayerView,
) -> EncodedLayer {
    let budget = Some(budget);
    let mut out: MvtLayer<'s> = MvtLayer::new(layer, EXTENT as u32);
    let Some(tree) = st.trees.get(layer) else {
        return out.encode(budget);
    };
    let tf = tile.transform();
    let clustered = tile.z < CLUSTER_BELOW;
    // Clusters are made from the tile proper (no buffer), so a cell is never split.
    let gb = tile.grid_box(if clustered { 0 } else { buffer });
    // With a precision limit every position is snapped first (clusters count snapped
    // positions), so devices whose snapped position falls in the tile are looked for around
    // it too.
    let margin = view.precision_m.map_or(0, |m| {
        let lat =
            crate::tile::grid_to_lonlat([gb.min_x / 2 + gb.max_x / 2, gb.min_y / 2 + gb.max_y / 2])
                .1;
        let units_per_metre = 4_294_967_296.0 / (40_075_016.7 * lat.to_radians().cos().max(0.01));
        (f64::from(m) * units_per_metre) as i64 + 1
    });
    let env = AABB::from_corners(
        [i64::from(gb.min_x) - margin, i64::from(gb.min_y) - margin],
        [i64::from(gb.max_x) + margin, i64::from(gb.max_y) + margin],
    );
    let (lo, hi) = if clustered {
        (0, EXTENT - 1)
    } else {
        (-i64::from(buffer), EXTENT + i64::from(buffer))
    };
    // The tile position of a point of the tree, as the view may serve it; `None` outside.
    let at = |p: &super::state::LivePoint| -> Option<[i64; 2]> {
        if view.area.is_some() {
            let pos = st.devices.at(p.data)?.pos?;
            if !view.shows(pos) {
                return None; // outside the allowed area
            }
        }
        let g = match view.precision_m {
            None => *p.geom(),
            Some(_) => {
                let pos = st.devices.at(p.data)?.pos?;
                let [lon, lat] = view.position(pos);
                let g = lonlat_to_grid(lon, lat);
                [i64::from(g[0]), i64::from(g[1])]
            }
        };
        let t = tf.apply([g[0] as u32, g[1] as u32]);
        (t[0] >= lo && t[0] <= hi && t[1] >= lo && t[1] <= hi).then_some(t)
    };
    let mut geom = TileGeometry::empty();
    let mut add_device = |out: &mut MvtLayer<'s>, id: &str, at: [i64; 2]| {
        let Some(d) = st.devices.get(id) else {
            return;
        };
        geom.set_points(std::iter::once(at));
        let mut props: Vec<(&str, TileValue)> = vec![
            ("id", TileValue::String(&d.id)),
            ("kind", TileValue::String(d.kind.as_str())),
            ("state", TileValue::String(d.state.as_str())),
        ];
        if let Some(t) = d.t {
            props.push(("t", TileValue::Int(t as i64)));
        }
        for (k, v) in d.telemetry.iter() {
            if !RESERVED.contains(&k) {
                props.push((k, TileValue::Double(v)));
            }
        }
        props.retain(|(k, _)| view.keeps(k));
        out.add(None, geom.clone(), 0, props);
    };
    if !clustered {
        for p in tree.locate_in_envelope(&env) {
            if let Some(t) = at(&p)
                && let Some(d) = st.devices.at(p.data)
            {
                add_device(&mut out, &d.id, t);
            }
        }
        return out.encode(budget);
    }
    struct Cell<'a> {
        n: i64,
        sum: [i64; 2],
        first: (&'a str, [i64; 2]),
        states: BTreeMap<DevState, i64>,
    }
    let mut cells: BTreeMap<(i64, i64), Cell> = BTreeMap::new();
    for p in tree.locate_in_envelope(&env) {
        let Some(at) = at(&p) else {
            continue;
        };
        let key = (at[0].div_euclid(CELL), at[1].div_euclid(CELL));
        let c = cells.entry(key).or_insert_with(|| Cell {
            n: 0,
            sum: [0, 0],
            first: (st.devices.at(p.data).map_or("", |d| &*d.id), at),
            states: BTreeMap::new(),
        });
        c.n += 1;
        c.sum[0] += at[0];
        c.sum[1] += at[1];
        if let Some(d) = st.devices.at(p.data) {
            *c.states.entry(d.state).or_default() += 1;
        }
    }
    for c in cells.values() {
        if c.n == 1 {
            add_device(&mut out, c.first.0, c.first.1);
            continue;
        }
        let mut cg = TileGeometry::empty();
        cg.set_points(std::iter::once([c.sum[0] / c.n, c.sum[1] / c.n]));
        let mut props: Vec<(&str, TileValue)> = vec![
            ("cluster", TileValue::Bool(true)),
            ("point_count", TileValue::Int(c.n)),
        ];
        for (s, n) in &c.states {
            if view.keeps(s.as_str()) {
                props.push((s.as_str(), TileValue::Int(*n)));
            }
        }
        out.add(None, cg, 0, props);
    }
    out.encode(budget)
}

/// Key of a cached live tile: the tile, gzip or not, the byte budget and the view it was made
/// for.
type TileKey = (TileId, bool, usize, LayerView);

/// The cached tiles of one live layer, the zooms they are at (a bit per zoom) and the
/// (budget, view) pairs they were made for (one per number of layers composed and role: a
/// handful).
#[derive(Default)]
struct LayerTiles {
    tiles: HashMap<TileKey, Arc<TileBody>>,
    zooms: u32,
    variants: Vec<(usize, LayerView)>,
}

/// Live tiles by layer: a hit and an invalidation look the layer up by `&str` and allocate
/// nothing (invalidation runs on the committer thread for every applied report).
#[derive(Default)]
pub struct TileCache {
    layers: HashMap<String, LayerTiles>,
    /// Tiles cached in all layers.
    entries: usize,
    /// Bumped by every invalidation: a tile rendered before one is not cached after it.
    generation: u64,
}

impl TileCache {
    /// A cached tile, or the generation to hand to [`TileCache::insert`] after rendering.
    pub fn get(&self, layer: &str, key: &TileKey) -> Result<Arc<TileBody>, u64> {
        self.layers
            .get(layer)
            .and_then(|l| l.tiles.get(key))
            .map(Arc::clone)
            .ok_or(self.generation)
    }

    /// Keeps a tile rendered at `generation`, unless an invalidation came since (then the
    /// state it was drawn from is already out of date).
    pub fn insert(&mut self, layer: &str, key: TileKey, generation: u64, body: &Arc<TileBody>) {
        if self.generation != generation {
            return;
        }
        if self.entries >= MAX_CACHED_TILES {
            self.layers.clear();
            self.entries = 0;
        }
        let l = self.layers.entry(layer.to_string()).or_default();
        l.zooms |= 1 << key.0.z.min(31);
        let variant = (key.2, key.3.clone());
        if !l.variants.contains(&variant) {
            l.variants.push(variant);
        }
        let added = l.tiles.insert(key, Arc::clone(body)).is_none();
        self.entries += usize::from(added);
    }

    /// Drops the cached tiles of `layer` that show position `pos` (with the buffer), at every
    /// zoom that has cached tiles: only those tiles change when a device there does.
    pub fn invalidate(&mut self, layer: &str, pos: [f64; 2], buffer: u32) {
        self.generation += 1;
        let Some(l) = self.layers.get_mut(layer) else {
            return;
        };
        let mut removed = 0;
        // A view with a precision limit shows the device at its snapped position, which may
        // be in another tile: drop the tiles showing either.
        let mut points = vec![pos];
        for (_, v) in &l.variants {
            let p = v.position(pos);
            if !points.contains(&p) {
                points.push(p);
            }
        }
        for p in points {
            let g = lonlat_to_grid(p[0], p[1]);
            for z in (0..32u8).filter(|z| l.zooms & (1 << z) != 0) {
                for t in tiles_showing(g, z, buffer) {
                    for (b, v) in &l.variants {
                        for gz in [false, true] {
                            removed +=
                                usize::from(l.tiles.remove(&(t, gz, *b, v.clone())).is_some());
                        }
                    }
                }
            }
        }
        self.entries -= removed;
    }
}
