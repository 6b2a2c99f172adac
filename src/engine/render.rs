//! Rendering one layer file version into its part of a tile: level choice, R-tree query,
//! integer transform, clipping, MVT encoding and the byte budget. No cache here: the
//! composer in [`super`] caches what it makes.

use super::ServedLayer;
use crate::store::geometry::FlatGeometry;
use crate::store::lod::point_rank;
use crate::store::{GeomKind, PropRef};
use crate::tile::clip::{ClipBox, TilePoint, clip_line, clip_ring};
use crate::tile::mercator::{grid_to_lonlat, lonlat_to_grid, snap_lonlat};
use crate::tile::mvt::{
    EncodedLayer, MvtLayer, TileGeometry, TileValue, ValueSlots, encode_lines, encode_polygons,
};
use crate::tile::{EXTENT, LayerView, TileId};

/// Generates one layer of one tile, without the cache: level choice, R-tree query, integer
/// transform, clipping, encoding and the byte budget.
pub fn render_layer(
    layer: &ServedLayer,
    tile: TileId,
    buffer: u32,
    budget: Option<usize>,
) -> EncodedLayer {
    render_layer_as(layer, tile, buffer, budget, &LayerView::ALL)
}

/// Like [`render_layer`], writing only the properties `view` keeps.
pub fn render_layer_as(
    layer: &ServedLayer,
    tile: TileId,
    buffer: u32,
    budget: Option<usize>,
    view: &LayerView,
) -> EncodedLayer {
    thread_local! {
        static SLOTS: std::cell::RefCell<ValueSlots> = std::cell::RefCell::default();
    }
    SLOTS.with(|slots| match slots.try_borrow_mut() {
        Ok(mut slots) => render_layer_with(layer, tile, buffer, budget, view, &mut slots),
        // Not reentrant in practice; a fresh scratch keeps it correct if it ever is.
        Err(_) => render_layer_with(
            layer,
            tile,
            buffer,
            budget,
            view,
            &mut ValueSlots::default(),
        ),
    })
}

fn render_layer_with(
    layer: &ServedLayer,
    tile: TileId,
    buffer: u32,
    budget: Option<usize>,
    view: &LayerView,
    slots: &mut ValueSlots,
) -> EncodedLayer {
    let reader = &layer.reader;
    slots.prepare(reader.distinct_values());
    let mut out = MvtLayer::new(&layer.name, EXTENT as u32);
    let Some(level) = reader.level(tile.z) else {
        return out.encode(budget);
    };
    let query = tile.grid_box(buffer);
    let tf = tile.transform();
    let clip = ClipBox::for_tile(EXTENT, i64::from(buffer));
    let hits = level.query_indices(&query);
    out.reserve(hits.len());
    // Buffers reused feature after feature: points, the most numerous, allocate nothing.
    let mut ring_buf: Vec<TilePoint> = Vec::new();
    let mut flat = FlatGeometry::default();
    let mut points = TileGeometry::empty();
    for f in hits.into_iter().map(|i| level.item(i)) {
        // A feature that does not meet the allowed area is not served.
        if !view.shows_box(&f.bbox) {
            continue;
        }
        if !flat.decode(f.geometry) {
            continue;
        }
        let owned;
        let geometry: &TileGeometry = match flat.kind {
            None => continue,
            Some(GeomKind::Point) => {
                ring_buf.clear();
                // A view with a precision limit (a personal layer, a rule) gets points
                // snapped to its grid, as live positions are. Lines and polygons are drawn
                // as they are.
                let snap = |p: &crate::tile::GridPoint| match view.precision_m {
                    None => *p,
                    Some(m) => {
                        let (lon, lat) = grid_to_lonlat(*p);
                        let s = snap_lonlat([lon, lat], f64::from(m));
                        lonlat_to_grid(s[0], s[1])
                    }
                };
                ring_buf.extend(
                    flat.coords
                        .iter()
                        .map(|p| tf.apply(snap(p)))
                        .filter(|p| clip.contains(*p)),
                );
                if !points.set_points(ring_buf.iter().copied()) {
                    continue;
                }
                &points
            }
            Some(GeomKind::Line) => {
                let mut runs = Vec::new();
                for r in &flat.rings {
                    ring_buf.clear();
                    ring_buf.extend(flat.span(*r).iter().map(|p| tf.apply(*p)));
                    runs.extend(clip_line(&ring_buf, clip));
                }
                let Some(g) = encode_lines(&runs) else {
                    continue;
                };
                owned = g;
                &owned
            }
            Some(GeomKind::Polygon) => {
                let mut polys: Vec<Vec<Vec<TilePoint>>> = Vec::new();
                let mut part = u32::MAX;
                for r in &flat.rings {
                    if r.0 != part {
                        part = r.0;
                        polys.push(Vec::new());
                    }
                    ring_buf.clear();
                    ring_buf.extend(flat.span(*r).iter().map(|p| tf.apply(*p)));
                    if let Some(p) = polys.last_mut() {
                        p.push(clip_ring(&ring_buf, clip));
                    }
                }
                let Some(g) = encode_polygons(&polys) else {
                    continue;
                };
                owned = g;
                &owned
            }
        };
        let Some(record) = reader.properties(f.feature) else {
            continue;
        };
        let id = record.id;
        let numbers = reader.value_ids(f.feature);
        let props = record.zip(numbers).filter_map(|((k, v), &no)| {
            let key = reader.key(k)?;
            if !view.keeps(key) {
                return None;
            }
            let value = match v {
                PropRef::String(s) => TileValue::String(s),
                PropRef::Int(i) => TileValue::Int(i),
                PropRef::Double(d) => TileValue::Double(d),
                PropRef::Bool(b) => TileValue::Bool(b),
            };
            Some((k, key, no, value))
        });
        out.add_numbered(id, geometry, point_rank(f.feature), props, slots);
    }
    slots.reset();
    out.encode(budget)
}
