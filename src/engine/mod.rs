//! The tile generator: `(layers, z, x, y)` → tile bytes, from the memory-mapped layer store,
//! with a bounded cache keyed by layer version.
//!
//! Depends on `store` and `tile`; knows nothing of HTTP. For each layer it picks the level of
//! detail built for the zoom (the full-resolution level above `maxzoom`), queries its R-tree
//! with the tile box grown by the buffer, transforms each feature to tile coordinates with an
//! integer shift, clips, encodes, and applies the byte budget. Composite tiles (several
//! layers) are the concatenation of single-layer tiles, which MVT allows. New layer versions
//! published by `urbis import` are picked up by [`Engine::refresh`] (the server calls it every
//! second); a cache entry names the layer versions it was made from, so it never serves a
//! replaced version.

use crate::store::geometry::FlatGeometry;
use crate::store::lod::point_rank;
use crate::store::{GeomKind, LayerReader, PropRef, Store, StoreError};
use crate::tile::clip::{ClipBox, TilePoint, clip_line, clip_ring};
use crate::tile::mvt::{
    EncodedLayer, MvtLayer, TileGeometry, TileValue, ValueSlots, encode_lines, encode_polygons,
};
use crate::tile::{EXTENT, TileId};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

/// Tuning of tile generation.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Tile buffer in tile units (of 4096).
    pub buffer: u32,
    /// Byte budget per tile (raw, before gzip).
    pub budget: usize,
    /// Cache size limit in bytes (0 disables the cache).
    pub cache_bytes: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            buffer: 64,
            budget: 500 * 1024,
            cache_bytes: 256 << 20,
        }
    }
}

/// A layer the engine serves: one version of it.
#[derive(Debug)]
pub struct ServedLayer {
    /// Layer name.
    pub name: String,
    /// Version served.
    pub version: u64,
    /// The open file.
    pub reader: LayerReader,
}

/// Errors of tile generation.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No such layer.
    #[error("no layer named '{0}'")]
    UnknownLayer(String),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A generated tile.
#[derive(Debug, Clone)]
pub struct TileBody {
    /// The bytes (gzip-compressed when asked for).
    pub bytes: Bytes,
    /// Whether `bytes` is gzip.
    pub gzip: bool,
    /// Features in the tile.
    pub features: usize,
    /// Features the byte budget dropped.
    pub dropped: usize,
    /// A strong ETag for these bytes.
    pub etag: String,
}

impl TileBody {
    /// A tile body from raw (uncompressed) tile bytes, gzip-compressed when `gzip` and not
    /// empty, with its ETag.
    pub fn new(raw: Vec<u8>, gzip: bool, features: usize, dropped: usize) -> TileBody {
        let gzip = gzip && !raw.is_empty();
        let bytes = if gzip { gzip_bytes(&raw) } else { raw };
        let etag = format!(
            "\"{:08x}{:x}{}\"",
            crc32fast::hash(&bytes),
            bytes.len(),
            if gzip { "-gz" } else { "" }
        );
        TileBody {
            bytes: Bytes::from(bytes),
            gzip: gzip && features > 0,
            features,
            dropped,
            etag,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TileKey {
    layers: Vec<(String, u64)>,
    tile: TileId,
    gzip: bool,
}

/// The tile generator and its cache.
pub struct Engine {
    store: Store,
    config: EngineConfig,
    layers: RwLock<Arc<BTreeMap<String, Arc<ServedLayer>>>>,
    catalog_stamp: Mutex<Option<SystemTime>>,
    cache: moka::sync::Cache<TileKey, Arc<TileBody>>,
}

impl Engine {
    /// Opens the current version of every layer of `store`.
    pub fn open(store: Store, config: EngineConfig) -> Result<Engine, EngineError> {
        let cache = moka::sync::Cache::builder()
            .max_capacity(config.cache_bytes)
            .weigher(|_k: &TileKey, v: &Arc<TileBody>| {
                v.bytes.len().try_into().unwrap_or(u32::MAX).max(1)
            })
            .build();
        let engine = Engine {
            store,
            config,
            layers: RwLock::new(Arc::new(BTreeMap::new())),
            catalog_stamp: Mutex::new(None),
            cache,
        };
        engine.refresh()?;
        Ok(engine)
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The layers served now.
    pub fn layers(&self) -> Arc<BTreeMap<String, Arc<ServedLayer>>> {
        self.layers
            .read()
            .map(|l| Arc::clone(&l))
            .unwrap_or_default()
    }

    /// One served layer.
    pub fn layer(&self, name: &str) -> Option<Arc<ServedLayer>> {
        self.layers().get(name).cloned()
    }

    /// Re-reads the catalog when it changed and opens new layer versions; returns whether
    /// anything changed. Layers whose version did not change keep their open reader.
    pub fn refresh(&self) -> Result<bool, EngineError> {
        let path = self.store.dir().join("catalog.json");
        let stamp = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        {
            let mut last = self.catalog_stamp.lock().unwrap_or_else(|e| e.into_inner());
            if stamp.is_some() && *last == stamp {
                return Ok(false);
            }
            *last = stamp;
        }
        let catalog = self.store.catalog()?;
        let old = self.layers();
        let mut next = BTreeMap::new();
        for (name, entry) in &catalog.layers {
            let Some(v) = entry.current_entry() else {
                continue;
            };
            if let Some(l) = old.get(name).filter(|l| l.version == v.version) {
                next.insert(name.clone(), Arc::clone(l));
                continue;
            }
            match LayerReader::open(self.store.dir().join(&v.file)) {
                Ok(reader) => {
                    next.insert(
                        name.clone(),
                        Arc::new(ServedLayer {
                            name: name.clone(),
                            version: v.version,
                            reader,
                        }),
                    );
                }
                Err(e) => {
                    // Keep serving the old version rather than nothing.
                    tracing::error!(layer = %name, error = %e, "cannot open the new layer version");
                    if let Some(l) = old.get(name) {
                        next.insert(name.clone(), Arc::clone(l));
                    }
                }
            }
        }
        let changed = next.len() != old.len()
            || next
                .iter()
                .any(|(k, v)| old.get(k).is_none_or(|o| o.version != v.version));
        if let Ok(mut l) = self.layers.write() {
            *l = Arc::new(next);
        }
        Ok(changed)
    }

    fn resolve(&self, names: &[&str]) -> Result<Vec<Arc<ServedLayer>>, EngineError> {
        let mut layers = self.layers();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let l = match layers.get(*name) {
                Some(l) => Arc::clone(l),
                None => {
                    // Maybe it was published since the last poll.
                    if self.refresh()? {
                        layers = self.layers();
                    }
                    Arc::clone(
                        layers
                            .get(*name)
                            .ok_or_else(|| EngineError::UnknownLayer(name.to_string()))?,
                    )
                }
            };
            out.push(l);
        }
        Ok(out)
    }

    /// A cached tile, if there is one (cheap: no generation).
    pub fn cached(
        &self,
        names: &[&str],
        tile: TileId,
        gzip: bool,
    ) -> Result<Option<Arc<TileBody>>, EngineError> {
        let layers = self.resolve(names)?;
        Ok(self.cache.get(&key(&layers, tile, gzip)))
    }

    /// The tile for `names` (one layer, or several for a composite) at `tile`, from the cache
    /// or generated.
    pub fn tile(
        &self,
        names: &[&str],
        tile: TileId,
        gzip: bool,
    ) -> Result<Arc<TileBody>, EngineError> {
        let layers = self.resolve(names)?;
        let k = key(&layers, tile, gzip);
        if let Some(hit) = self.cache.get(&k) {
            return Ok(hit);
        }
        let budget = self.config.budget / layers.len().max(1);
        let (mut raw, mut features, mut dropped) = (Vec::new(), 0, 0);
        for l in &layers {
            let e = render_layer(l, tile, self.config.buffer, Some(budget));
            if e.features > 0 {
                raw.extend_from_slice(&e.bytes);
            }
            features += e.features;
            dropped += e.dropped;
        }
        let body = Arc::new(TileBody::new(raw, gzip, features, dropped));
        if self.config.cache_bytes > 0 {
            self.cache.insert(k, Arc::clone(&body));
        }
        Ok(body)
    }
}

fn key(layers: &[Arc<ServedLayer>], tile: TileId, gzip: bool) -> TileKey {
    TileKey {
        layers: layers.iter().map(|l| (l.name.clone(), l.version)).collect(),
        tile,
        gzip,
    }
}

fn gzip_bytes(raw: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 3),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(raw);
    enc.finish().unwrap_or_default()
}

/// Generates one layer of one tile, without the cache: level choice, R-tree query, integer
/// transform, clipping, encoding and the byte budget.
pub fn render_layer(
    layer: &ServedLayer,
    tile: TileId,
    buffer: u32,
    budget: Option<usize>,
) -> EncodedLayer {
    thread_local! {
        static SLOTS: std::cell::RefCell<ValueSlots> = std::cell::RefCell::default();
    }
    SLOTS.with(|slots| match slots.try_borrow_mut() {
        Ok(mut slots) => render_layer_with(layer, tile, buffer, budget, &mut slots),
        // Not reentrant in practice; a fresh scratch keeps it correct if it ever is.
        Err(_) => render_layer_with(layer, tile, buffer, budget, &mut ValueSlots::default()),
    })
}

fn render_layer_with(
    layer: &ServedLayer,
    tile: TileId,
    buffer: u32,
    budget: Option<usize>,
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
        if !flat.decode(f.geometry) {
            continue;
        }
        let owned;
        let geometry: &TileGeometry = match flat.kind {
            None => continue,
            Some(GeomKind::Point) => {
                ring_buf.clear();
                ring_buf.extend(
                    flat.coords
                        .iter()
                        .map(|p| tf.apply(*p))
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
