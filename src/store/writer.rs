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

use super::geometry::{GeomKind, GridGeometry};
use super::lod::{POINTS_PER_CELL, generalize, point_cell, point_rank};
use super::meta::LayerMeta;
use super::props::{FieldType, PropValue, encode_record};
use super::rtree::{BOX_BYTES, build_nodes, centre, hilbert_key, level_sizes};
use super::spill::{Rec, Sorter, SpillDir, SpillStats};
use super::{FORMAT_VERSION, MAGIC, SectionKind, StoreError};
use crate::tile::mercator::tile_unit;
use crate::tile::{GridBox, GridPoint};
use rayon::prelude::*;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;

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
const CHUNK_ITEMS: usize = 16_384;
/// Geometry bytes read at most per chunk (a single larger feature makes its own chunk).
const CHUNK_BYTES: usize = 16 << 20;
/// Bytes buffered per section being written or read back.
const IO_BUFFER: usize = 1 << 20;

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

fn is_point(blob: &[u8]) -> bool {
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

/// One bit per item of a level.
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
}

/// A section table entry.
#[derive(Debug, Clone, Copy)]
struct Entry {
    kind: SectionKind,
    zoom: u8,
    count: u32,
    offset: u64,
    len: u64,
    crc: u32,
}

/// The output file: where the next section goes and the table so far.
struct FileOut<'f> {
    file: &'f File,
    next: u64,
    entries: Vec<Entry>,
}

impl<'f> FileOut<'f> {
    /// Reserves room for a section of `len` bytes (8-byte aligned) and returns its writer.
    fn section(&mut self, kind: SectionKind, zoom: u8, count: u32, len: u64) -> SectionOut<'f> {
        let offset = self.next;
        self.next += len.next_multiple_of(8);
        SectionOut {
            file: self.file,
            entry: Entry {
                kind,
                zoom,
                count,
                offset,
                len,
                crc: 0,
            },
            written: 0,
            buf: Vec::with_capacity(IO_BUFFER.min(len as usize + 8)),
            crc: crc32fast::Hasher::new(),
        }
    }

    /// Writes a whole section at once.
    fn whole(
        &mut self,
        kind: SectionKind,
        zoom: u8,
        count: u32,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let mut s = self.section(kind, zoom, count, bytes.len() as u64);
        s.put(bytes)?;
        let e = s.finish()?;
        self.entries.push(e);
        Ok(())
    }

    fn finish(self, header_len: usize, h: &Header) -> Result<u64, StoreError> {
        let mut head = Vec::with_capacity(header_len);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        head.extend_from_slice(&(header_len as u32).to_le_bytes());
        head.extend_from_slice(&h.features.to_le_bytes());
        for v in [h.bbox.min_x, h.bbox.min_y, h.bbox.max_x, h.bbox.max_y] {
            head.extend_from_slice(&v.to_le_bytes());
        }
        head.extend_from_slice(&[h.zooms.minzoom, h.zooms.maxzoom, h.level_count, 0]);
        head.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            head.extend_from_slice(&(e.kind as u16).to_le_bytes());
            head.push(e.zoom);
            head.push(0);
            head.extend_from_slice(&e.count.to_le_bytes());
            head.extend_from_slice(&e.offset.to_le_bytes());
            head.extend_from_slice(&e.len.to_le_bytes());
            head.extend_from_slice(&e.crc.to_le_bytes());
            head.extend_from_slice(&0u32.to_le_bytes());
        }
        let crc = crc32fast::hash(&head);
        head.extend_from_slice(&crc.to_le_bytes());
        if head.len() > header_len {
            return Err(StoreError::Corrupt(
                "section table larger than the reserved header".into(),
            ));
        }
        head.resize(header_len, 0);
        self.file.write_all_at(&head, 0).map_err(io)?;
        self.file.set_len(self.next).map_err(io)?;
        Ok(self.next)
    }
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::io(std::path::Path::new("the layer file being written"), e)
}

/// One section being written at its reserved place, through a buffer, with its CRC.
struct SectionOut<'f> {
    file: &'f File,
    entry: Entry,
    written: u64,
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
}

impl SectionOut<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.crc.update(bytes);
        if self.buf.len() + bytes.len() > IO_BUFFER {
            self.flush()?;
        }
        if bytes.len() >= IO_BUFFER {
            self.write(bytes)
        } else {
            self.buf.extend_from_slice(bytes);
            Ok(())
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        if self.written + bytes.len() as u64 > self.entry.len {
            return Err(StoreError::Corrupt(format!(
                "internal: section {:?} outgrew its {} reserved bytes",
                self.entry.kind, self.entry.len
            )));
        }
        self.file
            .write_all_at(bytes, self.entry.offset + self.written)
            .map_err(io)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        let buf = std::mem::take(&mut self.buf);
        self.write(&buf)?;
        self.buf = buf;
        self.buf.clear();
        Ok(())
    }

    /// Writes what is buffered and the padding to 8 bytes; the section's table entry.
    fn finish(mut self) -> Result<Entry, StoreError> {
        self.flush()?;
        if self.written != self.entry.len {
            return Err(StoreError::Corrupt(format!(
                "internal: section {:?} got {} of its {} bytes",
                self.entry.kind, self.written, self.entry.len
            )));
        }
        let pad = self.entry.len.next_multiple_of(8) - self.entry.len;
        if pad > 0 {
            self.file
                .write_all_at(&[0u8; 8][..pad as usize], self.entry.offset + self.written)
                .map_err(io)?;
        }
        self.entry.crc = self.crc.finalize();
        Ok(self.entry)
    }
}

/// The five sections of one level being written, item by item in Hilbert order.
struct LevelOut<'f> {
    boxes: SectionOut<'f>,
    nodes: SectionOut<'f>,
    features: SectionOut<'f>,
    geom_index: SectionOut<'f>,
    geom: SectionOut<'f>,
    level1: Vec<GridBox>,
    node: GridBox,
    in_node: usize,
    geom_at: u64,
    count: u32,
    points: Bits,
    point_count: u64,
}

/// A level as written: where to read it back.
struct BuiltLevel {
    count: u32,
    boxes: Entry,
    features: Entry,
    geom_index: Entry,
    geom: Entry,
    points: Bits,
    point_count: u64,
}

impl<'f> LevelOut<'f> {
    fn new(file: &mut FileOut<'f>, zoom: u8, n: u32, geom_bytes: u64) -> LevelOut<'f> {
        let items = u64::from(n);
        let node_count: usize = level_sizes(n as usize)[1..].iter().sum();
        LevelOut {
            boxes: file.section(SectionKind::LevelBoxes, zoom, n, items * BOX_BYTES as u64),
            nodes: file.section(
                SectionKind::LevelNodes,
                zoom,
                n,
                (node_count * BOX_BYTES) as u64,
            ),
            features: file.section(SectionKind::LevelFeatures, zoom, n, items * 4),
            geom_index: file.section(SectionKind::LevelGeomIndex, zoom, n, (items + 1) * 8),
            geom: file.section(SectionKind::LevelGeom, zoom, n, geom_bytes),
            level1: Vec::with_capacity((n as usize).div_ceil(super::rtree::NODE_SIZE)),
            node: GridBox::EMPTY,
            in_node: 0,
            geom_at: 0,
            count: 0,
            points: Bits::new(n as usize),
            point_count: 0,
        }
    }

    fn push(&mut self, feature: u32, bbox: &GridBox, geom: &[u8]) -> Result<(), StoreError> {
        if self.count == 0 {
            self.geom_index.put(&0u64.to_le_bytes())?;
        }
        self.boxes.put(&box_bytes(bbox))?;
        self.features.put(&feature.to_le_bytes())?;
        self.geom.put(geom)?;
        self.geom_at += geom.len() as u64;
        self.geom_index.put(&self.geom_at.to_le_bytes())?;
        if is_point(geom) {
            self.points.set(self.count as usize);
            self.point_count += 1;
        }
        self.count += 1;
        // The packed R-tree's first node level, one box per NODE_SIZE items, as they pass.
        self.node.union(bbox);
        self.in_node += 1;
        if self.in_node == super::rtree::NODE_SIZE {
            self.close_node()?;
        }
        Ok(())
    }

    fn close_node(&mut self) -> Result<(), StoreError> {
        self.nodes.put(&box_bytes(&self.node))?;
        self.level1.push(self.node);
        self.node = GridBox::EMPTY;
        self.in_node = 0;
        Ok(())
    }

    /// Writes the upper node levels, closes the sections and adds them to the table (their
    /// zoom is set here: the full-resolution level learns its zoom only at its end).
    fn finish(mut self, file: &mut FileOut, zoom: u8) -> Result<BuiltLevel, StoreError> {
        if self.count == 0 {
            self.geom_index.put(&0u64.to_le_bytes())?;
        }
        if self.in_node > 0 {
            self.close_node()?;
        }
        if self.level1.len() > 1 {
            for b in build_nodes(&self.level1) {
                self.nodes.put(&box_bytes(&b))?;
            }
        }
        let mut entries = [
            self.boxes.finish()?,
            self.nodes.finish()?,
            self.features.finish()?,
            self.geom_index.finish()?,
            self.geom.finish()?,
        ];
        for e in &mut entries {
            e.zoom = zoom;
        }
        file.entries.extend_from_slice(&entries);
        Ok(BuiltLevel {
            count: self.count,
            boxes: entries[0],
            features: entries[2],
            geom_index: entries[3],
            geom: entries[4],
            points: self.points,
            point_count: self.point_count,
        })
    }
}

fn box_bytes(b: &GridBox) -> [u8; BOX_BYTES] {
    let mut out = [0u8; BOX_BYTES];
    for (i, v) in [b.min_x, b.min_y, b.max_x, b.max_y].into_iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// A section of the output file read back in order, through a buffer.
struct SectionIn<'f>(BufReader<Window<'f>>);

struct Window<'f> {
    file: &'f File,
    pos: u64,
    end: u64,
}

impl Read for Window<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.end - self.pos) as usize;
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl<'f> SectionIn<'f> {
    fn new(file: &'f File, e: &Entry) -> SectionIn<'f> {
        SectionIn(BufReader::with_capacity(
            IO_BUFFER,
            Window {
                file,
                pos: e.offset,
                end: e.offset + e.len,
            },
        ))
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut b = [0u8; N];
        self.0
            .read_exact(&mut b)
            .map_err(|e| StoreError::Corrupt(format!("reading a level back: {e}")))?;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    fn grid_box(&mut self) -> Result<GridBox, StoreError> {
        let b: [u8; BOX_BYTES] = self.bytes()?;
        let v = |k: usize| u32::from_le_bytes([b[k], b[k + 1], b[k + 2], b[k + 3]]);
        Ok(GridBox {
            min_x: v(0),
            min_y: v(4),
            max_x: v(8),
            max_y: v(12),
        })
    }

    fn append(&mut self, len: usize, out: &mut Vec<u8>) -> Result<(), StoreError> {
        let at = out.len();
        out.resize(at + len, 0);
        self.0
            .read_exact(&mut out[at..])
            .map_err(|e| StoreError::Corrupt(format!("reading a level back: {e}")))
    }
}

/// Point thinning for zoom `z` over the level above (see [`super::lod`]): which of its items
/// are points thinned out. Within each cell only the [`POINTS_PER_CELL`] lowest ranks stay.
/// The level is in Hilbert order of box centres and a cell is an aligned block of the grid,
/// which the curve walks in one stretch, so the points of a cell come one after another: one
/// pass with one cell's points in memory.
fn thinned(file: &File, above: &BuiltLevel, z: u8) -> Result<Bits, StoreError> {
    let n = above.count as usize;
    let mut dropped = Bits::new(n);
    if above.point_count == 0 {
        return Ok(dropped);
    }
    let mut boxes = SectionIn::new(file, &above.boxes);
    let mut features = SectionIn::new(file, &above.features);
    let mut cell_points: Vec<(u64, u32, usize)> = Vec::new();
    let mut cell = None;
    let close = |points: &mut Vec<(u64, u32, usize)>, dropped: &mut Bits| {
        if points.len() > POINTS_PER_CELL {
            points.select_nth_unstable(POINTS_PER_CELL);
            for p in &points[POINTS_PER_CELL..] {
                dropped.set(p.2);
            }
        }
        points.clear();
    };
    for i in 0..n {
        let b = boxes.grid_box()?;
        let feature = features.u32()?;
        if !above.points.get(i) {
            continue;
        }
        let c = point_cell(centre(&b), z);
        if cell != Some(c) {
            close(&mut cell_points, &mut dropped);
            cell = Some(c);
        }
        cell_points.push((point_rank(feature), feature, i));
    }
    close(&mut cell_points, &mut dropped);
    Ok(dropped)
}

/// Level `z` from the level above it: read back in chunks, generalized in parallel, sorted.
fn generalized(
    file: &FileOut,
    above: &BuiltLevel,
    z: u8,
    budget: usize,
    dir: &SpillDir,
) -> Result<Sorter, StoreError> {
    let dropped = thinned(file.file, above, z)?;
    let mut sorter = Sorter::new(budget, dir.clone());
    let mut boxes = SectionIn::new(file.file, &above.boxes);
    let mut features = SectionIn::new(file.file, &above.features);
    let mut index = SectionIn::new(file.file, &above.geom_index);
    let mut geom = SectionIn::new(file.file, &above.geom);
    let n = above.count as usize;
    let mut at = index.u64()?;
    let mut i = 0usize;
    let mut chunk: Vec<(usize, u32, GridBox, std::ops::Range<usize>)> = Vec::new();
    let mut blobs: Vec<u8> = Vec::new();
    while i < n {
        chunk.clear();
        blobs.clear();
        while i < n && chunk.len() < CHUNK_ITEMS && blobs.len() < CHUNK_BYTES {
            let b = boxes.grid_box()?;
            let feature = features.u32()?;
            let end = index.u64()?;
            let start = blobs.len();
            geom.append((end - at) as usize, &mut blobs)?;
            at = end;
            if !dropped.get(i) {
                chunk.push((i, feature, b, start..blobs.len()));
            }
            i += 1;
        }
        let out: Vec<Option<(GridBox, Cow<[u8]>)>> = chunk
            .par_iter()
            .map(|(_, _, b, r)| {
                let blob = &blobs[r.clone()];
                if is_point(blob) {
                    return Some((*b, Cow::Borrowed(blob)));
                }
                let g = generalize(&GridGeometry::decode(blob)?, z)?;
                let mut v = Vec::new();
                g.encode(&mut v);
                Some((g.bbox(), Cow::Owned(v)))
            })
            .collect();
        for ((pos, feature, _, _), item) in chunk.iter().zip(out) {
            if let Some((bbox, blob)) = item {
                sorter.push(&Rec {
                    key: hilbert_key(&bbox),
                    tie: *pos as u32,
                    feature: *feature,
                    bbox,
                    geom: &blob,
                    props: &[],
                })?;
            }
        }
    }
    Ok(sorter)
}

struct Header {
    features: u64,
    bbox: GridBox,
    zooms: ZoomRange,
    level_count: u8,
}
