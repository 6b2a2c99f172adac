//! Telling a file's format from its first bytes (then its extension), and opening it for
//! reading: buffered, counting the bytes read for progress, and decompressing `.gz`.

use super::source::{CountingReader, Progress};
use super::{ImportError, geojson};
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;

/// File formats Urbis imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// GeoJSON document.
    GeoJson,
    /// Newline-delimited GeoJSON or RFC 8142 sequence.
    GeoJsonSeq,
    /// FlatGeobuf.
    FlatGeobuf,
    /// GeoPackage (SQLite).
    GeoPackage,
    /// Shapefile (`.shp` with sidecars).
    Shapefile,
    /// A zip holding a Shapefile.
    ShapefileZip,
    /// A tile archive (PMTiles v3 or MBTiles), served as it is.
    TileArchive,
}

impl Format {
    /// The name stored in layer metadata.
    pub fn name(&self) -> &'static str {
        match self {
            Format::GeoJson => "geojson",
            Format::GeoJsonSeq => "geojsonseq",
            Format::FlatGeobuf => "flatgeobuf",
            Format::GeoPackage => "geopackage",
            Format::Shapefile | Format::ShapefileZip => "shapefile",
            Format::TileArchive => "tile archive",
        }
    }
}

/// True for a gzip-compressed file (`.gz`).
pub(super) fn is_gzip(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

/// Opens a file buffered, counting the bytes read into `progress` (whose total it sets).
pub(super) fn open_counted(
    path: &Path,
    progress: &Arc<Progress>,
) -> Result<CountingReader<BufReader<std::fs::File>>, ImportError> {
    let file = std::fs::File::open(path).map_err(|e| ImportError::io(path, e))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    progress
        .total
        .store(len, std::sync::atomic::Ordering::Relaxed);
    Ok(CountingReader::new(
        BufReader::with_capacity(1 << 16, file),
        Arc::clone(progress),
    ))
}

/// Opens a file for streaming, decompressing `.gz`.
pub(super) fn open_stream(
    path: &Path,
    progress: &Arc<Progress>,
) -> Result<Box<dyn Read + Send>, ImportError> {
    let counted = open_counted(path, progress)?;
    Ok(if is_gzip(path) {
        Box::new(flate2::read::MultiGzDecoder::new(counted))
    } else {
        Box::new(counted)
    })
}

/// Tells the format from the file's first bytes, then its extension.
pub fn detect_format(path: &Path) -> Result<Format, ImportError> {
    let meta = std::fs::metadata(path).map_err(|e| ImportError::io(path, e))?;
    if meta.is_dir() {
        return Err(ImportError::UnknownFormat {
            path: path.to_path_buf(),
            message: "is a directory; give the file to import".into(),
        });
    }
    if meta.len() == 0 {
        return Err(ImportError::Empty(path.to_path_buf()));
    }
    let mut head = Vec::with_capacity(65536);
    let dummy = Arc::new(Progress::default());
    open_stream(path, &dummy)?
        .take(65536)
        .read_to_end(&mut head)
        .map_err(|e| ImportError::io(path, e))?;
    if head.is_empty() {
        return Err(ImportError::Empty(path.to_path_buf()));
    }
    let ext = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .map(|n| {
            n.trim_end_matches(".gz")
                .rsplit('.')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    if head.starts_with(b"fgb") && head.len() >= 8 {
        return Ok(Format::FlatGeobuf);
    }
    if head.starts_with(b"PMTiles") {
        return Ok(Format::TileArchive);
    }
    if head.starts_with(b"SQLite format 3\0") {
        return Ok(if crate::store::archive::is_archive(path) {
            Format::TileArchive
        } else {
            Format::GeoPackage
        });
    }
    if head.starts_with(&[0x00, 0x00, 0x27, 0x0a]) {
        return Ok(Format::Shapefile);
    }
    if head.starts_with(b"PK\x03\x04") {
        return Ok(Format::ShapefileZip);
    }
    let text = head
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(&head)
        .trim_ascii_start();
    if text.first() == Some(&b'{') || text.first() == Some(&0x1e) {
        let seq_ext = matches!(
            ext.as_str(),
            "geojsonl" | "geojsons" | "geojsonseq" | "ndjson" | "jsonl"
        );
        return Ok(if seq_ext || geojson::looks_like_sequence(text) {
            Format::GeoJsonSeq
        } else {
            Format::GeoJson
        });
    }
    let what = if ext == "shp" {
        "does not start like a Shapefile (bad file code)".to_string()
    } else if text
        .iter()
        .take(512)
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    {
        format!(
            "is text but not GeoJSON (it starts with {:?})",
            String::from_utf8_lossy(&text[..text.len().min(24)])
        )
    } else {
        "is not a format urbis imports".to_string()
    };
    Err(ImportError::UnknownFormat {
        path: path.to_path_buf(),
        message: format!(
            "{what}; urbis imports GeoJSON (.geojson, .geojsonl), FlatGeobuf (.fgb), GeoPackage (.gpkg) and Shapefile (.shp or .zip)"
        ),
    })
}
