//! The output file of the layer writer: sections reserved at their place and written through
//! buffers with their CRC, the section table and header, and sections read back in order.

use super::IO_BUFFER;
use crate::store::rtree::BOX_BYTES;
use crate::store::{FORMAT_VERSION, MAGIC, SectionKind, StoreError};
use crate::tile::GridBox;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;

/// A section table entry.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    pub(super) kind: SectionKind,
    pub(super) zoom: u8,
    pub(super) count: u32,
    pub(super) offset: u64,
    pub(super) len: u64,
    pub(super) crc: u32,
}

/// The output file: where the next section goes and the table so far.
pub(super) struct FileOut<'f> {
    pub(super) file: &'f File,
    pub(super) next: u64,
    pub(super) entries: Vec<Entry>,
}

impl<'f> FileOut<'f> {
    /// Reserves room for a section of `len` bytes (8-byte aligned) and returns its writer.
    pub(super) fn section(
        &mut self,
        kind: SectionKind,
        zoom: u8,
        count: u32,
        len: u64,
    ) -> SectionOut<'f> {
        let offset = self.next;
        self.next += len.next_multiple_of(8);
        SectionOut {
            file: self.file,
            entry: Entry {
                kind,
                zoom,
                count,
                offset,
                len,
                crc: 0,
            },
            written: 0,
            buf: Vec::with_capacity(IO_BUFFER.min(len as usize + 8)),
            crc: crc32fast::Hasher::new(),
        }
    }

    /// Writes a whole section at once.
    pub(super) fn whole(
        &mut self,
        kind: SectionKind,
        zoom: u8,
        count: u32,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let mut s = self.section(kind, zoom, count, bytes.len() as u64);
        s.put(bytes)?;
        let e = s.finish()?;
        self.entries.push(e);
        Ok(())
    }

    pub(super) fn finish(self, header_len: usize, h: &Header) -> Result<u64, StoreError> {
        let mut head = Vec::with_capacity(header_len);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        head.extend_from_slice(&(header_len as u32).to_le_bytes());
        head.extend_from_slice(&h.features.to_le_bytes());
        for v in [h.bbox.min_x, h.bbox.min_y, h.bbox.max_x, h.bbox.max_y] {
            head.extend_from_slice(&v.to_le_bytes());
        }
        head.extend_from_slice(&[h.zooms.minzoom, h.zooms.maxzoom, h.level_count, 0]);
        head.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            head.extend_from_slice(&(e.kind as u16).to_le_bytes());
            head.push(e.zoom);
            head.push(0);
            head.extend_from_slice(&e.count.to_le_bytes());
            head.extend_from_slice(&e.offset.to_le_bytes());
            head.extend_from_slice(&e.len.to_le_bytes());
            head.extend_from_slice(&e.crc.to_le_bytes());
            head.extend_from_slice(&0u32.to_le_bytes());
        }
        let crc = crc32fast::hash(&head);
        head.extend_from_slice(&crc.to_le_bytes());
        if head.len() > header_len {
            return Err(StoreError::Corrupt(
                "section table larger than the reserved header".into(),
            ));
        }
        head.resize(header_len, 0);
        self.file.write_all_at(&head, 0).map_err(io)?;
        self.file.set_len(self.next).map_err(io)?;
        Ok(self.next)
    }
}

pub(super) fn io(e: std::io::Error) -> StoreError {
    StoreError::io(std::path::Path::new("the layer file being written"), e)
}

/// One section being written at its reserved place, through a buffer, with its CRC.
pub(super) struct SectionOut<'f> {
    file: &'f File,
    entry: Entry,
    written: u64,
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
}

impl SectionOut<'_> {
    pub(super) fn put(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.crc.update(bytes);
        if self.buf.len() + bytes.len() > IO_BUFFER {
            self.flush()?;
        }
        if bytes.len() >= IO_BUFFER {
            self.write(bytes)
        } else {
            self.buf.extend_from_slice(bytes);
            Ok(())
        }
    }

    pub(super) fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        if self.written + bytes.len() as u64 > self.entry.len {
            return Err(StoreError::Corrupt(format!(
                "internal: section {:?} outgrew its {} reserved bytes",
                self.entry.kind, self.entry.len
            )));
        }
        self.file
            .write_all_at(bytes, self.entry.offset + self.written)
            .map_err(io)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    pub(super) fn flush(&mut self) -> Result<(), StoreError> {
        let buf = std::mem::take(&mut self.buf);
        self.write(&buf)?;
        self.buf = buf;
        self.buf.clear();
        Ok(())
    }

    /// Writes what is buffered and the padding to 8 bytes; the section's table entry.
    pub(super) fn finish(mut self) -> Result<Entry, StoreError> {
        self.flush()?;
        if self.written != self.entry.len {
            return Err(StoreError::Corrupt(format!(
                "internal: section {:?} got {} of its {} bytes",
                self.entry.kind, self.written, self.entry.len
            )));
        }
        let pad = self.entry.len.next_multiple_of(8) - self.entry.len;
        if pad > 0 {
            self.file
                .write_all_at(&[0u8; 8][..pad as usize], self.entry.offset + self.written)
                .map_err(io)?;
        }
        self.entry.crc = self.crc.finalize();
        Ok(self.entry)
    }
}

pub(super) fn box_bytes(b: &GridBox) -> [u8; BOX_BYTES] {
    let mut out = [0u8; BOX_BYTES];
    for (i, v) in [b.min_x, b.min_y, b.max_x, b.max_y].into_iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// A section of the output file read back in order, through a buffer.
pub(super) struct SectionIn<'f>(BufReader<Window<'f>>);

pub(super) struct Window<'f> {
    file: &'f File,
    pos: u64,
    end: u64,
}

impl Read for Window<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.end - self.pos) as usize;
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl<'f> SectionIn<'f> {
    pub(super) fn new(file: &'f File, e: &Entry) -> SectionIn<'f> {
        SectionIn(BufReader::with_capacity(
            IO_BUFFER,
            Window {
                file,
                pos: e.offset,
                end: e.offset + e.len,
            },
        ))
    }

    pub(super) fn bytes<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut b = [0u8; N];
        self.0
            .read_exact(&mut b)
            .map_err(|e| StoreError::Corrupt(format!("reading a level back: {e}")))?;
        Ok(b)
    }

    pub(super) fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    pub(super) fn grid_box(&mut self) -> Result<GridBox, StoreError> {
        let b: [u8; BOX_BYTES] = self.bytes()?;
        let v = |k: usize| u32::from_le_bytes([b[k], b[k + 1], b[k + 2], b[k + 3]]);
        Ok(GridBox {
            min_x: v(0),
            min_y: v(4),
            max_x: v(8),
            max_y: v(12),
        })
    }

    pub(super) fn append(&mut self, len: usize, out: &mut Vec<u8>) -> Result<(), StoreError> {
        let at = out.len();
        out.resize(at + len, 0);
        self.0
            .read_exact(&mut out[at..])
            .map_err(|e| StoreError::Corrupt(format!("reading a level back: {e}")))
    }
}

pub(super) struct Header {
    pub(super) features: u64,
    pub(super) bbox: GridBox,
    pub(super) zooms: super::ZoomRange,
    pub(super) level_count: u8,
}
