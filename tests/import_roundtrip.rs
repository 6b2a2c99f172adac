//! Importing the real demo and test files gives back what GDAL reads from the same files:
//! the source feature count minus the reported drops, the same properties, and every
//! geometry at full resolution within one grid unit (except features the report says were
//! repaired). GDAL (`ogr2ogr`, installed by `.ci/run`) is the independent reader.

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use urbis::store::{GridGeometry, PropRef, QualityReport, Store};
use urbis::tile::mercator::lonlat_to_grid_f64;

mod common;

/// The features GDAL reads from `src` (optionally one layer), as GeoJSON values, in order.
fn gdal_features(src: &Path, layer: Option<&str>) -> Vec<Value> {
    let mut cmd = Command::new("ogr2ogr");
    cmd.args(["-f", "GeoJSON", "/vsistdout/"]);
    if src.to_string_lossy().ends_with(".geojson") {
        cmd.args(["-oo", "DATE_AS_STRING=YES"]);
    }
    let path = src.to_string_lossy();
    let path = if path.ends_with(".gz") {
        format!("/vsigzip/{path}")
    } else {
        path.into_owned()
    };
    cmd.arg(path);
    if let Some(l) = layer {
        cmd.arg(l);
    }
    let out = cmd
        .output()
        .expect("ogr2ogr (GDAL) must be installed: run .ci/run or apt-get install gdal-bin");
    assert!(
        out.status.success(),
        "ogr2ogr failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("GDAL writes GeoJSON");
    v["features"].as_array().cloned().unwrap_or_default()
}

fn canon_json(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(format!("{}", n.as_f64().unwrap_or(f64::NAN))),
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn canon_prop(v: &PropRef) -> String {
    match v {
        PropRef::String(s) => s.to_string(),
        PropRef::Int(i) => format!("{}", *i as f64),
        PropRef::Double(d) => format!("{d}"),
        PropRef::Bool(b) => b.to_string(),
    }
}

type Parts = Vec<Vec<Vec<[f64; 2]>>>;

/// GeoJSON geometry → parts → rings/lines → grid positions (unrounded).
fn reference_parts(g: &Value) -> Parts {
    let pos = |p: &Value| lonlat_to_grid_f64(p[0].as_f64().unwrap(), p[1].as_f64().unwrap());
    let line = |l: &Value| l.as_array().unwrap().iter().map(pos).collect::<Vec<_>>();
    let poly = |p: &Value| p.as_array().unwrap().iter().map(line).collect::<Vec<_>>();
    let c = &g["coordinates"];
    match g["type"].as_str().unwrap() {
        "Point" => vec![vec![vec![pos(c)]]],
        "MultiPoint" => c
            .as_array()
            .unwrap()
            .iter()
            .map(|p| vec![vec![pos(p)]])
            .collect(),
        "LineString" => vec![vec![line(c)]],
        "MultiLineString" => c
            .as_array()
            .unwrap()
            .iter()
            .map(|l| vec![line(l)])
            .collect(),
        "Polygon" => vec![poly(c)],
        "MultiPolygon" => c.as_array().unwrap().iter().map(poly).collect(),
        "GeometryCollection" => {
            // Members of the highest dimension, in order (what a vector tile can carry).
            let dim = |m: &Value| match m["type"].as_str().unwrap_or("") {
                "Point" | "MultiPoint" => 0,
                "LineString" | "MultiLineString" => 1,
                _ => 2,
            };
            let members = g["geometries"].as_array().unwrap();
            let top = members.iter().map(dim).max().unwrap_or(0);
            members
                .iter()
                .filter(|m| dim(m) == top)
                .flat_map(reference_parts)
                .collect()
        }
        other => panic!("unexpected geometry type {other}"),
    }
}

/// True when every stored coordinate is within one grid unit of the source's, ring by ring.
fn same_geometry(stored: &GridGeometry, reference: &Parts) -> bool {
    if stored.parts.len() != reference.len() {
        return false;
    }
    stored.parts.iter().zip(reference).all(|(sp, rp)| {
        sp.len() == rp.len()
            && sp.iter().zip(rp).all(|(sr, rr)| {
                // The importer removes repeated points (after snapping) and stores rings open.
                let mut q: Vec<([u32; 2], [f64; 2])> = rr
                    .iter()
                    .map(|p| {
                        (
                            [
                                p[0].floor().clamp(0.0, u32::MAX as f64) as u32,
                                p[1].floor().clamp(0.0, u32::MAX as f64) as u32,
                            ],
                            *p,
                        )
                    })
                    .collect();
                if stored.kind != urbis::store::GeomKind::Point {
                    q.dedup_by(|a, b| a.0 == b.0);
                }
                if stored.kind == urbis::store::GeomKind::Polygon
                    && q.len() > 1
                    && q.first().map(|x| x.0) == q.last().map(|x| x.0)
                {
                    q.pop();
                }
                sr.len() == q.len()
                    && sr.iter().zip(&q).all(|(s, (_, f))| {
                        (f64::from(s[0]) - f[0]).abs() <= 1.0
                            && (f64::from(s[1]) - f[1]).abs() <= 1.0
                    })
            })
    })
}

/// Imports `src` and checks layer `layer` against GDAL's reading of `gdal_layer`.
fn check(src: &Path, store: &Path, layer: &str, gdal_layer: Option<&str>) -> QualityReport {
    let reference = gdal_features(src, gdal_layer);
    let s = Store::open(store, false).unwrap();
    let reader = s
        .open_layer(layer)
        .unwrap_or_else(|e| panic!("{layer}: {e}"));
    let report = reader.meta().quality.clone();
    assert_eq!(
        report.read as usize,
        reference.len(),
        "{layer}: features read vs GDAL's count"
    );
    assert_eq!(
        reader.feature_count(),
        report.read - report.dropped_total(),
        "{layer}: imported = read - dropped"
    );
    assert!(
        report.dropped_total() as usize <= QualityReport::MAX_EXAMPLES,
        "{layer}: too many drops to check one by one"
    );
    let dropped: std::collections::HashSet<u64> =
        report.examples.iter().map(|e| e.feature).collect();

    let full = reader.level(reader.maxzoom()).unwrap();
    let mut by_feature = vec![usize::MAX; reader.feature_count() as usize];
    for i in 0..full.len() {
        by_feature[full.item(i).feature as usize] = i;
    }
    // Features are numbered along the Hilbert curve; SOURCE_INDEX gives back the import order.
    let mut by_import = vec![u32::MAX; reader.feature_count() as usize];
    for f in 0..reader.feature_count() as u32 {
        by_import[reader.source_index(f).unwrap() as usize] = f;
    }
    let mut geometry_mismatches = 0;
    let mut imported = 0usize;
    for (src_index, f) in reference.iter().enumerate() {
        if dropped.contains(&(src_index as u64)) {
            continue;
        }
        let feature = by_import[imported];
        // Properties: the same non-null values under the same keys.
        let mut want: Vec<(String, String)> = f["properties"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), canon_json(v)?)))
                    .collect()
            })
            .unwrap_or_default();
        let mut got: Vec<(String, String)> = reader
            .named_properties(feature)
            .iter()
            .map(|(k, v)| (k.to_string(), canon_prop(v)))
            .collect();
        want.sort();
        got.sort();
        assert_eq!(
            got, want,
            "{layer}: properties of source feature #{src_index}"
        );
        let stored = full.item(by_feature[feature as usize]).decode().unwrap();
        let reference = reference_parts(&f["geometry"]);
        if !same_geometry(&stored, &reference) {
            eprintln!(
                "{layer}: source feature #{src_index} differs: stored parts {:?}, source parts {:?}",
                stored
                    .parts
                    .iter()
                    .map(|p| p.iter().map(Vec::len).collect::<Vec<_>>())
                    .collect::<Vec<_>>(),
                reference
                    .iter()
                    .map(|p| p.iter().map(Vec::len).collect::<Vec<_>>())
                    .collect::<Vec<_>>()
            );
            geometry_mismatches += 1;
        }
        imported += 1;
    }
    assert_eq!(imported as u64, reader.feature_count());
    assert!(
        geometry_mismatches <= report.repaired,
        "{layer}: {geometry_mismatches} geometries differ from the source but only {} were repaired",
        report.repaired
    );
    report
}

#[test]
fn helsinki_geojson_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let src = common::data("data/helsinki/helsinki.geojson");
    common::import_json(&src, dir.path(), &[]);
    let r = check(&src, dir.path(), "helsinki", None);
    assert_eq!(r.read, 13_698);
}

#[test]
fn helsinki_flatgeobuf_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let src = common::data("data/helsinki/helsinki.fgb");
    common::import_json(&src, dir.path(), &["--layer", "hki"]);
    let r = check(&src, dir.path(), "hki", None);
    assert_eq!(r.read, 13_698);
}

#[test]
fn helsinki_geopackage_round_trips_every_table() {
    let dir = tempfile::tempdir().unwrap();
    let src = common::data("data/helsinki/helsinki_layers.gpkg");
    let out = common::import_json(&src, dir.path(), &[]);
    let layers: Vec<&str> = out
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["layer"].as_str().unwrap())
        .collect();
    assert_eq!(
        layers,
        [
            "helsinki_layers_points",
            "helsinki_layers_lines",
            "helsinki_layers_multilinestrings",
            "helsinki_layers_multipolygons",
            "helsinki_layers_other_relations"
        ]
    );
    let mut total = 0;
    for table in [
        "points",
        "lines",
        "multilinestrings",
        "multipolygons",
        "other_relations",
    ] {
        total += check(
            &src,
            dir.path(),
            &format!("helsinki_layers_{table}"),
            Some(table),
        )
        .read;
    }
    assert_eq!(total, 13_423);
    // --table picks one table and names the layer after the file.
    let only = common::import_json(&src, dir.path(), &["--table", "points"]);
    assert_eq!(only[0]["layer"], "helsinki_layers");
}

#[test]
fn natural_earth_shapefiles_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for (rel, n) in [
        (
            "tests/data/naturalearth/naturalearth_lowres/naturalearth_lowres.shp",
            177,
        ),
        (
            "tests/data/naturalearth/naturalearth_cities/naturalearth_cities.shp",
            243,
        ),
    ] {
        let src = common::data(rel);
        common::import_json(&src, dir.path(), &[]);
        let name = src.file_stem().unwrap().to_string_lossy().to_string();
        let r = check(&src, dir.path(), &name, None);
        assert_eq!(r.read, n);
    }
}

#[test]
fn zipped_shapefile_imports_like_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let zip_path = dir.path().join("lowres.zip");
    {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        for ext in ["shp", "shx", "dbf", "prj", "cpg"] {
            let p = common::data(&format!(
                "tests/data/naturalearth/naturalearth_lowres/naturalearth_lowres.{ext}"
            ));
            zip.start_file(
                format!("naturalearth_lowres.{ext}"),
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
            std::io::Write::write_all(&mut zip, &std::fs::read(p).unwrap()).unwrap();
        }
        zip.finish().unwrap();
    }
    common::import_json(&zip_path, &dir.path().join("s"), &[]);
    let r = check(
        &common::data("tests/data/naturalearth/naturalearth_lowres/naturalearth_lowres.shp"),
        &dir.path().join("s"),
        "lowres",
        None,
    );
    assert_eq!(r.read, 177);
}

#[test]
fn natural_earth_10m_countries_are_repaired_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let src = common::data("tests/data/naturalearth/ne-countries-10m.geojson.gz");
    common::import_json(&src, dir.path(), &["--layer", "countries"]);
    let r = check(&src, dir.path(), "countries", None);
    assert_eq!(r.read, 255);
    // The only drop is Vatican's empty MultiPolygon; the self-touching rings are rebuilt.
    assert_eq!(r.dropped.get("empty geometry"), Some(&1), "{:?}", r.dropped);
    assert_eq!(r.dropped_total(), 1);
    assert!(
        r.repairs
            .get("invalid polygon rebuilt (sweep line)")
            .copied()
            .unwrap_or(0)
            >= 40,
        "{:?}",
        r.repairs
    );
}
