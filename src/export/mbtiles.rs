//! MBTiles 1.3 (the SQLite tile archive of Mapbox's spec): a `metadata` table of name/value
//! rows (name, format `pbf`, bounds, center, minzoom, maxzoom, attribution, description, type,
//! version, and `json` with the `vector_layers` of TileJSON) and a `tiles` table keyed by zoom,
//! column and row, rows counted from the south (TMS), as the spec says. Tile data are the
//! server's gzip bytes.

use super::{ExportError, ExportOptions, ExportSummary, make_tiles, plan};
use crate::engine::Engine;
use rusqlite::{Connection, params};
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
    let partial = to.with_extension("mbtiles.partial");
    let fail = |message: String| ExportError::Write {
        path: to.display().to_string(),
        message,
    };
    let _ = std::fs::remove_file(&partial);
    let conn = Connection::open(&partial).map_err(|e| fail(e.to_string()))?;
    let db = |e: rusqlite::Error| fail(e.to_string());
    // A new file written once: no journal; the rename below is what makes it appear.
    conn.execute_batch(
        "PRAGMA journal_mode = OFF;
         PRAGMA synchronous = OFF;
         PRAGMA page_size = 4096;
         CREATE TABLE metadata (name TEXT, value TEXT);
         CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB);
         BEGIN;",
    )
    .map_err(db)?;
    let result = (|| {
        let mut insert = conn
            .prepare("INSERT INTO tiles VALUES (?1, ?2, ?3, ?4)")
            .map_err(db)?;
        let done = std::sync::atomic::AtomicU64::new(0);
        let summary = make_tiles(
            engine,
            &o.layers,
            &plan,
            &|n| {
                let d = done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
                progress(d, total);
            },
            |m| {
                let t = m.tile;
                // MBTiles rows count from the south.
                let row = (1u32 << t.z) - 1 - t.y;
                insert
                    .execute(params![t.z, t.x, row, m.bytes])
                    .map(drop)
                    .map_err(db)
            },
        )?;
        drop(insert);
        let (vector_layers, attribution) = super::vector_layers(engine, &o.layers, &plan);
        let b = summary.bounds;
        let centre_zoom = plan.minzoom.max(plan.maxzoom.saturating_sub(2));
        let rows: Vec<(&str, String)> = vec![
            ("name", o.layers.join(",")),
            ("format", "pbf".into()),
            ("bounds", format!("{},{},{},{}", b[0], b[1], b[2], b[3])),
            (
                "center",
                format!(
                    "{},{},{centre_zoom}",
                    (b[0] + b[2]) / 2.0,
                    (b[1] + b[3]) / 2.0
                ),
            ),
            ("minzoom", plan.minzoom.to_string()),
            ("maxzoom", plan.maxzoom.to_string()),
            ("type", "overlay".into()),
            ("version", "1".into()),
            (
                "description",
                format!("{} exported by Urbis", o.layers.join(", ")),
            ),
            ("attribution", attribution),
            (
                "json",
                serde_json::json!({ "vector_layers": vector_layers }).to_string(),
            ),
            (
                "generator",
                concat!("urbis ", env!("CARGO_PKG_VERSION")).into(),
            ),
        ];
        for (k, v) in rows {
            conn.execute("INSERT INTO metadata VALUES (?1, ?2)", params![k, v])
                .map_err(db)?;
        }
        conn.execute_batch(
            "CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row);
             COMMIT;",
        )
        .map_err(db)?;
        Ok(summary)
    })();
    drop(conn);
    super::finish(result, &partial, to)
}
