//! What every format reader produces: features in source coordinates, pushed into a sink.

use super::ImportError;
use crate::store::PropValue;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The coordinate reference systems Urbis imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crs {
    /// EPSG:4326 / OGC:CRS84: longitude, latitude in degrees.
    Wgs84,
    /// EPSG:3857: Web Mercator metres.
    WebMercator,
}

impl Crs {
    /// The EPSG name.
    pub fn name(&self) -> &'static str {
        match self {
            Crs::Wgs84 => "EPSG:4326",
            Crs::WebMercator => "EPSG:3857",
        }
    }
}

/// One feature as a format reader found it.
#[derive(Debug, Clone)]
pub struct SourceFeature {
    /// The geometry in source coordinates; `None` for a null geometry.
    pub geometry: Option<geo::Geometry<f64>>,
    /// The feature id, when the format has one and it is a non-negative integer.
    pub id: Option<u64>,
    /// Properties, null values left out.
    pub properties: Vec<(String, PropValue)>,
    /// Set when the reader could not parse this feature's geometry; the text says why.
    pub geometry_error: Option<String>,
}

/// Where readers send what they find. Readers call [`FeatureSink::crs`] before the first
/// feature when the format declares one.
pub trait FeatureSink {
    /// The CRS the following features use.
    fn crs(&mut self, crs: Crs) -> Result<(), ImportError>;
    /// One feature, in source order.
    fn feature(&mut self, feature: SourceFeature) -> Result<(), ImportError>;
    /// A note for the quality report.
    fn warn(&mut self, message: String);
}

/// Progress shared between a reader thread and whoever draws the bar: units done and total
/// (bytes for streamed files, rows for GeoPackage).
#[derive(Debug, Default)]
pub struct Progress {
    /// Units done.
    pub done: AtomicU64,
    /// Units in all (0 when unknown).
    pub total: AtomicU64,
}

/// A reader that counts the bytes it delivers into a [`Progress`].
pub struct CountingReader<R> {
    inner: R,
    progress: Arc<Progress>,
}

impl<R> CountingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, progress: Arc<Progress>) -> Self {
        CountingReader { inner, progress }
    }
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.done.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl<R: std::io::Seek> std::io::Seek for CountingReader<R> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

/// Collects properties from geozero's property callbacks (FlatGeobuf, Shapefile).
#[derive(Debug, Default)]
pub struct PropertyCollector {
    /// What was collected.
    pub properties: Vec<(String, PropValue)>,
    /// Binary columns skipped (MVT cannot carry them).
    pub skipped_binary: bool,
}

impl geozero::PropertyProcessor for PropertyCollector {
    fn property(
        &mut self,
        _idx: usize,
        name: &str,
        value: &geozero::ColumnValue,
    ) -> geozero::error::Result<bool> {
        use geozero::ColumnValue as C;
        let v = match value {
            C::Byte(v) => PropValue::Int(i64::from(*v)),
            C::UByte(v) => PropValue::Int(i64::from(*v)),
            C::Bool(v) => PropValue::Bool(*v),
            C::Short(v) => PropValue::Int(i64::from(*v)),
            C::UShort(v) => PropValue::Int(i64::from(*v)),
            C::Int(v) => PropValue::Int(i64::from(*v)),
            C::UInt(v) => PropValue::Int(i64::from(*v)),
            C::Long(v) => PropValue::Int(*v),
            C::ULong(v) => i64::try_from(*v).map_or(PropValue::Double(*v as f64), PropValue::Int),
            C::Float(v) => PropValue::Double(f64::from(*v)),
            C::Double(v) => PropValue::Double(*v),
            C::String(v) | C::Json(v) | C::DateTime(v) => PropValue::String((*v).to_string()),
            C::Binary(_) => {
                self.skipped_binary = true;
                return Ok(false);
            }
        };
        self.properties.push((name.to_string(), v));
        Ok(false)
    }
}
