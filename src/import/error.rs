//! The errors of an import, worded for the person running it: most name the file, and each
//! says what is wrong and, where it can, what to do about it.

use crate::store::{QualityReport, StoreError};
use std::path::{Path, PathBuf};

/// Errors of an import, each naming the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is empty.
    #[error("{0}: the file is empty")]
    Empty(PathBuf),
    /// The format could not be recognised.
    #[error("{path}: {message}")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// What was found.
        message: String,
    },
    /// The content is malformed.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong and where.
        message: String,
    },
    /// The file declares a CRS Urbis does not import.
    #[error(
        "the data is in {crs}, but urbis imports EPSG:4326 (longitude/latitude) or EPSG:3857 only; reproject first, e.g. `ogr2ogr -t_srs EPSG:4326 out.fgb input`"
    )]
    Crs {
        /// The CRS as the file names it.
        crs: String,
    },
    /// A Shapefile sidecar is missing.
    #[error(
        "{path}: the .{sidecar} sidecar ({what}) is missing; copy it next to the .shp or import the .zip that holds both"
    )]
    MissingSidecar {
        /// The .shp.
        path: PathBuf,
        /// The extension.
        sidecar: String,
        /// What the sidecar holds.
        what: String,
    },
    /// A GeoPackage table that does not exist.
    #[error("{path}: no feature table named '{table}'; feature tables: {available}")]
    UnknownTable {
        /// The file.
        path: PathBuf,
        /// The table asked for.
        table: String,
        /// The tables there are.
        available: String,
    },
    /// Every feature was dropped.
    #[error("{path}: nothing importable: {}", .report.summary())]
    NothingImportable {
        /// The file.
        path: PathBuf,
        /// What was found.
        report: Box<QualityReport>,
    },
    /// Bad options.
    #[error("{0}")]
    Usage(String),
    /// The store refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The importing side hung up (internal).
    #[error("import cancelled")]
    Cancelled,
}

impl ImportError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ImportError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
