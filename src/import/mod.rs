//! Importers: GIS files (GeoJSON, FlatGeobuf, GeoPackage, Shapefile) into layer files.
//!
//! Flow: a format reader runs on its own thread and streams [`SourceFeature`]s in batches
//! through a bounded channel (so a large file is never held whole); the importing thread
//! checks, repairs and projects each batch in parallel ([`validate`]), appends it to a
//! [`LayerBuilder`](crate::store::LayerBuilder), counts everything in a
//! [`QualityReport`](crate::store::QualityReport), then writes the layer file to an invisible
//! staging file and publishes it atomically ([`Store::publish`](crate::store::Store::publish)). A file-level
//! error (unreadable, truncated, wrong CRS) aborts the import and leaves the store unchanged;
//! a feature-level problem drops or repairs that feature and is reported.
//!
//! Parts: `error` holds [`ImportError`]; `detect` tells the [`Format`] and opens the file;
//! `pipeline` runs an import ([`import_file`]); one module per format reads it into
//! [`SourceFeature`]s.

pub mod crs;
pub mod fgb;
pub mod fuzzing;
pub mod geojson;
pub mod gpkg;
pub mod makevalid;
pub mod shp;
pub mod source;
pub mod validate;

mod detect;
mod error;
mod pipeline;

pub use detect::{Format, detect_format};
pub use error::ImportError;
pub use pipeline::{ImportObserver, ImportOptions, ImportOutcome, Silent, import_file};
pub use source::{Crs, FeatureSink, Progress, SourceFeature};
