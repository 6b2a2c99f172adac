//! GeoJSON reader: a FeatureCollection streamed feature by feature (the whole document is
//! never held in memory), a single Feature or Geometry, and newline-delimited or RFC 8142
//! GeoJSON text sequences.
//!
//! Written over serde_json rather than geozero's GeoJSON reader because that one parses the
//! whole document into memory first, drops the top-level `id`, and fails the whole file on a
//! `NaN` literal, where we want to drop just the feature that has it. Bare `NaN`, `Infinity`
//! and `-Infinity` (written by Python's json module and some GDAL versions) are read as
//! missing coordinates, which the validator drops with their own reason.

use super::ImportError;
use super::crs;
use super::source::{Crs, FeatureSink, SourceFeature};
use crate::store::PropValue;
use geo::{
    Coord, Geometry, GeometryCollection, LineString, MultiLineString, MultiPoint, MultiPolygon,
    Point, Polygon,
};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::io::{BufReader, Read};
use std::path::Path;

/// Reads GeoJSON from `input` into `sink`. `path` is only used in messages; `seq` selects
/// newline-delimited mode.
pub fn read(
    input: impl Read,
    path: &Path,
    seq: bool,
    sink: &mut dyn FeatureSink,
) -> Result<(), ImportError> {
    let reader = BufReader::with_capacity(1 << 16, NonFiniteAsNull::new(input));
    let mut state = State {
        path: path.to_path_buf(),
        sink,
        crs: None,
        features_seen: 0,
        error: None,
        top_type: None,
        single: SingleFeature::default(),
    };
    let parse_err = |e: serde_json::Error, state: &mut State| -> ImportError {
        if let Some(err) = state.error.take() {
            return err;
        }
        ImportError::Parse {
            path: path.to_path_buf(),
            message: format!(
                "{} (line {}, column {})",
                describe(&e),
                e.line(),
                e.column()
            ),
        }
    };
    if seq {
        let mut de = serde_json::Deserializer::from_reader(reader).into_iter::<RawFeature>();
        for item in &mut de {
            let raw = item.map_err(|e| parse_err(e, &mut state))?;
            state.emit(raw)?;
        }
        if state.features_seen == 0 {
            return Err(ImportError::Empty(path.to_path_buf()));
        }
        return Ok(());
    }
    let mut de = serde_json::Deserializer::from_reader(reader);
    TopLevel { state: &mut state }
        .deserialize(&mut de)
        .map_err(|e| parse_err(e, &mut state))?;
    de.end().map_err(|e| parse_err(e, &mut state))?;
    state.finish_top_level(path)
}

/// True when the first line of `head` is a complete GeoJSON Feature on its own, as in
/// newline-delimited GeoJSON, or the text starts with RFC 8142's record separator.
pub fn looks_like_sequence(head: &[u8]) -> bool {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    if head.first() == Some(&0x1e) {
        return true;
    }
    let Some(nl) = head.iter().position(|&b| b == b'\n') else {
        return false;
    };
    let line = head[..nl].trim_ascii();
    if !line.starts_with(b"{") || !line.ends_with(b"}") {
        return false;
    }
    #[derive(Deserialize)]
    struct TypeOnly {
        #[serde(rename = "type")]
        kind: String,
    }
    serde_json::from_slice::<TypeOnly>(line).is_ok_and(|t| t.kind == "Feature")
}

fn describe(e: &serde_json::Error) -> String {
    let s = e.to_string();
    // serde_json appends " at line L column C"; we print the location ourselves.
    let s = s.split(" at line ").next().unwrap_or(&s).to_string();
    match e.classify() {
        serde_json::error::Category::Eof => format!(
            "not valid GeoJSON: the file ends in the middle of a value ({s}); is it truncated?"
        ),
        serde_json::error::Category::Syntax => format!("not valid JSON: {s}"),
        _ => format!("not valid GeoJSON: {s}"),
    }
}

#[derive(Default)]
struct SingleFeature {
    geometry: Option<Option<RawGeometry>>,
    properties: Option<Option<serde_json::Map<String, serde_json::Value>>>,
    id: Option<serde_json::Value>,
    coordinates: Option<Nested>,
    geometries: Option<Vec<RawGeometry>>,
}

struct State<'s> {
    path: std::path::PathBuf,
    sink: &'s mut dyn FeatureSink,
    crs: Option<Crs>,
    features_seen: u64,
    /// An import error raised inside serde callbacks, reported instead of the serde error.
    error: Option<ImportError>,
    top_type: Option<String>,
    single: SingleFeature,
}

impl State<'_> {
    fn emit(&mut self, raw: RawFeature) -> Result<(), ImportError> {
        if let Some(kind) = raw.kind.as_deref().filter(|k| *k != "Feature") {
            return Err(ImportError::Parse {
                path: self.path.clone(),
                message: format!(
                    "feature #{} has type \"{kind}\" where a \"Feature\" was expected",
                    self.features_seen
                ),
            });
        }
        self.features_seen += 1;
        self.sink.feature(raw.into_source())
    }

    fn set_crs(&mut self, v: &serde_json::Value) -> Result<(), ImportError> {
        let name = v
            .pointer("/properties/name")
            .and_then(|n| n.as_str())
            .map(str::to_string)
            .or_else(|| {
                v.pointer("/properties/code")
                    .and_then(|c| c.as_i64())
                    .map(|c| format!("EPSG:{c}"))
            });
        let Some(name) = name else { return Ok(()) };
        let crs = crs::from_name(&name).map_err(|crs| ImportError::Crs { crs })?;
        if self.features_seen > 0 && crs != Crs::Wgs84 {
            return Err(ImportError::Crs {
                crs: format!("{name} (declared after the features)"),
            });
        }
        self.crs = Some(crs);
        self.sink.crs(crs)
    }

    fn finish_top_level(&mut self, path: &Path) -> Result<(), ImportError> {
        let t = self.top_type.clone().unwrap_or_default();
        match t.as_str() {
            "FeatureCollection" => Ok(()),
            "Feature" => {
                let s = std::mem::take(&mut self.single);
                let raw = RawFeature {
                    kind: None,
                    geometry: s.geometry.flatten(),
                    properties: s.properties.flatten(),
                    id: s.id,
                };
                self.emit(raw)
            }
            "Point" | "MultiPoint" | "LineString" | "MultiLineString" | "Polygon"
            | "MultiPolygon" | "GeometryCollection" => {
                let s = std::mem::take(&mut self.single);
                let g = RawGeometry {
                    kind: t,
                    coordinates: s.coordinates,
                    geometries: s.geometries,
                };
                self.emit(RawFeature {
                    kind: None,
                    geometry: Some(g),
                    properties: None,
                    id: None,
                })
            }
            "" => Err(ImportError::Parse {
                path: path.to_path_buf(),
                message: "not GeoJSON: the top-level object has no \"type\" member".into(),
            }),
            other => Err(ImportError::Parse {
                path: path.to_path_buf(),
                message: format!("not GeoJSON: unknown top-level type \"{other}\""),
            }),
        }
    }
}

/// The top-level object, visited member by member so `features` can stream.
struct TopLevel<'a, 's> {
    state: &'a mut State<'s>,
}

impl<'de> DeserializeSeed<'de> for TopLevel<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a GeoJSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let st = self.state;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "type" => st.top_type = Some(map.next_value()?),
                "features" => map.next_value_seed(Features { state: &mut *st })?,
                "crs" => {
                    let v: serde_json::Value = map.next_value()?;
                    if let Err(e) = st.set_crs(&v) {
                        st.error = Some(e);
                        return Err(de::Error::custom("crs refused"));
                    }
                }
                "geometry" => st.single.geometry = Some(map.next_value()?),
                "properties" => st.single.properties = Some(map.next_value()?),
                "id" => st.single.id = Some(map.next_value()?),
                "coordinates" => st.single.coordinates = Some(map.next_value()?),
                "geometries" => st.single.geometries = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct Features<'a, 's> {
    state: &'a mut State<'s>,
}

impl<'de> DeserializeSeed<'de> for Features<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Features<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of GeoJSON features")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<RawFeature>()? {
            if let Err(e) = self.state.emit(raw) {
                self.state.error = Some(e);
                return Err(de::Error::custom("import stopped"));
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct RawFeature {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    geometry: Option<RawGeometry>,
    #[serde(default)]
    properties: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    id: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawGeometry {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    coordinates: Option<Nested>,
    #[serde(default)]
    geometries: Option<Vec<RawGeometry>>,
}

/// Coordinates of any depth; `null` (and the NaN literals rewritten to it) becomes NaN.
enum Nested {
    Num(f64),
    List(Vec<Nested>),
}

impl<'de> Deserialize<'de> for Nested {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Nested;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("coordinates (numbers or arrays)")
            }
            fn visit_f64<E>(self, v: f64) -> Result<Nested, E> {
                Ok(Nested::Num(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Nested, E> {
                Ok(Nested::Num(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Nested, E> {
                Ok(Nested::Num(v as f64))
            }
            fn visit_unit<E>(self) -> Result<Nested, E> {
                Ok(Nested::Num(f64::NAN))
            }
            fn visit_none<E>(self) -> Result<Nested, E> {
                Ok(Nested::Num(f64::NAN))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Nested, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(4).min(4096));
                while let Some(n) = seq.next_element()? {
                    v.push(n);
                }
                Ok(Nested::List(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl RawFeature {
    fn into_source(self) -> SourceFeature {
        let mut properties: Vec<(String, PropValue)> = self
            .properties
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| PropValue::from_json(&v).map(|v| (k, v)))
            .collect();
        let mut id = None;
        match self.id {
            Some(serde_json::Value::Number(n)) if n.as_u64().is_some() => id = n.as_u64(),
            Some(v) if !v.is_null() && !properties.iter().any(|(k, _)| k == "id") => {
                if let Some(p) = PropValue::from_json(&v) {
                    properties.push(("id".to_string(), p));
                }
            }
            _ => {}
        }
        let (geometry, geometry_error) = match self.geometry.map(|g| g.to_geo()) {
            None => (None, None),
            Some(Ok(g)) => (Some(g), None),
            Some(Err(e)) => (None, Some(e)),
        };
        SourceFeature {
            geometry,
            id,
            properties,
            geometry_error,
        }
    }
}

fn position(n: &Nested) -> Result<Coord, String> {
    match n {
        Nested::List(v) if v.len() >= 2 => match (&v[0], &v[1]) {
            (Nested::Num(x), Nested::Num(y)) => Ok(Coord { x: *x, y: *y }),
            _ => Err("a position must hold numbers".into()),
        },
        _ => Err("a position must be an array of at least two numbers".into()),
    }
}

fn list(n: &Nested) -> Result<&[Nested], String> {
    match n {
        Nested::List(v) => Ok(v),
        Nested::Num(_) => Err("expected an array of coordinates, found a number".into()),
    }
}

fn line(n: &Nested) -> Result<LineString<f64>, String> {
    Ok(LineString::new(
        list(n)?.iter().map(position).collect::<Result<_, _>>()?,
    ))
}

fn polygon(n: &Nested) -> Result<Polygon<f64>, String> {
    let rings = list(n)?;
    let Some((ext, holes)) = rings.split_first() else {
        return Ok(Polygon::new(LineString::new(vec![]), vec![]));
    };
    Ok(Polygon::new(
        line(ext)?,
        holes.iter().map(line).collect::<Result<_, _>>()?,
    ))
}

impl RawGeometry {
    fn to_geo(&self) -> Result<Geometry<f64>, String> {
        if self.kind == "GeometryCollection" {
            let members = self.geometries.as_deref().unwrap_or_default();
            return Ok(Geometry::GeometryCollection(GeometryCollection(
                members
                    .iter()
                    .map(RawGeometry::to_geo)
                    .collect::<Result<_, _>>()?,
            )));
        }
        let c = self
            .coordinates
            .as_ref()
            .ok_or_else(|| format!("{} without coordinates", self.kind))?;
        Ok(match self.kind.as_str() {
            "Point" => Point(position(c)?).into(),
            "MultiPoint" => MultiPoint::new(
                list(c)?
                    .iter()
                    .map(|p| position(p).map(Point))
                    .collect::<Result<_, _>>()?,
            )
            .into(),
            "LineString" => line(c)?.into(),
            "MultiLineString" => {
                MultiLineString::new(list(c)?.iter().map(line).collect::<Result<_, _>>()?).into()
            }
            "Polygon" => polygon(c)?.into(),
            "MultiPolygon" => {
                MultiPolygon::new(list(c)?.iter().map(polygon).collect::<Result<_, _>>()?).into()
            }
            other => return Err(format!("unknown geometry type \"{other}\"")),
        })
    }
}

/// Rewrites bare `NaN`, `Infinity` and `-Infinity` outside strings to `null`, and RFC 8142
/// record separators to spaces, so serde_json can read what Python and some GDAL versions
/// write.
struct NonFiniteAsNull<R> {
    inner: R,
    input: Vec<u8>,
    start: usize,
    output: Vec<u8>,
    out_pos: usize,
    in_string: bool,
    escaped: bool,
    eof: bool,
}

impl<R: Read> NonFiniteAsNull<R> {
    fn new(inner: R) -> Self {
        NonFiniteAsNull {
            inner,
            input: Vec::new(),
            start: 0,
            output: Vec::new(),
            out_pos: 0,
            in_string: false,
            escaped: false,
            eof: false,
        }
    }

    fn refill(&mut self) -> std::io::Result<()> {
        self.output.clear();
        self.out_pos = 0;
        while self.output.is_empty() {
            // Keep an unprocessed tail (a token cut by the chunk boundary).
            self.input.drain(..self.start);
            self.start = 0;
            if !self.eof {
                let old = self.input.len();
                self.input.resize(old + (1 << 16), 0);
                let n = self.inner.read(&mut self.input[old..])?;
                self.input.truncate(old + n);
                self.eof = n == 0;
            }
            if self.input.is_empty() {
                return Ok(());
            }
            self.process();
            if self.eof && self.start < self.input.len() {
                // Whatever is left cannot be a token prefix any more: pass it through.
                let rest = self.input[self.start..].to_vec();
                self.output.extend_from_slice(&rest);
                self.start = self.input.len();
            }
        }
        Ok(())
    }

    fn process(&mut self) {
        const TOKENS: [&[u8]; 3] = [b"NaN", b"Infinity", b"-Infinity"];
        let buf = &self.input;
        let mut i = self.start;
        while i < buf.len() {
            let b = buf[i];
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                self.output.push(b);
                i += 1;
                continue;
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    self.output.push(b);
                }
                0x1e => self.output.push(b' '),
                b'N' | b'I' | b'-' => {
                    let rest = &buf[i..];
                    let mut matched = None;
                    let mut need_more = false;
                    for t in TOKENS {
                        if rest.len() >= t.len() {
                            if rest.starts_with(t) {
                                matched = Some(t.len());
                                break;
                            }
                        } else if t.starts_with(rest) && !self.eof {
                            need_more = true;
                        }
                    }
                    if let Some(len) = matched {
                        self.output.extend_from_slice(b"null");
                        i += len;
                        continue;
                    }
                    if need_more {
                        break;
                    }
                    self.output.push(b);
                }
                _ => self.output.push(b),
            }
            i += 1;
        }
        self.start = i;
    }
}

impl<R: Read> Read for NonFiniteAsNull<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.out_pos >= self.output.len() {
            self.refill()?;
        }
        let n = (self.output.len() - self.out_pos).min(out.len());
        out[..n].copy_from_slice(&self.output[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(s: &str) -> String {
        // Feed one byte at a time to exercise tokens cut across reads.
        struct OneByte<'a>(&'a [u8]);
        impl Read for OneByte<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0.is_empty() || buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = self.0[0];
                self.0 = &self.0[1..];
                Ok(1)
            }
        }
        let mut out = String::new();
        NonFiniteAsNull::new(OneByte(s.as_bytes()))
            .read_to_string(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn non_finite_literals_become_null_outside_strings() {
        assert_eq!(
            rewrite(r#"[NaN, -Infinity, "NaN \" Infinity", Infinity, -1]"#),
            r#"[null, null, "NaN \" Infinity", null, -1]"#
        );
    }

    #[test]
    fn first_line_feature_means_a_sequence() {
        assert!(looks_like_sequence(
            b"{\"type\":\"Feature\",\"geometry\":null,\"properties\":{}}\n{"
        ));
        assert!(!looks_like_sequence(
            b"{\"type\":\"FeatureCollection\",\"features\":[\n"
        ));
    }
}
