//! Map styles: the MapLibre style JSON files of `styles/` (compiled into the binary), served at
//! `/styles/{name}.json` with the server's URL filled in for `{base}`, and with the sources
//! (and the style layers drawing them) that this server has no layer for left out, so that a
//! map client never asks for a layer that is not there. A style may extend another
//! (`"extends"`) and override paint properties by layer id: the dark big-screen variant is
//! the city style with another palette, not a copy of it.

use serde_json::{Map, Value};

/// The styles, by name.
const STYLES: &[(&str, &str)] = &[
    ("city", include_str!("../../styles/city.json")),
    ("city-dark", include_str!("../../styles/city-dark.json")),
];

/// Names of the styles.
pub fn names() -> impl Iterator<Item = &'static str> {
    STYLES.iter().map(|(n, _)| *n)
}

fn template(name: &str) -> Option<Value> {
    let (_, text) = STYLES.iter().find(|(n, _)| *n == name)?;
    // The files are ours and checked by the tests; a broken one is served as absent.
    serde_json::from_str(text).ok()
}

/// Resolves `extends` and its paint overrides.
fn resolve(name: &str, depth: usize) -> Option<Value> {
    let mut style = template(name)?;
    let Some(parent) = style
        .get("extends")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return Some(style);
    };
    if depth > 4 {
        return None;
    }
    let mut base = resolve(&parent, depth + 1)?;
    if let Some(n) = style.get("name") {
        base["name"] = n.clone();
    }
    if let (Some(over), Some(layers)) = (
        style.get_mut("paint").and_then(Value::as_object_mut),
        base.get_mut("layers").and_then(Value::as_array_mut),
    ) {
        for layer in layers.iter_mut() {
            let Some(id) = layer.get("id").and_then(Value::as_str) else {
                continue;
            };
            if let Some(Value::Object(props)) = over.get(id) {
                let paint = layer.as_object_mut().map(|l| {
                    l.entry("paint")
                        .or_insert_with(|| Value::Object(Map::new()))
                });
                if let Some(Value::Object(p)) = paint {
                    for (k, v) in props {
                        p.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }
    Some(base)
}

fn fill_base(v: &mut Value, base: &str) {
    match v {
        Value::String(s) if s.contains("{base}") => *s = s.replace("{base}", base),
        Value::Array(a) => a.iter_mut().for_each(|x| fill_base(x, base)),
        Value::Object(o) => o.values_mut().for_each(|x| fill_base(x, base)),
        _ => {}
    }
}

/// The font name the shipped styles' label layers write in `text-font`, replaced by the
/// server's label stack (see [`crate::fonts::Fonts::default_stack`]).
pub const FONT_PLACEHOLDER: &str = "urbis-labels";

/// Style `name` for a server at `base`, keeping the sources for which `has_layer` is true;
/// its label (symbol) layers set in `fonts`, or left out (with `glyphs`) when `fonts` is
/// empty.
pub fn style(
    name: &str,
    base: &str,
    fonts: &[String],
    has_layer: impl Fn(&str) -> bool,
) -> Option<Value> {
    let mut s = resolve(name, 0)?;
    if let Some(o) = s.as_object_mut() {
        o.remove("extends");
        o.remove("paint");
        if fonts.is_empty() {
            o.remove("glyphs");
        }
    }
    if let Some(layers) = s.get_mut("layers").and_then(Value::as_array_mut) {
        if fonts.is_empty() {
            layers.retain(|l| l.get("type").and_then(Value::as_str) != Some("symbol"));
        }
        for l in layers.iter_mut() {
            if let Some(f) = l.pointer_mut("/layout/text-font")
                && f.as_array()
                    .is_some_and(|a| a.iter().any(|v| v == FONT_PLACEHOLDER))
            {
                *f = Value::from(fonts.to_vec());
            }
        }
    }
    let kept: Vec<String> = match s.get_mut("sources").and_then(Value::as_object_mut) {
        Some(sources) => {
            sources.retain(|id, _| has_layer(id));
            sources.keys().cloned().collect()
        }
        None => Vec::new(),
    };
    if let Some(layers) = s.get_mut("layers").and_then(Value::as_array_mut) {
        layers.retain(|l| match l.get("source").and_then(Value::as_str) {
            Some(src) => kept.iter().any(|k| k == src),
            None => true,
        });
    }
    fill_base(&mut s, base);
    Some(s)
}

/// `GET /fonts`: the label fonts and the stack the styles use.
pub async fn font_list(
    axum::extract::State(st): axum::extract::State<super::AppState>,
) -> axum::response::Response {
    super::json_response(&serde_json::json!({
        "fonts": st.fonts.names().collect::<Vec<_>>(),
        "labels": st.fonts.default_stack(),
    }))
}

/// `GET /fonts/{fontstack}/{start}-{end}.pbf`: a glyph range (see [`crate::fonts`]).
pub async fn glyphs(
    axum::extract::State(st): axum::extract::State<super::AppState>,
    axum::extract::Path((stack, range)): axum::extract::Path<(String, String)>,
) -> axum::response::Response {
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::IntoResponse;
    let Some(range) = range.strip_suffix(".pbf") else {
        return super::problem::Problem::bad_request(format!(
            "{range:?}: glyph ranges are START-END.pbf"
        ))
        .into_response();
    };
    let (fonts, range) = (std::sync::Arc::clone(&st.fonts), range.to_string());
    let made = tokio::task::spawn_blocking(move || fonts.glyphs(&stack, &range)).await;
    match made {
        Ok(Ok(pbf)) => {
            let mut r = axum::response::Response::new(axum::body::Body::from(pbf));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-protobuf"),
            );
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            );
            r
        }
        Ok(Err(e @ crate::fonts::FontError::NoFonts)) => {
            super::problem::Problem::new(StatusCode::NOT_FOUND, "No fonts", e.to_string())
                .into_response()
        }
        Ok(Err(e @ crate::fonts::FontError::Render(_))) => super::problem::Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Glyphs failed",
            e.to_string(),
        )
        .into_response(),
        Ok(Err(e)) => super::problem::Problem::bad_request(e.to_string()).into_response(),
        Err(e) => super::problem::Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Glyphs failed",
            e.to_string(),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_style_resolves_and_dark_overrides_paint_only() {
        for n in names() {
            let s = style(n, "http://x", &[], |_| true).expect(n);
            assert_eq!(s["version"], 8, "{n}");
            assert!(!s.to_string().contains("{base}"), "{n}");
        }
        let (light, dark) = (
            style("city", "http://x", &[], |_| true).unwrap(),
            style("city-dark", "http://x", &[], |_| true).unwrap(),
        );
        assert_eq!(
            light["layers"].as_array().unwrap().len(),
            dark["layers"].as_array().unwrap().len()
        );
        assert_ne!(light["layers"][0]["paint"], dark["layers"][0]["paint"]);
        assert_eq!(light["layers"][1]["filter"], dark["layers"][1]["filter"]);
        assert_eq!(
            light["sources"]["helsinki_lines"]["url"],
            "http://x/tiles/helsinki_lines.json"
        );
    }

    #[test]
    fn sources_the_server_lacks_are_left_out_with_their_layers() {
        let s = style("city", "http://x", &[], |l| l == "helsinki_lines").unwrap();
        assert_eq!(s["sources"].as_object().unwrap().len(), 1);
        for l in s["layers"].as_array().unwrap() {
            let src = l.get("source").and_then(Value::as_str);
            assert!(src.is_none() || src == Some("helsinki_lines"), "{l}");
        }
        assert!(style("nope", "http://x", &[], |_| true).is_none());
    }

    #[test]
    fn label_layers_take_the_servers_fonts_or_go() {
        let fonts = vec![
            "DejaVu Sans Book".to_string(),
            "Noto Sans CJK SC Regular".to_string(),
        ];
        for n in names() {
            let with = style(n, "http://x", &fonts, |_| true).unwrap();
            let symbols: Vec<&Value> = with["layers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|l| l["type"] == "symbol")
                .collect();
            assert!(symbols.len() >= 3, "{n}: street, place and POI names");
            for l in &symbols {
                assert_eq!(l["layout"]["text-font"], serde_json::json!(fonts), "{n}");
            }
            assert_eq!(with["glyphs"], "http://x/fonts/{fontstack}/{range}.pbf");
            let without = style(n, "http://x", &[], |_| true).unwrap();
            assert!(without.get("glyphs").is_none());
            assert!(!without.to_string().contains("symbol"), "{n}");
        }
    }
}
