//! The import pipeline: from options to published layers. A file becomes one unit per layer
//! (a GeoPackage table, a Shapefile in a zip, or the whole stream); each unit's reader runs
//! on its own thread and sends batches of features through a bounded channel, and the
//! importing thread prepares each batch in parallel, builds the layer, and publishes it.

use super::detect::{Format, detect_format, is_gzip, open_counted, open_stream};
use super::source::{Crs, FeatureSink, Progress, SourceFeature};
use super::validate::{Prepared, feature_name, geometry_type_name, prepare_watched};
use super::{ImportError, fgb, geojson, gpkg, shp};
use crate::store::catalog::valid_layer_name;
use crate::store::{
    DEFAULT_MEMORY, DropExample, LayerBuilder, LayerMeta, MAX_ZOOM, QualityReport, SourceInfo,
    SpillDir, Store, StoreError, VersionEntry, WriteSummary,
};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Features per batch sent from a reader thread.
const BATCH: usize = 4096;
/// Batches in flight between reader and importer: bounds memory on huge inputs.
const IN_FLIGHT: usize = 4;

/// What to import and how.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The input file.
    pub file: PathBuf,
    /// Layer name (default: the file stem; with several GeoPackage tables, the prefix).
    pub layer: Option<String>,
    /// GeoPackage table or Shapefile inside a zip to import (default: all).
    pub table: Option<String>,
    /// Lowest zoom.
    pub minzoom: u8,
    /// Full-resolution zoom (default: from the data's density).
    pub maxzoom: Option<u8>,
    /// Attribution (licence notice) stored with the layer and shown by map clients.
    pub attribution: Option<String>,
    /// A feature whose checks and repair take longer is dropped and reported (default
    /// [`FEATURE_TIMEOUT`]).
    pub feature_timeout: Option<std::time::Duration>,
    /// Megabytes of features held in memory while the layer is built (default
    /// [`DEFAULT_MEMORY`]); the rest is sorted on disk in the store's staging area.
    pub memory_mb: Option<usize>,
}

/// How long one feature may take to check and repair by default.
pub const FEATURE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// One published layer.
#[derive(Debug, Clone)]
pub struct ImportOutcome {
    /// The layer name.
    pub layer: String,
    /// The published version.
    pub version: VersionEntry,
    /// The data-quality report.
    pub report: QualityReport,
    /// What was written.
    pub summary: WriteSummary,
}

/// Hooks for showing progress; all optional.
pub trait ImportObserver: Sync {
    /// A new phase started for `layer` (`reading`, `building`); `total` units, 0 if unknown.
    fn phase(&self, _layer: &str, _phase: &str, _progress: Option<Arc<Progress>>) {}
    /// A detail line (a level was written).
    fn detail(&self, _message: &str) {}
}

/// An observer that shows nothing.
pub struct Silent;
impl ImportObserver for Silent {}

/// The reader thread's end of the channel: features are sent in batches of [`BATCH`].
struct ChannelSink {
    tx: SyncSender<Msg>,
    batch: Vec<SourceFeature>,
}

/// What a reader thread sends to the importing thread.
enum Msg {
    Crs(Crs),
    Warn(String),
    Batch(Vec<SourceFeature>),
}

impl ChannelSink {
    fn flush(&mut self) -> Result<(), ImportError> {
        if !self.batch.is_empty() {
            let b = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
            self.tx
                .send(Msg::Batch(b))
                .map_err(|_| ImportError::Cancelled)?;
        }
        Ok(())
    }
}

impl FeatureSink for ChannelSink {
    fn crs(&mut self, crs: Crs) -> Result<(), ImportError> {
        self.flush()?;
        self.tx
            .send(Msg::Crs(crs))
            .map_err(|_| ImportError::Cancelled)
    }
    fn feature(&mut self, f: SourceFeature) -> Result<(), ImportError> {
        self.batch.push(f);
        if self.batch.len() >= BATCH {
            self.flush()
        } else {
            Ok(())
        }
    }
    fn warn(&mut self, message: String) {
        let _ = self.tx.send(Msg::Warn(message));
    }
}

/// A unit of import: one layer from one source (a GeoPackage may give several).
enum Unit {
    Stream(Format),
    GpkgTable(gpkg::FeatureTable),
    ZipMember(String),
}

/// Imports `opts.file` into `store`, one layer per unit (a GeoPackage table, a zipped
/// Shapefile), and returns what was published. Nothing is published for a unit that fails.
pub fn import_file(
    store: &Store,
    opts: &ImportOptions,
    observer: &dyn ImportObserver,
) -> Result<Vec<ImportOutcome>, ImportError> {
    let path = opts.file.as_path();
    if opts.maxzoom.is_some_and(|z| z > MAX_ZOOM) || opts.minzoom > MAX_ZOOM {
        return Err(ImportError::Usage(format!(
            "zoom levels go from 0 to {MAX_ZOOM}"
        )));
    }
    if opts.maxzoom.is_some_and(|z| z < opts.minzoom) {
        return Err(ImportError::Usage(
            "--maxzoom must not be below --minzoom".into(),
        ));
    }
    let format = detect_format(path)?;
    let stem = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .map(|n| n.split('.').next().unwrap_or("").to_string())
        .unwrap_or_default();
    let sanitize = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let base = opts.layer.clone().unwrap_or_else(|| sanitize(&stem));
    if matches!(format, Format::TileArchive) {
        return Ok(vec![import_archive(store, path, &base, observer)?]);
    }
    let units: Vec<(String, Unit)> =
        match format {
            Format::GeoPackage => {
                let tables = gpkg::feature_tables(path)?;
                let chosen: Vec<gpkg::FeatureTable> =
                    match &opts.table {
                        Some(t) => vec![tables.iter().find(|x| &x.name == t).cloned().ok_or_else(
                            || {
                                ImportError::UnknownTable {
                                    path: path.to_path_buf(),
                                    table: t.clone(),
                                    available: tables
                                        .iter()
                                        .map(|x| x.name.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", "),
                                }
                            },
                        )?],
                        None => tables,
                    };
                if chosen.is_empty() {
                    return Err(ImportError::Parse {
                        path: path.to_path_buf(),
                        message: "the GeoPackage has no feature tables".into(),
                    });
                }
                let single = chosen.len() == 1;
                chosen
                    .into_iter()
                    .map(|t| {
                        (
                            if single {
                                base.clone()
                            } else {
                                format!("{base}_{}", sanitize(&t.name))
                            },
                            Unit::GpkgTable(t),
                        )
                    })
                    .collect()
            }
            Format::ShapefileZip => {
                let members = shp::zip_members(path)?;
                let chosen: Vec<String> = match &opts.table {
                    Some(t) => members
                        .iter()
                        .filter(|m| {
                            Path::new(m)
                                .file_stem()
                                .is_some_and(|s| s.to_string_lossy() == *t)
                        })
                        .cloned()
                        .collect(),
                    None => members.clone(),
                };
                if chosen.is_empty() {
                    return Err(ImportError::UnknownFormat {
                        path: path.to_path_buf(),
                        message: if members.is_empty() {
                            "the zip holds no .shp file".into()
                        } else {
                            format!(
                                "no Shapefile named '{}' in the zip; it holds: {}",
                                opts.table.clone().unwrap_or_default(),
                                members.join(", ")
                            )
                        },
                    });
                }
                let single = chosen.len() == 1;
                chosen
                    .into_iter()
                    .map(|m| {
                        let s = Path::new(&m)
                            .file_stem()
                            .map(|s| s.to_string_lossy().to_string())
                            .unwrap_or_default();
                        (
                            if single {
                                base.clone()
                            } else {
                                format!("{base}_{}", sanitize(&s))
                            },
                            Unit::ZipMember(m),
                        )
                    })
                    .collect()
            }
            f => vec![(base.clone(), Unit::Stream(f))],
        };
    for (name, _) in &units {
        if !valid_layer_name(name) {
            return Err(StoreError::InvalidName(name.clone()).into());
        }
    }
    let mut outcomes = Vec::new();
    for (name, unit) in units {
        outcomes.push(import_unit(store, opts, format, &name, unit, observer)?);
    }
    Ok(outcomes)
}

/// Publishes a tile archive (PMTiles, MBTiles) as a version of layer `name`: checked that it
/// opens and holds vector tiles, copied into the store, served tile for tile.
fn import_archive(
    store: &Store,
    path: &Path,
    name: &str,
    observer: &dyn ImportObserver,
) -> Result<ImportOutcome, ImportError> {
    use std::io::{Read, Write};
    if !valid_layer_name(name) {
        return Err(StoreError::InvalidName(name.to_string()).into());
    }
    let archive =
        crate::store::archive::TileArchive::open(path).map_err(|e| ImportError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let info = archive.info.clone();
    drop(archive);
    let progress = Arc::new(Progress::default());
    observer.phase(name, "copying", Some(Arc::clone(&progress)));
    let mut from = open_counted(path, &progress)?;
    let mut staged = store.stage()?;
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = from.read(&mut buf).map_err(|e| ImportError::io(path, e))?;
        if n == 0 {
            break;
        }
        staged
            .file
            .write_all(&buf[..n])
            .map_err(|e| ImportError::io(store.dir(), e))?;
        bytes += n as u64;
    }
    let entry = VersionEntry {
        version: 0,
        file: String::new(),
        created: 0,
        features: 0,
        bytes,
        minzoom: info.minzoom,
        maxzoom: info.maxzoom,
        bounds: info.bounds,
        source: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let version = store.publish(staged, name, entry)?;
    observer.detail(&format!(
        "{} archive of {} tiles, z{}-z{}, served as it is",
        info.kind, info.tiles, info.minzoom, info.maxzoom
    ));
    Ok(ImportOutcome {
        layer: name.to_string(),
        version,
        report: QualityReport::default(),
        summary: WriteSummary {
            features: 0,
            bytes,
            zooms: crate::store::writer::ZoomRange {
                minzoom: info.minzoom,
                maxzoom: info.maxzoom,
            },
            level_items: Vec::new(),
            spilled: Default::default(),
        },
    })
}

/// Reads, prepares, builds and publishes one unit as layer `name`.
fn import_unit(
    store: &Store,
    opts: &ImportOptions,
    format: Format,
    name: &str,
    unit: Unit,
    observer: &dyn ImportObserver,
) -> Result<ImportOutcome, ImportError> {
    let path = opts.file.clone();
    let progress = Arc::new(Progress::default());
    let (tx, rx) = sync_channel::<Msg>(IN_FLIGHT);
    let table = match &unit {
        Unit::GpkgTable(t) => Some(t.name.clone()),
        Unit::ZipMember(m) => Some(m.clone()),
        Unit::Stream(_) => None,
    };
    observer.phase(name, "reading", Some(Arc::clone(&progress)));
    let reader_progress = Arc::clone(&progress);
    let reader_path = path.clone();
    let handle = std::thread::Builder::new()
        .name("urbis-import-reader".into())
        .spawn(move || -> Result<(), ImportError> {
            let mut sink = ChannelSink {
                tx,
                batch: Vec::with_capacity(BATCH),
            };
            let p = reader_path.as_path();
            match unit {
                Unit::Stream(Format::GeoJson) => {
                    geojson::read(open_stream(p, &reader_progress)?, p, false, &mut sink)?
                }
                Unit::Stream(Format::GeoJsonSeq) => {
                    geojson::read(open_stream(p, &reader_progress)?, p, true, &mut sink)?
                }
                Unit::Stream(Format::FlatGeobuf) if !is_gzip(p) => {
                    fgb::read_seekable(open_counted(p, &reader_progress)?, p, &mut sink)?
                }
                Unit::Stream(Format::FlatGeobuf) => {
                    fgb::read(open_stream(p, &reader_progress)?, p, &mut sink)?
                }
                Unit::Stream(Format::Shapefile) => {
                    let len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                    reader_progress
                        .total
                        .store(len, std::sync::atomic::Ordering::Relaxed);
                    shp::read(shp::open_files(p)?, &mut sink)?;
                    reader_progress
                        .done
                        .store(len, std::sync::atomic::Ordering::Relaxed);
                }
                Unit::ZipMember(m) => shp::read(shp::open_zip(p, &m)?, &mut sink)?,
                Unit::GpkgTable(t) => gpkg::read_table(p, &t, &reader_progress, &mut sink)?,
                Unit::Stream(_) => {
                    return Err(ImportError::Usage("internal: unit/format mismatch".into()));
                }
            }
            sink.flush()
        })
        .map_err(|e| ImportError::io(&path, e))?;

    let builder = LayerBuilder::with_memory(
        opts.memory_mb.map_or(DEFAULT_MEMORY, |mb| mb.max(1) << 20),
        SpillDir(store.dir().to_path_buf()),
    );
    let collected = collect(rx, builder, opts.feature_timeout.unwrap_or(FEATURE_TIMEOUT));
    let read_result = handle.join().unwrap_or_else(|_| {
        Err(ImportError::Parse {
            path: path.clone(),
            message: "the reader crashed".into(),
        })
    });
    // A failed build stops the reader (its channel closes): that error is the one to tell.
    let (builder, mut report, crs) = collected?;
    read_result?;
    if builder.is_empty() {
        if report.read == 0 {
            return Err(ImportError::Parse {
                path: path.clone(),
                message: "no features found".into(),
            });
        }
        return Err(ImportError::NothingImportable {
            path: path.clone(),
            report: Box::new(report),
        });
    }

    observer.phase(name, "building", None);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    report.warnings.sort();
    report.warnings.dedup();
    let meta = LayerMeta {
        name: name.to_string(),
        source: SourceInfo {
            file: file_name.clone(),
            format: format.name().into(),
            table,
            crs: crs.name().into(),
        },
        created: 0,
        bounds: [0.0; 4],
        fields: Default::default(),
        quality: report.clone(),
        attribution: opts.attribution.clone(),
    };
    let staged = store.stage()?;
    let bounds = builder.bbox().to_lonlat_bounds();
    let summary = builder.write(meta, opts.minzoom, opts.maxzoom, &staged.file, &|m| {
        observer.detail(m)
    })?;
    let entry = VersionEntry {
        features: summary.features,
        bytes: summary.bytes,
        minzoom: summary.zooms.minzoom,
        maxzoom: summary.zooms.maxzoom,
        bounds,
        source: file_name,
        ..Default::default()
    };
    let version = store.publish(staged, name, entry)?;
    Ok(ImportOutcome {
        layer: name.to_string(),
        version,
        report,
        summary,
    })
}

/// Drains the reader's batches: prepares each batch in parallel, appends in source order.
fn collect(
    rx: Receiver<Msg>,
    mut builder: LayerBuilder,
    timeout: std::time::Duration,
) -> Result<(LayerBuilder, QualityReport, Crs), ImportError> {
    let mut report = QualityReport::default();
    let mut crs = Crs::Wgs84;
    for msg in rx {
        match msg {
            Msg::Crs(c) => crs = c,
            Msg::Warn(w) => report.warnings.push(w),
            Msg::Batch(batch) => {
                let prepared: Vec<(Prepared, std::time::Duration)> = batch
                    .par_iter()
                    .map(|f| prepare_watched(f, crs, timeout))
                    .collect();
                for (f, (p, took)) in batch.into_iter().zip(prepared) {
                    let index = report.read;
                    report.note_time(index, || feature_name(&f), took);
                    report.read += 1;
                    *report
                        .geometry_types
                        .entry(geometry_type_name(f.geometry.as_ref()).to_string())
                        .or_default() += 1;
                    match p {
                        Prepared::Kept { geometry, repairs } => {
                            if !repairs.is_empty() {
                                report.repaired += 1;
                                for r in repairs {
                                    *report.repairs.entry(r.to_string()).or_default() += 1;
                                }
                            }
                            report.imported += 1;
                            builder.push(&geometry, f.id, f.properties)?;
                        }
                        Prepared::Dropped { reason, detail } => {
                            *report
                                .dropped
                                .entry(reason.as_str().to_string())
                                .or_default() += 1;
                            if report.examples.len() < QualityReport::MAX_EXAMPLES {
                                report.examples.push(DropExample {
                                    feature: index,
                                    reason: reason.as_str().into(),
                                    detail,
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    Ok((builder, report, crs))
}
