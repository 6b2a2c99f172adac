//! Helpers shared by the integration tests: the real `urbis` binary, the committed data.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A committed data file, by path relative to the repository root.
pub fn data(rel: &str) -> PathBuf {
    let p = root().join(rel);
    assert!(p.exists(), "missing test data {}", p.display());
    p
}

/// Runs `urbis ARGS` and returns its output.
pub fn urbis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_urbis"))
        .args(args)
        .output()
        .expect("run urbis")
}

/// Runs `urbis import FILE --store STORE EXTRA... --json` and returns the parsed JSON.
pub fn import_json(file: &Path, store: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "import",
        file.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = urbis(&args);
    assert!(
        out.status.success(),
        "import of {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("import --json prints JSON")
}

/// Every file name in a directory, sorted, with its bytes.
pub fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
