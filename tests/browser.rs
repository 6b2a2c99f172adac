//! The web viewer and the big screen in a real browser: starts the server exactly as the
//! README's run command does (`urbis serve`, no flags, in a fresh folder: demo layers
//! imported on first run, http://127.0.0.1:8080, CoAP on 127.0.0.1:5683), registers two
//! devices with the CLI, and runs `tests/browser/e2e.mjs`, which drives Debian's Chromium
//! with Playwright (see that file for what it checks). Screenshots land in
//! `target/tmp/browser-e2e/`. `.ci/run` installs Chromium and playwright-core.

mod common;

use common::{Server, root, urbis};
use std::path::{Path, PathBuf};
use std::process::Command;

fn chromium() -> PathBuf {
    PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()))
}

fn secret(out: &std::process::Output, prefix: &str) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|w| w.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} secret in the output"))
        .to_string()
}

#[test]
fn viewer_and_big_screen_in_chromium_against_the_readme_server() {
    let e2e = root().join("tests/browser");
    assert!(
        e2e.join("node_modules/playwright-core").exists() && chromium().exists(),
        "the browser test needs Debian's chromium ({}) and playwright-core in tests/browser \
         (`npm ci --prefix tests/browser`): `bash .ci/run` installs both",
        chromium().display()
    );
    assert!(
        std::net::TcpListener::bind("127.0.0.1:8080").is_ok(),
        "127.0.0.1:8080 is taken: this test runs the server as the README does, on its default port"
    );

    // The README's run command, in a fresh folder: `urbis serve`.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_urbis"));
    cmd.arg("serve").current_dir(dir.path());
    let mut server = Server::spawn(cmd);
    assert_eq!(server.base, "http://127.0.0.1:8080", "the default address");

    // Three trams on a live layer and an ingest key, registered while the server runs.
    let store = dir.path().join("urbis-store");
    let s = store.to_str().unwrap();
    for id in ["tram-1", "tram-2", "tram-3"] {
        let out = urbis(&[
            "devices",
            "add",
            id,
            "--layer",
            "vehicles",
            "--kind",
            "tracker",
            "--interval",
            "30s",
            "--store",
            s,
        ]);
        secret(&out, "ds_");
    }
    let key = secret(&urbis(&["devices", "key", "e2e", "--store", s]), "ik_");
    // The pages sign in with an operator's API key (live layers are internal: anonymous
    // callers see the public demo layers only).
    let api_key = common::api_key(&store, "operator");
    server.key = Some(api_key.clone());
    wait_for_layer(&server, "vehicles");

    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-e2e");
    let status = Command::new("node")
        .arg(e2e.join("e2e.mjs"))
        .env("URBIS_URL", &server.base)
        .env("URBIS_KEY", &key)
        .env("URBIS_API_KEY", &api_key)
        .env("URBIS_DEVICES", "tram-1,tram-2,tram-3")
        .env("URBIS_LAYER", "vehicles")
        .env("CHROMIUM", chromium())
        .env("OUT_DIR", &out_dir)
        .env("URBIS_BIN", env!("CARGO_BIN_EXE_urbis"))
        .env("URBIS_STORE", &store)
        .env("URBIS_PID", server.child.id().to_string())
        .status()
        .expect("run node (Node.js is on the machine; .ci/run checks it)");
    assert!(
        status.success(),
        "the browser test failed (its output is above; screenshots in {})",
        out_dir.display()
    );
    for shot in ["viewer.png", "ops-1920x1080.png", "ops-3840x2160.png"] {
        let len = std::fs::metadata(out_dir.join(shot)).map_or(0, |m| m.len());
        assert!(len > 10_000, "screenshot {shot}: {len} bytes");
    }
    drop(server);
}

/// The server reads the device registry within a second: waits until `/catalog` has `layer`.
fn wait_for_layer(server: &Server, layer: &str) {
    for _ in 0..100 {
        let cat = server.get("/catalog", &[]).json();
        if cat["layers"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["name"] == layer))
        {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{layer} never appeared in /catalog");
}
