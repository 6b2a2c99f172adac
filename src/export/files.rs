//! A layer back out as a GIS file, for analysts: GeoJSON (RFC 7946), FlatGeobuf (the
//! `flatgeobuf` crate's writer, with its packed R-tree index) or GeoPackage (rusqlite, the
//! geometries as GeoPackage binary through geozero, an R-tree spatial index), at full
//! resolution with every property, in WGS 84, in the order of the import (FlatGeobuf in its
//! index's order). The geometries are the store's: snapped to its 1 cm grid and repaired where
//! the import repaired them. A [`LayerView`] decides what a caller gets (the OGC API's
//! downloads): only features that meet its area, only the attributes it keeps, positions at
//! its precision.

use super::ExportError;
use crate::store::{FeatureRef, FieldType, GeomKind, GridGeometry, LayerReader, PropRef};
use crate::tile::LayerView;
use crate::tile::mercator::grid_to_lonlat;
use geo_types::{
    Coord, Geometry, LineString, MultiLineString, MultiPoint, MultiPolygon, Point, Polygon,
};
use std::io::Write;
use std::path::Path;

/// A stored geometry in WGS 84 (rings closed, as GIS files want them), its positions at the
/// precision `view` allows.
pub fn to_geo(g: &GridGeometry, view: &LayerView) -> Geometry<f64> {
    let c = |p: &[u32; 2]| {
        let (x, y) = grid_to_lonlat(*p);
        let [x, y] = view.position([x, y]);
        Coord { x, y }
    };
    let ring = |r: &Vec<[u32; 2]>| {
        let mut pts: Vec<Coord<f64>> = r.iter().map(c).collect();
        if let (Some(first), Some(last)) = (pts.first().copied(), pts.last().copied())
            && first != last
        {
            pts.push(first);
        }
        LineString(pts)
    };
    let multi = g.multi || g.parts.len() > 1;
    match g.kind {
        GeomKind::Point => {
            let pts: Vec<Point<f64>> = g
                .parts
                .iter()
                .filter_map(|p| p.first()?.first().map(|q| Point(c(q))))
                .collect();
            match (multi, pts.as_slice()) {
                (false, [one]) => Geometry::Point(*one),
                _ => Geometry::MultiPoint(MultiPoint(pts)),
            }
        }
        GeomKind::Line => {
            let lines: Vec<LineString<f64>> = g
                .parts
                .iter()
                .flatten()
                .map(|l| LineString(l.iter().map(c).collect()))
                .collect();
            match (multi, lines.len()) {
                (false, 1) => {
                    Geometry::LineString(lines.into_iter().next().unwrap_or(LineString(vec![])))
                }
                _ => Geometry::MultiLineString(MultiLineString(lines)),
            }
        }
        GeomKind::Polygon => {
            let polys: Vec<Polygon<f64>> = g
                .parts
                .iter()
                .filter(|rings| !rings.is_empty())
                .map(|rings| Polygon::new(ring(&rings[0]), rings[1..].iter().map(ring).collect()))
                .collect();
            match (multi, polys.len()) {
                (false, 1) => Geometry::Polygon(
                    polys
                        .into_iter()
                        .next()
                        .unwrap_or_else(|| Polygon::new(LineString(vec![]), vec![])),
                ),
                _ => Geometry::MultiPolygon(MultiPolygon(polys)),
            }
        }
    }
}

/// The features of the full-resolution level that `view` shows, in import order: (import
/// number, item index).
fn in_import_order(reader: &LayerReader, view: &LayerView) -> Vec<(u32, usize)> {
    let Some(level) = reader.level(reader.maxzoom()) else {
        return Vec::new();
    };
    let mut order: Vec<(u32, usize)> = (0..level.len())
        .filter_map(|i| {
            let f = level.item(i);
            view.shows_box(&f.bbox).then(|| (feature_id(reader, &f), i))
        })
        .collect();
    order.sort_unstable();
    order
}

/// A feature's id outside the store: its number in the import, from 1 (the OGC API's
/// `featureId`). Stable for a layer version; a new version numbers its own import.
pub fn feature_id(reader: &LayerReader, f: &FeatureRef<'_>) -> u32 {
    reader
        .source_index(f.feature)
        .unwrap_or(f.feature)
        .saturating_add(1)
}

/// The properties of `f` that `view` keeps, as JSON.
pub fn properties_json(
    reader: &LayerReader,
    f: &FeatureRef<'_>,
    view: &LayerView,
) -> serde_json::Map<String, serde_json::Value> {
    reader
        .named_properties(f.feature)
        .iter()
        .filter(|(k, _)| view.keeps(k))
        .map(|(k, v)| (k.to_string(), json_value(v)))
        .collect()
}

/// One GeoJSON feature (with its `id`, see [`feature_id`]) as `view` shows it; `None` for an
/// undecodable geometry.
pub fn feature_geojson(
    reader: &LayerReader,
    f: &FeatureRef<'_>,
    view: &LayerView,
) -> Option<String> {
    use geozero::ToJson;
    let g = f.decode()?;
    let geometry = to_geo(&g, view).to_json().ok()?;
    Some(format!(
        "{{\"type\":\"Feature\",\"id\":{},\"properties\":{},\"geometry\":{geometry}}}",
        feature_id(reader, f),
        serde_json::Value::Object(properties_json(reader, f, view))
    ))
}

/// A property value as JSON.
pub fn json_value(v: &PropRef<'_>) -> serde_json::Value {
    match *v {
        PropRef::String(s) => s.into(),
        PropRef::Int(i) => i.into(),
        PropRef::Double(d) => {
            serde_json::Number::from_f64(d).map_or(serde_json::Value::Null, Into::into)
        }
        PropRef::Bool(b) => b.into(),
    }
}

/// Writes `reader`'s layer as GeoJSON at `to`.
pub fn write_geojson(
    reader: &LayerReader,
    to: &Path,
    view: &LayerView,
    progress: &dyn Fn(u64, u64),
) -> Result<u64, ExportError> {
    let fail = |m: String| ExportError::Write {
        path: to.display().to_string(),
        message: m,
    };
    let Some(level) = reader.level(reader.maxzoom()) else {
        return Err(fail("the layer has no full-resolution level".into()));
    };
    let order = in_import_order(reader, view);
    let total = order.len() as u64;
    let file = std::fs::File::create(to).map_err(|e| fail(e.to_string()))?;
    let mut out = std::io::BufWriter::new(file);
    let io = |e: std::io::Error| fail(e.to_string());
    writeln!(
        out,
        "{{\"type\":\"FeatureCollection\",\"name\":{},\"features\":[",
        serde_json::Value::from(reader.meta().name.as_str())
    )
    .map_err(io)?;
    for (n, (_, i)) in order.iter().enumerate() {
        let f = level.item(*i);
        let Some(feature) = feature_geojson(reader, &f, view) else {
            continue;
        };
        if n > 0 {
            out.write_all(b",\n").map_err(io)?;
        }
        out.write_all(feature.as_bytes()).map_err(io)?;
        if n % 4096 == 0 {
            progress(n as u64, total);
        }
    }
    out.write_all(b"\n]}\n").map_err(io)?;
    out.flush().map_err(io)?;
    progress(total, total);
    Ok(total)
}

/// Writes `reader`'s layer as FlatGeobuf (indexed) at `to`.
pub fn write_fgb(
    reader: &LayerReader,
    to: &Path,
    view: &LayerView,
    progress: &dyn Fn(u64, u64),
) -> Result<u64, ExportError> {
    use flatgeobuf::{ColumnType, FgbCrs, FgbWriter, FgbWriterOptions, GeometryType};
    use geozero::ColumnValue;
    let fail = |m: String| ExportError::Write {
        path: to.display().to_string(),
        message: m,
    };
    let Some(level) = reader.level(reader.maxzoom()) else {
        return Err(fail("the layer has no full-resolution level".into()));
    };
    let meta = reader.meta();
    let mut fgb = FgbWriter::create_with_options(
        &meta.name,
        GeometryType::Unknown,
        FgbWriterOptions {
            crs: FgbCrs {
                code: 4326,
                ..Default::default()
            },
            // Mixed layers keep their points, lines and polygons as they are (a geometry type
            // per feature, as FlatGeobuf's Unknown layers do).
            detect_type: false,
            promote_to_multi: false,
            ..Default::default()
        },
    )
    .map_err(|e| fail(e.to_string()))?;
    let columns: Vec<(&str, ColumnType)> = columns(reader, view)
        .into_iter()
        .map(|(k, t)| {
            (
                k,
                match t {
                    Column::Real => ColumnType::Double,
                    Column::Bool => ColumnType::Bool,
                    Column::Text => ColumnType::String,
                },
            )
        })
        .collect();
    for (name, t) in &columns {
        fgb.add_column(name, *t, |_, c| c.nullable = true);
    }
    let index: std::collections::HashMap<&str, usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (*k, i))
        .collect();
    let order = in_import_order(reader, view);
    let total = order.len() as u64;
    for (n, (_, i)) in order.iter().enumerate() {
        let f = level.item(*i);
        let Some(g) = f.decode() else { continue };
        let props = reader.named_properties(f.feature);
        let mut texts: Vec<String> = Vec::new();
        // Values as the columns want them (a number in a text column as its text).
        let mut values: Vec<(usize, &str, ColumnValue<'_>)> = Vec::with_capacity(props.len());
        for (k, v) in &props {
            let Some(&col) = index.get(k) else { continue };
            if columns[col].1 == ColumnType::String && !matches!(v, PropRef::String(_)) {
                texts.push(json_value(v).to_string());
            }
        }
        let mut text_at = 0;
        for (k, v) in &props {
            let Some(&col) = index.get(k) else { continue };
            let cv = match (columns[col].1, v) {
                (ColumnType::String, PropRef::String(s)) => ColumnValue::String(s),
                (ColumnType::String, _) => {
                    text_at += 1;
                    ColumnValue::String(&texts[text_at - 1])
                }
                (_, PropRef::Int(i)) => ColumnValue::Double(*i as f64),
                (_, PropRef::Double(d)) => ColumnValue::Double(*d),
                (_, PropRef::Bool(b)) => ColumnValue::Bool(*b),
                (_, PropRef::String(s)) => ColumnValue::String(s),
            };
            values.push((col, k, cv));
        }
        values.sort_by_key(|v| v.0);
        fgb.add_feature_geom(to_geo(&g, view), |feat| {
            use geozero::PropertyProcessor;
            for (col, k, v) in &values {
                let _ = feat.property(*col, k, v);
            }
        })
        .map_err(|e| fail(format!("feature {}: {e}", f.feature)))?;
        if n % 4096 == 0 {
            progress(n as u64, total);
        }
    }
    let file = std::fs::File::create(to).map_err(|e| fail(e.to_string()))?;
    let mut out = std::io::BufWriter::new(file);
    fgb.write(&mut out).map_err(|e| fail(e.to_string()))?;
    out.flush().map_err(|e| fail(e.to_string()))?;
    progress(total, total);
    Ok(total)
}

/// How a field is stored in a file with typed columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    /// Numbers.
    Real,
    /// true/false.
    Bool,
    /// Text, and fields of mixed types (numbers as their JSON text).
    Text,
}

/// The layer's fields that `view` keeps, in the layer's order, with their column type.
fn columns<'r>(reader: &'r LayerReader, view: &LayerView) -> Vec<(&'r str, Column)> {
    reader
        .meta()
        .fields
        .iter()
        .filter(|(k, _)| view.keeps(k))
        .map(|(k, t)| {
            let c = match t.as_slice() {
                [FieldType::Number] => Column::Real,
                [FieldType::Boolean] => Column::Bool,
                _ => Column::Text,
            };
            (k.as_str(), c)
        })
        .collect()
}

/// The GeoPackage geometry type of a column that holds `kinds` (one kind: its multi type, so
/// that single and multi parts share the column; several: `GEOMETRY`).
fn gpkg_type(kinds: &std::collections::BTreeSet<u8>) -> &'static str {
    match kinds.iter().copied().collect::<Vec<u8>>().as_slice() {
        [0] => "MULTIPOINT",
        [1] => "MULTILINESTRING",
        [2] => "MULTIPOLYGON",
        _ => "GEOMETRY",
    }
}

/// `g` as its multi type (for a column of one kind).
fn promote(g: Geometry<f64>) -> Geometry<f64> {
    match g {
        Geometry::Point(p) => Geometry::MultiPoint(MultiPoint(vec![p])),
        Geometry::LineString(l) => Geometry::MultiLineString(MultiLineString(vec![l])),
        Geometry::Polygon(p) => Geometry::MultiPolygon(MultiPolygon(vec![p])),
        other => other,
    }
}

fn kind_number(k: GeomKind) -> u8 {
    match k {
        GeomKind::Point => 0,
        GeomKind::Line => 1,
        GeomKind::Polygon => 2,
    }
}

/// Writes `reader`'s layer as a GeoPackage 1.3 at `to` (1.3 rather than 1.4: GDAL 3.6 warns of
/// 1.4 files and they hold nothing 1.3 lacks): one feature table named after the
/// layer (`fid` from 1 in import order, `geom`, the fields), its extent in `gpkg_contents`,
/// and an R-tree spatial index registered as the `gpkg_rtree_index` extension.
pub fn write_gpkg(
    reader: &LayerReader,
    to: &Path,
    view: &LayerView,
    progress: &dyn Fn(u64, u64),
) -> Result<u64, ExportError> {
    use geo::BoundingRect;
    use geozero::{CoordDimensions, ToWkb};
    use rusqlite::types::Value;
    let fail = |m: String| ExportError::Write {
        path: to.display().to_string(),
        message: m,
    };
    let sql = |e: rusqlite::Error| fail(e.to_string());
    let Some(level) = reader.level(reader.maxzoom()) else {
        return Err(fail("the layer has no full-resolution level".into()));
    };
    let _ = std::fs::remove_file(to);
    let mut db = rusqlite::Connection::open(to).map_err(sql)?;
    // One transaction, no journal: a failed export leaves a partial file that the caller
    // removes, never a half-written one under the final name.
    db.execute_batch(
        "PRAGMA application_id = 1196444487; PRAGMA user_version = 10300;
         PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;",
    )
    .map_err(sql)?;
    let table = reader.meta().name.clone();
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let cols = columns(reader, view);
    let order = in_import_order(reader, view);
    let total = order.len() as u64;
    let kinds: std::collections::BTreeSet<u8> = order
        .iter()
        .filter_map(|(_, i)| level.item(*i).kind().map(kind_number))
        .collect();
    let geometry_type = gpkg_type(&kinds);
    let tx = db.transaction().map_err(sql)?;
    tx.execute_batch(
        "CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT NOT NULL, srs_id INTEGER PRIMARY KEY,
           organization TEXT NOT NULL, organization_coordsys_id INTEGER NOT NULL,
           definition TEXT NOT NULL, description TEXT);
         INSERT INTO gpkg_spatial_ref_sys VALUES
           ('Undefined cartesian SRS', -1, 'NONE', -1, 'undefined', 'undefined cartesian coordinate reference system'),
           ('Undefined geographic SRS', 0, 'NONE', 0, 'undefined', 'undefined geographic coordinate reference system'),
           ('WGS 84 geodetic', 4326, 'EPSG', 4326, 'GEOGCS[\"WGS 84\",DATUM[\"WGS_1984\",SPHEROID[\"WGS 84\",6378137,298.257223563,AUTHORITY[\"EPSG\",\"7030\"]],AUTHORITY[\"EPSG\",\"6326\"]],PRIMEM[\"Greenwich\",0,AUTHORITY[\"EPSG\",\"8901\"]],UNIT[\"degree\",0.0174532925199433,AUTHORITY[\"EPSG\",\"9122\"]],AXIS[\"Latitude\",NORTH],AXIS[\"Longitude\",EAST],AUTHORITY[\"EPSG\",\"4326\"]]', 'longitude/latitude coordinates in decimal degrees on the WGS 84 spheroid');
         CREATE TABLE gpkg_contents (table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL,
           identifier TEXT UNIQUE, description TEXT DEFAULT '',
           last_change DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
           min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE, srs_id INTEGER,
           CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id));
         CREATE TABLE gpkg_geometry_columns (table_name TEXT NOT NULL, column_name TEXT NOT NULL,
           geometry_type_name TEXT NOT NULL, srs_id INTEGER NOT NULL, z TINYINT NOT NULL,
           m TINYINT NOT NULL, CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name));
         CREATE TABLE gpkg_extensions (table_name TEXT, column_name TEXT,
           extension_name TEXT NOT NULL, definition TEXT NOT NULL, scope TEXT NOT NULL,
           CONSTRAINT ge_tce UNIQUE (table_name, column_name, extension_name));",
    )
    .map_err(sql)?;
    let mut create = format!(
        "CREATE TABLE {} (fid INTEGER PRIMARY KEY AUTOINCREMENT, geom {geometry_type}",
        quote(&table)
    );
    for (k, c) in &cols {
        let t = match c {
            Column::Real => "REAL",
            Column::Bool => "BOOLEAN",
            Column::Text => "TEXT",
        };
        create.push_str(&format!(", {} {t}", quote(k)));
    }
    create.push(')');
    tx.execute(&create, []).map_err(sql)?;
    let rtree = quote(&format!("rtree_{table}_geom"));
    tx.execute(
        &format!("CREATE VIRTUAL TABLE {rtree} USING rtree(id, minx, maxx, miny, maxy)"),
        [],
    )
    .map_err(sql)?;
    let placeholders: String = (0..cols.len() + 2)
        .map(|i| format!("?{}", i + 1))
        .collect::<Vec<_>>()
        .join(", ");
    let names: String = cols
        .iter()
        .map(|(k, _)| format!(", {}", quote(k)))
        .collect();
    let index: std::collections::HashMap<&str, usize> =
        cols.iter().enumerate().map(|(i, (k, _))| (*k, i)).collect();
    let mut extent = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
    {
        let mut insert = tx
            .prepare(&format!(
                "INSERT INTO {} (fid, geom{names}) VALUES ({placeholders})",
                quote(&table)
            ))
            .map_err(sql)?;
        let mut insert_box = tx
            .prepare(&format!("INSERT INTO {rtree} VALUES (?1, ?2, ?3, ?4, ?5)"))
            .map_err(sql)?;
        for (n, (_, i)) in order.iter().enumerate() {
            let f = level.item(*i);
            let Some(g) = f.decode() else { continue };
            let mut geom = to_geo(&g, view);
            if geometry_type != "GEOMETRY" {
                geom = promote(geom);
            }
            let Some(r) = geom.bounding_rect() else {
                continue;
            };
            let (lo, hi) = (r.min(), r.max());
            extent = [
                extent[0].min(lo.x),
                extent[1].min(lo.y),
                extent[2].max(hi.x),
                extent[3].max(hi.y),
            ];
            let blob = geom
                .to_gpkg_wkb(
                    CoordDimensions::xy(),
                    Some(4326),
                    vec![lo.x, hi.x, lo.y, hi.y],
                )
                .map_err(|e| fail(format!("feature {}: {e}", f.feature)))?;
            let fid = i64::from(feature_id(reader, &f));
            let mut row: Vec<Value> = vec![Value::Integer(fid), Value::Blob(blob)];
            row.resize(cols.len() + 2, Value::Null);
            for (k, v) in reader.named_properties(f.feature) {
                let Some(&col) = index.get(k) else { continue };
                row[col + 2] = match (cols[col].1, v) {
                    (Column::Text, PropRef::String(s)) => Value::Text(s.to_string()),
                    (Column::Text, other) => Value::Text(json_value(&other).to_string()),
                    (_, PropRef::Int(i)) => Value::Integer(i),
                    (_, PropRef::Double(d)) => Value::Real(d),
                    (_, PropRef::Bool(b)) => Value::Integer(i64::from(b)),
                    (_, PropRef::String(s)) => Value::Text(s.to_string()),
                };
            }
            insert
                .execute(rusqlite::params_from_iter(row))
                .map_err(sql)?;
            insert_box
                .execute(rusqlite::params![fid, lo.x, hi.x, lo.y, hi.y])
                .map_err(sql)?;
            if n % 4096 == 0 {
                progress(n as u64, total);
            }
        }
    }
    if extent[0] > extent[2] {
        extent = [0.0; 4];
    }
    let meta = reader.meta();
    tx.execute(
        "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, min_x, min_y, max_x, max_y, srs_id)
         VALUES (?1, 'features', ?1, ?2, ?3, ?4, ?5, ?6, 4326)",
        rusqlite::params![
            table,
            format!("exported by urbis {} from layer {}", env!("CARGO_PKG_VERSION"), meta.name),
            extent[0],
            extent[1],
            extent[2],
            extent[3]
        ],
    )
    .map_err(sql)?;
    tx.execute(
        "INSERT INTO gpkg_geometry_columns VALUES (?1, 'geom', ?2, 4326, 0, 0)",
        rusqlite::params![table, geometry_type],
    )
    .map_err(sql)?;
    tx.execute(
        "INSERT INTO gpkg_extensions VALUES (?1, 'geom', 'gpkg_rtree_index', 'http://www.geopackage.org/spec/#extension_rtree', 'write-only')",
        rusqlite::params![table],
    )
    .map_err(sql)?;
    tx.commit().map_err(sql)?;
    progress(total, total);
    Ok(total)
}

/// Writes layer `name` of `engine`'s store as a GIS file at `to` (by its extension), written
/// beside it and renamed when complete.
pub fn write(
    engine: &crate::engine::Engine,
    name: &str,
    to: &Path,
    view: &LayerView,
    progress: &dyn Fn(u64, u64),
) -> Result<u64, ExportError> {
    let layer = engine
        .layer(name)
        .ok_or_else(|| ExportError::UnknownLayer(name.to_string()))?;
    let ext = to
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let partial = to.with_extension(format!("{ext}.partial"));
    let n = match ext.as_str() {
        "geojson" | "json" => write_geojson(&layer.reader, &partial, view, progress),
        "fgb" => write_fgb(&layer.reader, &partial, view, progress),
        "gpkg" => write_gpkg(&layer.reader, &partial, view, progress),
        _ => unreachable!("checked by the caller"),
    };
    super::finish(n, &partial, to)
}
