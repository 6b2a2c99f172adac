//! Natural Earth 10 m countries: every tile from z0 to z6 fits the 500 KB budget, and a tile
//! is empty only where no land reaches into it: no polygon covering at least one square pixel
//! at that zoom (smaller islands and slivers are dropped by the levels of detail on purpose).

use geo::{Area, BoundingRect, Intersects, MultiPolygon, Polygon, Rect, coord};
use std::io::Read;
use urbis::engine::{Engine, EngineConfig};
use urbis::import::{ImportOptions, Silent, import_file};
use urbis::store::Store;
use urbis::tile::TileId;

mod common;

/// The source countries as polygons (each part on its own), with GDAL-independent parsing.
fn source_polygons() -> Vec<Polygon<f64>> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(common::data(
            "tests/data/naturalearth/ne-countries-10m.geojson.gz",
        ))
        .unwrap(),
    )
    .read_to_string(&mut text)
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ring = |r: &serde_json::Value| -> geo::LineString<f64> {
        r.as_array()
            .unwrap()
            .iter()
            .map(|p| coord! { x: p[0].as_f64().unwrap(), y: p[1].as_f64().unwrap() })
            .collect()
    };
    let poly = |p: &serde_json::Value| -> Polygon<f64> {
        let rings = p.as_array().unwrap();
        Polygon::new(ring(&rings[0]), rings[1..].iter().map(ring).collect())
    };
    let mut out = Vec::new();
    for f in v["features"].as_array().unwrap() {
        let g = &f["geometry"];
        match g["type"].as_str().unwrap() {
            "Polygon" => out.push(poly(&g["coordinates"])),
            "MultiPolygon" => out.extend(
                MultiPolygon::new(
                    g["coordinates"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(poly)
                        .collect(),
                )
                .0,
            ),
            _ => {}
        }
    }
    out.retain(|p| p.exterior().0.len() >= 4);
    out
}

fn tile_rect(t: TileId) -> Rect<f64> {
    let n = f64::from(1u32 << t.z);
    let lon = |x: f64| x / n * 360.0 - 180.0;
    let lat = |y: f64| {
        (std::f64::consts::PI * (1.0 - 2.0 * y / n))
            .sinh()
            .atan()
            .to_degrees()
    };
    Rect::new(
        coord! { x: lon(f64::from(t.x)), y: lat(f64::from(t.y) + 1.0) },
        coord! { x: lon(f64::from(t.x) + 1.0), y: lat(f64::from(t.y)) },
    )
}

#[test]
fn natural_earth_tiles_z0_to_z6_fit_the_budget_and_cover_the_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), true).unwrap();
    let opts = ImportOptions {
        file: common::data("tests/data/naturalearth/ne-countries-10m.geojson.gz"),
        layer: Some("countries".into()),
        table: None,
        minzoom: 0,
        maxzoom: Some(6),
        attribution: None,
        feature_timeout: None,
        memory_mb: None,
    };
    import_file(&store, &opts, &Silent).unwrap();
    let budget = 500 * 1024;
    let engine = Engine::open(
        store,
        EngineConfig {
            buffer: 64,
            budget,
            cache_bytes: 0,
        },
    )
    .unwrap();
    let land: Vec<(Rect<f64>, Polygon<f64>)> = source_polygons()
        .into_iter()
        .filter_map(|p| Some((p.bounding_rect()?, p)))
        .collect();
    let (mut tiles, mut empty, mut largest, mut dropped) = (0, 0, 0usize, 0usize);
    for z in 0..=6u8 {
        let n = 1u32 << z;
        // One pixel of a 512-pixel tile, in degrees of longitude at this zoom.
        let pixel = 360.0 / f64::from(n) / 512.0;
        for x in 0..n {
            for y in 0..n {
                let t = TileId::new(u32::from(z), u64::from(x), u64::from(y)).unwrap();
                let body = engine.tile(&["countries"], t, false).unwrap();
                tiles += 1;
                largest = largest.max(body.bytes.len());
                dropped += body.dropped;
                assert!(
                    body.bytes.len() <= budget,
                    "tile {t} is {} bytes",
                    body.bytes.len()
                );
                if body.features == 0 {
                    empty += 1;
                    let r = tile_rect(t);
                    for (bb, p) in &land {
                        // Area on the Web Mercator map, in square degrees of longitude.
                        let stretch = bb.center().y.to_radians().cos().max(0.05);
                        let visible = p.unsigned_area() / (stretch * stretch) >= pixel * pixel;
                        assert!(
                            !(visible && bb.intersects(&r) && p.intersects(&r)),
                            "tile {t} is empty but land reaches into it (polygon box {bb:?})"
                        );
                    }
                }
            }
        }
    }
    assert_eq!(tiles, 5461);
    assert!(
        empty > 1000 && empty < 4500,
        "{empty} empty tiles: the oceans, not more, not less"
    );
    eprintln!(
        "{tiles} tiles, {empty} empty, largest {largest} bytes, {dropped} features dropped by the budget"
    );
}
