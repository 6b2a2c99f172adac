//! Entry points that run each importer on raw bytes, for the cargo-fuzz targets in `fuzz/`
//! and the regression tests that replay what the fuzzers found. Every feature a reader yields
//! also goes through validation and repair, so the fuzzers exercise those too. None of these
//! may panic, whatever the bytes.

use super::source::{Crs, FeatureSink, Progress, SourceFeature};
use super::validate::prepare;
use super::{ImportError, fgb, geojson, gpkg, shp};
use std::io::Cursor;
use std::path::Path;

/// A sink that validates every feature and keeps nothing.
#[derive(Default)]
struct ValidatingSink {
    crs: Option<Crs>,
    features: usize,
}

impl FeatureSink for ValidatingSink {
    fn crs(&mut self, crs: Crs) -> Result<(), ImportError> {
        self.crs = Some(crs);
        Ok(())
    }
    fn feature(&mut self, f: SourceFeature) -> Result<(), ImportError> {
        let _ = prepare(&f, self.crs.unwrap_or(Crs::Wgs84));
        self.features += 1;
        // Bound the work per input so the fuzzer explores instead of grinding.
        if self.features > 10_000 {
            Err(ImportError::Cancelled)
        } else {
            Ok(())
        }
    }
    fn warn(&mut self, _: String) {}
}

/// Reads `data` as a GeoJSON document and as a GeoJSON sequence; returns features read.
pub fn geojson(data: &[u8]) -> usize {
    let mut total = 0;
    for seq in [false, true] {
        let mut sink = ValidatingSink::default();
        let _ = geojson::read(Cursor::new(data), Path::new("fuzz.geojson"), seq, &mut sink);
        total += sink.features;
    }
    total
}

/// Reads `data` as FlatGeobuf; returns features read.
pub fn flatgeobuf(data: &[u8]) -> usize {
    let mut sink = ValidatingSink::default();
    let _ = fgb::read_seekable(Cursor::new(data), Path::new("fuzz.fgb"), &mut sink);
    sink.features
}

/// Reads `data` as a GeoPackage (written to a temporary file, as SQLite needs one); returns
/// features read.
pub fn geopackage(data: &[u8]) -> usize {
    let Ok(dir) = tempfile_dir() else { return 0 };
    let path = dir.join("fuzz.gpkg");
    if std::fs::write(&path, data).is_err() {
        return 0;
    }
    let mut sink = ValidatingSink::default();
    if let Ok(tables) = gpkg::feature_tables(&path) {
        for t in tables.iter().take(8) {
            let _ = gpkg::read_table(&path, t, &Progress::default(), &mut sink);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    sink.features
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "urbis-fuzz-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Reads `data` as a Shapefile: the first 4 bytes (LE) give the length of the `.shp` part,
/// the rest is the `.dbf`. Returns features read.
pub fn shapefile(data: &[u8]) -> usize {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return 0;
    };
    let split = (u32::from_le_bytes(*len) as usize).min(rest.len());
    let (shp_bytes, dbf_bytes) = rest.split_at(split);
    let parts = shp::ShapefileParts {
        shp: Cursor::new(shp_bytes.to_vec()),
        dbf: Some(Cursor::new(dbf_bytes.to_vec())),
        prj: None,
        cpg: None,
        name: "fuzz.shp".into(),
    };
    let mut sink = ValidatingSink::default();
    let _ = shp::read(parts, &mut sink);
    sink.features
}

/// Packs a `.shp` and `.dbf` into the input layout [`shapefile`] reads (for seeding corpora).
pub fn pack_shapefile(shp: &[u8], dbf: &[u8]) -> Vec<u8> {
    let mut v = (shp.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(shp);
    v.extend_from_slice(dbf);
    v
}

/// Lets panics raised inside the named crates pass silently, and every other panic reach the
/// hook installed before (libFuzzer's, which aborts). The importers contain panics of their
/// third-party parsers with `catch_unwind` (flatgeobuf, flatbuffers, geozero, dbase), but
/// libFuzzer aborts on any panic, caught or not; a fuzz target calls this once so that only
/// uncontained panics count as crashes.
pub fn pass_contained_panics(crates: &'static [&'static str]) {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let contained = info
                .location()
                .is_some_and(|l| crates.iter().any(|c| l.file().contains(&format!("/{c}-"))));
            if !contained {
                previous(info);
            }
        }));
    });
}
