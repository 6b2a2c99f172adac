//! A layer back out as a GIS file, for analysts: GeoJSON (RFC 7946) or FlatGeobuf (the
//! `flatgeobuf` crate's writer, with its packed R-tree index), at full resolution with every
//! property, in WGS 84 (GeoJSON in the order of the import; FlatGeobuf in its index's order).
//! The geometries are the store's: snapped to its 1 cm grid and repaired where the import
//! repaired them.

use super::ExportError;
use crate::store::{FieldType, GeomKind, GridGeometry, LayerReader, PropRef};
use crate::tile::mercator::grid_to_lonlat;
use geo_types::{
    Coord, Geometry, LineString, MultiLineString, MultiPoint, MultiPolygon, Point, Polygon,
};
use std::io::Write;
use std::path::Path;

/// A stored geometry in WGS 84 (rings closed, as GIS files want them).
fn to_geo(g: &GridGeometry) -> Geometry<f64> {
    let c = |p: &[u32; 2]| {
        let (x, y) = grid_to_lonlat(*p);
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

/// The features of the full-resolution level in import order: feature numbers.
fn in_import_order(reader: &LayerReader) -> Vec<(u32, usize)> {
    let Some(level) = reader.level(reader.maxzoom()) else {
        return Vec::new();
    };
    let mut order: Vec<(u32, usize)> = (0..level.len())
        .map(|i| {
            let f = level.item(i).feature;
            (reader.source_index(f).unwrap_or(u32::MAX), i)
        })
        .collect();
    order.sort_unstable();
    order
}

fn json_value(v: &PropRef<'_>) -> serde_json::Value {
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
    progress: &dyn Fn(u64, u64),
) -> Result<u64, ExportError> {
    use geozero::ToJson;
    let fail = |m: String| ExportError::Write {
        path: to.display().to_string(),
        message: m,
    };
    let Some(level) = reader.level(reader.maxzoom()) else {
        return Err(fail("the layer has no full-resolution level".into()));
    };
    let order = in_import_order(reader);
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
        let Some(g) = f.decode() else { continue };
        let geometry = to_geo(&g)
            .to_json()
            .map_err(|e| fail(format!("feature {}: {e}", f.feature)))?;
        let props: serde_json::Map<String, serde_json::Value> = reader
            .named_properties(f.feature)
            .iter()
            .map(|(k, v)| (k.to_string(), json_value(v)))
            .collect();
        if n > 0 {
            out.write_all(b",\n").map_err(io)?;
        }
        write!(
            out,
            "{{\"type\":\"Feature\",\"properties\":{},\"geometry\":{geometry}}}",
            serde_json::Value::Object(props)
        )
        .map_err(io)?;
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
    // Columns in the order of the layer's fields; a field of mixed types is text.
    let columns: Vec<(&str, ColumnType)> = meta
        .fields
        .iter()
        .map(|(k, t)| {
            (
                k.as_str(),
                match t.as_slice() {
                    [FieldType::Number] => ColumnType::Double,
                    [FieldType::Boolean] => ColumnType::Bool,
                    _ => ColumnType::String,
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
    let order = in_import_order(reader);
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
        fgb.add_feature_geom(to_geo(&g), |feat| {
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

/// Writes layer `name` of `engine`'s store as a GIS file at `to` (by its extension), written
/// beside it and renamed when complete.
pub fn write(
    engine: &crate::engine::Engine,
    name: &str,
    to: &Path,
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
        "geojson" | "json" => write_geojson(&layer.reader, &partial, progress),
        "fgb" => write_fgb(&layer.reader, &partial, progress),
        _ => unreachable!("checked by the caller"),
    };
    super::finish(n, &partial, to)
}
