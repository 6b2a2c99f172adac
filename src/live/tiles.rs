//! Live tiles: the current positions of a live layer's devices as an MVT layer, clustered
//! below [`CLUSTER_BELOW`] so that a city's fleet stays readable at low zoom.
//!
//! Clusters are cells of a fixed grid aligned to tiles ([`CELL`] tile units, 16 px on a
//! 256 px tile), so a cluster is the same in every tile that shows it and tiles need no
//! cross-tile merging; a cell with one device shows the device itself. Cluster points carry
//! `cluster = true` and `point_count` (as supercluster and tippecanoe name it) and the count of
//! devices per state.

use super::state::{DevState, LiveState};
use crate::tile::mvt::{EncodedLayer, MvtLayer, TileGeometry, TileValue};
use crate::tile::{EXTENT, TileId};
use rstar::AABB;
use std::collections::BTreeMap;

/// Highest zoom advertised for live layers.
pub const LIVE_MAXZOOM: u8 = 22;
/// Zooms below this are clustered.
pub const CLUSTER_BELOW: u8 = 15;
/// Cluster cell size in tile units (of 4096).
pub const CELL: i64 = 256;

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

/// Renders one live layer's tile.
pub fn render<'s>(st: &'s LiveState, layer: &str, tile: TileId, buffer: u32) -> EncodedLayer {
    let mut out: MvtLayer<'s> = MvtLayer::new(layer, EXTENT as u32);
    let Some(tree) = st.trees.get(layer) else {
        return out.encode(None);
    };
    let tf = tile.transform();
    let clustered = tile.z < CLUSTER_BELOW;
    // Clusters are made from the tile proper (no buffer), so a cell is never split.
    let gb = tile.grid_box(if clustered { 0 } else { buffer });
    let env = AABB::from_corners(
        [i64::from(gb.min_x), i64::from(gb.min_y)],
        [i64::from(gb.max_x), i64::from(gb.max_y)],
    );
    let mut geom = TileGeometry::empty();
    let local = |p: &[i64; 2]| tf.apply([p[0] as u32, p[1] as u32]);
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
        for (k, v) in &d.telemetry {
            if !RESERVED.contains(&k.as_str()) {
                props.push((k.as_str(), TileValue::Double(*v)));
            }
        }
        out.add(None, geom.clone(), 0, props);
    };
    if !clustered {
        for p in tree.locate_in_envelope(&env) {
            add_device(&mut out, &st.ids[p.data as usize], local(p.geom()));
        }
        return out.encode(None);
    }
    struct Cell<'a> {
        n: i64,
        sum: [i64; 2],
        first: (&'a str, [i64; 2]),
        states: BTreeMap<DevState, i64>,
    }
    let mut cells: BTreeMap<(i64, i64), Cell> = BTreeMap::new();
    for p in tree.locate_in_envelope(&env) {
        let at = local(p.geom());
        let key = (at[0].div_euclid(CELL), at[1].div_euclid(CELL));
        let c = cells.entry(key).or_insert_with(|| Cell {
            n: 0,
            sum: [0, 0],
            first: (&st.ids[p.data as usize], at),
            states: BTreeMap::new(),
        });
        c.n += 1;
        c.sum[0] += at[0];
        c.sum[1] += at[1];
        if let Some(d) = st.devices.get(&st.ids[p.data as usize]) {
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
            props.push((s.as_str(), TileValue::Int(*n)));
        }
        out.add(None, cg, 0, props);
    }
    out.encode(None)
}
