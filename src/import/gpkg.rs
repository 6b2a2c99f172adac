//! GeoPackage reader: feature tables through rusqlite, geometries through geozero's
//! GeoPackage WKB decoder.

use super::source::{FeatureSink, Progress, SourceFeature};
use super::{ImportError, crs};
use crate::store::PropValue;
use geozero::ToGeo;
use geozero::wkb::GpkgWkb;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::sync::atomic::Ordering;

/// A feature table of a GeoPackage.
#[derive(Debug, Clone)]
pub struct FeatureTable {
    /// The table name.
    pub name: String,
    /// Its geometry column.
    pub geometry_column: String,
    /// Its spatial reference system id.
    pub srs_id: i64,
}

fn open(path: &Path) -> Result<Connection, ImportError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| ImportError::Parse {
        path: path.to_path_buf(),
        message: format!("cannot open as SQLite: {e}"),
    })?;
    Ok(conn)
}

fn not_gpkg(path: &Path, e: impl std::fmt::Display) -> ImportError {
    ImportError::Parse {
        path: path.to_path_buf(),
        message: format!(
            "not a GeoPackage (no readable gpkg_contents / gpkg_geometry_columns tables: {e})"
        ),
    }
}

/// The feature tables of a GeoPackage, in `gpkg_contents` order.
pub fn feature_tables(path: &Path) -> Result<Vec<FeatureTable>, ImportError> {
    let conn = open(path)?;
    let mut stmt = conn
        .prepare(
            "SELECT c.table_name, g.column_name, g.srs_id FROM gpkg_contents c \
             JOIN gpkg_geometry_columns g ON g.table_name = c.table_name \
             WHERE c.data_type = 'features' ORDER BY c.rowid",
        )
        .map_err(|e| not_gpkg(path, e))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(FeatureTable {
                name: r.get(0)?,
                geometry_column: r.get(1)?,
                srs_id: r.get(2)?,
            })
        })
        .map_err(|e| not_gpkg(path, e))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_gpkg(path, e))
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Reads one feature table into `sink`.
pub fn read_table(
    path: &Path,
    table: &FeatureTable,
    progress: &Progress,
    sink: &mut dyn FeatureSink,
) -> Result<(), ImportError> {
    let conn = open(path)?;
    let parse = |message: String| ImportError::Parse {
        path: path.to_path_buf(),
        message: format!("table {}: {message}", table.name),
    };
    if table.srs_id > 0 {
        let (org, code, def): (String, i64, String) = conn
            .query_row(
                "SELECT organization, organization_coordsys_id, definition FROM gpkg_spatial_ref_sys WHERE srs_id = ?1",
                [table.srs_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(|e| parse(format!("spatial reference system {} not found: {e}", table.srs_id)))?;
        let crs = if org.eq_ignore_ascii_case("EPSG") {
            crs::from_epsg(code)
        } else {
            crs::from_wkt(&def).map_err(|_| format!("{org}:{code}"))
        };
        sink.crs(crs.map_err(|crs| ImportError::Crs { crs })?)?;
    } else {
        sink.warn(format!(
            "table {} has an undefined spatial reference system (srs_id {}); assumed EPSG:4326",
            table.name, table.srs_id
        ));
    }
    let count: i64 = conn
        .query_row(
            &format!("SELECT count(*) FROM {}", quote(&table.name)),
            [],
            |r| r.get(0),
        )
        .map_err(|e| parse(e.to_string()))?;
    progress.total.store(count.max(0) as u64, Ordering::Relaxed);

    // Column names and which one is the integer primary key (the feature id).
    let mut pk = None;
    let mut columns = Vec::new();
    {
        let mut info = conn
            .prepare(&format!("PRAGMA table_info({})", quote(&table.name)))
            .map_err(|e| parse(e.to_string()))?;
        let rows = info
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .map_err(|e| parse(e.to_string()))?;
        for row in rows {
            let (name, ty, is_pk) = row.map_err(|e| parse(e.to_string()))?;
            if name == table.geometry_column {
                continue;
            }
            if is_pk == 1 && ty.eq_ignore_ascii_case("INTEGER") && pk.is_none() {
                pk = Some(name.clone());
            }
            columns.push(name);
        }
    }
    let mut select = vec![quote(&table.geometry_column)];
    select.extend(columns.iter().map(|c| quote(c)));
    let sql = format!("SELECT {} FROM {}", select.join(", "), quote(&table.name));
    let mut stmt = conn.prepare(&sql).map_err(|e| parse(e.to_string()))?;
    let mut rows = stmt.query([]).map_err(|e| parse(e.to_string()))?;
    let mut binary_warned = false;
    while let Some(row) = rows.next().map_err(|e| parse(e.to_string()))? {
        let (geometry, geometry_error) = match row.get_ref(0).map_err(|e| parse(e.to_string()))? {
            ValueRef::Blob(b) => match check_gpkg_blob(b) {
                Err(e) => (None, Some(format!("corrupt GeoPackage geometry: {e}"))),
                Ok(()) => match GpkgWkb(b.to_vec()).to_geo() {
                    Ok(g) => (Some(g), None),
                    Err(e) => (None, Some(format!("unreadable GeoPackage geometry: {e}"))),
                },
            },
            ValueRef::Null => (None, None),
            _ => (
                None,
                Some("geometry column holds a non-blob value".to_string()),
            ),
        };
        let mut id = None;
        let mut properties = Vec::with_capacity(columns.len());
        for (i, name) in columns.iter().enumerate() {
            let v = row.get_ref(i + 1).map_err(|e| parse(e.to_string()))?;
            if pk.as_deref() == Some(name.as_str()) {
                if let ValueRef::Integer(n) = v {
                    id = u64::try_from(n).ok();
                }
                continue;
            }
            let value = match v {
                ValueRef::Null => continue,
                ValueRef::Integer(n) => PropValue::Int(n),
                ValueRef::Real(f) => PropValue::Double(f),
                ValueRef::Text(t) => PropValue::String(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(_) => {
                    if !binary_warned {
                        sink.warn(format!(
                            "binary column {name} skipped (vector tiles cannot carry it)"
                        ));
                        binary_warned = true;
                    }
                    continue;
                }
            };
            properties.push((name.clone(), value));
        }
        sink.feature(SourceFeature {
            geometry,
            id,
            properties,
            geometry_error,
        })?;
        progress.done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Checks that every count in a GeoPackage geometry blob fits in the blob before geozero reads
/// it: geozero's WKB reader reserves memory for whatever count the blob claims, and a corrupt
/// ring count (found by the fuzzer) made it abort the whole process on a failed allocation.
pub fn check_gpkg_blob(b: &[u8]) -> Result<(), String> {
    if b.len() < 8 || &b[..2] != b"GP" {
        return Err("missing the GP header".into());
    }
    let flags = b[3];
    let envelope = match (flags >> 1) & 0b111 {
        0 => 0,
        1 => 32,
        2 | 3 => 48,
        4 => 64,
        other => return Err(format!("invalid envelope indicator {other}")),
    };
    let start = 8 + envelope;
    if flags & 0b1_0000 != 0 && b.len() <= start {
        return Ok(()); // empty geometry flag with no WKB
    }
    let wkb = b.get(start..).ok_or("envelope runs past the end")?;
    let mut pos = 0;
    check_wkb(wkb, &mut pos, 0)
}

fn check_wkb(b: &[u8], pos: &mut usize, depth: u32) -> Result<(), String> {
    if depth > 32 {
        return Err("geometry nested too deeply".into());
    }
    let order = *b.get(*pos).ok_or("truncated WKB")?;
    let le = match order {
        0 => false,
        1 => true,
        other => return Err(format!("invalid WKB byte order {other}")),
    };
    *pos += 1;
    let read_u32 = |pos: &mut usize| -> Result<u32, String> {
        let bytes: [u8; 4] = b
            .get(*pos..*pos + 4)
            .ok_or("truncated WKB")?
            .try_into()
            .map_err(|_| "truncated WKB")?;
        *pos += 4;
        Ok(if le {
            u32::from_le_bytes(bytes)
        } else {
            u32::from_be_bytes(bytes)
        })
    };
    let raw = read_u32(pos)?;
    let (mut z, mut m) = (raw & 0x8000_0000 != 0, raw & 0x4000_0000 != 0);
    if raw & 0x2000_0000 != 0 {
        read_u32(pos)?; // EWKB SRID
    }
    let iso = raw & 0x0fff_ffff;
    match iso / 1000 {
        1 => z = true,
        2 => m = true,
        3 => (z, m) = (true, true),
        _ => {}
    }
    let point = 8 * (2 + usize::from(z) + usize::from(m));
    let left = |pos: &usize| b.len().saturating_sub(*pos);
    let points = |pos: &mut usize| -> Result<(), String> {
        let n = read_u32(pos)? as usize;
        let need = n.checked_mul(point).ok_or("point count overflows")?;
        if need > left(pos) {
            return Err(format!("{n} points claimed, {} bytes left", left(pos)));
        }
        *pos += need;
        Ok(())
    };
    match iso % 1000 {
        1 => {
            if point > left(pos) {
                return Err("truncated point".into());
            }
            *pos += point;
        }
        2 | 8 => points(pos)?,
        3 | 17 => {
            let rings = read_u32(pos)? as usize;
            if rings.saturating_mul(4) > left(pos) {
                return Err(format!("{rings} rings claimed, {} bytes left", left(pos)));
            }
            for _ in 0..rings {
                points(pos)?;
            }
        }
        4..=7 | 9..=16 => {
            let n = read_u32(pos)? as usize;
            if n.saturating_mul(9) > left(pos) {
                return Err(format!("{n} parts claimed, {} bytes left", left(pos)));
            }
            for _ in 0..n {
                check_wkb(b, pos, depth + 1)?;
            }
        }
        other => return Err(format!("unknown WKB geometry type {other}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_ring_count_is_refused_before_reading() {
        // GP header, no envelope, then a little-endian Polygon claiming 2^31 rings.
        let mut blob = b"GP\x00\x01\xe6\x10\x00\x00".to_vec();
        blob.extend_from_slice(&[1, 3, 0, 0, 0, 0, 0, 0, 0x80]);
        assert!(
            check_gpkg_blob(&blob)
                .unwrap_err()
                .contains("rings claimed")
        );
        let mut ok = b"GP\x00\x01\xe6\x10\x00\x00".to_vec();
        ok.extend_from_slice(&[1, 1, 0, 0, 0]);
        ok.extend_from_slice(&[0u8; 16]);
        assert_eq!(check_gpkg_blob(&ok), Ok(()));
    }
}
