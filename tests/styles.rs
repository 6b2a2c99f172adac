//! Map styles served by the real server: tile sources point at this server, every style layer
//! draws a source layer the server has, and every property the style reads is a field of that
//! layer (so the style and the demo data cannot drift apart unnoticed).

mod common;

use common::{Server, data, import_json};
use serde_json::Value;

/// Property names an expression reads with `get` or `has`.
fn fields_read(v: &Value, out: &mut Vec<String>) {
    if let Value::Array(a) = v {
        if let (Some(Value::String(op)), Some(Value::String(f))) = (a.first(), a.get(1))
            && (op == "get" || op == "has")
        {
            out.push(f.clone());
        }
        a.iter().for_each(|x| fields_read(x, out));
    } else if let Value::Object(o) = v {
        o.values().for_each(|x| fields_read(x, out));
    }
}

#[test]
fn styles_match_the_layers_the_server_has() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    import_json(
        &data("data/helsinki/helsinki_layers.gpkg"),
        &store,
        &["--layer", "helsinki"],
    );
    let server = Server::start(&store, &[]);
    let list = server.get("/styles", &[]).json();
    let names: Vec<&str> = list["styles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["city", "city-dark"]);
    for name in names {
        let r = server.get(&format!("/styles/{name}.json"), &[]);
        assert_eq!(r.status, 200);
        let style = r.json();
        assert_eq!(style["version"], 8);
        let sources = style["sources"].as_object().unwrap();
        assert_eq!(sources.len(), 3, "{name}: {sources:?}");
        let mut fields_of = std::collections::HashMap::new();
        for (id, src) in sources {
            let url = src["url"].as_str().unwrap();
            let path = url
                .strip_prefix(&server.base)
                .unwrap_or_else(|| panic!("{url} is not on {}", server.base));
            let tj = server.get(path, &[]).json();
            for vl in tj["vector_layers"].as_array().unwrap() {
                let fields: Vec<String> =
                    vl["fields"].as_object().unwrap().keys().cloned().collect();
                fields_of.insert((id.clone(), vl["id"].as_str().unwrap().to_string()), fields);
            }
        }
        for layer in style["layers"].as_array().unwrap() {
            let Some(src) = layer.get("source").and_then(Value::as_str) else {
                continue;
            };
            let sl = layer["source-layer"].as_str().unwrap();
            let fields = fields_of
                .get(&(src.to_string(), sl.to_string()))
                .unwrap_or_else(|| {
                    panic!(
                        "{name}: {} draws {src}/{sl}, which the server lacks",
                        layer["id"]
                    )
                });
            let mut used = Vec::new();
            fields_read(layer, &mut used);
            for f in used {
                assert!(
                    fields.contains(&f),
                    "{name}: {} reads {f}, not a field of {sl}",
                    layer["id"]
                );
            }
        }
    }
    let dark = server.get("/styles/city-dark.json", &[]).json();
    assert_eq!(dark["layers"][0]["paint"]["background-color"], "#0b1220");
    assert_eq!(server.get("/styles/nope.json", &[]).status, 404);
}

#[test]
fn a_store_without_the_demo_layers_gets_a_style_without_their_sources() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    import_json(&data("data/helsinki/helsinki.geojson"), &store, &[]);
    let server = Server::start(&store, &[]);
    let style = server.get("/styles/city.json", &[]).json();
    assert!(style["sources"].as_object().unwrap().is_empty());
    assert_eq!(
        style["layers"].as_array().unwrap().len(),
        1,
        "only the background is left"
    );
}
