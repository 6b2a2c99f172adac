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

/// Style `name` for a server at `base`, keeping the sources for which `has_layer` is true.
pub fn style(name: &str, base: &str, has_layer: impl Fn(&str) -> bool) -> Option<Value> {
    let mut s = resolve(name, 0)?;
    if let Some(o) = s.as_object_mut() {
        o.remove("extends");
        o.remove("paint");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_style_resolves_and_dark_overrides_paint_only() {
        for n in names() {
            let s = style(n, "http://x", |_| true).expect(n);
            assert_eq!(s["version"], 8, "{n}");
            assert!(!s.to_string().contains("{base}"), "{n}");
        }
        let (light, dark) = (
            style("city", "http://x", |_| true).unwrap(),
            style("city-dark", "http://x", |_| true).unwrap(),
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
        let s = style("city", "http://x", |l| l == "helsinki_lines").unwrap();
        assert_eq!(s["sources"].as_object().unwrap().len(), 1);
        for l in s["layers"].as_array().unwrap() {
            let src = l.get("source").and_then(Value::as_str);
            assert!(src.is_none() || src == Some("helsinki_lines"), "{l}");
        }
        assert!(style("nope", "http://x", |_| true).is_none());
    }
}
