//! One level of detail at a time: written item by item in Hilbert order with its R-tree's
//! node boxes, and the next lower level made from it, read back from the file, thinned,
//! generalized in parallel chunks and sorted.

use super::file::{Entry, FileOut, SectionIn, SectionOut, box_bytes};
use super::{CHUNK_BYTES, CHUNK_ITEMS, is_point};
use crate::store::geometry::GridGeometry;
use crate::store::lod::{POINTS_PER_CELL, generalize, point_cell, point_rank};
use crate::store::rtree::{BOX_BYTES, NODE_SIZE, build_nodes, centre, hilbert_key, level_sizes};
use crate::store::spill::{Rec, Sorter, SpillDir};
use crate::store::{SectionKind, StoreError};
use crate::tile::GridBox;
use rayon::prelude::*;
use std::borrow::Cow;
use std::fs::File;

/// One bit per item of a level.
pub(super) struct Bits(Vec<u64>);

impl Bits {
    pub(super) fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    pub(super) fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    pub(super) fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
}

/// The five sections of one level being written, item by item in Hilbert order.
pub(super) struct LevelOut<'f> {
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
pub(super) struct BuiltLevel {
    pub(super) count: u32,
    boxes: Entry,
    features: Entry,
    geom_index: Entry,
    geom: Entry,
    points: Bits,
    point_count: u64,
}

impl<'f> LevelOut<'f> {
    pub(super) fn new(file: &mut FileOut<'f>, zoom: u8, n: u32, geom_bytes: u64) -> LevelOut<'f> {
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
            level1: Vec::with_capacity((n as usize).div_ceil(NODE_SIZE)),
            node: GridBox::EMPTY,
            in_node: 0,
            geom_at: 0,
            count: 0,
            points: Bits::new(n as usize),
            point_count: 0,
        }
    }

    pub(super) fn push(
        &mut self,
        feature: u32,
        bbox: &GridBox,
        geom: &[u8],
    ) -> Result<(), StoreError> {
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
        if self.in_node == NODE_SIZE {
            self.close_node()?;
        }
        Ok(())
    }

    pub(super) fn close_node(&mut self) -> Result<(), StoreError> {
        self.nodes.put(&box_bytes(&self.node))?;
        self.level1.push(self.node);
        self.node = GridBox::EMPTY;
        self.in_node = 0;
        Ok(())
    }

    /// Writes the upper node levels, closes the sections and adds them to the table (their
    /// zoom is set here: the full-resolution level learns its zoom only at its end).
    pub(super) fn finish(mut self, file: &mut FileOut, zoom: u8) -> Result<BuiltLevel, StoreError> {
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

/// Point thinning for zoom `z` over the level above (see [`super::lod`]): which of its items
/// are points thinned out. Within each cell only the [`POINTS_PER_CELL`] lowest ranks stay.
/// The level is in Hilbert order of box centres and a cell is an aligned block of the grid,
/// which the curve walks in one stretch, so the points of a cell come one after another: one
/// pass with one cell's points in memory.
pub(super) fn thinned(file: &File, above: &BuiltLevel, z: u8) -> Result<Bits, StoreError> {
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
pub(super) fn generalized(
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
