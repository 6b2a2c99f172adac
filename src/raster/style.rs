//! The part of the MapLibre style specification that raster tiles follow: `background`,
//! `fill`, `line` and `circle` layers with their `filter`, `minzoom`/`maxzoom` and the paint
//! and layout properties that change a drawing (colours, opacities, widths, radii, strokes,
//! dashes, caps and joins), evaluated per feature and zoom. Expressions: `get`, `has`, `!has`,
//! `==`, `!=`, `<`, `<=`, `>`, `>=`, `all`, `any`, `!`, `in`, `match`, `case`, `coalesce`,
//! `literal`, `zoom`, `geometry-type`, `interpolate` (linear, exponential; numbers and
//! colours) and `step`, plus the legacy filter forms (`["==", "key", value]`). What a style
//! uses beyond that evaluates to null (the property's default), never to an error: a raster
//! tile is drawn whatever the style holds. Symbol layers (labels) are not drawn.

use serde_json::Value;
use std::collections::HashMap;

/// A feature as expressions see it.
pub struct Feature<'a> {
    /// Its properties.
    pub props: &'a HashMap<String, Value>,
    /// `Point`, `LineString` or `Polygon`.
    pub geometry_type: &'static str,
}

/// What a style layer draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The tile's background.
    Background,
    /// Polygons.
    Fill,
    /// Lines (and polygon outlines).
    Line,
    /// Points.
    Circle,
}

/// One style layer the raster renderer draws.
#[derive(Debug, Clone)]
pub struct StyleLayer {
    /// Its id.
    pub id: String,
    /// What it draws.
    pub kind: Kind,
    /// The tile layer it draws (`source-layer`).
    pub source_layer: String,
    /// Its filter.
    pub filter: Option<Value>,
    /// Drawn from this zoom on.
    pub minzoom: f64,
    /// Drawn below this zoom.
    pub maxzoom: f64,
    paint: serde_json::Map<String, Value>,
    layout: serde_json::Map<String, Value>,
}

impl StyleLayer {
    /// A layer of `kind` drawing `source_layer` with these paint properties (the default
    /// drawings of layers no style draws).
    pub fn new(
        id: &str,
        kind: Kind,
        source_layer: &str,
        filter: Option<Value>,
        minzoom: f64,
        paint: Value,
    ) -> StyleLayer {
        StyleLayer {
            id: id.to_string(),
            kind,
            source_layer: source_layer.to_string(),
            filter,
            minzoom,
            maxzoom: 24.0,
            paint: paint.as_object().cloned().unwrap_or_default(),
            layout: serde_json::Map::new(),
        }
    }

    /// True if the layer is drawn at `zoom`.
    pub fn shown_at(&self, zoom: f64) -> bool {
        zoom >= self.minzoom
            && zoom < self.maxzoom
            && self.layout.get("visibility").and_then(Value::as_str) != Some("none")
    }

    /// True if `f` passes the filter.
    pub fn passes(&self, f: &Feature<'_>, zoom: f64) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|flt| truthy(&eval(flt, f, zoom)))
    }

    /// A paint property's value for `f` (null when absent).
    pub fn paint(&self, name: &str, f: &Feature<'_>, zoom: f64) -> Value {
        self.paint
            .get(name)
            .map_or(Value::Null, |v| eval(v, f, zoom))
    }

    /// A paint property as a number, or `default`.
    pub fn number(&self, name: &str, f: &Feature<'_>, zoom: f64, default: f64) -> f64 {
        self.paint(name, f, zoom).as_f64().unwrap_or(default)
    }

    /// A paint property as a colour (straight RGBA in 0..=1), or `None`.
    pub fn colour(&self, name: &str, f: &Feature<'_>, zoom: f64) -> Option<[f32; 4]> {
        match self.paint(name, f, zoom) {
            Value::String(s) => parse_colour(&s),
            _ => None,
        }
    }

    /// A layout property's string value.
    pub fn layout_str(&self, name: &str) -> Option<&str> {
        self.layout.get(name).and_then(Value::as_str)
    }

    /// The dash pattern (in line widths), if any.
    pub fn dashes(&self) -> Option<Vec<f32>> {
        let a = self.paint.get("line-dasharray")?.as_array()?;
        let d: Vec<f32> = a
            .iter()
            .filter_map(|v| v.as_f64().map(|x| x as f32))
            .collect();
        (d.len() >= 2 && d.iter().all(|x| *x >= 0.0) && d.iter().any(|x| *x > 0.0)).then_some(d)
    }
}

/// The layers of a resolved style (`extends` already applied) that raster tiles draw, in
/// drawing order.
pub fn layers(style: &Value) -> Vec<StyleLayer> {
    let Some(list) = style.get("layers").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|l| {
            let kind = match l.get("type")?.as_str()? {
                "background" => Kind::Background,
                "fill" => Kind::Fill,
                "line" => Kind::Line,
                "circle" => Kind::Circle,
                _ => return None,
            };
            Some(StyleLayer {
                id: l.get("id")?.as_str()?.to_string(),
                kind,
                source_layer: l
                    .get("source-layer")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                filter: l.get("filter").cloned(),
                minzoom: l.get("minzoom").and_then(Value::as_f64).unwrap_or(0.0),
                maxzoom: l.get("maxzoom").and_then(Value::as_f64).unwrap_or(24.0),
                paint: l
                    .get("paint")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
                layout: l
                    .get("layout")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The truth of a value as filters read it.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Null => false,
        _ => true,
    }
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// A property named by an expression argument: `["get", k]` or, in legacy filters, `"k"`.
fn operand(v: &Value, f: &Feature<'_>, zoom: f64) -> Value {
    match v {
        Value::String(k) if k == "$type" => Value::from(f.geometry_type),
        Value::String(k) => f.props.get(k).cloned().unwrap_or(Value::Null),
        other => eval(other, f, zoom),
    }
}

/// Evaluates an expression (or a literal) for a feature at a zoom.
pub fn eval(e: &Value, f: &Feature<'_>, zoom: f64) -> Value {
    let Some(arr) = e.as_array() else {
        return e.clone();
    };
    let Some(op) = arr.first().and_then(Value::as_str) else {
        return e.clone();
    };
    let arg = |i: usize| arr.get(i).map_or(Value::Null, |v| eval(v, f, zoom));
    // Legacy filters name properties as bare strings: ["==", "kind", "park"].
    let legacy = arr.get(1).is_some_and(Value::is_string);
    match op {
        "literal" => arr.get(1).cloned().unwrap_or(Value::Null),
        "zoom" => Value::from(zoom),
        "geometry-type" => Value::from(f.geometry_type),
        "get" => match arg(1) {
            Value::String(k) => f.props.get(&k).cloned().unwrap_or(Value::Null),
            _ => Value::Null,
        },
        "has" | "!has" => {
            let key = match arr.get(1) {
                Some(Value::String(k)) => k.clone(),
                _ => return Value::Null,
            };
            Value::from(f.props.contains_key(&key) == (op == "has"))
        }
        "==" | "!=" | "<" | "<=" | ">" | ">=" => {
            let a = if legacy {
                operand(&arr[1], f, zoom)
            } else {
                arg(1)
            };
            let b = arg(2);
            let r = match op {
                "==" => equal(&a, &b),
                "!=" => !equal(&a, &b),
                _ => match compare(&a, &b) {
                    Some(o) => match op {
                        "<" => o.is_lt(),
                        "<=" => o.is_le(),
                        ">" => o.is_gt(),
                        _ => o.is_ge(),
                    },
                    None => false,
                },
            };
            Value::from(r)
        }
        "all" => Value::from((1..arr.len()).all(|i| truthy(&arg(i)))),
        "any" => Value::from((1..arr.len()).any(|i| truthy(&arg(i)))),
        "!" => Value::from(!truthy(&arg(1))),
        "in" | "!in" if legacy => {
            let v = operand(&arr[1], f, zoom);
            let found = arr[2..].iter().any(|c| equal(&v, c));
            Value::from(found == (op == "in"))
        }
        "in" => {
            let needle = arg(1);
            let found = match arg(2) {
                Value::Array(h) => h.iter().any(|c| equal(&needle, c)),
                Value::String(h) => needle.as_str().is_some_and(|n| h.contains(n)),
                _ => false,
            };
            Value::from(found)
        }
        "match" => {
            let input = arg(1);
            let mut i = 2;
            while i + 1 < arr.len() {
                let hit = match &arr[i] {
                    Value::Array(labels) => labels.iter().any(|l| equal(&input, l)),
                    label => equal(&input, label),
                };
                if hit {
                    return arg(i + 1);
                }
                i += 2;
            }
            arr.last().map_or(Value::Null, |d| eval(d, f, zoom))
        }
        "case" => {
            let mut i = 1;
            while i + 1 < arr.len() {
                if truthy(&arg(i)) {
                    return arg(i + 1);
                }
                i += 2;
            }
            arr.last().map_or(Value::Null, |d| eval(d, f, zoom))
        }
        "coalesce" => (1..arr.len())
            .map(arg)
            .find(|v| !v.is_null())
            .unwrap_or(Value::Null),
        "step" => {
            let Some(x) = arg(1).as_f64() else {
                return arg(2);
            };
            let mut out = arg(2);
            let mut i = 3;
            while i + 1 < arr.len() {
                match arr[i].as_f64() {
                    Some(stop) if x >= stop => out = arg(i + 1),
                    _ => break,
                }
                i += 2;
            }
            out
        }
        "interpolate" => interpolate(arr, f, zoom),
        _ => Value::Null,
    }
}

fn interpolate(arr: &[Value], f: &Feature<'_>, zoom: f64) -> Value {
    let base = match arr.get(1).and_then(Value::as_array).map(Vec::as_slice) {
        Some([t, b]) if t == "exponential" => b.as_f64().unwrap_or(1.0),
        _ => 1.0,
    };
    let Some(x) = arr.get(2).and_then(|v| eval(v, f, zoom).as_f64()) else {
        return Value::Null;
    };
    let stops: Vec<(f64, Value)> = arr[3.min(arr.len())..]
        .chunks(2)
        .filter_map(|c| Some((c.first()?.as_f64()?, eval(c.get(1)?, f, zoom))))
        .collect();
    let (Some(first), Some(last)) = (stops.first(), stops.last()) else {
        return Value::Null;
    };
    if x <= first.0 {
        return first.1.clone();
    }
    if x >= last.0 {
        return last.1.clone();
    }
    let k = stops.windows(2).position(|w| x < w[1].0).unwrap_or(0);
    let ((x0, a), (x1, b)) = (&stops[k], &stops[k + 1]);
    let t = if (base - 1.0).abs() < 1e-9 {
        (x - x0) / (x1 - x0)
    } else {
        (base.powf(x - x0) - 1.0) / (base.powf(x1 - x0) - 1.0)
    };
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
            Value::from(a + (b - a) * t)
        }
        (Value::String(a), Value::String(b)) => match (parse_colour(a), parse_colour(b)) {
            (Some(a), Some(b)) => {
                let c: Vec<f32> = (0..4).map(|i| a[i] + (b[i] - a[i]) * t as f32).collect();
                Value::from(format!(
                    "rgba({},{},{},{})",
                    (c[0] * 255.0).round(),
                    (c[1] * 255.0).round(),
                    (c[2] * 255.0).round(),
                    c[3]
                ))
            }
            _ => a.clone().into(),
        },
        _ => a.clone(),
    }
}

/// Parses a CSS colour as styles write them: `#rgb`, `#rgba`, `#rrggbb`, `#rrggbbaa`,
/// `rgb()`, `rgba()`, `hsl()`, `hsla()` and a few names; straight RGBA in 0..=1.
pub fn parse_colour(s: &str) -> Option<[f32; 4]> {
    let s = s.trim();
    if let Some(hex) = s.strip_prefix('#') {
        let d: Vec<u8> = hex
            .chars()
            .map(|c| c.to_digit(16).map(|v| v as u8))
            .collect::<Option<_>>()?;
        let px = |hi: u8, lo: u8| f32::from(hi * 16 + lo) / 255.0;
        return match d.as_slice() {
            [r, g, b] => Some([px(*r, *r), px(*g, *g), px(*b, *b), 1.0]),
            [r, g, b, a] => Some([px(*r, *r), px(*g, *g), px(*b, *b), px(*a, *a)]),
            [r1, r2, g1, g2, b1, b2] => Some([px(*r1, *r2), px(*g1, *g2), px(*b1, *b2), 1.0]),
            [r1, r2, g1, g2, b1, b2, a1, a2] => {
                Some([px(*r1, *r2), px(*g1, *g2), px(*b1, *b2), px(*a1, *a2)])
            }
            _ => None,
        };
    }
    let (func, rest) = s.split_once('(')?;
    let nums: Vec<f32> = rest
        .trim_end_matches(')')
        .split([',', ' ', '/'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.trim_end_matches('%')
                .trim_end_matches("deg")
                .parse::<f32>()
        })
        .collect::<Result<_, _>>()
        .ok()?;
    let alpha = nums.get(3).copied().unwrap_or(1.0).clamp(0.0, 1.0);
    match (func.trim(), nums.as_slice()) {
        ("rgb" | "rgba", [r, g, b, ..]) => Some([r / 255.0, g / 255.0, b / 255.0, alpha]),
        ("hsl" | "hsla", [h, sat, l, ..]) => {
            let (h, sat, l) = (h.rem_euclid(360.0) / 360.0, sat / 100.0, l / 100.0);
            let q = if l < 0.5 {
                l * (1.0 + sat)
            } else {
                l + sat - l * sat
            };
            let p = 2.0 * l - q;
            let hue = |t: f32| {
                let t = t.rem_euclid(1.0);
                if t < 1.0 / 6.0 {
                    p + (q - p) * 6.0 * t
                } else if t < 0.5 {
                    q
                } else if t < 2.0 / 3.0 {
                    p + (q - p) * (2.0 / 3.0 - t) * 6.0
                } else {
                    p
                }
            };
            Some([hue(h + 1.0 / 3.0), hue(h), hue(h - 1.0 / 3.0), alpha])
        }
        _ => None,
    }
    .or(match s {
        "white" => Some([1.0, 1.0, 1.0, 1.0]),
        "black" => Some([0.0, 0.0, 0.0, 1.0]),
        "transparent" => Some([0.0; 4]),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn feature(props: &HashMap<String, Value>) -> Feature<'_> {
        Feature {
            props,
            geometry_type: "LineString",
        }
    }

    #[test]
    fn expressions_of_the_shipped_styles() {
        let props: HashMap<String, Value> = [
            ("highway".to_string(), json!("primary")),
            ("lanes".into(), json!(2)),
        ]
        .into_iter()
        .collect();
        let f = feature(&props);
        let m = json!([
            "match",
            ["get", "highway"],
            ["primary", "trunk"],
            "#f00",
            "#00f"
        ]);
        assert_eq!(eval(&m, &f, 10.0), json!("#f00"));
        let i = json!(["interpolate", ["linear"], ["zoom"], 10, 1, 18, 5]);
        assert_eq!(eval(&i, &f, 14.0), json!(3.0));
        assert_eq!(eval(&i, &f, 4.0), json!(1));
        let s = json!(["step", ["zoom"], 1, 12, 2, 15, 3]);
        assert_eq!(eval(&s, &f, 13.0), json!(2));
        assert!(truthy(&eval(
            &json!([
                "all",
                ["has", "highway"],
                ["!=", ["get", "highway"], "path"]
            ]),
            &f,
            1.0
        )));
        assert!(truthy(&eval(&json!(["==", "highway", "primary"]), &f, 1.0)));
        assert!(truthy(&eval(
            &json!(["in", "highway", "trunk", "primary"]),
            &f,
            1.0
        )));
        assert!(truthy(&eval(&json!([">=", ["get", "lanes"], 2]), &f, 1.0)));
        assert!(!truthy(&eval(&json!(["has", "name"]), &f, 1.0)));
        assert_eq!(
            eval(&json!(["coalesce", ["get", "name"], "x"]), &f, 1.0),
            json!("x")
        );
        assert_eq!(
            eval(&json!(["geometry-type"]), &f, 1.0),
            json!("LineString")
        );
        assert_eq!(eval(&json!(["no-such-op", 1]), &f, 1.0), Value::Null);
    }

    #[test]
    fn colours() {
        assert_eq!(parse_colour("#fff"), Some([1.0, 1.0, 1.0, 1.0]));
        assert_eq!(
            parse_colour("#ff000080").map(|c| (c[0], (c[3] * 255.0).round())),
            Some((1.0, 128.0))
        );
        assert_eq!(
            parse_colour("rgba(0, 0, 255, 0.5)"),
            Some([0.0, 0.0, 1.0, 0.5])
        );
        let red = parse_colour("hsl(0, 100%, 50%)").unwrap();
        assert!((red[0] - 1.0).abs() < 1e-6 && red[1].abs() < 1e-6);
        assert_eq!(parse_colour("nonsense"), None);
    }
}
