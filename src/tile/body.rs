//! A finished tile as the server sends it: the bytes (gzip-compressed when the client takes
//! gzip), how many features it holds and how many the byte budget dropped, and a strong ETag.
//!
//! Both tile producers make these, the engine (layer files) and the live room (device
//! positions), so it lives here in the pure tile room that both depend on; compressing with
//! gzip is encoding, not I/O.

use bytes::Bytes;
use std::io::Write;

/// A generated tile.
#[derive(Debug, Clone)]
pub struct TileBody {
    /// The bytes (gzip-compressed when asked for).
    pub bytes: Bytes,
    /// Whether `bytes` is gzip.
    pub gzip: bool,
    /// Features in the tile.
    pub features: usize,
    /// Features the byte budget dropped.
    pub dropped: usize,
    /// A strong ETag for these bytes.
    pub etag: String,
}

impl TileBody {
    /// A tile body from raw (uncompressed) tile bytes, gzip-compressed when `gzip` and not
    /// empty, with its ETag.
    ///
    /// ```
    /// use urbis::tile::body::TileBody;
    /// let raw = vec![0x1a, 0x00]; // one empty layer message
    /// let plain = TileBody::new(raw.clone(), false, 1, 0);
    /// let gz = TileBody::new(raw, true, 1, 0);
    /// assert!(gz.gzip && !plain.gzip);
    /// assert_eq!(&gz.bytes[..2], &[0x1f, 0x8b]); // the gzip magic
    /// assert_ne!(plain.etag, gz.etag); // one ETag per representation
    /// ```
    pub fn new(raw: Vec<u8>, gzip: bool, features: usize, dropped: usize) -> TileBody {
        let gzip = gzip && !raw.is_empty();
        let bytes = if gzip { gzip_bytes(&raw) } else { raw };
        let etag = format!(
            "\"{:08x}{:x}{}\"",
            crc32fast::hash(&bytes),
            bytes.len(),
            if gzip { "-gz" } else { "" }
        );
        TileBody {
            bytes: Bytes::from(bytes),
            gzip: gzip && features > 0,
            features,
            dropped,
            etag,
        }
    }
}

fn gzip_bytes(raw: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 3),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(raw);
    enc.finish().unwrap_or_default()
}
