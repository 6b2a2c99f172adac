//! The layer store: immutable, versioned layer files read through a memory map, and the
//! catalog that says which version of each layer is current.
//!
//! Depends on `tile` only. Invariants: a published layer file is never modified; a reader sees
//! either the old or the new version of a layer, never a partial one; every number in a file
//! is little-endian; every section is checked (CRC-32) when the file is opened.
//!
//! # The layer file, format version 1
//!
//! ```text
//! offset  size  field
//! 0       8     magic "URBISLYR"
//! 8       4     format version (1); any other value is refused with StoreError::Version
//! 12      4     header length H (bytes, multiple of 8; sections start at or after H)
//! 16      8     feature count N
//! 24      16    bbox: min_x, min_y, max_x, max_y (u32 grid units, see `tile::mercator`)
//! 40      1     minzoom
//! 41      1     maxzoom (the full-resolution level; higher zooms reuse it)
//! 42      1     number of levels (maxzoom - minzoom + 1)
//! 43      1     reserved (0)
//! 44      4     section count S
//! 48      32×S  section table, one entry per section:
//!                 u16 kind, u8 zoom (level sections), u8 0, u32 item count,
//!                 u64 offset, u64 length, u32 CRC-32 of the section bytes, u32 0
//! 48+32S  4     CRC-32 of bytes 0 .. 48+32S
//! ```
//!
//! Sections (each starts on an 8-byte boundary):
//!
//! | kind | name | content |
//! |---|---|---|
//! | 1 | META | JSON [`LayerMeta`]: name, source, bounds, fields, quality report |
//! | 2 | KEYS | `u32 n`, `n + 1` × `u32` offsets, then the UTF-8 key bytes |
//! | 3 | PROPS_INDEX | `N + 1` × `u64` offsets into PROPS, by feature number |
//! | 4 | PROPS | per feature a property record (see [`props`]) |
//! | 5 | SOURCE_INDEX | per feature, `u32` position in the import (features are numbered along the Hilbert curve) |
//! | 10 | LEVEL_BOXES | per item of the level, its box: 4 × `u32` (R-tree level 0) |
//! | 11 | LEVEL_NODES | the R-tree's node boxes, level 1 first (see [`rtree`]) |
//! | 12 | LEVEL_FEATURES | per item, `u32` feature number |
//! | 13 | LEVEL_GEOM_INDEX | `items + 1` × `u64` offsets into LEVEL_GEOM |
//! | 14 | LEVEL_GEOM | per item, an encoded geometry (see [`geometry`]) |
//!
//! The five level sections repeat once per zoom from minzoom to maxzoom. Items of a level are
//! in Hilbert order of their box centres; the level at maxzoom holds every feature at full
//! resolution, lower levels hold the features generalized for their zoom (see [`lod`]).
//! Properties are stored once per feature and shared by all levels. Feature numbers follow the
//! Hilbert order of the full-resolution level, so that a tile's property reads stay local.

pub mod archive;
pub mod catalog;
pub mod codec;
pub mod db;
pub mod geometry;
pub mod lod;
pub mod meta;
pub mod props;
pub mod reader;
pub mod rtree;
pub mod spill;
pub mod writer;

pub use catalog::{Catalog, LayerEntry, Store, VersionEntry};
pub use geometry::{GeomKind, GridGeometry};
pub use meta::{DropExample, LayerMeta, QualityReport, SourceInfo};
pub use props::{FieldType, PropRef, PropValue};
pub use reader::{FeatureRef, LayerReader, Level};
pub use spill::{SpillDir, SpillStats};
pub use writer::{DEFAULT_MEMORY, LayerBuilder, MAX_ZOOM, WriteSummary, ZoomRange};

use std::path::{Path, PathBuf};

/// The first eight bytes of every layer file.
pub const MAGIC: &[u8; 8] = b"URBISLYR";
/// The layer file format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Section kinds of the layer file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum SectionKind {
    /// JSON metadata.
    Meta = 1,
    /// Property key dictionary.
    Keys = 2,
    /// Offsets of property records.
    PropsIndex = 3,
    /// Property records.
    Props = 4,
    /// Import position of each feature.
    SourceIndex = 5,
    /// Item boxes of a level.
    LevelBoxes = 10,
    /// R-tree nodes of a level.
    LevelNodes = 11,
    /// Feature numbers of a level's items.
    LevelFeatures = 12,
    /// Offsets of a level's geometries.
    LevelGeomIndex = 13,
    /// A level's geometries.
    LevelGeom = 14,
}

impl SectionKind {
    fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => SectionKind::Meta,
            2 => SectionKind::Keys,
            3 => SectionKind::PropsIndex,
            4 => SectionKind::Props,
            5 => SectionKind::SourceIndex,
            10 => SectionKind::LevelBoxes,
            11 => SectionKind::LevelNodes,
            12 => SectionKind::LevelFeatures,
            13 => SectionKind::LevelGeomIndex,
            14 => SectionKind::LevelGeom,
            _ => return None,
        })
    }
}

/// Errors of the layer store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An I/O error without a known path.
    #[error(transparent)]
    RawIo(#[from] std::io::Error),
    /// The file is damaged or not a layer file.
    #[error("corrupt layer file: {0}")]
    Corrupt(String),
    /// The file was written by another format version.
    #[error(
        "{path}: layer file format version {found}, but this urbis reads version {FORMAT_VERSION}; re-import the layer with this urbis"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found in its header.
        found: u32,
    },
    /// The catalog file is unreadable.
    #[error("catalog {path}: {message}")]
    Catalog {
        /// The catalog file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No such layer in the catalog.
    #[error("no layer named '{0}' in the store")]
    UnknownLayer(String),
    /// A layer name that cannot be used.
    #[error(
        "invalid layer name '{0}': use 1-64 letters, digits, '_' or '-', not starting with '-'"
    )]
    InvalidName(String),
    /// A version the store does not keep.
    #[error(
        "layer '{layer}' has no version {version} (kept: {kept}); see `urbis layers versions {layer}`"
    )]
    UnknownVersion {
        /// The layer.
        layer: String,
        /// The version asked for.
        version: u64,
        /// The versions kept, e.g. "v2, v3, v4".
        kept: String,
    },
}

impl StoreError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
