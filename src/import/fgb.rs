//! FlatGeobuf reader, through the flatgeobuf crate and geozero.
//!
//! flatgeobuf 6.0.1 can panic on malformed files (slice out of range on inconsistent property
//! columns), so the whole read runs under `catch_unwind` and a panic becomes a clear error.

use super::source::{FeatureSink, PropertyCollector, SourceFeature};
use super::{ImportError, crs};
use flatgeobuf::{FallibleStreamingIterator, FgbReader};
use geozero::{FeatureProperties, ToGeo};
use std::io::{Read, Seek, SeekFrom};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

/// Reads a seekable FlatGeobuf file into `sink`, after checking that every feature's size
/// prefix fits in the file. flatgeobuf 6.0.1 allocates whatever a size prefix claims before
/// reading (a corrupt prefix made the fuzzer's process grow past 4 GB), so the walk refuses
/// such a file first, and names the feature.
pub fn read_seekable<R: Read + Seek>(
    mut input: R,
    path: &Path,
    sink: &mut dyn FeatureSink,
) -> Result<(), ImportError> {
    let parse = |message: String| ImportError::Parse {
        path: path.to_path_buf(),
        message,
    };
    let io = |e: std::io::Error| ImportError::io(path, e);
    let len = input.seek(SeekFrom::End(0)).map_err(io)?;
    input.seek(SeekFrom::Start(0)).map_err(io)?;
    let checked = catch_unwind(AssertUnwindSafe(|| -> Result<(), ImportError> {
        let reader = FgbReader::open(&mut input)
            .map_err(|e| parse(format!("not a readable FlatGeobuf file: {e}")))?;
        let header = reader.header();
        let (count, node_size) = (header.features_count(), header.index_node_size());
        let index = if node_size > 0 && count > 0 {
            let n = usize::try_from(count)
                .map_err(|_| parse(format!("the header claims {count} features")))?;
            flatgeobuf::packed_r_tree::PackedRTree::index_size(n, node_size) as u64
        } else {
            0
        };
        drop(reader);
        let mut at = input.stream_position().map_err(io)?.saturating_add(index);
        let mut n = 0u64;
        while at < len {
            input.seek(SeekFrom::Start(at)).map_err(io)?;
            let mut size = [0u8; 4];
            input.read_exact(&mut size).map_err(|_| {
                parse(format!(
                    "feature #{n}: size prefix cut off at byte {at}; the file is truncated"
                ))
            })?;
            let size = u64::from(u32::from_le_bytes(size));
            if at + 4 + size > len {
                return Err(parse(format!(
                    "feature #{n} at byte {at} claims {size} bytes but only {} remain; the file is truncated or corrupt",
                    len - at - 4
                )));
            }
            at += 4 + size;
            n += 1;
        }
        Ok(())
    }));
    match checked {
        Ok(r) => r?,
        Err(_) => return Err(parse("the FlatGeobuf header is corrupt".into())),
    }
    input.seek(SeekFrom::Start(0)).map_err(io)?;
    read(input, path, sink)
}

/// Reads a FlatGeobuf stream into `sink` (prefer [`read_seekable`] for files).
pub fn read(input: impl Read, path: &Path, sink: &mut dyn FeatureSink) -> Result<(), ImportError> {
    let result = catch_unwind(AssertUnwindSafe(|| read_inner(input, path, sink)));
    match result {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(ImportError::Parse {
                path: path.to_path_buf(),
                message: format!(
                    "the FlatGeobuf reader failed ({what}): the file is corrupt or truncated"
                ),
            })
        }
    }
}

fn read_inner(
    input: impl Read,
    path: &Path,
    sink: &mut dyn FeatureSink,
) -> Result<(), ImportError> {
    let parse = |message: String| ImportError::Parse {
        path: path.to_path_buf(),
        message,
    };
    let reader = FgbReader::open(input)
        .map_err(|e| parse(format!("not a readable FlatGeobuf file: {e}")))?;
    let header = reader.header();
    if let Some(c) = header.crs() {
        let code = c.code();
        if code != 0 {
            let org = c.org().unwrap_or("EPSG");
            if org.eq_ignore_ascii_case("EPSG") {
                sink.crs(crs::from_epsg(i64::from(code)).map_err(|crs| ImportError::Crs { crs })?)?;
            } else {
                return Err(ImportError::Crs {
                    crs: format!("{org}:{code}"),
                });
            }
        } else if let Some(wkt) = c.wkt() {
            sink.crs(crs::from_wkt(wkt).map_err(|crs| ImportError::Crs { crs })?)?;
        }
    }
    let declared = header.features_count();
    let mut iter = reader
        .select_all_seq()
        .map_err(|e| parse(format!("cannot read the features: {e}")))?;
    let mut n: u64 = 0;
    let mut binary_warned = false;
    loop {
        let feature = match iter.next() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return Err(parse(format!(
                    "cannot read feature #{n} of {}: {e}; the file is truncated or corrupt",
                    if declared > 0 {
                        declared.to_string()
                    } else {
                        "?".into()
                    }
                )));
            }
        };
        let mut props = PropertyCollector::default();
        feature
            .process_properties(&mut props)
            .map_err(|e| parse(format!("feature #{n}: unreadable properties: {e}")))?;
        if props.skipped_binary && !binary_warned {
            sink.warn("binary columns skipped (vector tiles cannot carry them)".into());
            binary_warned = true;
        }
        let (geometry, geometry_error) = match feature.geometry() {
            None => (None, None),
            Some(_) => match feature.to_geo() {
                Ok(g) => (Some(g), None),
                Err(e) => (None, Some(e.to_string())),
            },
        };
        sink.feature(SourceFeature {
            geometry,
            id: None,
            properties: props.properties,
            geometry_error,
        })?;
        n += 1;
    }
    if declared > 0 && n != declared {
        return Err(parse(format!(
            "the header promises {declared} features but the file holds {n}; it is truncated"
        )));
    }
    Ok(())
}
