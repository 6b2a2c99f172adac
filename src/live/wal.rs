//! The write-ahead log of the live layer: every accepted report, geofence change and event,
//! in order, in segment files that are also the position history.
//!
//! ```text
//! DIR/wal/SEQ.log     segments, named by the first sequence number they hold (20 digits),
//!                     rolled at a size (default SEGMENT_BYTES); deleted by retention once older than the
//!                     retention period and covered by a snapshot
//! frame  = len u32 LE | crc32 u32 LE (of body) | body
//! body   = kind u8 | seq u64 | fields of the kind (below), little endian
//! str    = len u16 | UTF-8 bytes
//! 1 report      recv_ms i64 | t f64 | flags u8 (1 position, 2 late) | lon f64 | lat f64 |
//!               device str | n u16 | n × (name str | value f64)
//! 2 fence event t f64 | kind u8 (0 enter, 1 exit, 2 cross) | fence str | device str |
//!               lon f64 | lat f64
//! 3 fence put   json (len u32 | bytes)
//! 4 fence del   id str
//! 5 state       t f64 | state u8 | device str
//! 6 removed     t f64 | device str | layer str | flags u8 (1 position) | lon f64 | lat f64
//! ```
//!
//! A frame whose checksum holds but whose body does not decode (a kind this version does not
//! know: the log of a newer version) is an error, never a torn tail to cut: nothing
//! acknowledged is thrown away by a downgrade.
//!
//! Written by one thread ([`super::Hub`]'s committer), which appends a whole group of frames
//! and calls `fdatasync` once before acknowledging any of them (group commit); an append that
//! fails is cut back off the segment, so the log never holds a refused group. Recovery reads
//! segments in order and stops at the first frame that is short or fails its checksum: a
//! torn write at the tail (a crash mid-append) is cut off there, and since nothing in it was
//! acknowledged, nothing acknowledged is lost.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// A segment is closed and a new one started past this size (by default).
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Largest frame body accepted on reading (a corrupt length beyond it ends the log).
const MAX_FRAME: u32 = 1 << 20;

/// One logged record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A device report.
    Report(ReportRec),
    /// A geofence event.
    FenceEvent {
        /// Device time of the fix that raised it.
        t: f64,
        /// 0 enter, 1 exit, 2 cross.
        kind: u8,
        /// Fence id.
        fence: String,
        /// Device id.
        device: String,
        /// Position `[lon, lat]` of that fix.
        pos: [f64; 2],
    },
    /// A geofence created or replaced (its JSON).
    FencePut(String),
    /// A geofence deleted.
    FenceDel(String),
    /// A device's state changed with time (0 live, 1 sleeping, 2 overdue, 3 lost).
    State {
        /// Server time of the change.
        t: f64,
        /// New state.
        state: u8,
        /// Device id.
        device: String,
    },
    /// A device left the registry (removed, or removed and registered again): its state
    /// starts afresh from this point of the log.
    Removed {
        /// Server time of the removal.
        t: f64,
        /// Device id.
        device: String,
        /// The live layer it was on.
        layer: String,
        /// Its last position, if it had one.
        pos: Option<[f64; 2]>,
    },
}

/// A logged report.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRec {
    /// Server receive time, ms since the epoch.
    pub recv_ms: i64,
    /// Device time, seconds since the epoch.
    pub t: f64,
    /// `[lon, lat]`, if the report had a position.
    pub pos: Option<[f64; 2]>,
    /// Older than the device's last fix: history only.
    pub late: bool,
    /// Device id.
    pub device: String,
    /// Telemetry.
    pub telemetry: Vec<(String, f64)>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
}

impl Record {
    /// Appends this record as one frame with sequence number `seq`.
    pub fn encode(&self, seq: u64, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 8]);
        let body = out.len();
        let kind: u8 = match self {
            Record::Report(_) => 1,
            Record::FenceEvent { .. } => 2,
            Record::FencePut(_) => 3,
            Record::FenceDel(_) => 4,
            Record::State { .. } => 5,
            Record::Removed { .. } => 6,
        };
        out.push(kind);
        out.extend_from_slice(&seq.to_le_bytes());
        match self {
            Record::Report(r) => {
                out.extend_from_slice(&r.recv_ms.to_le_bytes());
                out.extend_from_slice(&r.t.to_le_bytes());
                out.push(u8::from(r.pos.is_some()) | (u8::from(r.late) << 1));
                let p = r.pos.unwrap_or([0.0, 0.0]);
                out.extend_from_slice(&p[0].to_le_bytes());
                out.extend_from_slice(&p[1].to_le_bytes());
                put_str(out, &r.device);
                let n = r.telemetry.len().min(u16::MAX as usize);
                out.extend_from_slice(&(n as u16).to_le_bytes());
                for (k, v) in &r.telemetry[..n] {
                    put_str(out, k);
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            Record::FenceEvent {
                t,
                kind,
                fence,
                device,
                pos,
            } => {
                out.extend_from_slice(&t.to_le_bytes());
                out.push(*kind);
                put_str(out, fence);
                put_str(out, device);
                out.extend_from_slice(&pos[0].to_le_bytes());
                out.extend_from_slice(&pos[1].to_le_bytes());
            }
            Record::FencePut(json) => {
                out.extend_from_slice(&(json.len() as u32).to_le_bytes());
                out.extend_from_slice(json.as_bytes());
            }
            Record::FenceDel(id) => put_str(out, id),
            Record::State { t, state, device } => {
                out.extend_from_slice(&t.to_le_bytes());
                out.push(*state);
                put_str(out, device);
            }
            Record::Removed {
                t,
                device,
                layer,
                pos,
            } => {
                out.extend_from_slice(&t.to_le_bytes());
                put_str(out, device);
                put_str(out, layer);
                out.push(u8::from(pos.is_some()));
                let p = pos.unwrap_or([0.0, 0.0]);
                out.extend_from_slice(&p[0].to_le_bytes());
                out.extend_from_slice(&p[1].to_le_bytes());
            }
        }
        let len = (out.len() - body) as u32;
        let crc = crc32fast::hash(&out[body..]);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes one frame body into (seq, record).
    pub fn decode(body: &[u8]) -> Option<(u64, Record)> {
        let mut c = Cursor { b: body, at: 0 };
        let kind = c.u8()?;
        let seq = c.u64()?;
        let rec = match kind {
            1 => {
                let recv_ms = c.u64()? as i64;
                let t = c.f64()?;
                let flags = c.u8()?;
                let pos = [c.f64()?, c.f64()?];
                let device = c.str()?;
                let n = c.u16()?;
                let mut telemetry = Vec::with_capacity(usize::from(n).min(64));
                for _ in 0..n {
                    telemetry.push((c.str()?, c.f64()?));
                }
                Record::Report(ReportRec {
                    recv_ms,
                    t,
                    pos: (flags & 1 != 0).then_some(pos),
                    late: flags & 2 != 0,
                    device,
                    telemetry,
                })
            }
            2 => Record::FenceEvent {
                t: c.f64()?,
                kind: c.u8()?,
                fence: c.str()?,
                device: c.str()?,
                pos: [c.f64()?, c.f64()?],
            },
            3 => {
                let n = c.u32()? as usize;
                Record::FencePut(String::from_utf8(c.take(n)?.to_vec()).ok()?)
            }
            4 => Record::FenceDel(c.str()?),
            5 => Record::State {
                t: c.f64()?,
                state: c.u8()?,
                device: c.str()?,
            },
            6 => {
                let t = c.f64()?;
                let device = c.str()?;
                let layer = c.str()?;
                let has = c.u8()? != 0;
                let p = [c.f64()?, c.f64()?];
                Record::Removed {
                    t,
                    device,
                    layer,
                    pos: has.then_some(p),
                }
            }
            _ => return None,
        };
        (c.at == body.len()).then_some((seq, rec))
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn f64(&mut self) -> Option<f64> {
        Some(f64::from_bits(self.u64()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = usize::from(self.u16()?);
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

/// The segments of a log directory, oldest first, as (first seq, path).
pub fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd {
                let e = e?;
                let name = e.file_name();
                let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".log")) else {
                    continue;
                };
                if let Ok(seq) = stem.parse::<u64>() {
                    out.push((seq, e.path()));
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    out.sort();
    Ok(out)
}

/// Reads every valid frame of one segment; returns the byte length of the valid prefix.
pub fn read_segment(path: &Path, f: impl FnMut(u64, Record)) -> io::Result<u64> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    read_frames(&bytes, f)
}

/// Reads the frames of a buffer (a segment, or a message of the cluster's shared log) up to
/// the first that is short or fails its checksum; returns the length of that valid prefix.
pub fn read_frames(bytes: &[u8], mut f: impl FnMut(u64, Record)) -> io::Result<u64> {
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or([0; 4]));
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap_or([0; 4]));
        if len == 0 || len > MAX_FRAME || at + 8 + len as usize > bytes.len() {
            break;
        }
        let body = &bytes[at + 8..at + 8 + len as usize];
        if crc32fast::hash(body) != crc {
            break;
        }
        let Some((seq, rec)) = Record::decode(body) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "record of kind {} at byte {at} has a good checksum but cannot be read: \
                     written by a newer version of urbis? (nothing was cut)",
                    body.first().copied().unwrap_or(0)
                ),
            ));
        };
        f(seq, rec);
        at += 8 + len as usize;
    }
    Ok(at as u64)
}

/// The open log, appended to by one thread.
pub struct Wal {
    dir: PathBuf,
    file: File,
    seg_len: u64,
    segment_bytes: u64,
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Wal {
    /// Opens the log for appending after recovery: `valid_len` is the valid prefix of the last
    /// segment (anything after it, a torn write, is cut off), `next_seq` the next number.
    pub fn open(
        dir: &Path,
        last: Option<(PathBuf, u64)>,
        next_seq: u64,
        segment_bytes: u64,
    ) -> io::Result<Wal> {
        std::fs::create_dir_all(dir)?;
        let (file, seg_len) = match last {
            Some((path, valid)) if valid < segment_bytes => {
                let mut f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(valid)?;
                f.sync_all()?;
                f.seek(io::SeekFrom::Start(valid))?;
                (f, valid)
            }
            _ => (Self::create_segment(dir, next_seq)?, 0),
        };
        Ok(Wal {
            dir: dir.to_path_buf(),
            file,
            seg_len,
            segment_bytes,
        })
    }

    fn create_segment(dir: &Path, first_seq: u64) -> io::Result<File> {
        let path = dir.join(format!("{first_seq:020}.log"));
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        f.sync_all()?;
        sync_dir(dir)?;
        Ok(f)
    }

    /// Closes the current segment and starts a new one at `next_seq` (nothing to do when the
    /// current one is empty).
    pub fn roll(&mut self, next_seq: u64) -> io::Result<()> {
        if self.seg_len == 0 {
            return Ok(());
        }
        self.file.sync_all()?;
        self.file = Self::create_segment(&self.dir, next_seq)?;
        self.seg_len = 0;
        Ok(())
    }

    /// Appends encoded frames (whose first sequence number is `first_seq`); when `durable`,
    /// makes them durable (`fdatasync`) before returning. (In cluster mode the log is a local
    /// copy of the shared one, rebuilt from it on start: it needs no sync.)
    pub fn append(&mut self, frames: &[u8], first_seq: u64, durable: bool) -> io::Result<()> {
        if self.seg_len >= self.segment_bytes {
            self.file.sync_all()?;
            self.file = Self::create_segment(&self.dir, first_seq)?;
            self.seg_len = 0;
        }
        if let Err(e) = self.file.write_all(frames).and_then(|()| {
            if durable {
                self.file.sync_data()
            } else {
                Ok(())
            }
        }) {
            // Nothing of a group that is not acknowledged stays in the log, where recovery
            // would find its whole frames: cut the segment back to where the group began.
            // (If even that fails, the hub is out of service anyway and an operator decides.)
            let _ = self
                .file
                .set_len(self.seg_len)
                .and_then(|()| self.file.seek(io::SeekFrom::Start(self.seg_len)))
                .and_then(|_| self.file.sync_data());
            return Err(e);
        }
        self.seg_len += frames.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        vec![
            Record::Report(ReportRec {
                recv_ms: 1_790_000_000_123,
                t: 1_790_000_000.5,
                pos: Some([24.9, 60.1]),
                late: false,
                device: "tr-1".into(),
                telemetry: vec![("battery".into(), 88.0)],
            }),
            Record::Report(ReportRec {
                recv_ms: 1,
                t: 2.0,
                pos: None,
                late: true,
                device: "m-7".into(),
                telemetry: vec![],
            }),
            Record::FenceEvent {
                t: 3.0,
                kind: 2,
                fence: "depot".into(),
                device: "tr-1".into(),
                pos: [1.0, 2.0],
            },
            Record::FencePut("{\"id\":\"x\"}".into()),
            Record::FenceDel("x".into()),
            Record::State {
                t: 4.0,
                state: 3,
                device: "tr-1".into(),
            },
            Record::Removed {
                t: 5.0,
                device: "tr-1".into(),
                layer: "vehicles".into(),
                pos: Some([24.9, 60.1]),
            },
            Record::Removed {
                t: 6.0,
                device: "m-7".into(),
                layer: "meters".into(),
                pos: None,
            },
        ]
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let recs = sample();
        let mut frames = Vec::new();
        for (i, r) in recs.iter().enumerate() {
            r.encode(i as u64 + 1, &mut frames);
        }
        let mut wal = Wal::open(dir.path(), None, 1, SEGMENT_BYTES).unwrap();
        wal.append(&frames, 1, true).unwrap();
        drop(wal);
        let segs = segments(dir.path()).unwrap();
        assert_eq!(segs.len(), 1);
        // A torn write: half a frame more.
        let mut more = Vec::new();
        recs[0].encode(99, &mut more);
        let mut f = OpenOptions::new().append(true).open(&segs[0].1).unwrap();
        f.write_all(&more[..more.len() / 2]).unwrap();
        drop(f);
        let mut got = Vec::new();
        let valid = read_segment(&segs[0].1, |s, r| got.push((s, r))).unwrap();
        assert_eq!(valid, frames.len() as u64);
        assert_eq!(
            got,
            recs.into_iter()
                .enumerate()
                .map(|(i, r)| (i as u64 + 1, r))
                .collect::<Vec<_>>()
        );
        // Reopening cuts the torn tail.
        let wal = Wal::open(
            dir.path(),
            Some((segs[0].1.clone(), valid)),
            7,
            SEGMENT_BYTES,
        )
        .unwrap();
        drop(wal);
        assert_eq!(std::fs::metadata(&segs[0].1).unwrap().len(), valid);
    }

    #[test]
    fn a_flipped_bit_ends_the_log_there() {
        let dir = tempfile::tempdir().unwrap();
        let mut frames = Vec::new();
        for (i, r) in sample().iter().enumerate() {
            r.encode(i as u64 + 1, &mut frames);
        }
        let first_len = {
            let mut one = Vec::new();
            sample()[0].encode(1, &mut one);
            one.len()
        };
        frames[first_len + 12] ^= 0x40;
        let path = dir.path().join("00000000000000000001.log");
        std::fs::write(&path, &frames).unwrap();
        let mut n = 0;
        let valid = read_segment(&path, |_, _| n += 1).unwrap();
        assert_eq!((n, valid), (1, first_len as u64));
    }

    #[test]
    fn a_record_of_an_unknown_kind_is_refused_not_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut frames = Vec::new();
        sample()[0].encode(1, &mut frames);
        // A well-formed frame of a kind this version does not know (a newer version's log).
        let body = [99u8, 2, 0, 0, 0, 0, 0, 0, 0, 7];
        frames.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frames.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        frames.extend_from_slice(&body);
        let path = dir.path().join("00000000000000000001.log");
        std::fs::write(&path, &frames).unwrap();
        let err = read_segment(&path, |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("kind 99"), "{err}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), frames.len() as u64);
    }
}
