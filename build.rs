//! Build step for the web viewer: installs its one npm dependency (`maplibre-gl`, pinned in
//! `web-viewer/package-lock.json`) with `npm ci` when `web-viewer/node_modules` does not hold
//! the locked version, then writes `OUT_DIR/viewer_assets.rs`: every file the browser needs
//! (our `web-viewer/src/*` and MapLibre's ES module build, CSS and licence), each embedded
//! with a gzip copy and an ETag, so that `urbis serve` serves the viewer with no Node at run
//! time and `cargo run --release -- serve` stays the one command that sets it all up.
//!
//! When npm is missing or fails (no network), the build goes on with a warning and the
//! binary answers `/` with a page that says how to fix it; the tiles and APIs do not need
//! the viewer.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// MapLibre's files served beside our own, as (name in `dist/` or the package, served name).
const MAPLIBRE_FILES: &[(&str, &str)] = &[
    ("dist/maplibre-gl.mjs", "maplibre-gl.mjs"),
    // maplibre-gl.mjs starts its workers from `./maplibre-gl-worker.mjs` next to itself.
    ("dist/maplibre-gl-worker.mjs", "maplibre-gl-worker.mjs"),
    ("dist/maplibre-gl.css", "maplibre-gl.css"),
    ("LICENSE.txt", "maplibre-gl-LICENSE.txt"),
];

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    let web = root.join("web-viewer");
    for p in ["package.json", "package-lock.json", "src"] {
        println!("cargo:rerun-if-changed={}", web.join(p).display());
    }
    println!("cargo:rerun-if-changed=web-viewer/node_modules/maplibre-gl/package.json");

    let mut assets: Vec<(String, Vec<u8>)> = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(web.join("src"))
        .expect("web-viewer/src")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assets.push((name, fs::read(&p).expect("read web-viewer/src file")));
    }

    let missing = match install_maplibre(&web) {
        Ok(pkg) => {
            for (from, to) in MAPLIBRE_FILES {
                let bytes = fs::read(pkg.join(from))
                    .unwrap_or_else(|e| panic!("maplibre-gl has no {from}: {e}"));
                assets.push((to.to_string(), bytes));
            }
            None
        }
        Err(why) => {
            println!("cargo:warning=web viewer not built: {why}");
            Some(why)
        }
    };

    let mut code = String::from(
        "/// The embedded viewer files (written by build.rs).\npub static ASSETS: &[Asset] = &[\n",
    );
    for (name, bytes) in &assets {
        let gz = gzip(bytes);
        let file = out.join(format!("asset-{name}"));
        let gz_file = out.join(format!("asset-{name}.gz"));
        write_if_changed(&file, bytes);
        write_if_changed(&gz_file, &gz);
        let etag = format!("\"{:08x}-{:x}\"", crc32fast::hash(bytes), bytes.len());
        code.push_str(&format!(
            "    Asset {{ name: {name:?}, body: include_bytes!({file:?}), gzip: include_bytes!({gz_file:?}), etag: {etag:?} }},\n",
            file = file.display().to_string(),
            gz_file = gz_file.display().to_string(),
        ));
    }
    code.push_str("];\n");
    code.push_str(&format!(
        "/// Why the viewer was not built, when it was not.\npub static MISSING: Option<&str> = {missing:?};\n"
    ));
    write_if_changed(&out.join("viewer_assets.rs"), code.as_bytes());
}

/// Makes sure `web-viewer/node_modules/maplibre-gl` is the locked version and returns its
/// folder, running `npm ci` (under a lock: cargo may run this script for several profiles at
/// once) when it is not.
fn install_maplibre(web: &Path) -> Result<PathBuf, String> {
    let lock: serde_json::Value = serde_json::from_slice(
        &fs::read(web.join("package-lock.json")).map_err(|e| format!("package-lock.json: {e}"))?,
    )
    .map_err(|e| format!("package-lock.json: {e}"))?;
    let want = lock["packages"]["node_modules/maplibre-gl"]["version"]
        .as_str()
        .ok_or("package-lock.json does not lock maplibre-gl")?
        .to_string();
    let pkg = web.join("node_modules/maplibre-gl");
    let installed = || -> bool {
        fs::read(pkg.join("package.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v["version"] == want.as_str())
    };
    if installed() {
        return Ok(pkg);
    }
    let guard = fs::File::create(web.join(".npm-install.lock"))
        .map_err(|e| format!("web-viewer/.npm-install.lock: {e}"))?;
    guard
        .lock()
        .map_err(|e| format!("locking npm install: {e}"))?;
    if installed() {
        return Ok(pkg);
    }
    let npm = std::env::var("NPM").unwrap_or_else(|_| "npm".into());
    let out = Command::new(&npm)
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(web)
        .output()
        .map_err(|e| {
            format!("could not run {npm} ci in web-viewer/ ({e}); install Node.js and npm")
        })?;
    if !out.status.success() {
        return Err(format!(
            "`npm ci` in web-viewer/ failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if installed() {
        Ok(pkg)
    } else {
        Err(format!("npm ci did not install maplibre-gl {want}"))
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).expect("gzip in memory");
    e.finish().expect("gzip in memory")
}

/// Leaves unchanged files alone so that cargo does not rebuild the crate for nothing.
fn write_if_changed(path: &Path, bytes: &[u8]) {
    if fs::read(path).ok().as_deref() != Some(bytes) {
        fs::write(path, bytes).expect("write to OUT_DIR");
    }
}
