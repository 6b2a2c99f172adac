//! PMTiles v3 (one file, read by range requests from a CDN or from disk), written with the
//! `pmtiles` crate's stream writer: tiles in Hilbert order (the archive is "clustered"),
//! identical tiles stored once and runs of them as one directory entry, metadata as TileJSON's
//! `vector_layers`. The tiles are the server's gzip bytes, stored as given (`precompressed`).
//!
//! The tiles of one zoom are gathered and sorted by their PMTiles id before they are written:
//! the makers deliver them in any order. Memory holds one zoom's tiles (at city scale, tens of
//! megabytes at the top zoom).

use super::{ExportError, ExportOptions, ExportSummary, make_tiles_of_zoom, plan};
use crate::engine::Engine;
use pmtiles::{Compression, PmTilesWriter, TileCoord, TileId, TileType};
use std::path::Path;

/// Writes the archive at `to` (replacing it once complete).
pub fn write(
    engine: &Engine,
    o: &ExportOptions,
    to: &Path,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<ExportSummary, ExportError> {
    let plan = plan(engine, o)?;
    let total = plan.count();
    let partial = to.with_extension("pmtiles.partial");
    let fail = |message: String| ExportError::Write {
        path: to.display().to_string(),
        message,
    };
    let (vector_layers, attribution) = super::vector_layers(engine, &o.layers, &plan);
    let b = plan.bounds;
    let metadata = serde_json::json!({
        "name": o.layers.join(","),
        "description": format!("{} exported by Urbis", o.layers.join(", ")),
        "attribution": attribution,
        "vector_layers": vector_layers,
        "generator": concat!("urbis ", env!("CARGO_PKG_VERSION")),
    });
    let file = std::fs::File::create(&partial).map_err(|e| fail(e.to_string()))?;
    let result = (|| {
        let pm = |e: pmtiles::PmtError| fail(e.to_string());
        let mut w = PmTilesWriter::new(TileType::Mvt)
            .precompressed(Compression::Gzip)
            .min_zoom(plan.minzoom)
            .max_zoom(plan.maxzoom)
            .bounds(b[0], b[1], b[2], b[3])
            .center_zoom(plan.minzoom.max(plan.maxzoom.saturating_sub(2)))
            .center((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0)
            .metadata(metadata.to_string())
            .create(std::io::BufWriter::new(file))
            .map_err(pm)?;
        let done = std::sync::atomic::AtomicU64::new(0);
        let tick = |n: u64| {
            let d = done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
            progress(d, total);
        };
        let mut summary = ExportSummary {
            minzoom: plan.minzoom,
            maxzoom: plan.maxzoom,
            bounds: plan.bounds,
            ..ExportSummary::default()
        };
        for z in plan.minzoom..=plan.maxzoom {
            let mut tiles = Vec::new();
            let s = make_tiles_of_zoom(engine, &o.layers, &plan, z, &tick, |m| {
                tiles.push(m);
                Ok(())
            })?;
            summary.empty += s.empty;
            // Hilbert order within the zoom: the archive is clustered.
            tiles.sort_by_key(|m| {
                TileCoord::new(m.tile.z, m.tile.x, m.tile.y)
                    .map(|c| TileId::from(c).value())
                    .unwrap_or(u64::MAX)
            });
            for m in tiles {
                let c = TileCoord::new(m.tile.z, m.tile.x, m.tile.y).map_err(pm)?;
                summary.tiles += 1;
                summary.bytes += m.bytes.len() as u64;
                w.add_tile(c, &m.bytes).map_err(pm)?;
            }
        }
        w.finalize().map_err(pm)?;
        Ok(summary)
    })();
    super::finish(result, &partial, to)
}
