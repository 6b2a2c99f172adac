//! Raster tiles and static maps for clients without WebGL (big-screen PCs, WMTS-style
//! platforms, reports): the server's own vector tiles, with their level of detail, clipping
//! and the caller's view already applied, drawn following a style of `styles/` ([`style`])
//! with tiny-skia (antialiased) and encoded as PNG by the `image` crate. Drawing from the
//! finished vector tile rather than from the store means a PNG shows exactly what the MVT
//! holds for the same caller, live layers included, and shares its cache key (the vector
//! tile's ETag names the layer versions and the view).
//!
//! Layers the style does not draw get a light drawing of their own, as the web viewer gives
//! them: faint fills with an outline, thin semi-transparent lines, points only from zoom 14
//! where they no longer cover the map; live layers get their clusters and devices coloured
//! by state. Depends on `tile` (MVT decoding) only.

pub mod style;

use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use style::{Feature, Kind, StyleLayer};
use tiny_skia::{
    FillRule, LineCap, LineJoin, Paint, PathBuilder, Pixmap, Stroke, StrokeDash, Transform,
};

/// The largest static map side, pixels.
pub const MAX_STATIC_SIDE: u32 = 2048;

/// Why a raster could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum RasterError {
    /// No style of that name.
    #[error("no style named {0:?}")]
    UnknownStyle(String),
    /// A tile that is not MVT (a bug of ours if it ever happens: the tiles are the engine's).
    #[error("a vector tile could not be read: {0}")]
    Tile(String),
    /// A size out of bounds.
    #[error("{0}")]
    Size(String),
    /// PNG encoding failed.
    #[error("PNG encoding failed: {0}")]
    Encode(String),
}

/// One decoded feature of a vector tile.
struct Decoded {
    props: HashMap<String, Value>,
    geometry_type: &'static str,
    parts: Vec<Vec<[f32; 2]>>,
}

/// One decoded layer of a vector tile, its coordinates in tile units of `extent`.
struct DecodedLayer {
    name: String,
    extent: f32,
    features: Vec<Decoded>,
}

fn decode(mvt: &[u8]) -> Result<Vec<DecodedLayer>, RasterError> {
    use geozero::mvt::{Message, Tile};
    let plain;
    let mvt = if mvt.starts_with(&[0x1f, 0x8b]) {
        use std::io::Read;
        let mut v = Vec::new();
        flate2::read::GzDecoder::new(mvt)
            .read_to_end(&mut v)
            .map_err(|e| RasterError::Tile(e.to_string()))?;
        plain = v;
        &plain[..]
    } else {
        mvt
    };
    let tile = Tile::decode(mvt).map_err(|e| RasterError::Tile(e.to_string()))?;
    Ok(tile
        .layers
        .into_iter()
        .map(|l| {
            let values: Vec<Value> = l
                .values
                .iter()
                .map(|v| {
                    if let Some(s) = &v.string_value {
                        Value::from(s.as_str())
                    } else if let Some(b) = v.bool_value {
                        Value::from(b)
                    } else if let Some(i) = v.int_value.or(v.sint_value) {
                        Value::from(i)
                    } else if let Some(u) = v.uint_value {
                        Value::from(u)
                    } else if let Some(d) = v.double_value {
                        Value::from(d)
                    } else {
                        v.float_value
                            .map_or(Value::Null, |f| Value::from(f64::from(f)))
                    }
                })
                .collect();
            let features = l
                .features
                .iter()
                .filter_map(|f| {
                    let geometry_type = match f.r#type {
                        Some(1) => "Point",
                        Some(2) => "LineString",
                        Some(3) => "Polygon",
                        _ => return None,
                    };
                    let parts = crate::tile::mvt::decode_commands(&f.geometry).ok()?;
                    let props = f
                        .tags
                        .chunks_exact(2)
                        .filter_map(|kv| {
                            Some((
                                l.keys.get(kv[0] as usize)?.clone(),
                                values.get(kv[1] as usize)?.clone(),
                            ))
                        })
                        .collect();
                    Some(Decoded {
                        props,
                        geometry_type,
                        parts: parts
                            .into_iter()
                            .map(|p| p.into_iter().map(|[x, y]| [x as f32, y as f32]).collect())
                            .collect(),
                    })
                })
                .collect();
            DecodedLayer {
                name: l.name,
                extent: l.extent.unwrap_or(4096) as f32,
                features,
            }
        })
        .collect())
}

/// A vector tile to draw and where: its MVT bytes (not gzip) and the pixel position of its
/// top-left corner.
pub struct TileToDraw<'a> {
    /// The MVT bytes.
    pub mvt: &'a [u8],
    /// Left edge, pixels.
    pub x: f32,
    /// Top edge, pixels.
    pub y: f32,
}

/// The styles raster tiles follow, parsed once, and a cache of PNG tiles.
pub struct Rasters {
    styles: HashMap<String, Arc<Vec<StyleLayer>>>,
    cache: moka::sync::Cache<String, Bytes>,
}

const PALETTE: [&str; 8] = [
    "#8b5cf6", "#0ea5e9", "#f97316", "#14b8a6", "#e11d48", "#84cc16", "#a855f7", "#0891b2",
];

/// The colour the viewer gives a layer no style draws (the same hash of the name).
fn colour_for(name: &str) -> &'static str {
    let h = name
        .chars()
        .fold(0u32, |h, c| h.wrapping_mul(31).wrapping_add(c as u32));
    PALETTE[h as usize % PALETTE.len()]
}

/// The light drawing of a layer no style draws (see the module doc).
fn default_layers(name: &str, live: bool) -> Vec<StyleLayer> {
    if live {
        let state = json!([
            "match",
            ["get", "state"],
            "new",
            "#22d3ee",
            "live",
            "#22c55e",
            "sleeping",
            "#60a5fa",
            "overdue",
            "#f59e0b",
            "lost",
            "#ef4444",
            "#9ca3af"
        ]);
        let worst = json!([
            "case",
            [">", ["coalesce", ["get", "lost"], 0], 0],
            "#ef4444",
            [">", ["coalesce", ["get", "overdue"], 0], 0],
            "#f59e0b",
            "#22c55e"
        ]);
        return vec![
            StyleLayer::new(
                &format!("{name}:clusters"),
                Kind::Circle,
                name,
                Some(json!(["has", "point_count"])),
                0.0,
                json!({"circle-color": worst, "circle-opacity": 0.85,
                    "circle-radius": ["interpolate", ["linear"], ["get", "point_count"], 2, 9, 50, 16, 1000, 28],
                    "circle-stroke-color": "#ffffff", "circle-stroke-width": 2}),
            ),
            StyleLayer::new(
                &format!("{name}:devices"),
                Kind::Circle,
                name,
                Some(json!(["!", ["has", "point_count"]])),
                0.0,
                json!({"circle-color": state,
                    "circle-radius": ["interpolate", ["linear"], ["zoom"], 10, 5, 18, 9],
                    "circle-stroke-color": "#ffffff", "circle-stroke-width": 2}),
            ),
        ];
    }
    let c = colour_for(name);
    vec![
        StyleLayer::new(
            &format!("{name}:fill"),
            Kind::Fill,
            name,
            Some(json!(["==", ["geometry-type"], "Polygon"])),
            0.0,
            json!({"fill-color": c, "fill-opacity": 0.08, "fill-outline-color": c}),
        ),
        StyleLayer::new(
            &format!("{name}:line"),
            Kind::Line,
            name,
            Some(json!(["==", ["geometry-type"], "LineString"])),
            0.0,
            json!({"line-color": c, "line-opacity": 0.6,
                "line-width": ["interpolate", ["linear"], ["zoom"], 10, 0.5, 18, 2]}),
        ),
        StyleLayer::new(
            &format!("{name}:point"),
            Kind::Circle,
            name,
            Some(json!(["==", ["geometry-type"], "Point"])),
            POINTS_FROM_ZOOM,
            json!({"circle-color": c, "circle-opacity": 0.7,
                "circle-radius": ["interpolate", ["linear"], ["zoom"], 14, 1.5, 18, 3.5]}),
        ),
    ]
}

/// Points of layers no style draws are drawn from this zoom on.
pub const POINTS_FROM_ZOOM: f64 = 14.0;

fn paint_of(c: [f32; 4], opacity: f64) -> Option<Paint<'static>> {
    let a = (c[3] * opacity.clamp(0.0, 1.0) as f32).clamp(0.0, 1.0);
    if a <= 0.0 {
        return None;
    }
    let mut p = Paint::default();
    p.set_color(tiny_skia::Color::from_rgba(c[0], c[1], c[2], a)?);
    p.anti_alias = true;
    Some(p)
}

impl Rasters {
    /// Parses `styles` (resolved style JSON by name) and makes a PNG cache of `cache_mb`.
    pub fn new(styles: impl IntoIterator<Item = (String, Value)>, cache_mb: u64) -> Rasters {
        Rasters {
            styles: styles
                .into_iter()
                .map(|(n, s)| (n, Arc::new(style::layers(&s))))
                .collect(),
            cache: moka::sync::Cache::builder()
                .max_capacity(cache_mb << 20)
                .weigher(|k: &String, v: &Bytes| {
                    u32::try_from(k.len() + v.len()).unwrap_or(u32::MAX)
                })
                .build(),
        }
    }

    /// True if a style of that name exists.
    pub fn has_style(&self, name: &str) -> bool {
        self.styles.contains_key(name)
    }

    /// A cached PNG.
    pub fn cached(&self, key: &str) -> Option<Bytes> {
        self.cache.get(key)
    }

    /// Keeps a PNG.
    pub fn keep(&self, key: String, png: Bytes) {
        self.cache.insert(key, png);
    }

    /// Draws `tiles` (each `tile_px` pixels square) at `zoom` following `style` into a
    /// `w` × `h` PNG. `live` names the live layers (clusters and device states).
    pub fn render(
        &self,
        style: &str,
        tiles: &[TileToDraw<'_>],
        tile_px: f32,
        zoom: f64,
        (w, h): (u32, u32),
        live: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<u8>, RasterError> {
        let layers = self
            .styles
            .get(style)
            .ok_or_else(|| RasterError::UnknownStyle(style.to_string()))?;
        let mut pixmap = Pixmap::new(w, h)
            .ok_or_else(|| RasterError::Size(format!("an image of {w}x{h} pixels")))?;
        let decoded: Vec<(Vec<DecodedLayer>, f32, f32)> = tiles
            .iter()
            .map(|t| Ok((decode(t.mvt)?, t.x, t.y)))
            .collect::<Result<_, RasterError>>()?;
        let ratio = tile_px / 256.0;
        let drawn: std::collections::HashSet<&str> =
            layers.iter().map(|l| l.source_layer.as_str()).collect();
        // Layers of the tiles that no style layer draws, in the tiles' order.
        let mut extra: Vec<StyleLayer> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (tile, _, _) in &decoded {
            for l in tile {
                if !drawn.contains(l.name.as_str()) && seen.insert(l.name.clone()) {
                    extra.extend(default_layers(&l.name, live(&l.name)));
                }
            }
        }
        for sl in layers.iter().chain(extra.iter()) {
            if !sl.shown_at(zoom) {
                continue;
            }
            if sl.kind == Kind::Background {
                let props = HashMap::new();
                let f = Feature {
                    props: &props,
                    geometry_type: "Polygon",
                };
                if let Some(c) = sl.colour("background-color", &f, zoom)
                    && let Some(p) = paint_of(c, sl.number("background-opacity", &f, zoom, 1.0))
                {
                    let rect = tiny_skia::Rect::from_xywh(0.0, 0.0, w as f32, h as f32);
                    if let Some(r) = rect {
                        pixmap.fill_rect(r, &p, Transform::identity(), None);
                    }
                }
                continue;
            }
            for (tile, ox, oy) in &decoded {
                for layer in tile.iter().filter(|l| l.name == sl.source_layer) {
                    let k = tile_px / layer.extent;
                    let at = |p: &[f32; 2]| (ox + p[0] * k, oy + p[1] * k);
                    for d in &layer.features {
                        draw_feature(&mut pixmap, sl, d, zoom, ratio, &at);
                    }
                }
            }
        }
        encode_png(&pixmap)
    }
}

fn draw_feature(
    pixmap: &mut Pixmap,
    sl: &StyleLayer,
    d: &Decoded,
    zoom: f64,
    ratio: f32,
    at: &dyn Fn(&[f32; 2]) -> (f32, f32),
) {
    let f = Feature {
        props: &d.props,
        geometry_type: d.geometry_type,
    };
    let wanted = match sl.kind {
        Kind::Fill => d.geometry_type == "Polygon",
        Kind::Line => d.geometry_type != "Point",
        Kind::Circle => d.geometry_type == "Point",
        Kind::Background => false,
    };
    if !wanted || !sl.passes(&f, zoom) {
        return;
    }
    let t = Transform::identity();
    match sl.kind {
        Kind::Fill => {
            let Some(c) = sl
                .colour("fill-color", &f, zoom)
                .or(Some([0.0, 0.0, 0.0, 1.0]))
            else {
                return;
            };
            let opacity = sl.number("fill-opacity", &f, zoom, 1.0);
            let mut pb = PathBuilder::new();
            for ring in &d.parts {
                for (i, p) in ring.iter().enumerate() {
                    let (x, y) = at(p);
                    if i == 0 {
                        pb.move_to(x, y);
                    } else {
                        pb.line_to(x, y);
                    }
                }
                pb.close();
            }
            let Some(path) = pb.finish() else { return };
            if let Some(p) = paint_of(c, opacity) {
                pixmap.fill_path(&path, &p, FillRule::EvenOdd, t, None);
            }
            if let Some(oc) = sl.colour("fill-outline-color", &f, zoom)
                && let Some(p) = paint_of(oc, opacity)
            {
                let s = Stroke {
                    width: ratio,
                    ..Stroke::default()
                };
                pixmap.stroke_path(&path, &p, &s, t, None);
            }
        }
        Kind::Line => {
            let c = sl
                .colour("line-color", &f, zoom)
                .unwrap_or([0.0, 0.0, 0.0, 1.0]);
            let width = sl.number("line-width", &f, zoom, 1.0) as f32 * ratio;
            let Some(p) = paint_of(c, sl.number("line-opacity", &f, zoom, 1.0)) else {
                return;
            };
            if width <= 0.0 {
                return;
            }
            let mut pb = PathBuilder::new();
            for part in &d.parts {
                for (i, q) in part.iter().enumerate() {
                    let (x, y) = at(q);
                    if i == 0 {
                        pb.move_to(x, y);
                    } else {
                        pb.line_to(x, y);
                    }
                }
                if d.geometry_type == "Polygon" {
                    pb.close();
                }
            }
            let Some(path) = pb.finish() else { return };
            let stroke = Stroke {
                width,
                line_cap: match sl.layout_str("line-cap") {
                    Some("round") => LineCap::Round,
                    Some("square") => LineCap::Square,
                    _ => LineCap::Butt,
                },
                line_join: match sl.layout_str("line-join") {
                    Some("round") => LineJoin::Round,
                    Some("bevel") => LineJoin::Bevel,
                    _ => LineJoin::Miter,
                },
                dash: sl.dashes().and_then(|d| {
                    let mut d: Vec<f32> = d.iter().map(|x| (x * width).max(0.01)).collect();
                    if d.len() % 2 == 1 {
                        d.extend(d.clone());
                    }
                    StrokeDash::new(d, 0.0)
                }),
                ..Stroke::default()
            };
            pixmap.stroke_path(&path, &p, &stroke, t, None);
        }
        Kind::Circle => {
            let r = sl.number("circle-radius", &f, zoom, 5.0) as f32 * ratio;
            let opacity = sl.number("circle-opacity", &f, zoom, 1.0);
            let fill = sl
                .colour("circle-color", &f, zoom)
                .unwrap_or([0.0, 0.0, 0.0, 1.0]);
            let sw = sl.number("circle-stroke-width", &f, zoom, 0.0) as f32 * ratio;
            let sc = sl.colour("circle-stroke-color", &f, zoom);
            let so = sl.number("circle-stroke-opacity", &f, zoom, 1.0);
            if r <= 0.0 {
                return;
            }
            for q in d.parts.iter().flatten() {
                let (x, y) = at(q);
                let Some(circle) = PathBuilder::from_circle(x, y, r) else {
                    continue;
                };
                if let Some(p) = paint_of(fill, opacity) {
                    pixmap.fill_path(&circle, &p, FillRule::Winding, t, None);
                }
                if sw > 0.0
                    && let Some(c) = sc
                    && let Some(p) = paint_of(c, so)
                {
                    let s = Stroke {
                        width: sw,
                        ..Stroke::default()
                    };
                    pixmap.stroke_path(&circle, &p, &s, t, None);
                }
            }
        }
        Kind::Background => {}
    }
}

/// A pixmap as PNG (tiny-skia's pixels are premultiplied; PNG's are straight). The fast
/// compression setting: a tile is made on request, and the size differs by a few percent.
pub fn encode_png(pixmap: &Pixmap) -> Result<Vec<u8>, RasterError> {
    use image::ImageEncoder;
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let mut raw = Vec::with_capacity(pixmap.data().len());
    for p in pixmap.pixels() {
        let c = p.demultiply();
        raw.extend_from_slice(&[c.red(), c.green(), c.blue(), c.alpha()]);
    }
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
        .write_image(
            &raw,
            pixmap.width(),
            pixmap.height(),
            image::ExtendedColorType::Rgba8,
        )
        .map_err(|e| RasterError::Encode(e.to_string()))?;
    Ok(out)
}
