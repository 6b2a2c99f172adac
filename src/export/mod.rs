//! Exports: every tile the server would serve for some layers, written into one archive file
//! for CDNs and offline tablets: MBTiles 1.3 ([`mbtiles`]) and PMTiles v3 ([`pmtiles`]); the tiles are the engine's
//! own bytes, gzip-compressed exactly as the server sends them to a client that accepts gzip,
//! so an archive and the live server agree byte for byte.
//!
//! Tiles are made in parallel (rayon) zoom by zoom over the tiles that meet the layers' box
//! (or `--bbox`), handed to one writer thread; empty tiles (which the server answers 204) are
//! left out. The archive is written beside its final name and renamed when complete: a failed
//! or interrupted export leaves no half file behind.

pub mod files;
pub mod mbtiles;
pub mod pmtiles;

use crate::engine::Engine;
use crate::tile::mercator::lonlat_to_grid;
use crate::tile::{GridBox, TileId};
use rayon::prelude::*;
use std::path::Path;

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Layers (one, or several for composite tiles).
    pub layers: Vec<String>,
    /// Lowest zoom (default: the layers' lowest).
    pub minzoom: Option<u8>,
    /// Highest zoom (default: the layers' highest).
    pub maxzoom: Option<u8>,
    /// `[west, south, east, north]` to keep (default: the layers' bounds).
    pub bbox: Option<[f64; 4]>,
}

/// What an export wrote.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ExportSummary {
    /// Features written (file exports).
    pub features: u64,
    /// Tiles written.
    pub tiles: u64,
    /// Tiles left out as empty.
    pub empty: u64,
    /// Bytes of tile data written (gzip).
    pub bytes: u64,
    /// Zooms written.
    pub minzoom: u8,
    /// Zooms written.
    pub maxzoom: u8,
    /// `[west, south, east, north]` of the tiles.
    pub bounds: [f64; 4],
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A layer is not in the store.
    #[error("no layer {0:?} in the store (urbis layers lists them)")]
    UnknownLayer(String),
    /// Bad options.
    #[error("{0}")]
    Invalid(String),
    /// Writing the archive failed.
    #[error("{path}: {message}")]
    Write {
        /// The archive.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// One tile made for an archive.
pub struct MadeTile {
    /// Where.
    pub tile: TileId,
    /// Its bytes (gzip).
    pub bytes: Vec<u8>,
}

/// The plan: the zooms, the box in grid units and in degrees, and the tiles to make.
pub struct Plan {
    /// Zooms.
    pub minzoom: u8,
    /// Zooms.
    pub maxzoom: u8,
    /// The box, in degrees.
    pub bounds: [f64; 4],
    grid: GridBox,
    /// The tile buffer (of 4096): a tile just outside the box holds what reaches into its
    /// buffer, and the server serves it.
    buffer: u32,
}

impl Plan {
    /// The tiles of zoom `z` that meet the box.
    pub fn tiles(&self, z: u8) -> impl Iterator<Item = TileId> + '_ {
        let ((x0, x1), (y0, y1)) = self.range(z);
        (x0..=x1)
            .flat_map(move |x| (y0..=y1).filter_map(move |y| TileId::new(u32::from(z), x, y).ok()))
    }

    /// The columns and rows of zoom `z` that meet the box (a tile spans 2^(32 - z) grid units).
    fn range(&self, z: u8) -> ((u64, u64), (u64, u64)) {
        let shift = 32 - u32::from(z);
        let pad = (u64::from(self.buffer) << shift) >> 12;
        let last = (1u64 << z) - 1;
        let lo = |v: u32| u64::from(v).saturating_sub(pad) >> shift;
        let hi = |v: u32| ((u64::from(v) + pad) >> shift).min(last);
        (
            (lo(self.grid.min_x), hi(self.grid.max_x)),
            (lo(self.grid.min_y), hi(self.grid.max_y)),
        )
    }

    /// Tiles in all zooms.
    pub fn count(&self) -> u64 {
        (self.minzoom..=self.maxzoom)
            .map(|z| {
                let ((x0, x1), (y0, y1)) = self.range(z);
                (x1 - x0 + 1) * (y1 - y0 + 1)
            })
            .sum()
    }
}

/// Plans an export of `o` from the engine's layers.
pub fn plan(engine: &Engine, o: &ExportOptions) -> Result<Plan, ExportError> {
    if o.layers.is_empty() {
        return Err(ExportError::Invalid("name at least one layer".into()));
    }
    let mut lo = u8::MAX;
    let mut hi = 0u8;
    let mut bounds = [180.0f64, 90.0, -180.0, -90.0];
    for name in &o.layers {
        let l = engine
            .layer(name)
            .ok_or_else(|| ExportError::UnknownLayer(name.clone()))?;
        lo = lo.min(l.reader.minzoom());
        hi = hi.max(l.reader.maxzoom());
        let b = l.reader.meta().bounds;
        bounds = [
            bounds[0].min(b[0]),
            bounds[1].min(b[1]),
            bounds[2].max(b[2]),
            bounds[3].max(b[3]),
        ];
    }
    let minzoom = o.minzoom.unwrap_or(lo);
    let maxzoom = o.maxzoom.unwrap_or(hi);
    if minzoom > maxzoom || maxzoom > 22 {
        return Err(ExportError::Invalid(format!(
            "zooms {minzoom}..{maxzoom}: give --minzoom ≤ --maxzoom ≤ 22"
        )));
    }
    if let Some(b) = o.bbox {
        if !(b[0] < b[2] && b[1] < b[3] && b[0] >= -180.0 && b[2] <= 180.0) {
            return Err(ExportError::Invalid(format!(
                "--bbox {b:?}: give west,south,east,north in degrees"
            )));
        }
        bounds = [
            bounds[0].max(b[0]),
            bounds[1].max(b[1]),
            bounds[2].min(b[2]),
            bounds[3].min(b[3]),
        ];
        if bounds[0] > bounds[2] || bounds[1] > bounds[3] {
            return Err(ExportError::Invalid(format!(
                "--bbox {b:?} does not meet the layers' bounds"
            )));
        }
    }
    let mut grid = GridBox::EMPTY;
    grid.extend(lonlat_to_grid(bounds[0], bounds[3]));
    grid.extend(lonlat_to_grid(bounds[2], bounds[1]));
    Ok(Plan {
        minzoom,
        maxzoom,
        bounds,
        grid,
        buffer: engine.config().buffer,
    })
}

/// Makes a file written beside `to` (at `partial`) appear at `to` when `result` says it is
/// complete; removes it otherwise. No half file is ever left under the final name.
fn finish<T>(result: Result<T, ExportError>, partial: &Path, to: &Path) -> Result<T, ExportError> {
    match result {
        Ok(v) => {
            std::fs::rename(partial, to).map_err(|e| ExportError::Write {
                path: to.display().to_string(),
                message: e.to_string(),
            })?;
            Ok(v)
        }
        Err(e) => {
            let _ = std::fs::remove_file(partial);
            Err(e)
        }
    }
}

/// The archives' metadata of `layers`: their TileJSON `vector_layers` within the plan's
/// zooms, and their attributions joined.
fn vector_layers(
    engine: &Engine,
    layers: &[String],
    plan: &Plan,
) -> (Vec<serde_json::Value>, String) {
    let mut out = Vec::new();
    let mut attribution = Vec::new();
    for name in layers {
        if let Some(l) = engine.layer(name) {
            let meta = l.reader.meta();
            let fields: serde_json::Map<String, serde_json::Value> = meta
                .fields
                .iter()
                .map(|(k, t)| (k.clone(), crate::store::FieldType::tilejson_name(t).into()))
                .collect();
            out.push(serde_json::json!({
                "id": name, "fields": fields,
                "minzoom": l.reader.minzoom().max(plan.minzoom),
                "maxzoom": l.reader.maxzoom().min(plan.maxzoom),
            }));
            if let Some(a) = &meta.attribution {
                attribution.push(a.clone());
            }
        }
    }
    (out, attribution.join("; "))
}

/// Makes every tile of `plan` in parallel and hands the non-empty ones to `write` (on the
/// calling thread, in no particular order); `progress` hears of each tile made.
pub fn make_tiles(
    engine: &Engine,
    layers: &[String],
    plan: &Plan,
    progress: &(dyn Fn(u64) + Sync),
    mut write: impl FnMut(MadeTile) -> Result<(), ExportError>,
) -> Result<ExportSummary, ExportError> {
    let mut summary = ExportSummary {
        minzoom: plan.minzoom,
        maxzoom: plan.maxzoom,
        bounds: plan.bounds,
        ..ExportSummary::default()
    };
    for z in plan.minzoom..=plan.maxzoom {
        let s = make_tiles_of_zoom(engine, layers, plan, z, progress, &mut write)?;
        summary.tiles += s.tiles;
        summary.empty += s.empty;
        summary.bytes += s.bytes;
    }
    Ok(summary)
}

/// Makes the tiles of zoom `z` in parallel and hands the non-empty ones to `write` (on the
/// calling thread, in no particular order).
pub fn make_tiles_of_zoom(
    engine: &Engine,
    layers: &[String],
    plan: &Plan,
    z: u8,
    progress: &(dyn Fn(u64) + Sync),
    mut write: impl FnMut(MadeTile) -> Result<(), ExportError>,
) -> Result<ExportSummary, ExportError> {
    let names: Vec<&str> = layers.iter().map(String::as_str).collect();
    let mut summary = ExportSummary::default();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Option<MadeTile>>(1024);
    std::thread::scope(|s| {
        let names = &names;
        let maker = s.spawn(move || {
            let tiles: Vec<TileId> = plan.tiles(z).collect();
            let _ = tiles.par_iter().try_for_each(|t| {
                let made = engine.tile(names, *t, true).ok();
                progress(1);
                let made = made.filter(|b| b.features > 0).map(|b| MadeTile {
                    tile: *t,
                    bytes: b.bytes.to_vec(),
                });
                tx.send(made).map_err(|_| ())
            });
        });
        let mut result = Ok(());
        for m in rx {
            match m {
                None => summary.empty += 1,
                Some(m) => {
                    summary.tiles += 1;
                    summary.bytes += m.bytes.len() as u64;
                    result = write(m);
                    if result.is_err() {
                        break; // dropping the receiver stops the makers
                    }
                }
            }
        }
        let _ = maker.join();
        result
    })?;
    Ok(summary)
}

/// Exports `o` from `engine` into the file at `to`, by its extension: a tile archive
/// (`.mbtiles`, `.pmtiles`) or the layer's features (`.fgb`, `.geojson`, `.gpkg`), whole.
pub fn export(
    engine: &Engine,
    o: &ExportOptions,
    to: &Path,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<ExportSummary, ExportError> {
    let ext = to
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("mbtiles") => mbtiles::write(engine, o, to, progress),
        Some("pmtiles") => pmtiles::write(engine, o, to, progress),
        Some("geojson" | "json" | "fgb" | "gpkg") => {
            let [layer] = o.layers.as_slice() else {
                return Err(ExportError::Invalid(
                    "a GIS file holds one layer: name one".into(),
                ));
            };
            if o.minzoom.is_some() || o.maxzoom.is_some() || o.bbox.is_some() {
                return Err(ExportError::Invalid(
                    "a GIS file is the whole layer at full resolution: --minzoom, --maxzoom and --bbox are for tile archives".into(),
                ));
            }
            let features = files::write(engine, layer, to, &crate::tile::LayerView::ALL, progress)?;
            let l = engine.layer(layer);
            Ok(ExportSummary {
                features,
                bounds: l.map(|l| l.reader.meta().bounds).unwrap_or_default(),
                ..ExportSummary::default()
            })
        }
        _ => Err(ExportError::Invalid(format!(
            "{}: the extension says the format: .mbtiles or .pmtiles (tiles), .fgb, .gpkg or .geojson (the layer's features)",
            to.display()
        ))),
    }
}
