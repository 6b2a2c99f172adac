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
            // Features of equal paint are drawn together: lines and polygons as one path,
            // filled or stroked once; points as copies of one drawn circle (a tile of
            // thousands of points spent most of its time building and sorting circle edges).
            let mut paths: HashMap<PaintKey, PathBuilder> = HashMap::new();
            let mut points: HashMap<PaintKey, Vec<(f32, f32)>> = HashMap::new();
            let mut order: Vec<PaintKey> = Vec::new();
            for (tile, ox, oy) in &decoded {
                for layer in tile.iter().filter(|l| l.name == sl.source_layer) {
                    let k = tile_px / layer.extent;
                    let at = |p: &[f32; 2]| (ox + p[0] * k, oy + p[1] * k);
                    for d in &layer.features {
                        let Some(key) = paint_key(sl, d, zoom, ratio) else {
                            continue;
                        };
                        if !paths.contains_key(&key) && !points.contains_key(&key) {
                            order.push(key);
                        }
                        if sl.kind == Kind::Circle {
                            let v = points.entry(key).or_default();
                            v.extend(d.parts.iter().flatten().map(&at));
                        } else {
                            append(paths.entry(key).or_default(), d, &at);
                        }
                    }
                }
            }
            for key in order {
                if let Some(v) = points.remove(&key) {
                    draw_points(&mut pixmap, key, &v);
                } else if let Some(path) = paths.remove(&key).and_then(PathBuilder::finish) {
                    draw_group(&mut pixmap, sl, key, &path);
                }
            }
        }
        encode_png(&pixmap)
    }
}

/// What a feature is drawn with, once its style layer's paint is evaluated for it: features
/// with equal keys are drawn together. Colours are RGBA bytes with the opacity folded in;
/// sizes are f32 bits (pixels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PaintKey {
    /// Fill (fills, circles) or stroke (lines) colour.
    colour: [u8; 4],
    /// Line width or circle radius.
    size: u32,
    /// Outline (fills) or circle stroke colour; alpha 0 when none.
    edge: [u8; 4],
    /// Circle stroke width.
    edge_width: u32,
}

impl PaintKey {
    /// A circle's radius, pixels.
    fn radius(&self) -> f32 {
        f32::from_bits(self.size)
    }
}

fn rgba(c: [f32; 4], opacity: f64) -> [u8; 4] {
    let a = (c[3] * opacity.clamp(0.0, 1.0) as f32).clamp(0.0, 1.0);
    let b = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    [b(c[0]), b(c[1]), b(c[2]), b(a)]
}

fn paint_rgba(c: [u8; 4]) -> Option<Paint<'static>> {
    if c[3] == 0 {
        return None;
    }
    let mut p = Paint::default();
    p.set_color(tiny_skia::Color::from_rgba8(c[0], c[1], c[2], c[3]));
    p.anti_alias = true;
    Some(p)
}

/// The paint of `d` in style layer `sl`, or `None` when the layer does not draw it (another
/// geometry, filtered out, invisible).
fn paint_key(sl: &StyleLayer, d: &Decoded, zoom: f64, ratio: f32) -> Option<PaintKey> {
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
        return None;
    }
    let black = [0.0, 0.0, 0.0, 1.0];
    let key = match sl.kind {
        Kind::Fill => {
            let opacity = sl.number("fill-opacity", &f, zoom, 1.0);
            PaintKey {
                colour: rgba(sl.colour("fill-color", &f, zoom).unwrap_or(black), opacity),
                size: 0,
                edge: sl
                    .colour("fill-outline-color", &f, zoom)
                    .map_or([0; 4], |c| rgba(c, opacity)),
                edge_width: 0,
            }
        }
        Kind::Line => {
            let width = sl.number("line-width", &f, zoom, 1.0) as f32 * ratio;
            if width <= 0.0 {
                return None;
            }
            PaintKey {
                colour: rgba(
                    sl.colour("line-color", &f, zoom).unwrap_or(black),
                    sl.number("line-opacity", &f, zoom, 1.0),
                ),
                size: width.to_bits(),
                edge: [0; 4],
                edge_width: 0,
            }
        }
        Kind::Circle => {
            let r = sl.number("circle-radius", &f, zoom, 5.0) as f32 * ratio;
            if r <= 0.0 {
                return None;
            }
            let sw = sl.number("circle-stroke-width", &f, zoom, 0.0) as f32 * ratio;
            PaintKey {
                colour: rgba(
                    sl.colour("circle-color", &f, zoom).unwrap_or(black),
                    sl.number("circle-opacity", &f, zoom, 1.0),
                ),
                size: r.to_bits(),
                edge: match sl.colour("circle-stroke-color", &f, zoom) {
                    Some(c) if sw > 0.0 => {
                        rgba(c, sl.number("circle-stroke-opacity", &f, zoom, 1.0))
                    }
                    _ => [0; 4],
                },
                edge_width: sw.max(0.0).to_bits(),
            }
        }
        Kind::Background => return None,
    };
    (key.colour[3] > 0 || key.edge[3] > 0).then_some(key)
}

/// Adds `d`'s lines or rings (closed) to a group's path.
fn append(pb: &mut PathBuilder, d: &Decoded, at: &dyn Fn(&[f32; 2]) -> (f32, f32)) {
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
}

/// Draws a circle of `key` (radius, colour, stroke) once into a stamp and copies it to each
/// point, placed at the whole pixel nearest its centre.
fn draw_points(pixmap: &mut Pixmap, key: PaintKey, at: &[(f32, f32)]) {
    let (r, sw) = (key.radius(), f32::from_bits(key.edge_width));
    let half = (r + sw / 2.0).ceil() + 1.0;
    let side = (2.0 * half) as u32;
    let Some(mut stamp) = Pixmap::new(side, side) else {
        return;
    };
    let Some(circle) = PathBuilder::from_circle(half, half, r) else {
        return;
    };
    let t = Transform::identity();
    if let Some(p) = paint_rgba(key.colour) {
        stamp.fill_path(&circle, &p, FillRule::Winding, t, None);
    }
    if sw > 0.0
        && let Some(p) = paint_rgba(key.edge)
    {
        let s = Stroke {
            width: sw,
            ..Stroke::default()
        };
        stamp.stroke_path(&circle, &p, &s, t, None);
    }
    let paint = tiny_skia::PixmapPaint::default();
    let (w, h) = (pixmap.width() as f32, pixmap.height() as f32);
    for &(x, y) in at {
        if x < -half || y < -half || x > w + half || y > h + half {
            continue;
        }
        let (px, py) = ((x - half).round() as i32, (y - half).round() as i32);
        pixmap.draw_pixmap(px, py, stamp.as_ref(), &paint, t, None);
    }
}

/// Draws one group. Fills use the non-zero rule: MVT rings wind one way and holes the other,
/// so holes stay open and overlapping polygons of a group merge.
fn draw_group(pixmap: &mut Pixmap, sl: &StyleLayer, key: PaintKey, path: &tiny_skia::Path) {
    let t = Transform::identity();
    match sl.kind {
        Kind::Fill => {
            if let Some(p) = paint_rgba(key.colour) {
                pixmap.fill_path(path, &p, FillRule::Winding, t, None);
            }
            if let Some(p) = paint_rgba(key.edge) {
                pixmap.stroke_path(path, &p, &Stroke::default(), t, None);
            }
        }
        Kind::Line => {
            let Some(p) = paint_rgba(key.colour) else {
                return;
            };
            let width = f32::from_bits(key.size);
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
            pixmap.stroke_path(path, &p, &stroke, t, None);
        }
        // Points are stamped (see `draw_points`).
        Kind::Circle => {}
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
