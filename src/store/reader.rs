//! The read side of the layer file: a memory map, checked once at open, then answered from
//! in place. Queries return borrowed views into the map; nothing is copied.

use super::codec::{read_u32, read_u64};
use super::geometry::{GeomKind, GridGeometry};
use super::meta::LayerMeta;
use super::props::{PropRef, RecordIter};
use super::rtree::PackedRTree;
use super::{FORMAT_VERSION, MAGIC, SectionKind, StoreError};
use crate::tile::GridBox;
use memmap2::Mmap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// An open layer file.
pub struct LayerReader {
    map: Mmap,
    path: PathBuf,
    meta: LayerMeta,
    feature_count: u64,
    bbox: GridBox,
    minzoom: u8,
    maxzoom: u8,
    /// The key dictionary, copied out once at open (a few hundred short strings) so that
    /// tile generation never re-validates UTF-8.
    keys: Vec<String>,
    props_index: Range<usize>,
    props: Range<usize>,
    source_index: Range<usize>,
    /// The layer-wide number of every property value, in record order (see
    /// [`LayerReader::value_ids`]).
    value_ids: Vec<u32>,
    /// Index in `value_ids` of each feature's first value (one more entry at the end).
    first_value: Vec<u32>,
    /// Number of distinct values.
    distinct_values: u32,
    levels: Vec<LevelSections>,
}

#[derive(Debug, Clone)]
struct LevelSections {
    zoom: u8,
    len: usize,
    boxes: Range<usize>,
    nodes: Range<usize>,
    features: Range<usize>,
    geom_index: Range<usize>,
    geom: Range<usize>,
}

impl std::fmt::Debug for LayerReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerReader")
            .field("path", &self.path)
            .field("features", &self.feature_count)
            .finish()
    }
}

fn corrupt(path: &Path, what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{}: {what}", path.display()))
}

impl LayerReader {
    /// Maps and checks a layer file: magic, version, header and section checksums, and the
    /// shape of every section. A file of another format version is refused by name.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
        // SAFETY: layer files are immutable once published (written to a temporary file and
        // renamed into place, never modified afterwards), so the mapping cannot change under us.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.map_err(|e| StoreError::io(path, e))?;
        Self::from_map(map, path)
    }

    fn from_map(map: Mmap, path: &Path) -> Result<Self, StoreError> {
        let b: &[u8] = &map;
        if b.len() < 48 || &b[..8] != MAGIC {
            return Err(corrupt(path, "not an Urbis layer file (bad magic)"));
        }
        let version = read_u32(b, 8).unwrap_or(0);
        if version != FORMAT_VERSION {
            return Err(StoreError::Version {
                path: path.to_path_buf(),
                found: version,
            });
        }
        let header_len = read_u32(b, 12).unwrap_or(0) as usize;
        let count = read_u32(b, 44).unwrap_or(0) as usize;
        let table_end = 48 + 32 * count;
        if table_end + 4 > header_len || header_len > b.len() {
            return Err(corrupt(path, "truncated header"));
        }
        if read_u32(b, table_end) != Some(crc32fast::hash(&b[..table_end])) {
            return Err(corrupt(path, "header checksum mismatch"));
        }
        let feature_count = read_u64(b, 16).unwrap_or(0);
        let v = |at| read_u32(b, at).unwrap_or(0);
        let bbox = GridBox::new(v(24), v(28), v(32), v(36));
        let (minzoom, maxzoom) = (b[40], b[41]);

        let mut meta = None;
        let mut keys_sec = None;
        let mut props_index = None;
        let mut props = None;
        let mut source_index = None;
        let mut levels: Vec<LevelSections> = Vec::new();
        for s in 0..count {
            let e = 48 + 32 * s;
            let kind = u16::from_le_bytes([b[e], b[e + 1]]);
            let zoom = b[e + 2];
            let n = v(e + 4) as usize;
            let off = read_u64(b, e + 8).unwrap_or(u64::MAX) as usize;
            let len = read_u64(b, e + 16).unwrap_or(u64::MAX) as usize;
            let crc = v(e + 24);
            let end = off
                .checked_add(len)
                .filter(|&end| end <= b.len() && off >= header_len);
            let Some(end) = end else {
                return Err(corrupt(
                    path,
                    format!("section {s} lies outside the file (truncated?)"),
                ));
            };
            if crc32fast::hash(&b[off..end]) != crc {
                return Err(corrupt(path, format!("section {s} checksum mismatch")));
            }
            let r = off..end;
            let kind = SectionKind::from_u16(kind)
                .ok_or_else(|| corrupt(path, format!("unknown section kind {kind}")))?;
            let level = |levels: &mut Vec<LevelSections>| -> usize {
                if let Some(i) = levels.iter().position(|l| l.zoom == zoom) {
                    return i;
                }
                levels.push(LevelSections {
                    zoom,
                    len: n,
                    boxes: 0..0,
                    nodes: 0..0,
                    features: 0..0,
                    geom_index: 0..0,
                    geom: 0..0,
                });
                levels.len() - 1
            };
            match kind {
                SectionKind::Meta => meta = Some(r),
                SectionKind::Keys => keys_sec = Some(r),
                SectionKind::PropsIndex => props_index = Some(r),
                SectionKind::Props => props = Some(r),
                SectionKind::SourceIndex => source_index = Some(r),
                SectionKind::LevelBoxes => {
                    let i = level(&mut levels);
                    levels[i].boxes = r
                }
                SectionKind::LevelNodes => {
                    let i = level(&mut levels);
                    levels[i].nodes = r
                }
                SectionKind::LevelFeatures => {
                    let i = level(&mut levels);
                    levels[i].features = r
                }
                SectionKind::LevelGeomIndex => {
                    let i = level(&mut levels);
                    levels[i].geom_index = r
                }
                SectionKind::LevelGeom => {
                    let i = level(&mut levels);
                    levels[i].geom = r
                }
            }
        }
        let (Some(meta), Some(keys_sec), Some(props_index), Some(props), Some(source_index)) =
            (meta, keys_sec, props_index, props, source_index)
        else {
            return Err(corrupt(path, "missing a required section"));
        };
        let meta: LayerMeta = serde_json::from_slice(&b[meta])
            .map_err(|e| corrupt(path, format!("metadata: {e}")))?;
        let keys =
            parse_keys(b, keys_sec).ok_or_else(|| corrupt(path, "malformed key dictionary"))?;
        let keys: Vec<String> = keys
            .into_iter()
            .map(|r| String::from_utf8_lossy(&b[r]).into_owned())
            .collect();
        if source_index.len() != feature_count as usize * 4 {
            return Err(corrupt(
                path,
                "source index does not match the feature count",
            ));
        }
        if props_index.len() != (feature_count as usize + 1) * 8 {
            return Err(corrupt(
                path,
                "property index does not match the feature count",
            ));
        }
        // Every property record is parsed once here (in parallel), so that reads on the tile
        // path need not check UTF-8 again (see `RecordIter::new_validated`).
        {
            use rayon::prelude::*;
            let (idx, blob) = (&b[props_index.clone()], &b[props.clone()]);
            let bad = (0..feature_count as usize).into_par_iter().find_any(|&f| {
                let (Some(s), Some(e)) = (read_u64(idx, f * 8), read_u64(idx, f * 8 + 8)) else {
                    return true;
                };
                !blob
                    .get(s as usize..e as usize)
                    .is_some_and(RecordIter::validate)
            });
            if let Some(f) = bad {
                return Err(corrupt(
                    path,
                    format!("property record of feature {f} is malformed"),
                ));
            }
        }
        let (value_ids, first_value, distinct_values) = {
            let (idx, blob) = (&b[props_index.clone()], &b[props.clone()]);
            intern_values(idx, blob, feature_count as usize)
        };
        for l in &levels {
            let ok = l.features.len() == l.len * 4
                && l.geom_index.len() == (l.len + 1) * 8
                && PackedRTree::new(&b[l.boxes.clone()], &b[l.nodes.clone()], l.len).is_some();
            if !ok {
                return Err(corrupt(path, format!("level z{} is malformed", l.zoom)));
            }
        }
        levels.sort_by_key(|l| l.zoom);
        let expected: Vec<u8> = (minzoom..=maxzoom).collect();
        if levels.iter().map(|l| l.zoom).collect::<Vec<_>>() != expected {
            return Err(corrupt(path, "levels do not cover the zoom range"));
        }
        Ok(LayerReader {
            path: path.to_path_buf(),
            meta,
            feature_count,
            bbox,
            minzoom,
            maxzoom,
            keys,
            props_index,
            props,
            source_index,
            value_ids,
            first_value,
            distinct_values,
            levels,
            map,
        })
    }

    /// The file this reader maps.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The layer's metadata and quality report.
    pub fn meta(&self) -> &LayerMeta {
        &self.meta
    }

    /// Number of features (at full resolution).
    pub fn feature_count(&self) -> u64 {
        self.feature_count
    }

    /// The box of all features.
    pub fn bbox(&self) -> GridBox {
        self.bbox
    }

    /// Lowest zoom with a level.
    pub fn minzoom(&self) -> u8 {
        self.minzoom
    }

    /// The full-resolution zoom.
    pub fn maxzoom(&self) -> u8 {
        self.maxzoom
    }

    /// Size of the file in bytes.
    pub fn file_size(&self) -> u64 {
        self.map.len() as u64
    }

    /// The level to draw zoom `z` from: its own below `maxzoom`, the full-resolution level at
    /// and above it, none below `minzoom`.
    pub fn level(&self, z: u8) -> Option<Level<'_>> {
        if z < self.minzoom {
            return None;
        }
        let z = z.min(self.maxzoom);
        let l = self.levels.iter().find(|l| l.zoom == z)?;
        Some(self.view(l))
    }

    /// Every level, lowest zoom first.
    pub fn levels(&self) -> impl Iterator<Item = Level<'_>> {
        self.levels.iter().map(|l| self.view(l))
    }

    fn view<'a>(&'a self, l: &LevelSections) -> Level<'a> {
        let b: &[u8] = &self.map;
        Level {
            zoom: l.zoom,
            tree: PackedRTree::new(&b[l.boxes.clone()], &b[l.nodes.clone()], l.len)
                .unwrap_or_else(|| unreachable!("checked at open")),
            features: &b[l.features.clone()],
            geom_index: &b[l.geom_index.clone()],
            geom: &b[l.geom.clone()],
        }
    }

    /// Number of property keys in the dictionary.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Property key `i` of the dictionary.
    pub fn key(&self, i: u32) -> Option<&str> {
        self.keys.get(i as usize).map(String::as_str)
    }

    /// The position in the import (among the features kept) of feature `feature`. Feature
    /// numbers follow the Hilbert curve, not the import.
    pub fn source_index(&self, feature: u32) -> Option<u32> {
        read_u32(&self.map[self.source_index.clone()], feature as usize * 4)
    }

    /// The layer-wide numbers of feature `feature`'s property values, in record order: equal
    /// values (same type and content) have equal numbers, below
    /// [`LayerReader::distinct_values`]. Tile generation deduplicates values by these numbers
    /// with an array instead of hashing every string of every feature per tile.
    pub fn value_ids(&self, feature: u32) -> &[u32] {
        let f = feature as usize;
        match (self.first_value.get(f), self.first_value.get(f + 1)) {
            (Some(&a), Some(&b)) => self.value_ids.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// Number of distinct property values in the layer.
    pub fn distinct_values(&self) -> u32 {
        self.distinct_values
    }

    /// Feature `feature`'s id and properties, read in place.
    pub fn properties(&self, feature: u32) -> Option<RecordIter<'_>> {
        let b: &[u8] = &self.map;
        let idx = &b[self.props_index.clone()];
        let start = read_u64(idx, feature as usize * 8)? as usize;
        let end = read_u64(idx, feature as usize * 8 + 8)? as usize;
        RecordIter::new_validated(b[self.props.clone()].get(start..end)?)
    }

    /// Feature `feature`'s properties as `(key, value)` pairs.
    pub fn named_properties(&self, feature: u32) -> Vec<(&str, PropRef<'_>)> {
        self.properties(feature)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((self.key(k)?, v)))
            .collect()
    }
}

fn parse_keys(b: &[u8], r: Range<usize>) -> Option<Vec<Range<usize>>> {
    let s = &b[r.clone()];
    let n = read_u32(s, 0)? as usize;
    let strings = 4 + 4 * (n + 1);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let a = read_u32(s, 4 + 4 * i)? as usize;
        let z = read_u32(s, 8 + 4 * i)? as usize;
        if a > z || strings + z > s.len() {
            return None;
        }
        std::str::from_utf8(&s[strings + a..strings + z]).ok()?;
        out.push(r.start + strings + a..r.start + strings + z);
    }
    Some(out)
}

/// One level of detail of an open layer.
#[derive(Debug, Clone, Copy)]
pub struct Level<'a> {
    zoom: u8,
    tree: PackedRTree<'a>,
    features: &'a [u8],
    geom_index: &'a [u8],
    geom: &'a [u8],
}

/// A feature of a level, borrowed from the memory map.
#[derive(Debug, Clone, Copy)]
pub struct FeatureRef<'a> {
    /// The feature number (index into the properties).
    pub feature: u32,
    /// The box of this level's geometry.
    pub bbox: GridBox,
    /// The encoded geometry (see `store::geometry`).
    pub geometry: &'a [u8],
}

impl FeatureRef<'_> {
    /// The geometry's kind, read from its first byte.
    pub fn kind(&self) -> Option<GeomKind> {
        GridGeometry::kind_of(self.geometry)
    }

    /// The decoded geometry (allocates).
    pub fn decode(&self) -> Option<GridGeometry> {
        GridGeometry::decode(self.geometry)
    }
}

impl<'a> Level<'a> {
    /// The zoom this level was generalized for.
    pub fn zoom(&self) -> u8 {
        self.zoom
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// True when the level holds nothing.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Item `i` (in the level's Hilbert order).
    pub fn item(&self, i: usize) -> FeatureRef<'a> {
        let feature = read_u32(self.features, i * 4).unwrap_or(u32::MAX);
        let a = read_u64(self.geom_index, i * 8).unwrap_or(0) as usize;
        let z = read_u64(self.geom_index, i * 8 + 8).unwrap_or(0) as usize;
        FeatureRef {
            feature,
            bbox: self.tree.item_box(i),
            geometry: self.geom.get(a..z).unwrap_or(&[]),
        }
    }

    /// Calls `found` with every item whose box intersects `query`, in Hilbert order.
    pub fn query(&self, query: &GridBox, mut found: impl FnMut(FeatureRef<'a>)) {
        self.tree.search(query, |i| found(self.item(i)));
    }

    /// The items whose box intersects `query`, as item indices.
    pub fn query_indices(&self, query: &GridBox) -> Vec<usize> {
        let mut v = Vec::new();
        self.tree.search(query, |i| v.push(i));
        v
    }
}

/// Numbers every property value of the layer (equal values, equal numbers), once at open: a
/// hash per value here saves a hash per value per tile. Records were validated just before.
fn intern_values(idx: &[u8], blob: &[u8], features: usize) -> (Vec<u32>, Vec<u32>, u32) {
    #[derive(PartialEq, Eq, Hash)]
    enum Key<'a> {
        S(&'a str),
        I(i64),
        D(u64),
        B(bool),
    }
    let mut ids: std::collections::HashMap<Key<'_>, u32, foldhash::fast::FixedState> =
        std::collections::HashMap::default();
    let mut value_ids = Vec::new();
    let mut first = Vec::with_capacity(features + 1);
    for f in 0..features {
        first.push(value_ids.len() as u32);
        let (Some(s), Some(e)) = (read_u64(idx, f * 8), read_u64(idx, f * 8 + 8)) else {
            continue;
        };
        let Some(it) = blob
            .get(s as usize..e as usize)
            .and_then(RecordIter::new_validated)
        else {
            continue;
        };
        for (_, v) in it {
            let key = match v {
                PropRef::String(s) => Key::S(s),
                PropRef::Int(i) => Key::I(i),
                PropRef::Double(d) => Key::D(d.to_bits()),
                PropRef::Bool(b) => Key::B(b),
            };
            let next = ids.len() as u32;
            value_ids.push(*ids.entry(key).or_insert(next));
        }
    }
    first.push(value_ids.len() as u32);
    (value_ids, first, ids.len() as u32)
}
