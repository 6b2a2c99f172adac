//! Import benches: whole `urbis import` pipelines (read, validate, build levels, write,
//! publish) on the committed demo and test files.

use criterion::{Criterion, criterion_group, criterion_main};
use std::path::PathBuf;
use urbis::import::{ImportOptions, Silent, import_file};
use urbis::store::Store;

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn bench_import(c: &mut Criterion) {
    let mut group = c.benchmark_group("import");
    group.sample_size(10);
    for (name, rel) in [
        ("helsinki_geojson", "data/helsinki/helsinki.geojson"),
        ("helsinki_fgb", "data/helsinki/helsinki.fgb"),
        ("helsinki_gpkg", "data/helsinki/helsinki_layers.gpkg"),
        (
            "ne_countries_10m",
            "tests/data/naturalearth/ne-countries-10m.geojson.gz",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), true).unwrap();
        let opts = ImportOptions {
            file: data(rel),
            layer: Some("bench".into()),
            table: None,
            minzoom: 0,
            maxzoom: None,
            attribution: None,
            feature_timeout: None,
            memory_mb: None,
        };
        group.bench_function(name, |b| {
            b.iter(|| import_file(&store, &opts, &Silent).unwrap())
        });
    }
    group.finish();
}

/// A circle of 998,000 vertices with 1,000 self-crossing petals (the input of the repair test
/// in `tests/import_repair.rs`, which also checks the result).
fn petal_ring() -> Vec<geo::Coord> {
    let (n, petals) = (998_000usize, 1_000usize);
    let (c, r) = (2_147_483_648.0f64, 100_000_000.0f64);
    let (d, h) = (r / 400.0, r / 20.0);
    let at = |i: usize| {
        let a = (i % n) as f64 / n as f64 * std::f64::consts::TAU;
        [(c + r * a.cos()).round(), (c + r * a.sin()).round()]
    };
    let mut ring = Vec::with_capacity(n + 2 * petals);
    for i in 0..n {
        let (p, q) = (at(i), at(i + 1));
        ring.push(geo::Coord { x: p[0], y: p[1] });
        if i % (n / petals) == 0 {
            let len = ((q[0] - p[0]).powi(2) + (q[1] - p[1]).powi(2)).sqrt();
            let t = [(q[0] - p[0]) / len, (q[1] - p[1]) / len];
            let o = [t[1], -t[0]];
            for s in [1.0, -1.0] {
                ring.push(geo::Coord {
                    x: (p[0] + s * d * t[0] + h * o[0]).round(),
                    y: (p[1] + s * d * t[1] + h * o[1]).round(),
                });
            }
        }
    }
    ring
}

/// Repair of one huge invalid polygon: the target is under 5 s.
fn bench_repair(c: &mut Criterion) {
    let mut group = c.benchmark_group("repair");
    group.sample_size(10);
    let rings = vec![vec![petal_ring()]];
    group.bench_function("ring_1m_vertices_1k_crossings", |b| {
        b.iter(|| urbis::import::makevalid::repair(&rings))
    });
    group.finish();
}

criterion_group!(benches, bench_import, bench_repair);
criterion_main!(benches);
