//! The layer file's packed R-tree answers bbox queries exactly like a brute-force scan, at
//! every level of detail, and the file round-trips features and properties.

use proptest::prelude::*;
use std::sync::OnceLock;
use urbis::store::{
    GeomKind, GridGeometry, LayerBuilder, LayerMeta, LayerReader, PropValue, ZoomRange,
};
use urbis::tile::GridBox;

mod common;

/// A new file for a layer: the builder reads its levels back, so read and write.
fn create(path: &std::path::Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .unwrap()
}

fn build(
    features: &[(GridGeometry, Vec<(String, PropValue)>)],
    zooms: ZoomRange,
) -> (tempfile::TempDir, LayerReader) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layer.urbis");
    let mut b = LayerBuilder::new();
    for (g, p) in features {
        b.push(g, None, p.clone()).unwrap();
    }
    let file = create(&path);
    b.write(
        LayerMeta::default(),
        zooms.minzoom,
        Some(zooms.maxzoom),
        &file,
        &|_| {},
    )
    .unwrap();
    drop(file);
    let r = LayerReader::open(&path).unwrap();
    (dir, r)
}

fn geometry() -> impl Strategy<Value = GridGeometry> {
    // Features clustered in a ~40 km city-sized window so lower levels thin and simplify.
    let base = 2_400_000_000u32;
    let pt =
        move || (0u32..4_000_000, 0u32..4_000_000).prop_map(move |(x, y)| [base + x, base + y]);
    prop_oneof![
        pt().prop_map(|p| GridGeometry {
            kind: GeomKind::Point,
            multi: false,
            parts: vec![vec![vec![p]]]
        }),
        (
            pt(),
            proptest::collection::vec((-200_000i64..200_000, -200_000i64..200_000), 1..12)
        )
            .prop_map(|(p, steps)| {
                let mut line = vec![p];
                for (dx, dy) in steps {
                    let last = *line.last().unwrap();
                    line.push([
                        (i64::from(last[0]) + dx) as u32,
                        (i64::from(last[1]) + dy) as u32,
                    ]);
                }
                line.dedup();
                if line.len() < 2 {
                    line.push([line[0][0] + 1, line[0][1]]);
                }
                GridGeometry {
                    kind: GeomKind::Line,
                    multi: false,
                    parts: vec![vec![line]],
                }
            }),
        (pt(), 1u32..300_000).prop_map(|(p, s)| GridGeometry {
            kind: GeomKind::Polygon,
            multi: false,
            parts: vec![vec![vec![
                p,
                [p[0] + s, p[1]],
                [p[0] + s, p[1] + s],
                [p[0], p[1] + s]
            ]]],
        }),
    ]
}

fn query_box() -> impl Strategy<Value = GridBox> {
    (
        2_399_000_000u32..2_405_000_000,
        2_399_000_000u32..2_405_000_000,
        0u32..3_000_000,
        0u32..3_000_000,
    )
        .prop_map(|(x, y, w, h)| GridBox::new(x, y, x + w, y + h))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn bbox_queries_equal_brute_force_at_every_level(
        geoms in proptest::collection::vec(geometry(), 1..400),
        queries in proptest::collection::vec(query_box(), 1..8),
    ) {
        let features: Vec<_> = geoms.into_iter().map(|g| (g, vec![])).collect();
        let (_dir, reader) = build(&features, ZoomRange { minzoom: 4, maxzoom: 14 });
        prop_assert_eq!(reader.levels().count(), 11);
        for level in reader.levels() {
            for q in &queries {
                let got = level.query_indices(q);
                let want: Vec<usize> = (0..level.len()).filter(|&i| level.item(i).bbox.intersects(q)).collect();
                prop_assert_eq!(&got, &want, "level z{}", level.zoom());
                // The stored box is the box of the stored geometry.
                for &i in &got {
                    let item = level.item(i);
                    prop_assert_eq!(item.decode().unwrap().bbox(), item.bbox);
                }
            }
        }
    }
}

/// The Helsinki demo layer, imported once for the tests below.
fn helsinki() -> &'static (tempfile::TempDir, LayerReader) {
    static CELL: OnceLock<(tempfile::TempDir, LayerReader)> = OnceLock::new();
    CELL.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        common::import_json(&common::data("data/helsinki/helsinki.geojson"), &store, &[]);
        let s = urbis::store::Store::open(&store, false).unwrap();
        let r = s.open_layer("helsinki").unwrap();
        (dir, r)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn real_layer_queries_equal_brute_force_at_every_level(
        fx in 0.0f64..1.0, fy in 0.0f64..1.0, fw in 0.0f64..0.6, fh in 0.0f64..0.6,
    ) {
        let (_, reader) = helsinki();
        let b = reader.bbox();
        let (w, h) = (b.width() as f64, b.height() as f64);
        let x = b.min_x + (fx * w) as u32;
        let y = b.min_y + (fy * h) as u32;
        let q = GridBox::new(x, y, x.saturating_add((fw * w) as u32), y.saturating_add((fh * h) as u32));
        for level in reader.levels() {
            let got = level.query_indices(&q);
            let want: Vec<usize> = (0..level.len()).filter(|&i| level.item(i).bbox.intersects(&q)).collect();
            prop_assert_eq!(got, want, "level z{}", level.zoom());
        }
    }
}

#[test]
fn levels_shrink_towards_low_zoom_and_keep_points_bounded() {
    let (_, reader) = helsinki();
    let counts: Vec<usize> = reader.levels().map(|l| l.len()).collect();
    assert_eq!(
        *counts.last().unwrap() as u64,
        reader.feature_count(),
        "the top level is full resolution"
    );
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "levels never grow towards low zoom: {counts:?}"
    );
    assert!(
        counts[0] < counts[counts.len() - 1] / 4,
        "z{} keeps too much: {counts:?}",
        reader.minzoom()
    );
    // At every level below full resolution, no tile holds more than 16 x 256 points.
    for level in reader.levels().filter(|l| l.zoom() < reader.maxzoom()) {
        let z = level.zoom();
        let mut per_tile = std::collections::HashMap::<(u32, u32), usize>::new();
        for i in 0..level.len() {
            let it = level.item(i);
            if it.kind() == Some(GeomKind::Point) {
                let shift = 32 - u32::from(z);
                let key = if shift >= 32 {
                    (0, 0)
                } else {
                    (it.bbox.min_x >> shift, it.bbox.min_y >> shift)
                };
                *per_tile.entry(key).or_default() += 1;
            }
        }
        let max = per_tile.values().copied().max().unwrap_or(0);
        assert!(max <= 4096, "z{z}: {max} points in one tile");
    }
}

#[test]
fn properties_and_ids_round_trip_through_the_file() {
    let g = GridGeometry {
        kind: GeomKind::Point,
        multi: false,
        parts: vec![vec![vec![[10, 20]]]],
    };
    let props = vec![
        ("name".to_string(), PropValue::String("Kauppatori".into())),
        ("levels".to_string(), PropValue::Int(3)),
        ("height".to_string(), PropValue::Double(12.5)),
        ("open".to_string(), PropValue::Bool(true)),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.urbis");
    let mut b = LayerBuilder::new();
    b.push(&g, Some(42), props.clone()).unwrap();
    b.write(LayerMeta::default(), 0, Some(3), &create(&path), &|_| {})
        .unwrap();
    let r = LayerReader::open(&path).unwrap();
    assert_eq!(r.properties(0).unwrap().id, Some(42));
    let mut got: Vec<(String, PropValue)> = r
        .named_properties(0)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_owned()))
        .collect();
    let mut want = props;
    got.sort_by(|a, b| a.0.cmp(&b.0));
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, want);
    assert_eq!(
        r.level(9).unwrap().zoom(),
        3,
        "zooms above maxzoom read the full-resolution level"
    );
}

#[test]
fn a_file_of_another_version_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.urbis");
    let mut b = LayerBuilder::new();
    b.push(
        &GridGeometry {
            kind: GeomKind::Point,
            multi: false,
            parts: vec![vec![vec![[1, 2]]]],
        },
        None,
        vec![],
    )
    .unwrap();
    b.write(LayerMeta::default(), 0, Some(0), &create(&path), &|_| {})
        .unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8] = 2;
    std::fs::write(&path, &bytes).unwrap();
    let err = LayerReader::open(&path).unwrap_err().to_string();
    assert!(
        err.contains("format version 2") && err.contains("re-import"),
        "{err}"
    );
    // A flipped byte in a section is caught by its checksum.
    bytes[8] = 1;
    let last = bytes.len() - 9;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let err = LayerReader::open(&path).unwrap_err().to_string();
    assert!(err.contains("checksum"), "{err}");
}
