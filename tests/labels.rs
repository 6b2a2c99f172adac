//! Map labels: the server serves MapLibre glyph ranges made from the installed fonts (Latin
//! from DejaVu, CJK from Noto Sans CJK, both Debian packages that `.ci/run` installs), the
//! styles label with them, and Chromium renders the demo's street names with no glyph request
//! failing (`tests/browser/labels.mjs`).

mod common;

use common::Server;
use pbf_font_tools::prost::Message;
use std::path::{Path, PathBuf};
use std::process::Command;

const CJK: &str = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc";

fn demo_server(dir: &Path, extra: &[&str]) -> Server {
    Server::spawn(common::demo_command(dir, extra))
}

fn glyphs(s: &Server, stack: &str, range: &str) -> pbf_font_tools::Glyphs {
    let r = s.get(
        &format!("/fonts/{}/{range}.pbf", stack.replace(' ', "%20")),
        &[],
    );
    assert_eq!(
        r.status,
        200,
        "{stack} {range}: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
    pbf_font_tools::Glyphs::decode(&r.body[..]).expect("a glyphs PBF")
}

#[test]
fn glyph_ranges_are_served_latin_and_cjk() {
    assert!(
        Path::new(CJK).exists(),
        "{CJK} is missing: .ci/run installs fonts-noto-cjk"
    );
    let dir = tempfile::tempdir().unwrap();
    let s = demo_server(dir.path(), &[]);
    let list = s.get("/fonts", &[]).json();
    let labels: Vec<String> = serde_json::from_value(list["labels"].clone()).unwrap();
    assert_eq!(labels.len(), 2, "a Latin and a CJK font: {list}");
    assert!(labels[1].starts_with("Noto Sans CJK"), "{labels:?}");
    let stack = labels.join(",");

    // Basic Latin from the first font: A is there, with a bitmap of (w+6)x(h+6) bytes.
    let latin = glyphs(&s, &stack, "0-255");
    let g = &latin.stacks[0].glyphs;
    let a = g.iter().find(|g| g.id == 'A' as u32).expect("A");
    assert_eq!(
        a.bitmap.as_ref().unwrap().len() as u32,
        (a.width + 6) * (a.height + 6)
    );
    assert!(a.advance > 5);
    assert!(g.len() > 150, "{} Latin glyphs", g.len());
    // CJK ideographs (U+4E00…): nearly every code point of the range, from the CJK font.
    let cjk = glyphs(&s, &stack, "19968-20223");
    assert_eq!(cjk.stacks[0].range, "19968-20223");
    let ids: Vec<u32> = cjk.stacks[0].glyphs.iter().map(|g| g.id).collect();
    assert!(ids.len() > 240, "{} CJK glyphs", ids.len());
    assert!(ids.iter().all(|id| (19968..=20223).contains(id)));
    assert!(ids.contains(&0x4E00), "一 (U+4E00)");
    // Hangul from the same stack (the CJK face has it).
    assert!(glyphs(&s, &stack, "44032-44287").stacks[0].glyphs.len() > 200);
    // Bad ranges are 400.
    for bad in ["0-256", "100-355", "x-y"] {
        let r = s.get(&format!("/fonts/DejaVu%20Sans%20Book/{bad}.pbf"), &[]);
        assert_eq!(r.status, 400, "{bad}");
    }
    // The styles label with that stack.
    let style = s.get("/styles/city.json", &[]).json();
    let streets = style["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == "street-names")
        .expect("street-names");
    assert_eq!(streets["layout"]["text-font"], serde_json::json!(labels));
}

#[test]
fn without_fonts_the_styles_drop_their_labels_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("no-fonts");
    std::fs::create_dir(&empty).unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let cmd = common::demo_command(dir.path(), &["--fonts", empty.to_str().unwrap()]);
    let s = Server::spawn_to(cmd, log.into());
    let style = s.get("/styles/city.json", &[]).json();
    assert!(style.get("glyphs").is_none());
    assert!(!style.to_string().contains("\"symbol\""));
    assert_eq!(
        s.get("/fonts/DejaVu%20Sans%20Book/0-255.pbf", &[]).status,
        404
    );
    drop(s);
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(log.contains("no label fonts found"), "{log}");
}

fn chromium() -> PathBuf {
    PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()))
}

#[test]
fn chromium_renders_the_demos_street_names() {
    let browser = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser.join("node_modules/playwright-core").exists() && chromium().exists(),
        "Chromium and playwright-core are needed: run .ci/run once"
    );
    let dir = tempfile::tempdir().unwrap();
    let s = demo_server(dir.path(), &[]);
    let out = Command::new("node")
        .arg(browser.join("labels.mjs"))
        .arg(&s.base)
        .arg(dir.path())
        .env("CHROMIUM", chromium())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(seen["streets"].as_u64().unwrap() >= 3, "{seen}");
}
