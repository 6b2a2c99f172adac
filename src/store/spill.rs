//! External sort of feature records: how the layer builder orders any number of features along
//! the Hilbert curve in bounded memory.
//!
//! Records are buffered in one arena until the buffer reaches its budget; the buffer is then
//! sorted and written as a *run* to an unnamed temporary file in the spill directory (the
//! store itself for imports, so `O_TMPFILE` files vanish with the process, even on `kill -9`).
//! [`Sorter::finish`] merges the runs and what is still buffered, in order. With everything in
//! the buffer nothing touches the disk, and the same code gives the same order either way:
//! the sort key is `(Hilbert key, tie)`, and ties are unique.
//!
//! Written by hand: it is the layer builder's core loop, and the records are borrowed slices of
//! one arena and of the run readers' buffers, which the external-sort crates of the field
//! (owned, serde-encoded items) would copy and allocate per record.

use super::StoreError;
use super::catalog::StagedFile;
use crate::tile::GridBox;
use rayon::prelude::*;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// One feature record on its way into a layer file.
#[derive(Debug, Clone, Copy)]
pub struct Rec<'a> {
    /// Hilbert key of the box centre (see [`super::rtree::hilbert_key`]).
    pub key: u64,
    /// Tie-break among equal keys: the record's position in the input of this sort.
    pub tie: u32,
    /// The feature number the record belongs to.
    pub feature: u32,
    /// The geometry's box.
    pub bbox: GridBox,
    /// The encoded geometry.
    pub geom: &'a [u8],
    /// The encoded property record (empty for levels of detail).
    pub props: &'a [u8],
}

/// Bytes of a record in the arena before its payloads: feature, box, two lengths.
const ARENA_HEAD: usize = 4 + 16 + 4 + 4;
/// Bytes of a record in a run before its payloads: key and tie, then the arena head.
const RUN_HEAD: usize = 8 + 4 + ARENA_HEAD;
/// Bytes the buffer's index costs per record.
const ENTRY_BYTES: usize = std::mem::size_of::<Entry>();

#[derive(Clone, Copy)]
struct Entry {
    key: u64,
    tie: u32,
    at: u64,
}

/// Where runs go: a directory for unnamed temporary files.
#[derive(Debug, Clone)]
pub struct SpillDir(pub PathBuf);

impl SpillDir {
    fn file(&self) -> Result<StagedFile, StoreError> {
        StagedFile::create_in(&self.0)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// What sorting cost on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpillStats {
    /// Sorted runs written.
    pub runs: u64,
    /// Bytes written to runs.
    pub bytes: u64,
}

impl SpillStats {
    /// Adds another sort's cost.
    pub fn add(&mut self, other: SpillStats) {
        self.runs += other.runs;
        self.bytes += other.bytes;
    }
}

/// Sorts records by `(key, tie)` within a memory budget.
pub struct Sorter {
    budget: usize,
    arena: Vec<u8>,
    index: Vec<Entry>,
    runs: Vec<StagedFile>,
    dir: SpillDir,
    count: u64,
    geom_bytes: u64,
    props_bytes: u64,
    stats: SpillStats,
}

impl Sorter {
    /// A sorter that keeps at most about `budget` bytes of records in memory.
    pub fn new(budget: usize, dir: SpillDir) -> Self {
        Sorter {
            budget: budget.max(1 << 16),
            arena: Vec::new(),
            index: Vec::new(),
            runs: Vec::new(),
            dir,
            count: 0,
            geom_bytes: 0,
            props_bytes: 0,
            stats: SpillStats::default(),
        }
    }

    /// Records pushed.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Geometry bytes of all records pushed.
    pub fn geom_bytes(&self) -> u64 {
        self.geom_bytes
    }

    /// Property bytes of all records pushed.
    pub fn props_bytes(&self) -> u64 {
        self.props_bytes
    }

    /// Runs written so far.
    pub fn stats(&self) -> SpillStats {
        self.stats
    }

    /// Adds a record; writes a run when the buffer is over budget.
    pub fn push(&mut self, r: &Rec) -> Result<(), StoreError> {
        let at = self.arena.len() as u64;
        self.arena.extend_from_slice(&r.feature.to_le_bytes());
        put_box(&mut self.arena, &r.bbox);
        self.arena
            .extend_from_slice(&(r.geom.len() as u32).to_le_bytes());
        self.arena
            .extend_from_slice(&(r.props.len() as u32).to_le_bytes());
        self.arena.extend_from_slice(r.geom);
        self.arena.extend_from_slice(r.props);
        self.index.push(Entry {
            key: r.key,
            tie: r.tie,
            at,
        });
        self.count += 1;
        self.geom_bytes += r.geom.len() as u64;
        self.props_bytes += r.props.len() as u64;
        if self.arena.len() + self.index.len() * ENTRY_BYTES >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    fn sort_buffer(&mut self) {
        self.index.par_sort_unstable_by_key(|e| (e.key, e.tie));
    }

    /// Sorts the buffer and writes it as a run.
    fn spill(&mut self) -> Result<(), StoreError> {
        self.sort_buffer();
        let staged = self.dir.file()?;
        let path = self.dir.path();
        let mut w = BufWriter::with_capacity(1 << 20, &staged.file);
        let mut written = 0u64;
        for e in &self.index {
            let rec = arena_record(&self.arena, e.at as usize);
            w.write_all(&e.key.to_le_bytes())
                .and_then(|_| w.write_all(&e.tie.to_le_bytes()))
                .and_then(|_| w.write_all(rec))
                .map_err(|err| StoreError::io(path, err))?;
            written += (12 + rec.len()) as u64;
        }
        w.flush().map_err(|err| StoreError::io(path, err))?;
        drop(w);
        self.runs.push(staged);
        self.stats.runs += 1;
        self.stats.bytes += written;
        self.arena.clear();
        self.index.clear();
        Ok(())
    }

    /// Calls `f` with every record in `(key, tie)` order, merging the runs and the buffer.
    pub fn finish(
        mut self,
        mut f: impl FnMut(&Rec) -> Result<(), StoreError>,
    ) -> Result<SpillStats, StoreError> {
        self.sort_buffer();
        if self.runs.is_empty() {
            for e in &self.index {
                f(&rec_at(&self.arena, e))?;
            }
            return Ok(self.stats);
        }
        // Each run is read through its own buffer; together they stay within the budget.
        let cap = (self.budget / 4 / self.runs.len()).clamp(64 << 10, 4 << 20);
        let path = self.dir.path().to_path_buf();
        let mut readers = Vec::with_capacity(self.runs.len());
        for run in &self.runs {
            let mut file = &run.file;
            file.seek(SeekFrom::Start(0))
                .map_err(|e| StoreError::io(&path, e))?;
            readers.push(RunReader {
                input: BufReader::with_capacity(cap, file),
                buf: Vec::new(),
                key: 0,
                tie: 0,
            });
        }
        let mut heap = BinaryHeap::with_capacity(readers.len() + 1);
        for (i, r) in readers.iter_mut().enumerate() {
            if r.next().map_err(|e| StoreError::io(&path, e))? {
                heap.push(Reverse((r.key, r.tie, i)));
            }
        }
        let memory = readers.len();
        let mut mem_at = 0usize;
        if let Some(e) = self.index.first() {
            heap.push(Reverse((e.key, e.tie, memory)));
        }
        while let Some(Reverse((_, _, i))) = heap.pop() {
            if i == memory {
                let e = &self.index[mem_at];
                f(&rec_at(&self.arena, e))?;
                mem_at += 1;
                if let Some(e) = self.index.get(mem_at) {
                    heap.push(Reverse((e.key, e.tie, memory)));
                }
            } else {
                let r = &mut readers[i];
                f(&r.rec())?;
                if r.next().map_err(|e| StoreError::io(&path, e))? {
                    heap.push(Reverse((r.key, r.tie, i)));
                }
            }
        }
        Ok(self.stats)
    }
}

fn put_box(out: &mut Vec<u8>, b: &GridBox) {
    for v in [b.min_x, b.min_y, b.max_x, b.max_y] {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The arena bytes of the record at `at`: its head and payloads.
fn arena_record(arena: &[u8], at: usize) -> &[u8] {
    let glen = u32_at(arena, at + 20) as usize;
    let plen = u32_at(arena, at + 24) as usize;
    &arena[at..at + ARENA_HEAD + glen + plen]
}

/// Reads a record from its arena head and payloads.
fn parse(key: u64, tie: u32, b: &[u8]) -> Rec<'_> {
    let glen = u32_at(b, 20) as usize;
    let plen = u32_at(b, 24) as usize;
    Rec {
        key,
        tie,
        feature: u32_at(b, 0),
        bbox: GridBox {
            min_x: u32_at(b, 4),
            min_y: u32_at(b, 8),
            max_x: u32_at(b, 12),
            max_y: u32_at(b, 16),
        },
        geom: &b[ARENA_HEAD..ARENA_HEAD + glen],
        props: &b[ARENA_HEAD + glen..ARENA_HEAD + glen + plen],
    }
}

fn rec_at<'a>(arena: &'a [u8], e: &Entry) -> Rec<'a> {
    parse(e.key, e.tie, arena_record(arena, e.at as usize))
}

/// The reading end of one run.
struct RunReader<'f> {
    input: BufReader<&'f File>,
    buf: Vec<u8>,
    key: u64,
    tie: u32,
}

impl RunReader<'_> {
    /// Reads the next record; false at the end of the run.
    fn next(&mut self) -> std::io::Result<bool> {
        let mut head = [0u8; RUN_HEAD];
        match self.input.read_exact(&mut head[..1]) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(e),
        }
        self.input.read_exact(&mut head[1..])?;
        self.key = u64::from_le_bytes(head[0..8].try_into().unwrap_or_default());
        self.tie = u32_at(&head, 8);
        let glen = u32_at(&head, 12 + 20) as usize;
        let plen = u32_at(&head, 12 + 24) as usize;
        self.buf.clear();
        self.buf.extend_from_slice(&head[12..]);
        self.buf.resize(ARENA_HEAD + glen + plen, 0);
        self.input.read_exact(&mut self.buf[ARENA_HEAD..])?;
        Ok(true)
    }

    fn rec(&self) -> Rec<'_> {
        parse(self.key, self.tie, &self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Owned = (u64, u32, u32, Vec<u8>, Vec<u8>);

    fn drain(s: Sorter) -> (Vec<Owned>, SpillStats) {
        let mut out = Vec::new();
        let stats = s
            .finish(|r| {
                out.push((r.key, r.tie, r.feature, r.geom.to_vec(), r.props.to_vec()));
                Ok(())
            })
            .unwrap();
        (out, stats)
    }

    #[test]
    fn spilled_and_in_memory_sorts_agree() {
        let dir = tempfile::tempdir().unwrap();
        let spill = SpillDir(dir.path().to_path_buf());
        let mut small = Sorter::new(0, spill.clone());
        let mut big = Sorter::new(1 << 30, spill);
        for i in 0..20_000u32 {
            let key = u64::from(i.wrapping_mul(2_654_435_761) % 997);
            let geom = vec![(i % 251) as u8; (i % 37) as usize];
            let props = vec![7u8; (i % 5) as usize];
            let r = Rec {
                key,
                tie: i,
                feature: i,
                bbox: GridBox::new(i, i, i + 1, i + 2),
                geom: &geom,
                props: &props,
            };
            small.push(&r).unwrap();
            big.push(&r).unwrap();
        }
        assert!(small.stats().runs > 1);
        let (a, sa) = drain(small);
        let (b, sb) = drain(big);
        assert_eq!(sb.runs, 0);
        assert!(sa.bytes > 0);
        assert_eq!(a.len(), 20_000);
        assert_eq!(a, b);
        assert!(a.windows(2).all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "runs leave no file behind"
        );
    }
}
