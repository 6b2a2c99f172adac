//! The build side of the layer file: collects validated features, builds the levels of detail
//! and their packed R-trees, and writes the file (layout in the `store` module doc).

use super::geometry::{GeomKind, GridGeometry};
use super::lod::{generalize, thin_points};
use super::meta::LayerMeta;
use super::props::{FieldType, PropValue, encode_record};
use super::rtree::{build_nodes, hilbert_key, put_boxes};
use super::{FORMAT_VERSION, MAGIC, SectionKind, StoreError};
use crate::tile::mercator::tile_unit;
use crate::tile::{GridBox, GridPoint};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Seek, SeekFrom, Write};

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

/// Collects features for one layer file. Feature numbers are assigned in push order.
#[derive(Default)]
pub struct LayerBuilder {
    keys: Vec<String>,
    key_index: HashMap<String, u32>,
    fields: BTreeMap<String, BTreeSet<FieldType>>,
    kinds: Vec<GeomKind>,
    bboxes: Vec<GridBox>,
    geom: Vec<u8>,
    geom_offsets: Vec<u64>,
    props: Vec<u8>,
    prop_offsets: Vec<u64>,
    bbox: GridBox,
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
}

impl LayerBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        LayerBuilder {
            geom_offsets: vec![0],
            prop_offsets: vec![0],
            bbox: GridBox::EMPTY,
            ..Default::default()
        }
    }

    /// Number of features pushed.
    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    /// True when no feature was pushed.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// The box of all features so far.
    pub fn bbox(&self) -> GridBox {
        self.bbox
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
    pub fn push(
        &mut self,
        geometry: &GridGeometry,
        id: Option<u64>,
        props: Vec<(String, PropValue)>,
    ) {
        let mut blob = Vec::new();
        geometry.encode(&mut blob);
        self.push_encoded(geometry.kind, geometry.bbox(), &blob, id, props);
    }

    /// Adds a feature whose geometry is already encoded (see `store::geometry`).
    pub fn push_encoded(
        &mut self,
        kind: GeomKind,
        bbox: GridBox,
        blob: &[u8],
        id: Option<u64>,
        mut props: Vec<(String, PropValue)>,
    ) {
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
        encode_record(&mut self.props, id, &coded);
        self.prop_offsets.push(self.props.len() as u64);
        self.geom.extend_from_slice(blob);
        self.geom_offsets.push(self.geom.len() as u64);
        self.kinds.push(kind);
        self.bboxes.push(bbox);
        self.bbox.union(&bbox);
    }

    fn blob(&self, i: usize) -> &[u8] {
        &self.geom[self.geom_offsets[i] as usize..self.geom_offsets[i + 1] as usize]
    }

    /// Picks a maximum zoom from the data's density: the lowest zoom at which the 10th
    /// percentile of vertex spacing (segment lengths, and the distance between neighbouring
    /// points along the Hilbert curve) is at least 4 tile units, so that nine in ten details
    /// survive full resolution without snapping together. Clamped to `minzoom..=20`.
    pub fn guess_maxzoom(&self, minzoom: u8) -> u8 {
        let n = self.len();
        if n == 0 {
            return minzoom.clamp(14, MAX_ZOOM);
        }
        let step = (n / 50_000).max(1);
        let mut spacing: Vec<u64> = (0..n)
            .into_par_iter()
            .step_by(step)
            .flat_map_iter(|i| {
                let mut d = Vec::new();
                if self.kinds[i] != GeomKind::Point
                    && let Some(g) = GridGeometry::decode(self.blob(i))
                {
                    for line in g.parts.iter().flatten() {
                        d.extend(line.windows(2).map(|w| dist(w[0], w[1])));
                    }
                }
                d
            })
            .collect();
        let mut anchors: Vec<(u32, GridPoint)> = (0..n)
            .filter(|&i| self.kinds[i] == GeomKind::Point)
            .map(|i| {
                let b = &self.bboxes[i];
                (hilbert_key(b, &self.bbox), [b.min_x, b.min_y])
            })
            .collect();
        anchors.sort_unstable();
        spacing.extend(anchors.windows(2).map(|w| dist(w[0].1, w[1].1)));
        spacing.retain(|d| *d > 0);
        if spacing.is_empty() {
            return minzoom.clamp(14, MAX_ZOOM);
        }
        let k = spacing.len() / 10;
        let (_, p10, _) = spacing.select_nth_unstable(k);
        let p10 = *p10;
        (0..=MAX_ZOOM)
            .find(|&z| tile_unit(z) * 4 <= p10)
            .unwrap_or(MAX_ZOOM)
            .clamp(minzoom, MAX_ZOOM)
    }

    /// Builds the levels and writes the whole file to `out`, which must be empty and seekable.
    /// `progress` is told each level as it is written.
    pub fn write<W: Write + Seek>(
        self,
        mut meta: LayerMeta,
        zooms: ZoomRange,
        out: W,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<WriteSummary, StoreError> {
        let level_count = usize::from(zooms.maxzoom - zooms.minzoom) + 1;
        let section_count = 5 + 5 * level_count;
        let header_len = (48 + 32 * section_count + 4).next_multiple_of(8);
        let mut w = SectionWriter::new(out, header_len)?;

        meta.fields = self.fields();
        meta.bounds = self.bbox.to_lonlat_bounds();
        let meta_json =
            serde_json::to_vec(&meta).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        w.section(SectionKind::Meta, 0, 0, &meta_json)?;

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
        w.section(SectionKind::Keys, 0, self.keys.len() as u32, &keys)?;

        // Feature numbers follow the Hilbert curve, so that the properties of features near each
        // other on the map are near each other in the file: a tile reads them with few cache
        // misses (numbered in import order, the property reads were a third of a z14 tile's time
        // on Montevideo). SOURCE_INDEX keeps each feature's position in the import.
        let n = self.len();
        let extent = self.bbox;
        let mut order: Vec<(u32, u32)> = self
            .bboxes
            .par_iter()
            .enumerate()
            .map(|(i, b)| (hilbert_key(b, &extent), i as u32))
            .collect();
        order.par_sort_unstable();
        let source: Vec<u8> = order.iter().flat_map(|&(_, i)| i.to_le_bytes()).collect();
        w.section(SectionKind::SourceIndex, 0, n as u32, &source)?;
        drop(source);
        let permute = |blob: &[u8], offsets: &[u64]| -> (Vec<u8>, Vec<u64>) {
            let mut out = Vec::with_capacity(blob.len());
            let mut offs = Vec::with_capacity(offsets.len());
            offs.push(0);
            for &(_, i) in &order {
                out.extend_from_slice(
                    &blob[offsets[i as usize] as usize..offsets[i as usize + 1] as usize],
                );
                offs.push(out.len() as u64);
            }
            (out, offs)
        };
        let (props, prop_offsets) = permute(&self.props, &self.prop_offsets);
        drop(self.props);
        w.section(SectionKind::PropsIndex, 0, n as u32, &u64s(&prop_offsets))?;
        w.section(SectionKind::Props, 0, n as u32, &props)?;
        drop(props);
        let (geom, offsets) = permute(&self.geom, &self.geom_offsets);
        drop(self.geom);

        // Full resolution first, then each lower zoom generalized from the one above.
        let mut level = Level {
            features: (0..n as u32).collect(),
            boxes: order
                .iter()
                .map(|&(_, i)| self.bboxes[i as usize])
                .collect(),
            kinds: order.iter().map(|&(_, i)| self.kinds[i as usize]).collect(),
            offsets,
            geom,
        };
        drop(order);
        let mut level_items = Vec::new();
        let mut z = zooms.maxzoom;
        loop {
            level.sort_hilbert(&extent);
            progress(&format!("level z{z}: {} features", level.features.len()));
            level.write(&mut w, z)?;
            level_items.push(level.features.len() as u64);
            if z == zooms.minzoom {
                break;
            }
            z -= 1;
            level = level.generalized(z);
        }
        level_items.reverse();
        let bytes = w.finish(&Header {
            features: n as u64,
            bbox: extent,
            zooms,
            level_count: level_count as u8,
        })?;
        Ok(WriteSummary {
            features: n as u64,
            bytes,
            zooms,
            level_items,
        })
    }
}

fn dist(a: GridPoint, b: GridPoint) -> u64 {
    let dx = f64::from(a[0]) - f64::from(b[0]);
    let dy = f64::from(a[1]) - f64::from(b[1]);
    dx.hypot(dy) as u64
}

fn u64s(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// One level of detail being built.
struct Level {
    features: Vec<u32>,
    boxes: Vec<GridBox>,
    kinds: Vec<GeomKind>,
    offsets: Vec<u64>,
    geom: Vec<u8>,
}

impl Level {
    fn blob(&self, i: usize) -> &[u8] {
        &self.geom[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    fn sort_hilbert(&mut self, extent: &GridBox) {
        let mut order: Vec<(u32, usize)> = self
            .boxes
            .par_iter()
            .enumerate()
            .map(|(i, b)| (hilbert_key(b, extent), i))
            .collect();
        if order.windows(2).all(|w| w[0] <= w[1]) {
            return;
        }
        order.par_sort_unstable();
        let mut geom = Vec::with_capacity(self.geom.len());
        let mut offsets = Vec::with_capacity(self.offsets.len());
        offsets.push(0);
        for &(_, i) in &order {
            geom.extend_from_slice(self.blob(i));
            offsets.push(geom.len() as u64);
        }
        self.features = order.iter().map(|&(_, i)| self.features[i]).collect();
        self.boxes = order.iter().map(|&(_, i)| self.boxes[i]).collect();
        self.kinds = order.iter().map(|&(_, i)| self.kinds[i]).collect();
        self.geom = geom;
        self.offsets = offsets;
    }

    fn generalized(&self, z: u8) -> Level {
        let out: Vec<Option<(GridBox, Vec<u8>)>> = (0..self.features.len())
            .into_par_iter()
            .map(|i| {
                if self.kinds[i] == GeomKind::Point {
                    return Some((self.boxes[i], self.blob(i).to_vec()));
                }
                let g = generalize(&GridGeometry::decode(self.blob(i))?, z)?;
                let mut blob = Vec::new();
                g.encode(&mut blob);
                Some((g.bbox(), blob))
            })
            .collect();
        let points: Vec<(usize, (u32, GridPoint))> = (0..self.features.len())
            .filter(|&i| self.kinds[i] == GeomKind::Point)
            .map(|i| {
                let b = &self.boxes[i];
                let centre = [
                    ((u64::from(b.min_x) + u64::from(b.max_x)) / 2) as u32,
                    ((u64::from(b.min_y) + u64::from(b.max_y)) / 2) as u32,
                ];
                (i, (self.features[i], centre))
            })
            .collect();
        let anchors: Vec<(u32, GridPoint)> = points.iter().map(|p| p.1).collect();
        let keep = thin_points(&anchors, z);
        let mut dropped = vec![false; self.features.len()];
        for ((i, _), k) in points.iter().zip(keep) {
            dropped[*i] = !k;
        }
        let mut next = Level {
            features: Vec::new(),
            boxes: Vec::new(),
            kinds: Vec::new(),
            offsets: vec![0],
            geom: Vec::new(),
        };
        for (i, item) in out.into_iter().enumerate() {
            if let (Some((b, blob)), false) = (item, dropped[i]) {
                next.features.push(self.features[i]);
                next.boxes.push(b);
                next.kinds.push(self.kinds[i]);
                next.geom.extend_from_slice(&blob);
                next.offsets.push(next.geom.len() as u64);
            }
        }
        next
    }

    fn write<W: Write + Seek>(&self, w: &mut SectionWriter<W>, z: u8) -> Result<(), StoreError> {
        let n = self.features.len() as u32;
        let mut boxes = Vec::new();
        put_boxes(&mut boxes, &self.boxes);
        w.section(SectionKind::LevelBoxes, z, n, &boxes)?;
        let mut nodes = Vec::new();
        put_boxes(&mut nodes, &build_nodes(&self.boxes));
        w.section(SectionKind::LevelNodes, z, n, &nodes)?;
        let feats: Vec<u8> = self.features.iter().flat_map(|f| f.to_le_bytes()).collect();
        w.section(SectionKind::LevelFeatures, z, n, &feats)?;
        w.section(SectionKind::LevelGeomIndex, z, n, &u64s(&self.offsets))?;
        w.section(SectionKind::LevelGeom, z, n, &self.geom)?;
        Ok(())
    }
}

struct Header {
    features: u64,
    bbox: GridBox,
    zooms: ZoomRange,
    level_count: u8,
}

/// Writes 8-byte-aligned sections after a reserved header and remembers where they went.
struct SectionWriter<W: Write + Seek> {
    out: std::io::BufWriter<W>,
    pos: u64,
    header_len: usize,
    entries: Vec<u8>,
    count: u32,
}

impl<W: Write + Seek> SectionWriter<W> {
    fn new(out: W, header_len: usize) -> Result<Self, StoreError> {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
        out.write_all(&vec![0u8; header_len])?;
        Ok(SectionWriter {
            out,
            pos: header_len as u64,
            header_len,
            entries: Vec::new(),
            count: 0,
        })
    }

    fn section(
        &mut self,
        kind: SectionKind,
        zoom: u8,
        count: u32,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let crc = crc32fast::hash(bytes);
        self.entries.extend_from_slice(&(kind as u16).to_le_bytes());
        self.entries.push(zoom);
        self.entries.push(0);
        self.entries.extend_from_slice(&count.to_le_bytes());
        self.entries.extend_from_slice(&self.pos.to_le_bytes());
        self.entries
            .extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        self.entries.extend_from_slice(&crc.to_le_bytes());
        self.entries.extend_from_slice(&0u32.to_le_bytes());
        self.count += 1;
        self.out.write_all(bytes)?;
        let pad = (bytes.len() as u64).next_multiple_of(8) - bytes.len() as u64;
        self.out.write_all(&[0u8; 8][..pad as usize])?;
        self.pos += bytes.len() as u64 + pad;
        Ok(())
    }

    fn finish(mut self, h: &Header) -> Result<u64, StoreError> {
        let mut head = Vec::with_capacity(self.header_len);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        head.extend_from_slice(&(self.header_len as u32).to_le_bytes());
        head.extend_from_slice(&h.features.to_le_bytes());
        for v in [h.bbox.min_x, h.bbox.min_y, h.bbox.max_x, h.bbox.max_y] {
            head.extend_from_slice(&v.to_le_bytes());
        }
        head.extend_from_slice(&[h.zooms.minzoom, h.zooms.maxzoom, h.level_count, 0]);
        head.extend_from_slice(&self.count.to_le_bytes());
        head.extend_from_slice(&self.entries);
        let crc = crc32fast::hash(&head);
        head.extend_from_slice(&crc.to_le_bytes());
        if head.len() > self.header_len {
            return Err(StoreError::Corrupt(
                "section table larger than the reserved header".into(),
            ));
        }
        head.resize(self.header_len, 0);
        self.out.seek(SeekFrom::Start(0))?;
        self.out.write_all(&head)?;
        self.out.flush()?;
        Ok(self.pos)
    }
}
