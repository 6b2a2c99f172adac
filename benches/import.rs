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
        };
        group.bench_function(name, |b| {
            b.iter(|| import_file(&store, &opts, &Silent).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_import);
criterion_main!(benches);
