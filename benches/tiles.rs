//! Tile benches: clipping, MVT encoding, and whole-tile generation per zoom (cache off) on
//! Montevideo (239,486 features).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::PathBuf;
use urbis::engine::{ServedLayer, render_layer};
use urbis::import::{ImportOptions, Silent, import_file};
use urbis::store::Store;
use urbis::tile::TileId;
use urbis::tile::clip::{ClipBox, clip_line, clip_ring};
use urbis::tile::mvt::{MvtLayer, TileValue, encode_polygons};

fn circle(n: usize, r: f64) -> Vec<[i64; 2]> {
    (0..n)
        .map(|i| {
            let a = i as f64 / n as f64 * std::f64::consts::TAU;
            [(2048.0 + r * a.cos()) as i64, (2048.0 + r * a.sin()) as i64]
        })
        .collect()
}

fn bench_clip(c: &mut Criterion) {
    let mut g = c.benchmark_group("clip");
    let b = ClipBox::for_tile(4096, 64);
    // A 100k-vertex polygon four tiles wide, centred on the tile: most of it outside.
    let big = circle(100_000, 8192.0);
    g.bench_function("ring_100k_vertices_crossing", |x| {
        x.iter(|| clip_ring(black_box(&big), b))
    });
    let inside = circle(1_000, 1500.0);
    g.bench_function("ring_1k_vertices_inside", |x| {
        x.iter(|| clip_ring(black_box(&inside), b))
    });
    let line = circle(10_000, 3000.0);
    g.bench_function("line_10k_vertices_crossing", |x| {
        x.iter(|| clip_line(black_box(&line), b))
    });
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let squares: Vec<Vec<Vec<[i64; 2]>>> = (0..2000i64)
        .map(|i| {
            let (x, y) = ((i % 50) * 80, (i / 50) * 80);
            vec![vec![
                [x, y],
                [x + 60, y],
                [x + 60, y + 60],
                [x + 30, y + 75],
                [x, y + 60],
            ]]
        })
        .collect();
    c.bench_function("encode/2000_polygons_with_properties", |x| {
        x.iter(|| {
            let mut l = MvtLayer::new("buildings", 4096);
            for (i, p) in squares.iter().enumerate() {
                let g = encode_polygons(std::slice::from_ref(p)).unwrap();
                l.add(
                    Some(i as u64),
                    g,
                    i as u64,
                    [
                        ("building", TileValue::String("yes")),
                        ("levels", TileValue::Int((i % 7) as i64)),
                    ],
                );
            }
            l.encode(Some(500 * 1024)).bytes.len()
        })
    });
}

fn bench_tiles(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), true).unwrap();
    let opts = ImportOptions {
        file: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/montevideo/montevideo.geojson.gz"),
        layer: Some("montevideo".into()),
        table: None,
        minzoom: 0,
        maxzoom: None,
        attribution: None,
        feature_timeout: None,
        memory_mb: None,
    };
    import_file(&store, &opts, &Silent).unwrap();
    let layer = ServedLayer {
        name: "montevideo".into(),
        version: 1,
        reader: store.open_layer("montevideo").unwrap(),
    };
    let mut g = c.benchmark_group("tile_cold");
    g.sample_size(20);
    // The centre of Montevideo (Ciudad Vieja / Centro) at each zoom.
    for (z, x, y) in [
        (10u32, 352u64, 618u64),
        (12, 1408, 2472),
        (14, 5634, 9889),
        (16, 22538, 39556),
    ] {
        let t = TileId::new(z, x, y).unwrap();
        g.bench_with_input(BenchmarkId::from_parameter(format!("z{z}")), &t, |b, t| {
            b.iter(|| render_layer(&layer, *t, 64, Some(500 * 1024)).bytes.len())
        });
    }
    g.finish();
}

criterion_group!(benches, bench_clip, bench_encode, bench_tiles);
criterion_main!(benches);
