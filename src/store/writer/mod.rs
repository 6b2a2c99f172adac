//! The build side of the layer file: collects validated features, orders them along the
//! Hilbert curve in bounded memory, builds the levels of detail and their packed R-trees, and
//! writes the file (layout in the `store` module doc).
//!
//! Memory is bounded by the builder's budget, not by the input. Features go into an external
//! sort ([`spill`](super::spill)) as they arrive; when the input ends, every section's size is
//! known from the sort's counts and byte totals, so each section is written straight into its
//! place in the output file as the sorted records stream past. Each lower level of detail is
//! read back from the level above it in the file, generalized in parallel chunks and sorted
//! again the same way. What stays in memory per item is a few bits (is it a point, is it
//! thinned out) and one R-tree node box per 16 items. Without spilling (everything fits the
//! budget) the code path is the same, so a file is byte for byte the same whatever the budget.

mod file;
mod level;

use super::geometry::{GeomKind, GridGeometry};
use super::meta::LayerMeta;
use super::props::{FieldType, PropValue, encode_record};
use super::rtree::hilbert_key;
use super::spill::{Rec, Sorter, SpillDir, SpillStats};
use super::{SectionKind, StoreError};
use crate::tile::mercator::tile_unit;
use crate::tile::{GridBox, GridPoint};
use file::{FileOut, Header};
use level::{LevelOut, generalized};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;

/// Zoom range of a layer file.
#[derive(Debug, Clone, Copy)]
pub struct ZoomRange {
    /// Lowest zoom with data.
    pub minzoom: u8,
    /// Zoom of the full-resolution level; higher zooms overzoom it.
    pub maxzoom: u8,
}

/// Highest zoom a layer may have.
pub const MAX_ZOOM: u8 = 20;

/// Memory a builder may use for features by default (`urbis import --memory-mb`).
pub const DEFAULT_MEMORY: usize = 1024 << 20;

/// Items generalized together (one parallel chunk) when building a lower level.
pub(super) const CHUNK_ITEMS: usize = 16_384;
/// Geometry bytes read at most per chunk (a single larger feature makes its own chunk).
pub(super) const CHUNK_BYTES: usize = 16 << 20;
/// Bytes buffered per section being written or read back.
pub(super) const IO_BUFFER: usize = 1 << 20;

/// Collects features for one layer file. Feature numbers are assigned in push order; the
/// file numbers them along the Hilbert curve and keeps the push order in SOURCE_INDEX.
pub struct LayerBuilder {
    keys: Vec<String>,
    key_index: HashMap<String, u32>,
    fields: BTreeMap<String, BTreeSet<FieldType>>,
    bbox: GridBox,
    sorter: Sorter,
    budget: usize,
    dir: SpillDir,
    geom_buf: Vec<u8>,
    props_buf: Vec<u8>,
}

/// What [`LayerBuilder::write`] produced.
#[derive(Debug, Clone)]
pub struct WriteSummary {
    /// Features in the file.
    pub features: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Zoom range of the levels.
    pub zooms: ZoomRange,
    /// Items per level, from minzoom up.
    pub level_items: Vec<u64>,
    /// Sorted runs written to disk because the features did not fit the memory budget.
    pub spilled: SpillStats,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    /// An empty builder with the default memory budget, spilling to the system's temporary
    /// directory.
    pub fn new() -> Self {
        Self::with_memory(DEFAULT_MEMORY, SpillDir(std::env::temp_dir()))
    }

    /// An empty builder that keeps about `budget` bytes of features in memory and sorts the
    /// rest on disk in `dir` (unnamed temporary files: nothing is left behind, even on a kill).
    pub fn with_memory(budget: usize, dir: SpillDir) -> Self {
        LayerBuilder {
            keys: Vec::new(),
            key_index: HashMap::new(),
            fields: BTreeMap::new(),
            bbox: GridBox::EMPTY,
            sorter: Sorter::new(budget, dir.clone()),
            budget,
            dir,
            geom_buf: Vec::new(),
            props_buf: Vec::new(),
        }
    }

    /// Number of features pushed.
    pub fn len(&self) -> usize {
        self.sorter.count() as usize
    }

    /// True when no feature was pushed.
    pub fn is_empty(&self) -> bool {
        self.sorter.count() == 0
    }

    /// The box of all features so far.
    pub fn bbox(&self) -> GridBox {
        self.bbox
    }

    /// Sorted runs written to disk so far.
    pub fn spilled(&self) -> SpillStats {
        self.sorter.stats()
    }

    /// Property keys and their types so far.
    pub fn fields(&self) -> BTreeMap<String, Vec<FieldType>> {
        self.fields
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().copied().collect()))
            .collect()
    }

    fn key_id(&mut self, key: &str) -> u32 {
        if let Some(&i) = self.key_index.get(key) {
            return i;
        }
        let i = self.keys.len() as u32;
        self.keys.push(key.to_string());
        self.key_index.insert(key.to_string(), i);
        i
    }

    /// Adds a feature. Properties are stored sorted by key, so equal inputs give equal files.
    /// Fails only when a sorted run cannot be written to the spill directory.
    pub fn push(
        &mut self,
        geometry: &GridGeometry,
        id: Option<u64>,
        mut props: Vec<(String, PropValue)>,
    ) -> Result<(), StoreError> {
        if self.sorter.count() >= u64::from(u32::MAX) {
            return Err(StoreError::Corrupt(format!(
                "a layer holds at most {} features",
                u32::MAX
            )));
        }
        props.sort_by(|a, b| a.0.cmp(&b.0));
        props.dedup_by(|a, b| a.0 == b.0);
        let mut coded = Vec::with_capacity(props.len());
        for (k, v) in props {
            self.fields
                .entry(k.clone())
                .or_default()
                .insert(v.field_type());
            coded.push((self.key_id(&k), v));
        }
        let mut props_buf = std::mem::take(&mut self.props_buf);
        let mut geom_buf = std::mem::take(&mut self.geom_buf);
        props_buf.clear();
        geom_buf.clear();
        encode_record(&mut props_buf, id, &coded);
        geometry.encode(&mut geom_buf);
        let bbox = geometry.bbox();
        self.bbox.union(&bbox);
        let index = self.sorter.count() as u32;
        let pushed = self.sorter.push(&Rec {
            key: hilbert_key(&bbox),
            tie: index,
            feature: index,
            bbox,
            geom: &geom_buf,
            props: &props_buf,
        });
        self.props_buf = props_buf;
        self.geom_buf = geom_buf;
        pushed
    }

    /// Builds the levels and writes the whole file to `out`, which must be empty and open for
    /// reading too (lower levels are read back from the file). Without a
    /// `maxzoom`, one is picked from the data's density (see [`Density`]). `progress` is told
    /// each level as it is written.
    pub fn write(
        self,
        mut meta: LayerMeta,
        minzoom: u8,
        maxzoom: Option<u8>,
        out: &File,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<WriteSummary, StoreError> {
        let minzoom = maxzoom.map_or(minzoom, |z| minzoom.min(z)).min(MAX_ZOOM);
        let level_cap = usize::from(maxzoom.unwrap_or(MAX_ZOOM).min(MAX_ZOOM) - minzoom) + 1;
        // Room for the largest section table this file can need: with a guessed maxzoom the
        // number of levels is known only after the full-resolution pass.
        let header_len = (48 + 32 * (5 + 5 * level_cap) + 4).next_multiple_of(8);
        let mut file = FileOut {
            file: out,
            next: header_len as u64,
            entries: Vec::new(),
        };
        let n = self.sorter.count();
        let mut spilled = self.sorter.stats();
        if spilled.runs > 0 {
            progress(&format!(
                "sorted {n} features in memory and {} runs on disk ({} MB spilled, budget {} MB)",
                spilled.runs,
                spilled.bytes >> 20,
                self.budget >> 20
            ));
        }

        meta.fields = self.fields();
        meta.bounds = self.bbox.to_lonlat_bounds();
        let meta_json =
            serde_json::to_vec(&meta).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        file.whole(SectionKind::Meta, 0, 0, &meta_json)?;
        let mut keys = Vec::new();
        keys.extend_from_slice(&(self.keys.len() as u32).to_le_bytes());
        let mut off = 0u32;
        keys.extend_from_slice(&off.to_le_bytes());
        for k in &self.keys {
            off += k.len() as u32;
            keys.extend_from_slice(&off.to_le_bytes());
        }
        for k in &self.keys {
            keys.extend_from_slice(k.as_bytes());
        }
        file.whole(SectionKind::Keys, 0, self.keys.len() as u32, &keys)?;

        // The full-resolution pass. Feature numbers follow the Hilbert curve, so that the
        // properties of features near each other on the map are near each other in the file: a
        // tile reads them with few cache misses (numbered in import order, the property reads
        // were a third of a z14 tile's time on Montevideo). SOURCE_INDEX keeps each feature's
        // position in the import.
        let count = n as u32;
        let mut source = file.section(SectionKind::SourceIndex, 0, count, 4 * n);
        let mut props_index = file.section(SectionKind::PropsIndex, 0, count, 8 * (n + 1));
        let mut props = file.section(SectionKind::Props, 0, count, self.sorter.props_bytes());
        let mut level = LevelOut::new(&mut file, 0, count, self.sorter.geom_bytes());
        let mut density = (maxzoom.is_none()).then(Density::default);
        let step = (n / 50_000).max(1);
        let mut last_point: Option<GridPoint> = None;
        let mut props_at = 0u64;
        props_index.put(&0u64.to_le_bytes())?;
        let mut next_feature = 0u32;
        spilled = self.sorter.finish(|r| {
            source.put(&r.tie.to_le_bytes())?;
            props.put(r.props)?;
            props_at += r.props.len() as u64;
            props_index.put(&props_at.to_le_bytes())?;
            level.push(next_feature, &r.bbox, r.geom)?;
            next_feature += 1;
            if let Some(d) = density.as_mut() {
                if is_point(r.geom) {
                    let anchor = [r.bbox.min_x, r.bbox.min_y];
                    if let Some(p) = last_point {
                        d.add(dist(p, anchor));
                    }
                    last_point = Some(anchor);
                } else if u64::from(r.tie) % step == 0
                    && let Some(g) = GridGeometry::decode(r.geom)
                {
                    for line in g.parts.iter().flatten() {
                        line.windows(2).for_each(|w| d.add(dist(w[0], w[1])));
                    }
                }
            }
            Ok(())
        })?;
        file.entries.push(source.finish()?);
        file.entries.push(props_index.finish()?);
        file.entries.push(props.finish()?);
        let maxzoom = maxzoom
            .unwrap_or_else(|| density.map_or(minzoom, |d| d.maxzoom(minzoom)))
            .clamp(minzoom, MAX_ZOOM);
        let zooms = ZoomRange { minzoom, maxzoom };
        let mut z = maxzoom;
        let mut built = level.finish(&mut file, z)?;
        progress(&format!("level z{z}: {} features", built.count));
        let mut level_items = vec![u64::from(built.count)];

        // Each lower zoom generalized from the one above, read back from the file.
        while z > minzoom {
            z -= 1;
            let sorter = generalized(&file, &built, z, self.budget, &self.dir)?;
            let mut level = LevelOut::new(&mut file, z, sorter.count() as u32, sorter.geom_bytes());
            spilled.add(sorter.finish(|r| level.push(r.feature, &r.bbox, r.geom))?);
            built = level.finish(&mut file, z)?;
            progress(&format!("level z{z}: {} features", built.count));
            level_items.push(u64::from(built.count));
        }
        level_items.reverse();
        let bytes = file.finish(
            header_len,
            &Header {
                features: n,
                bbox: self.bbox,
                zooms,
                level_count: level_items.len() as u8,
            },
        )?;
        Ok(WriteSummary {
            features: n,
            bytes,
            zooms,
            level_items,
            spilled,
        })
    }
}

fn dist(a: GridPoint, b: GridPoint) -> u64 {
    let dx = f64::from(a[0]) - f64::from(b[0]);
    let dy = f64::from(a[1]) - f64::from(b[1]);
    dx.hypot(dy) as u64
}

pub(super) fn is_point(blob: &[u8]) -> bool {
    blob.first()
        .is_some_and(|b| b & 0x7f == GeomKind::Point as u8)
}

/// How dense the data is, for picking a maximum zoom: a histogram of vertex spacing (segment
/// lengths of a sample of about 50,000 lines and polygons, and the distance between
/// neighbouring points along the Hilbert curve), bucketed by the lowest zoom at which the
/// spacing is at least 4 tile units.
#[derive(Default)]
struct Density {
    counts: [u64; MAX_ZOOM as usize + 2],
}

impl Density {
    fn add(&mut self, d: u64) {
        if d == 0 {
            return;
        }
        let bucket = (0..=MAX_ZOOM)
            .find(|&z| tile_unit(z) * 4 <= d)
            .map_or(MAX_ZOOM as usize + 1, usize::from);
        self.counts[bucket] += 1;
    }

    /// The lowest zoom at which the 10th percentile of spacing is at least 4 tile units, so
    /// that nine in ten details survive full resolution without snapping together; clamped to
    /// `minzoom..=20`.
    fn maxzoom(&self, minzoom: u8) -> u8 {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return minzoom.clamp(14, MAX_ZOOM);
        }
        // The spacing of rank total / 10, from the smallest spacings (highest buckets) down.
        let k = total / 10;
        let mut seen = 0;
        for bucket in (0..self.counts.len()).rev() {
            seen += self.counts[bucket];
            if seen > k {
                return (bucket.min(MAX_ZOOM as usize) as u8).clamp(minzoom, MAX_ZOOM);
            }
        }
        MAX_ZOOM
    }
}
