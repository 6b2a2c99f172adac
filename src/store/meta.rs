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
        s
    }
}
