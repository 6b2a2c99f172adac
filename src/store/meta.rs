//! What a layer file says about itself: its name, source, schema and data-quality report.
//! Stored as JSON in the file's META section and printed by `urbis layers`.

use super::props::FieldType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Metadata stored inside a layer file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LayerMeta {
    /// The layer's name.
    pub name: String,
    /// Where the data came from (file name and format).
    pub source: SourceInfo,
    /// Seconds since the Unix epoch when the file was built.
    pub created: u64,
    /// `[west, south, east, north]` in degrees.
    pub bounds: [f64; 4],
    /// Property keys and the types their values take.
    pub fields: BTreeMap<String, Vec<FieldType>>,
    /// The data-quality report of the import.
    pub quality: QualityReport,
    /// Attribution to show with maps made from the layer (licence notice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution: Option<String>,
}

/// The input a layer was built from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SourceInfo {
    /// The file name as given (no directories).
    pub file: String,
    /// `geojson`, `geojsonseq`, `flatgeobuf`, `geopackage` or `shapefile`.
    pub format: String,
    /// The GeoPackage table or the Shapefile inside a zip, when there was a choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// The declared coordinate reference system (`EPSG:4326` or `EPSG:3857`).
    pub crs: String,
}

/// What an import found in the data: counts, drops by reason, and what the layer holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct QualityReport {
    /// Features read from the source.
    pub read: u64,
    /// Features stored in the layer.
    pub imported: u64,
    /// Stored features whose geometry was repaired (rings closed, self-intersections fixed...).
    pub repaired: u64,
    /// Repairs by kind.
    pub repairs: BTreeMap<String, u64>,
    /// Features dropped, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// The first few dropped features: source position (0-based) and why.
    pub examples: Vec<DropExample>,
    /// Source geometry types and their counts.
    pub geometry_types: BTreeMap<String, u64>,
    /// Notes about the whole file (assumed CRS, skipped binary columns...).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The slowest features to check and repair, slowest first (at most
    /// [`QualityReport::SLOWEST`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slowest: Vec<SlowFeature>,
}

/// A feature that took long to check and repair, for the report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SlowFeature {
    /// Its position in the source (0-based).
    pub feature: u64,
    /// Its name (a `name` property or its id).
    pub name: String,
    /// Milliseconds.
    pub ms: f64,
}

/// One dropped feature, for the report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DropExample {
    /// The feature's position in the source (0-based).
    pub feature: u64,
    /// The drop reason.
    pub reason: String,
    /// Details (coordinates, validator message).
    pub detail: String,
}

impl QualityReport {
    /// At most this many examples are kept.
    pub const MAX_EXAMPLES: usize = 100;
    /// The slowest features listed.
    pub const SLOWEST: usize = 5;

    /// Notes how long feature `index` took; `name` is asked only if it is among the slowest
    /// (features under 10 ms are not listed).
    pub fn note_time(
        &mut self,
        index: u64,
        name: impl FnOnce() -> String,
        took: std::time::Duration,
    ) {
        let ms = took.as_secs_f64() * 1000.0;
        if ms < 10.0
            || (self.slowest.len() >= Self::SLOWEST
                && self.slowest.last().is_some_and(|s| s.ms >= ms))
        {
            return;
        }
        self.slowest.push(SlowFeature {
            feature: index,
            name: name(),
            ms,
        });
        self.slowest.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        self.slowest.truncate(Self::SLOWEST);
    }

    /// Total features dropped.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    /// A short multi-line summary for people.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "read {}, imported {}, repaired {}, dropped {}",
            self.read,
            self.imported,
            self.repaired,
            self.dropped_total()
        );
        let types: Vec<String> = self
            .geometry_types
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        if !types.is_empty() {
            s += &format!("\n  geometry types: {}", types.join(", "));
        }
        for (k, v) in &self.repairs {
            s += &format!("\n  repaired: {k}: {v}");
        }
        for (k, v) in &self.dropped {
            s += &format!("\n  dropped: {k}: {v}");
        }
        for e in self.examples.iter().take(5) {
            s += &format!("\n    feature #{}: {} ({})", e.feature, e.reason, e.detail);
        }
        for w in &self.warnings {
            s += &format!("\n  warning: {w}");
        }
        if !self.slowest.is_empty() {
            let list: Vec<String> = self
                .slowest
                .iter()
                .map(|f| format!("#{} {} {:.0} ms", f.feature, f.name, f.ms))
                .collect();
            s += &format!("\n  slowest: {}", list.join(", "));
        }
        s
    }
}
