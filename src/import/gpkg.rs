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
            ValueRef::Blob(b) => match GpkgWkb(b.to_vec()).to_geo() {
                Ok(g) => (Some(g), None),
                Err(e) => (None, Some(format!("unreadable GeoPackage geometry: {e}"))),
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
