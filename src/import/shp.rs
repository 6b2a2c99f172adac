//! Shapefile reader: `.shp` geometry through geozero, the `.dbf` attribute table through
//! dbase with the encoding named by the `.cpg` sidecar, the CRS from the `.prj` sidecar. A
//! `.zip` holding the sidecars is read in memory.

use super::source::{Crs, FeatureSink, SourceFeature};
use super::{ImportError, crs};
use crate::store::PropValue;
use dbase::FieldValue;
use geozero::GeomProcessor;
use geozero::geo_types::GeoWriter;
use geozero::shp::ShpReader;
use std::cell::RefCell;
use std::io::{Cursor, Read, Seek};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// The files that make one Shapefile.
pub struct ShapefileParts<T> {
    /// The `.shp` geometry.
    pub shp: T,
    /// The `.dbf` attribute table.
    pub dbf: Option<T>,
    /// The `.prj` CRS definition, as text.
    pub prj: Option<String>,
    /// The `.cpg` code page name.
    pub cpg: Option<String>,
    /// What to call the Shapefile in messages.
    pub name: PathBuf,
}

/// Opens a `.shp` and its sidecars from disk.
pub fn open_files(
    path: &Path,
) -> Result<ShapefileParts<std::io::BufReader<std::fs::File>>, ImportError> {
    let open = |p: &Path| std::fs::File::open(p).map(std::io::BufReader::new);
    let shp = open(path).map_err(|e| ImportError::io(path, e))?;
    let sidecar = |ext: &str| -> Option<PathBuf> {
        [ext.to_string(), ext.to_uppercase()]
            .iter()
            .map(|e| path.with_extension(e))
            .find(|p| p.exists())
    };
    let dbf = match sidecar("dbf") {
        Some(p) => Some(open(&p).map_err(|e| ImportError::io(&p, e))?),
        None => None,
    };
    let text = |ext: &str| {
        sidecar(ext)
            .and_then(|p| std::fs::read(p).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    Ok(ShapefileParts {
        shp,
        dbf,
        prj: text("prj"),
        cpg: text("cpg"),
        name: path.to_path_buf(),
    })
}

/// Largest total an archive may unpack to.
const ZIP_MAX_TOTAL: u64 = 8 << 30;
/// Beyond this an entry must not unpack to more than [`ZIP_MAX_RATIO`] times its packed size.
const ZIP_RATIO_FLOOR: u64 = 64 << 20;
/// Deflate rarely passes 20:1 on GIS data; a zip bomb reaches 1000:1.
const ZIP_MAX_RATIO: u64 = 200;

/// Refuses archives that are not what a Shapefile zip is: entries whose names climb out of
/// the archive (`../`, absolute paths, drive letters), entries that unpack to far more than
/// they hold (a zip bomb), or more than 8 GiB in all. Nothing is unpacked to disk, but such a
/// file is hostile and is named as such.
fn check_zip<R: std::io::Read + std::io::Seek>(
    path: &Path,
    zip: &mut zip::ZipArchive<R>,
) -> Result<(), ImportError> {
    let bad = |message: String| ImportError::Parse {
        path: path.to_path_buf(),
        message,
    };
    let mut total = 0u64;
    for i in 0..zip.len() {
        let f = zip
            .by_index_raw(i)
            .map_err(|e| bad(format!("not a readable zip: {e}")))?;
        let name = f
            .name()
            .map_err(|e| bad(format!("zip entry {i}: unreadable name: {e}")))?
            .to_string();
        let climbs = name.starts_with('/')
            || name.starts_with('\\')
            || name.as_bytes().get(1) == Some(&b':')
            || name.split(['/', '\\']).any(|c| c == "..");
        if climbs {
            return Err(bad(format!(
                "zip entry {name:?} points outside the archive; refused"
            )));
        }
        let (packed, size) = (f.compressed_size(), f.size());
        if size > ZIP_RATIO_FLOOR && size / packed.max(1) > ZIP_MAX_RATIO {
            return Err(bad(format!(
                "zip entry {name:?} unpacks {packed} bytes to {size} (more than {ZIP_MAX_RATIO}:1): a zip bomb, refused"
            )));
        }
        total = total.saturating_add(size);
        if total > ZIP_MAX_TOTAL {
            return Err(bad(format!(
                "the zip unpacks to more than {ZIP_MAX_TOTAL} bytes; refused"
            )));
        }
    }
    Ok(())
}

/// Lists the `.shp` members of a zip (after [`check_zip`]).
pub fn zip_members(path: &Path) -> Result<Vec<String>, ImportError> {
    let file = std::fs::File::open(path).map_err(|e| ImportError::io(path, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| ImportError::Parse {
        path: path.to_path_buf(),
        message: format!("not a readable zip: {e}"),
    })?;
    check_zip(path, &mut zip)?;
    Ok(zip
        .file_names()
        .filter_map(|n| n.ok())
        .filter(|n| n.to_ascii_lowercase().ends_with(".shp"))
        .map(|n| n.into_owned())
        .collect())
}

/// Reads the Shapefile `member` (a `.shp` path inside the zip) and its sidecars into memory.
pub fn open_zip(path: &Path, member: &str) -> Result<ShapefileParts<Cursor<Vec<u8>>>, ImportError> {
    let file = std::fs::File::open(path).map_err(|e| ImportError::io(path, e))?;
    let bad = |e: zip::result::ZipError| ImportError::Parse {
        path: path.to_path_buf(),
        message: format!("cannot read {member} from the zip: {e}"),
    };
    let mut zip = zip::ZipArchive::new(file).map_err(bad)?;
    let stem = &member[..member.len() - 4];
    let mut get = |ext: &str| -> Result<Option<Vec<u8>>, ImportError> {
        let name = zip
            .file_names()
            .filter_map(|n| n.ok())
            .find(|n| {
                n.len() == stem.len() + 4
                    && n.starts_with(stem)
                    && n[stem.len() + 1..].eq_ignore_ascii_case(ext)
            })
            .map(|n| n.into_owned());
        let Some(name) = name else { return Ok(None) };
        let f = zip.by_name(&name).map_err(bad)?;
        // No more than the entry says it holds (a lying header is not read past).
        let size = f.size();
        let mut buf = Vec::new();
        f.take(size.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| ImportError::io(path, e))?;
        Ok(Some(buf))
    };
    let shp = get("shp")?.ok_or_else(|| ImportError::Parse {
        path: path.to_path_buf(),
        message: format!("{member} not found in the zip"),
    })?;
    let dbf = get("dbf")?;
    let prj = get("prj")?.map(|b| String::from_utf8_lossy(&b).into_owned());
    let cpg = get("cpg")?.map(|b| String::from_utf8_lossy(&b).into_owned());
    Ok(ShapefileParts {
        shp: Cursor::new(shp),
        dbf: dbf.map(Cursor::new),
        prj,
        cpg,
        name: path.join(member),
    })
}

fn value(v: FieldValue) -> Option<PropValue> {
    Some(match v {
        FieldValue::Character(s) => PropValue::String(s?.trim_end().to_string()),
        FieldValue::Memo(s) => PropValue::String(s),
        // dBase stores N fields as text; whole numbers are integers in the source's intent.
        FieldValue::Numeric(n) => {
            let n = n?;
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                PropValue::Int(n as i64)
            } else {
                PropValue::Double(n)
            }
        }
        FieldValue::Float(f) => PropValue::Double(f64::from(f?)),
        FieldValue::Logical(b) => PropValue::Bool(b?),
        FieldValue::Integer(i) => PropValue::Int(i64::from(i)),
        FieldValue::Double(d) | FieldValue::Currency(d) => PropValue::Double(d),
        FieldValue::Date(d) => {
            let d = d?;
            PropValue::String(format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day()))
        }
        FieldValue::DateTime(dt) => {
            let (d, t) = (dt.date(), dt.time());
            PropValue::String(format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                d.year(),
                d.month(),
                d.day(),
                t.hours(),
                t.minutes(),
                t.seconds()
            ))
        }
    })
}

/// Reads a Shapefile into `sink`.
///
/// Before geozero and dbase read anything, the `.shp` records and the `.dbf` header are
/// walked and every count checked against the bytes there are: both crates reserve memory
/// for whatever a file claims (a corrupt `.dbf` header size made dbase overflow a capacity in
/// the fuzzer), and a failed allocation aborts the process. Any panic left in those crates is
/// contained and reported as a corrupt file.
pub fn read<T: Read + Seek>(
    mut parts: ShapefileParts<T>,
    sink: &mut dyn FeatureSink,
) -> Result<(), ImportError> {
    let name = parts.name.clone();
    let corrupt = |what: &str, e: String| ImportError::Parse {
        path: name.clone(),
        message: format!("corrupt {what}: {e}"),
    };
    check_shp(&mut parts.shp).map_err(|e| corrupt(".shp", e))?;
    if let Some(dbf) = parts.dbf.as_mut() {
        check_dbf_header(dbf).map_err(|e| corrupt(".dbf", e))?;
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_checked(parts, sink))) {
        Ok(r) => r,
        Err(_) => Err(ImportError::Parse {
            path: name,
            message: "the Shapefile reader failed: the file is corrupt".into(),
        }),
    }
}

fn read_checked<T: Read + Seek>(
    parts: ShapefileParts<T>,
    sink: &mut dyn FeatureSink,
) -> Result<(), ImportError> {
    let name = parts.name.clone();
    let parse = |message: String| ImportError::Parse {
        path: name.clone(),
        message,
    };
    let Some(dbf) = parts.dbf else {
        return Err(ImportError::MissingSidecar {
            path: name.clone(),
            sidecar: "dbf".into(),
            what: "attribute table".into(),
        });
    };
    match &parts.prj {
        Some(prj) => sink.crs(crs::from_wkt(prj).map_err(|crs| ImportError::Crs { crs })?)?,
        None => {
            sink.warn(
                "no .prj sidecar: coordinates assumed to be EPSG:4326 longitude/latitude".into(),
            );
            sink.crs(Crs::Wgs84)?;
        }
    }
    let cpg = parts
        .cpg
        .as_deref()
        .map(|s| s.trim().to_ascii_uppercase())
        .unwrap_or_default();
    // Latin-1 and Windows-1252 agree on every printable character; yore's CP1252 reads both.
    let mut table = if [
        "ISO-8859-1",
        "ISO8859-1",
        "ISO88591",
        "88591",
        "LATIN1",
        "1252",
        "CP1252",
        "ANSI 1252",
        "WINDOWS-1252",
    ]
    .contains(&cpg.as_str())
    {
        dbase::Reader::new_with_encoding(
            dbf,
            dbase::encoding::LossyCodePage(dbase::yore::code_pages::CP1252),
        )
    } else {
        if !cpg.is_empty() && !cpg.starts_with("UTF") {
            sink.warn(format!(
                "unknown .cpg code page '{cpg}': attributes read as UTF-8"
            ));
        }
        dbase::Reader::new_with_encoding(dbf, dbase::encoding::UnicodeLossy)
    }
    .map_err(|e| parse(format!("unreadable .dbf attribute table: {e}")))?;
    let shapes =
        ShpReader::new(parts.shp).map_err(|e| parse(format!("not a readable .shp file: {e}")))?;
    let shared = Rc::new(RefCell::new(GeoWriter::new()));
    let mut geo = SharedGeo(Rc::clone(&shared));
    let mut shape_iter = shapes.iter_geometries(&mut geo);
    let mut records = table.iter_records();
    let mut n: u64 = 0;
    loop {
        let record = records.next();
        let Some(record) = record else { break };
        let record = record.map_err(|e| parse(format!("record #{n} of the .dbf: {e}")))?;
        let shape = match shape_iter.next() {
            Some(Ok(())) => None,
            Some(Err(e)) => Some(format!("{e}")),
            None => {
                return Err(parse(format!(
                    "the .dbf has more records than the .shp has shapes (stopped at #{n}); the files do not match or the .shp is truncated"
                )));
            }
        };
        if let Some(e) = shape {
            return Err(parse(format!(
                "shape #{n}: {e}; the .shp is corrupt or truncated"
            )));
        }
        let geometry = shared.borrow_mut().take_geometry();
        let mut properties: Vec<(String, PropValue)> = record
            .into_iter()
            .filter(|(k, _)| k != "DeletionFlag")
            .filter_map(|(k, v)| Some((k, value(v)?)))
            .collect();
        properties.sort_by(|a, b| a.0.cmp(&b.0));
        sink.feature(SourceFeature {
            geometry,
            id: None,
            properties,
            geometry_error: None,
        })?;
        n += 1;
    }
    Ok(())
}

/// A geometry writer shared between geozero's shape iterator (which holds it mutably for its
/// whole life) and our loop, which takes each shape's geometry as soon as it is read.
struct SharedGeo(Rc<RefCell<GeoWriter>>);

macro_rules! delegate {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(fn $name(&mut self, $($arg: $ty),*) -> geozero::error::Result<()> {
            self.0.borrow_mut().$name($($arg),*)
        })*
    };
}

impl GeomProcessor for SharedGeo {
    delegate! {
        xy(x: f64, y: f64, idx: usize);
        point_begin(idx: usize);
        point_end(idx: usize);
        multipoint_begin(size: usize, idx: usize);
        multipoint_end(idx: usize);
        linestring_begin(tagged: bool, size: usize, idx: usize);
        linestring_end(tagged: bool, idx: usize);
        multilinestring_begin(size: usize, idx: usize);
        multilinestring_end(idx: usize);
        polygon_begin(tagged: bool, size: usize, idx: usize);
        polygon_end(tagged: bool, idx: usize);
        multipolygon_begin(size: usize, idx: usize);
        multipolygon_end(idx: usize);
        geometrycollection_begin(size: usize, idx: usize);
        geometrycollection_end(idx: usize);
    }
}

impl geozero::PropertyProcessor for SharedGeo {}
impl geozero::FeatureProcessor for SharedGeo {}

fn le_i32(b: &[u8], at: usize) -> Option<i64> {
    Some(i64::from(i32::from_le_bytes(
        b.get(at..at + 4)?.try_into().ok()?,
    )))
}

/// Walks the `.shp` records and checks each record's counts against its length.
fn check_shp<T: Read + Seek>(r: &mut T) -> Result<(), String> {
    use std::io::SeekFrom;
    let io = |e: std::io::Error| e.to_string();
    let len = r.seek(SeekFrom::End(0)).map_err(io)?;
    r.seek(SeekFrom::Start(100)).map_err(io)?;
    let mut at = 100u64;
    let mut n = 0u64;
    let mut head = [0u8; 8];
    let mut content = Vec::new();
    while at + 8 <= len {
        r.read_exact(&mut head).map_err(io)?;
        let words = u64::from(u32::from_be_bytes([head[4], head[5], head[6], head[7]]));
        let size = words * 2;
        if at + 8 + size > len {
            return Err(format!(
                "record #{n} at byte {at} claims {size} bytes but the file ends before"
            ));
        }
        content.resize(size as usize, 0);
        r.read_exact(&mut content).map_err(io)?;
        let shape = le_i32(&content, 0).unwrap_or(0);
        let (fixed, per_point) = match shape {
            3 | 5 | 13 | 15 | 23 | 25 | 31 => (44i64, 16i64),
            8 | 18 | 28 => (40, 16),
            _ => (0, 0),
        };
        if fixed > 0 {
            let (parts, points) = if fixed == 44 {
                (
                    le_i32(&content, 36).unwrap_or(-1),
                    le_i32(&content, 40).unwrap_or(-1),
                )
            } else {
                (0, le_i32(&content, 36).unwrap_or(-1))
            };
            let part_bytes = if shape == 31 { 8 } else { 4 };
            if parts < 0
                || points < 0
                || fixed + part_bytes * parts + per_point * points > size as i64
            {
                return Err(format!(
                    "record #{n} claims {parts} parts and {points} points in {size} bytes"
                ));
            }
            // Part start indices must rise within the points (geozero subtracts them).
            let mut prev = 0i64;
            for p in 0..parts as usize {
                let start = le_i32(&content, 44 + 4 * p).unwrap_or(-1);
                if start < prev || start > points || (p == 0 && start != 0) {
                    return Err(format!(
                        "record #{n}: part {p} starts at point {start}, outside 0..={points} or before the previous part"
                    ));
                }
                prev = start;
            }
        }
        at += 8 + size;
        n += 1;
    }
    r.seek(SeekFrom::Start(0)).map_err(io)?;
    Ok(())
}

/// Checks the `.dbf` header's sizes before dbase reads it.
fn check_dbf_header<T: Read + Seek>(r: &mut T) -> Result<(), String> {
    use std::io::SeekFrom;
    let io = |e: std::io::Error| e.to_string();
    let len = r.seek(SeekFrom::End(0)).map_err(io)?;
    r.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut head = [0u8; 32];
    r.read_exact(&mut head)
        .map_err(|_| "shorter than its 32-byte header".to_string())?;
    let records = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
    let header = u64::from(u16::from_le_bytes([head[8], head[9]]));
    let record = u64::from(u16::from_le_bytes([head[10], head[11]]));
    if header < 33 || header > len {
        return Err(format!(
            "header size {header} does not fit a file of {len} bytes"
        ));
    }
    if record == 0 && records > 0 {
        return Err("record size 0".into());
    }
    if header + records.saturating_mul(record) > len + 1 {
        return Err(format!(
            "{records} records of {record} bytes claimed, file holds {len} bytes"
        ));
    }
    r.seek(SeekFrom::Start(0)).map_err(io)?;
    Ok(())
}
