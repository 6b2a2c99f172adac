//! Tile archives as layers: a PMTiles v3 or MBTiles file of vector tiles (ours from
//! `urbis export`, or anyone's: tippecanoe, Planetiler, GDAL) copied into the store by
//! `urbis import` and served tile for tile, as the archive holds them. A version of a layer
//! is an archive when its file starts with the PMTiles magic or is an MBTiles SQLite database;
//! everything else about versions (publishing, rollback, retention) is the store's as for
//! layer files.
//!
//! The PMTiles reader is our own (header, varint directories, leaf directories, run lengths)
//! over a memory map: the `pmtiles` crate's reader is asynchronous only and keeps the header's
//! offsets and the directory entries private, while tiles are made synchronously on the
//! blocking pool. The crate still gives the Hilbert tile ids and checks the header. MBTiles is
//! read with rusqlite (`tiles` rows are TMS: y counted from the south).

use super::StoreError;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

/// What an archive says of itself.
#[derive(Debug, Clone)]
pub struct ArchiveInfo {
    /// `pmtiles` or `mbtiles`.
    pub kind: &'static str,
    /// Lowest zoom held.
    pub minzoom: u8,
    /// Highest zoom held.
    pub maxzoom: u8,
    /// `[west, south, east, north]`, degrees.
    pub bounds: [f64; 4],
    /// TileJSON `vector_layers` from its metadata (may be empty).
    pub vector_layers: Vec<serde_json::Value>,
    /// Attribution from its metadata.
    pub attribution: Option<String>,
    /// Tiles it addresses, when it says.
    pub tiles: u64,
}

/// An open tile archive.
pub struct TileArchive {
    inner: Inner,
    /// Its description.
    pub info: ArchiveInfo,
}

impl std::fmt::Debug for TileArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TileArchive")
            .field("info", &self.info)
            .finish()
    }
}

enum Inner {
    PmTiles {
        map: memmap2::Mmap,
        root: Vec<Entry>,
        leaf_offset: u64,
        data_offset: u64,
        internal_gzip: bool,
    },
    MbTiles(Mutex<rusqlite::Connection>),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    tile_id: u64,
    offset: u64,
    length: u64,
    run_length: u64,
}

const PMTILES_MAGIC: &[u8] = b"PMTiles\x03";
const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";

/// True if the file at `path` is a tile archive (PMTiles v3, or SQLite with an MBTiles
/// `tiles` table and no GeoPackage contents).
pub fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 16];
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    if f.read_exact(&mut head).is_err() {
        return false;
    }
    if head.starts_with(PMTILES_MAGIC) {
        return true;
    }
    head.starts_with(SQLITE_MAGIC) && mbtiles_tables(path).unwrap_or(false)
}

fn mbtiles_tables(path: &Path) -> Result<bool, rusqlite::Error> {
    let db =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let has = |name: &str| -> Result<bool, rusqlite::Error> {
        db.query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = ?1 AND type IN ('table', 'view')",
            [name],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
    };
    Ok(has("tiles")? && has("metadata")? && !has("gpkg_contents")?)
}

fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn gunzip(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b).read_to_end(&mut out).ok()?;
    Some(out)
}

/// A PMTiles directory: entry count, then tile id deltas, run lengths, lengths and offsets
/// (0: right after the previous entry), each a varint column.
fn directory(b: &[u8]) -> Option<Vec<Entry>> {
    let mut at = 0;
    let n = usize::try_from(varint(b, &mut at)?).ok()?;
    if n > b.len() {
        return None;
    }
    let mut entries = vec![
        Entry {
            tile_id: 0,
            offset: 0,
            length: 0,
            run_length: 0
        };
        n
    ];
    let mut id = 0u64;
    for e in entries.iter_mut() {
        id = id.checked_add(varint(b, &mut at)?)?;
        e.tile_id = id;
    }
    for e in entries.iter_mut() {
        e.run_length = varint(b, &mut at)?;
    }
    for e in entries.iter_mut() {
        e.length = varint(b, &mut at)?;
    }
    for i in 0..n {
        let v = varint(b, &mut at)?;
        entries[i].offset = if v == 0 && i > 0 {
            entries[i - 1].offset + entries[i - 1].length
        } else {
            v.checked_sub(1)?
        };
    }
    Some(entries)
}

/// The entry of a directory that holds `id`: its own, a run that covers it, or the leaf
/// directory before it.
fn find(dir: &[Entry], id: u64) -> Option<Entry> {
    match dir.binary_search_by_key(&id, |e| e.tile_id) {
        Ok(i) => Some(dir[i]),
        Err(0) => None,
        Err(i) => {
            let e = dir[i - 1];
            (e.run_length == 0 || id - e.tile_id < e.run_length).then_some(e)
        }
    }
}

fn bad(path: &Path, why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{}: {why}", path.display()))
}

impl TileArchive {
    /// Opens the archive at `path`, checking that it holds vector tiles.
    pub fn open(path: &Path) -> Result<TileArchive, StoreError> {
        let mut head = [0u8; 16];
        std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut head))
            .map_err(|e| StoreError::io(path, e))?;
        if head.starts_with(PMTILES_MAGIC) {
            Self::open_pmtiles(path)
        } else if head.starts_with(SQLITE_MAGIC) {
            Self::open_mbtiles(path)
        } else {
            Err(bad(path, "neither PMTiles v3 nor MBTiles"))
        }
    }

    fn open_pmtiles(path: &Path) -> Result<TileArchive, StoreError> {
        let file = std::fs::File::open(path).map_err(|e| StoreError::io(path, e))?;
        // SAFETY: store files are never modified in place (a new version is a new file).
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| StoreError::io(path, e))?;
        let header = pmtiles::Header::try_from_bytes(bytes::Bytes::copy_from_slice(
            map.get(..127)
                .ok_or_else(|| bad(path, "shorter than a PMTiles header"))?,
        ))
        .map_err(|e| bad(path, e))?;
        if header.tile_type != pmtiles::TileType::Mvt {
            return Err(bad(
                path,
                format!(
                    "holds {:?} tiles; Urbis serves vector tiles (MVT)",
                    header.tile_type
                ),
            ));
        }
        let u = |at: usize| u64::from_le_bytes(map[at..at + 8].try_into().unwrap_or([0; 8]));
        let (root_offset, root_length) = (u(8), u(16));
        let (meta_offset, meta_length) = (u(24), u(32));
        let (leaf_offset, data_offset) = (u(40), u(56));
        let internal_gzip = match header.internal_compression() {
            pmtiles::Compression::None => false,
            pmtiles::Compression::Gzip => true,
            other => {
                return Err(bad(
                    path,
                    format!("directories compressed with {other:?}; gzip or none are read"),
                ));
            }
        };
        let slice = |o: u64, l: u64| -> Result<Vec<u8>, StoreError> {
            let (o, l) = (
                usize::try_from(o).unwrap_or(usize::MAX),
                usize::try_from(l).unwrap_or(usize::MAX),
            );
            let raw = map
                .get(o..o.saturating_add(l))
                .ok_or_else(|| bad(path, "a section lies past the end of the file"))?;
            if internal_gzip {
                gunzip(raw).ok_or_else(|| bad(path, "a directory does not decompress"))
            } else {
                Ok(raw.to_vec())
            }
        };
        let root = directory(&slice(root_offset, root_length)?)
            .ok_or_else(|| bad(path, "the root directory is not well formed"))?;
        let meta: serde_json::Value = if meta_length > 0 {
            serde_json::from_slice(&slice(meta_offset, meta_length)?).unwrap_or_default()
        } else {
            serde_json::Value::Null
        };
        let info = ArchiveInfo {
            kind: "pmtiles",
            minzoom: header.min_zoom,
            maxzoom: header.max_zoom,
            bounds: [
                header.min_longitude,
                header.min_latitude,
                header.max_longitude,
                header.max_latitude,
            ],
            vector_layers: meta["vector_layers"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            attribution: meta["attribution"].as_str().map(str::to_string),
            tiles: header
                .n_addressed_tiles()
                .map_or(0, std::num::NonZeroU64::get),
        };
        Ok(TileArchive {
            inner: Inner::PmTiles {
                map,
                root,
                leaf_offset,
                data_offset,
                internal_gzip,
            },
            info,
        })
    }

    fn open_mbtiles(path: &Path) -> Result<TileArchive, StoreError> {
        let sql = |e: rusqlite::Error| bad(path, e);
        if !mbtiles_tables(path).map_err(sql)? {
            return Err(bad(
                path,
                "an SQLite file without the MBTiles tables (tiles, metadata)",
            ));
        }
        let db = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql)?;
        let meta: std::collections::HashMap<String, String> = db
            .prepare("SELECT name, value FROM metadata")
            .and_then(|mut q| {
                q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                    .collect()
            })
            .map_err(sql)?;
        if let Some(f) = meta.get("format")
            && f != "pbf"
        {
            return Err(bad(
                path,
                format!("holds {f} tiles; Urbis serves vector tiles (format pbf)"),
            ));
        }
        let (lo, hi): (Option<i64>, Option<i64>) = db
            .query_row(
                "SELECT min(zoom_level), max(zoom_level) FROM tiles",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(sql)?;
        let tiles: i64 = db
            .query_row("SELECT count(*) FROM tiles", [], |r| r.get(0))
            .map_err(sql)?;
        let zoom = |key: &str, found: Option<i64>| {
            meta.get(key)
                .and_then(|v| v.parse::<u8>().ok())
                .or(found.and_then(|v| u8::try_from(v).ok()))
                .unwrap_or(0)
        };
        let bounds = meta
            .get("bounds")
            .and_then(|b| {
                let v: Vec<f64> = b.split(',').filter_map(|x| x.trim().parse().ok()).collect();
                <[f64; 4]>::try_from(v).ok()
            })
            .unwrap_or([-180.0, -85.051_129, 180.0, 85.051_129]);
        let json: serde_json::Value = meta
            .get("json")
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default();
        let info = ArchiveInfo {
            kind: "mbtiles",
            minzoom: zoom("minzoom", lo),
            maxzoom: zoom("maxzoom", hi),
            bounds,
            vector_layers: json["vector_layers"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            attribution: meta.get("attribution").cloned(),
            tiles: u64::try_from(tiles).unwrap_or(0),
        };
        Ok(TileArchive {
            inner: Inner::MbTiles(Mutex::new(db)),
            info,
        })
    }

    /// The tile at z/x/y (XYZ, y from the north) as the archive holds it (often gzip), or
    /// `None` when it holds none there.
    pub fn tile(&self, z: u8, x: u32, y: u32) -> Option<Vec<u8>> {
        match &self.inner {
            Inner::PmTiles {
                map,
                root,
                leaf_offset,
                data_offset,
                internal_gzip,
            } => {
                let id = pmtiles::TileId::from(pmtiles::TileCoord::new(z, x, y).ok()?).value();
                let mut leaf: Vec<Entry>;
                let mut dir: &[Entry] = root;
                // The spec allows directories three deep below the root.
                for _ in 0..4 {
                    let e = find(dir, id)?;
                    let at = |base: u64| -> Option<&[u8]> {
                        let o = usize::try_from(base.checked_add(e.offset)?).ok()?;
                        map.get(o..o.checked_add(usize::try_from(e.length).ok()?)?)
                    };
                    if e.run_length > 0 {
                        return at(*data_offset).map(<[u8]>::to_vec);
                    }
                    let raw = at(*leaf_offset)?;
                    leaf = directory(&if *internal_gzip {
                        gunzip(raw)?
                    } else {
                        raw.to_vec()
                    })?;
                    dir = &leaf;
                }
                None
            }
            Inner::MbTiles(db) => {
                let db = db.lock().unwrap_or_else(|e| e.into_inner());
                let row = (1i64 << z)
                    .checked_sub(1 + i64::from(y))
                    .filter(|r| *r >= 0)?;
                db.query_row(
                    "SELECT tile_data FROM tiles WHERE zoom_level = ?1 AND tile_column = ?2 AND tile_row = ?3",
                    rusqlite::params![z, x, row],
                    |r| r.get::<_, Vec<u8>>(0),
                )
                .ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_decode_with_runs_and_implicit_offsets() {
        // Three entries: ids 0, 1, 5; runs 1, 3, 0 (a leaf); lengths 10, 20, 30; offsets
        // 0 (written 1), after the first (0), 100 (written 101).
        let mut b = Vec::new();
        for v in [3u64, 0, 1, 4, 1, 3, 0, 10, 20, 30, 1, 0, 101] {
            let mut v = v;
            loop {
                let byte = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    b.push(byte);
                    break;
                }
                b.push(byte | 0x80);
            }
        }
        let d = directory(&b).unwrap();
        assert_eq!(d[1].offset, 10);
        assert_eq!(d[2].offset, 100);
        assert_eq!(
            find(&d, 3).unwrap().tile_id,
            1,
            "inside the run of 3 from 1"
        );
        assert!(find(&d, 4).is_none(), "past the run");
        assert_eq!(find(&d, 9).unwrap().tile_id, 5, "under the leaf");
        assert!(directory(&[5, 1]).is_none(), "truncated");
    }
}
