//! PNG raster tiles and static maps over HTTP, decoded as images: a park the test placed is
//! drawn in the style's park colour (blended at its opacity), a primary road the test placed
//! in the road colour along its course, empty ground in the background colour; `@2x` is 512
//! pixels; a layer no style draws gets its light drawing; the demo's real tiles are drawn.

mod common;

use common::Server;
use std::path::Path;

/// The tile of zoom `z` holding (lon, lat) and the pixel of that point in it (256 a side).
fn tile_and_pixel(lon: f64, lat: f64, z: u32) -> ((u32, u32), (u32, u32)) {
    let n = f64::from(1u32 << z);
    let x = (lon + 180.0) / 360.0 * n;
    let s = lat.to_radians().sin();
    let y = (0.5 - ((1.0 + s) / (1.0 - s)).ln() / (4.0 * std::f64::consts::PI)) * n;
    (
        (x.floor() as u32, y.floor() as u32),
        (
            ((x - x.floor()) * 256.0) as u32,
            ((y - y.floor()) * 256.0) as u32,
        ),
    )
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// A store whose layers carry the names the city style draws: a park and a primary road
/// where the test knows them, and a layer no style draws.
fn store(dir: &Path) -> std::path::PathBuf {
    let store = dir.join("store");
    let polys = dir.join("polys.geojson");
    write(
        &polys,
        r#"{"type":"FeatureCollection","features":[
        {"type":"Feature","properties":{"leisure":"park","name":"Test park"},
         "geometry":{"type":"Polygon","coordinates":[[[24.940,60.160],[24.950,60.160],[24.950,60.165],[24.940,60.165],[24.940,60.160]]]}}]}"#,
    );
    let lines = dir.join("lines.geojson");
    write(
        &lines,
        r#"{"type":"FeatureCollection","features":[
        {"type":"Feature","properties":{"highway":"primary","name":"Test street"},
         "geometry":{"type":"LineString","coordinates":[[24.930,60.170],[24.960,60.170]]}}]}"#,
    );
    let parcels = dir.join("parcels.geojson");
    write(
        &parcels,
        r#"{"type":"FeatureCollection","features":[
        {"type":"Feature","properties":{"id":1},
         "geometry":{"type":"Polygon","coordinates":[[[24.952,60.160],[24.958,60.160],[24.958,60.165],[24.952,60.165],[24.952,60.160]]]}}]}"#,
    );
    let points = dir.join("points.geojson");
    write(
        &points,
        r#"{"type":"FeatureCollection","features":[
        {"type":"Feature","properties":{"name":"Test cafe"},"geometry":{"type":"Point","coordinates":[24.9355,60.1625]}}]}"#,
    );
    for (file, layer) in [
        (&points, "helsinki_points"),
        (&polys, "helsinki_multipolygons"),
        (&lines, "helsinki_lines"),
        (&parcels, "parcels"),
    ] {
        common::import_json(
            file,
            &store,
            &["--layer", layer, "--classification", "public"],
        );
    }
    store
}

fn png(s: &Server, path: &str) -> image::RgbaImage {
    let r = s.get(path, &[]);
    assert_eq!(
        r.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("content-type"), Some("image/png"), "{path}");
    image::load_from_memory_with_format(&r.body, image::ImageFormat::Png)
        .unwrap_or_else(|e| panic!("{path}: not a PNG: {e}"))
        .to_rgba8()
}

fn near(px: &image::Rgba<u8>, want: [f64; 3], tolerance: f64) -> bool {
    (0..3).all(|i| (f64::from(px[i]) - want[i]).abs() <= tolerance)
}

const BACKGROUND: [f64; 3] = [242.0, 239.0, 233.0]; // #f2efe9
// #c8e6b0 at opacity 0.8 over the background.
const PARK: [f64; 3] = [
    0.8 * 200.0 + 0.2 * 242.0,
    0.8 * 230.0 + 0.2 * 239.0,
    0.8 * 176.0 + 0.2 * 233.0,
];
const ROAD: [f64; 3] = [252.0, 214.0, 164.0]; // #fcd6a4

#[test]
fn png_tiles_draw_the_style_where_the_test_knows_the_features_are() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let s = Server::start(&store, &[]);
    let layers = "helsinki_multipolygons,helsinki_lines,parcels,helsinki_points";
    let z = 15;
    // The park's middle, and a point of the road.
    let ((tx, ty), (px, py)) = tile_and_pixel(24.945, 60.1625, z);
    let img = png(&s, &format!("/tiles/{layers}/{z}/{tx}/{ty}.png"));
    assert_eq!(img.dimensions(), (256, 256));
    let at = img.get_pixel(px, py);
    assert!(near(at, PARK, 3.0), "park pixel {at:?}, want {PARK:?}");
    // Every pixel is background, park, road or the parcels' light drawing: count them.
    let park = img.pixels().filter(|p| near(p, PARK, 3.0)).count();
    assert!(park > 1000, "{park} park pixels");

    let ((rx, ry), (rpx, rpy)) = tile_and_pixel(24.945, 60.170, z);
    let img = png(&s, &format!("/tiles/{layers}/{z}/{rx}/{ry}.png"));
    // Along the road's row, at several columns, the road's colour; 20 pixels off it, the
    // background.
    for dx in [-60i32, -20, 0, 20, 60] {
        let x = (rpx as i32 + dx).clamp(0, 255) as u32;
        let p = img.get_pixel(x, rpy);
        assert!(near(p, ROAD, 6.0), "road pixel at ({x}, {rpy}) is {p:?}");
        let off = img.get_pixel(x, (rpy + 20).min(255));
        let off2 = img.get_pixel(x, rpy.saturating_sub(20));
        assert!(
            near(off, BACKGROUND, 2.0) || near(off2, BACKGROUND, 2.0),
            "off the road at {x}: {off:?} {off2:?}"
        );
    }

    // The parcels (no style draws them) get a faint fill: neither background nor park.
    let ((qx, qy), (qpx, qpy)) = tile_and_pixel(24.955, 60.1625, z);
    let img = png(&s, &format!("/tiles/{layers}/{z}/{qx}/{qy}.png"));
    let p = img.get_pixel(qpx, qpy);
    assert!(
        !near(p, BACKGROUND, 1.0) && !near(p, PARK, 3.0),
        "parcel pixel {p:?}"
    );
    assert!(
        near(p, BACKGROUND, 40.0),
        "the parcel's fill is light: {p:?}"
    );

    // The café: a POI dot (#7b3294) at its pixel, background 8 pixels away.
    let ((cx, cy), (cpx, cpy)) = tile_and_pixel(24.9355, 60.1625, z);
    let img = png(&s, &format!("/tiles/{layers}/{z}/{cx}/{cy}.png"));
    let dot = img.get_pixel(cpx, cpy);
    assert!(near(dot, [123.0, 50.0, 148.0], 40.0), "POI pixel {dot:?}");
    assert!(near(img.get_pixel(cpx + 8, cpy), BACKGROUND, 1.0));

    // Far from everything: the background, edge to edge.
    let ((ex, ey), _) = tile_and_pixel(25.2, 60.3, z);
    let empty = png(&s, &format!("/tiles/{layers}/{z}/{ex}/{ey}.png"));
    assert!(empty.pixels().all(|p| near(p, BACKGROUND, 1.0)));

    // @2x is 512 pixels, the park at the doubled pixel.
    let big = png(&s, &format!("/tiles/{layers}/{z}/{tx}/{ty}@2x.png"));
    assert_eq!(big.dimensions(), (512, 512));
    assert!(near(big.get_pixel(px * 2, py * 2), PARK, 3.0));

    // The dark style draws the same park in its own colour.
    let dark = png(
        &s,
        &format!("/tiles/{layers}/{z}/{tx}/{ty}.png?style=city-dark"),
    );
    assert!(!near(dark.get_pixel(px, py), PARK, 20.0));

    // Cached: the second answer is the same bytes with the same ETag; If-None-Match is 304.
    let path = format!("/tiles/{layers}/{z}/{tx}/{ty}.png");
    let (a, b) = (s.get(&path, &[]), s.get(&path, &[]));
    assert_eq!(a.body, b.body);
    let etag = a.header("etag").unwrap().to_string();
    assert_eq!(b.header("etag"), Some(etag.as_str()));
    assert_eq!(s.get(&path, &[("If-None-Match", &etag)]).status, 304);

    // Static map centred on the park.
    let map = png(&s, "/static/city/24.945,60.1625,15/400x300.png");
    assert_eq!(map.dimensions(), (400, 300));
    assert!(
        near(map.get_pixel(200, 150), PARK, 3.0),
        "{:?}",
        map.get_pixel(200, 150)
    );

    // Clear errors.
    for (bad, status) in [
        (format!("/tiles/{layers}/{z}/{tx}/{ty}.png?style=nope"), 404),
        (format!("/tiles/{layers}/{z}/{tx}/{ty}.gif"), 400),
        ("/static/city/24.9,60.1,15/5000x300.png".to_string(), 400),
        ("/static/city/24.9,95,15/400x300.png".to_string(), 400),
        ("/static/city/24.9,60.1,15.5/400x300.png".to_string(), 400),
        ("/static/nope/24.9,60.1,15/400x300.png".to_string(), 404),
    ] {
        let r = s.get(&bad, &[]);
        assert_eq!(
            r.status,
            status,
            "{bad}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
}

#[test]
fn the_demo_tiles_are_drawn_and_hidden_layers_stay_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::spawn(common::demo_command(dir.path(), &[]));
    // Helsinki's centre at z15: the city style draws most of the tile (not background).
    let ((tx, ty), _) = tile_and_pixel(24.945, 60.17, 15);
    let img = png(
        &s,
        &format!("/tiles/helsinki_multipolygons,helsinki_lines,helsinki_points/15/{tx}/{ty}.png"),
    );
    let drawn = img.pixels().filter(|p| !near(p, BACKGROUND, 1.0)).count();
    assert!(drawn > 256 * 256 / 4, "{drawn} pixels drawn");
    // A layer that does not exist (or is hidden) is 404 for PNGs too.
    assert_eq!(s.get("/tiles/secret/15/0/0.png", &[]).status, 404);
}
