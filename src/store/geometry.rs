//! Geometries on the global grid and their compact encoding in the layer file.
//!
//! Blob layout (all varints LEB128, coordinates zigzag deltas from the previous point, the
//! first from `(0, 0)`):
//!
//! ```text
//! u8      kind | 0x80 if the source was a Multi* geometry  (1 point, 2 line, 3 polygon)
//! varint  number of parts
//! point   per part: dx dy
//! line    per part: varint n, then n × (dx dy)
//! polygon per part: varint rings, per ring: varint n, then n × (dx dy)   (rings stored open)
//! ```

use super::codec::{get_varint, put_varint, unzigzag, zigzag};
use crate::tile::{GridBox, GridPoint};

/// The three geometry families of the layer file (and of MVT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GeomKind {
    /// Point or MultiPoint.
    Point = 1,
    /// LineString or MultiLineString.
    Line = 2,
    /// Polygon or MultiPolygon.
    Polygon = 3,
}

impl GeomKind {
    fn from_byte(b: u8) -> Option<GeomKind> {
        match b & 0x7f {
            1 => Some(GeomKind::Point),
            2 => Some(GeomKind::Line),
            3 => Some(GeomKind::Polygon),
            _ => None,
        }
    }
}

/// A geometry on the grid. `parts` nests uniformly: a point part is `[[p]]`, a line part is
/// `[line]`, a polygon part is its rings (exterior first, rings open: last point ≠ first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridGeometry {
    /// Point, line or polygon.
    pub kind: GeomKind,
    /// Whether the source geometry was a Multi* type.
    pub multi: bool,
    /// The parts; see the type doc for the nesting.
    pub parts: Vec<Vec<Vec<GridPoint>>>,
}

impl GridGeometry {
    /// The bounding box of all coordinates.
    pub fn bbox(&self) -> GridBox {
        let mut b = GridBox::EMPTY;
        for p in self.parts.iter().flatten().flatten() {
            b.extend(*p);
        }
        b
    }

    /// Total number of coordinates.
    pub fn num_coords(&self) -> usize {
        self.parts.iter().flatten().map(Vec::len).sum()
    }

    /// Appends the compact encoding (see the module doc) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.kind as u8 | if self.multi { 0x80 } else { 0 });
        put_varint(out, self.parts.len() as u64);
        let mut prev = [0i64; 2];
        let mut put_pt = |out: &mut Vec<u8>, p: &GridPoint| {
            let (x, y) = (i64::from(p[0]), i64::from(p[1]));
            put_varint(out, zigzag(x - prev[0]));
            put_varint(out, zigzag(y - prev[1]));
            prev = [x, y];
        };
        for part in &self.parts {
            match self.kind {
                GeomKind::Point => {
                    if let Some(p) = part.first().and_then(|r| r.first()) {
                        put_pt(out, p)
                    }
                }
                GeomKind::Line => {
                    let line: &[GridPoint] = part.first().map(Vec::as_slice).unwrap_or(&[]);
                    put_varint(out, line.len() as u64);
                    line.iter().for_each(|p| put_pt(out, p));
                }
                GeomKind::Polygon => {
                    put_varint(out, part.len() as u64);
                    for ring in part {
                        put_varint(out, ring.len() as u64);
                        ring.iter().for_each(|p| put_pt(out, p));
                    }
                }
            }
        }
    }

    /// Decodes a blob written by [`GridGeometry::encode`]; `None` if it is malformed.
    pub fn decode(blob: &[u8]) -> Option<GridGeometry> {
        let mut d = BlobCursor {
            buf: blob,
            pos: 1,
            prev: [0, 0],
        };
        let first = *blob.first()?;
        let kind = GeomKind::from_byte(first)?;
        let nparts = d.count()?;
        let mut parts = Vec::with_capacity(nparts.min(1 << 16));
        for _ in 0..nparts {
            match kind {
                GeomKind::Point => parts.push(vec![vec![d.point()?]]),
                GeomKind::Line => parts.push(vec![d.ring()?]),
                GeomKind::Polygon => {
                    let nrings = d.count()?;
                    let mut rings = Vec::with_capacity(nrings.min(1 << 16));
                    for _ in 0..nrings {
                        rings.push(d.ring()?);
                    }
                    parts.push(rings);
                }
            }
        }
        Some(GridGeometry {
            kind,
            multi: first & 0x80 != 0,
            parts,
        })
    }

    /// The kind stored in a blob's first byte, without decoding the rest.
    pub fn kind_of(blob: &[u8]) -> Option<GeomKind> {
        GeomKind::from_byte(*blob.first()?)
    }
}

/// A geometry decoded into reusable flat buffers: every coordinate in one array and one span
/// per ring or line. Decoding into the same `FlatGeometry` again reuses its memory, so tile
/// generation allocates nothing per feature.
#[derive(Debug, Default, Clone)]
pub struct FlatGeometry {
    /// The kind, once decoded.
    pub kind: Option<GeomKind>,
    /// All coordinates, ring after ring (for points, one per point).
    pub coords: Vec<GridPoint>,
    /// Ring (or line) spans into `coords`: `(part, start, end)`; the first ring of a part is
    /// its exterior.
    pub rings: Vec<(u32, u32, u32)>,
}

impl FlatGeometry {
    /// Decodes `blob` into these buffers; false if the blob is malformed.
    pub fn decode(&mut self, blob: &[u8]) -> bool {
        self.kind = None;
        self.coords.clear();
        self.rings.clear();
        self.decode_inner(blob).is_some()
    }

    fn decode_inner(&mut self, blob: &[u8]) -> Option<()> {
        let kind = GeomKind::from_byte(*blob.first()?)?;
        let mut d = BlobCursor {
            buf: blob,
            pos: 1,
            prev: [0, 0],
        };
        let nparts = d.count()?;
        for part in 0..nparts as u32 {
            match kind {
                GeomKind::Point => {
                    let at = self.coords.len() as u32;
                    self.coords.push(d.point()?);
                    self.rings.push((part, at, at + 1));
                }
                GeomKind::Line => self.ring(&mut d, part)?,
                GeomKind::Polygon => {
                    for _ in 0..d.count()? {
                        self.ring(&mut d, part)?;
                    }
                }
            }
        }
        self.kind = Some(kind);
        Some(())
    }

    fn ring(&mut self, d: &mut BlobCursor, part: u32) -> Option<()> {
        let n = d.count()?;
        let start = self.coords.len() as u32;
        for _ in 0..n {
            self.coords.push(d.point()?);
        }
        self.rings.push((part, start, self.coords.len() as u32));
        Some(())
    }

    /// The coordinates of span `(part, start, end)`.
    pub fn span(&self, r: (u32, u32, u32)) -> &[GridPoint] {
        &self.coords[r.1 as usize..r.2 as usize]
    }
}

struct BlobCursor<'a> {
    buf: &'a [u8],
    pos: usize,
    prev: [i64; 2],
}

impl BlobCursor<'_> {
    fn count(&mut self) -> Option<usize> {
        let n = get_varint(self.buf, &mut self.pos)?;
        // Each counted item takes at least one byte: a larger count is corrupt.
        (n <= self.buf.len() as u64).then_some(n as usize)
    }

    fn point(&mut self) -> Option<GridPoint> {
        let x = self.prev[0] + unzigzag(get_varint(self.buf, &mut self.pos)?);
        let y = self.prev[1] + unzigzag(get_varint(self.buf, &mut self.pos)?);
        self.prev = [x, y];
        Some([u32::try_from(x).ok()?, u32::try_from(y).ok()?])
    }

    fn ring(&mut self) -> Option<Vec<GridPoint>> {
        let n = self.count()?;
        let mut ring = Vec::with_capacity(n);
        for _ in 0..n {
            ring.push(self.point()?);
        }
        Some(ring)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pt() -> impl Strategy<Value = GridPoint> {
        (any::<u32>(), any::<u32>()).prop_map(|(x, y)| [x, y])
    }

    fn geometry() -> impl Strategy<Value = GridGeometry> {
        prop_oneof![
            proptest::collection::vec(pt(), 1..5).prop_map(|ps| GridGeometry {
                kind: GeomKind::Point,
                multi: ps.len() > 1,
                parts: ps.into_iter().map(|p| vec![vec![p]]).collect()
            }),
            proptest::collection::vec(proptest::collection::vec(pt(), 2..8), 1..4).prop_map(|ls| {
                GridGeometry {
                    kind: GeomKind::Line,
                    multi: true,
                    parts: ls.into_iter().map(|l| vec![l]).collect(),
                }
            }),
            proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(pt(), 3..8), 1..3),
                1..3
            )
            .prop_map(|parts| GridGeometry {
                kind: GeomKind::Polygon,
                multi: false,
                parts
            }),
        ]
    }

    proptest! {
        #[test]
        fn encode_decode_is_identity(g in geometry()) {
            let mut blob = Vec::new();
            g.encode(&mut blob);
            prop_assert_eq!(GridGeometry::decode(&blob), Some(g));
        }

        #[test]
        fn flat_decode_agrees_with_nested_decode(g in geometry()) {
            let mut blob = Vec::new();
            g.encode(&mut blob);
            let mut flat = FlatGeometry::default();
            prop_assert!(flat.decode(&blob));
            let rings: Vec<Vec<GridPoint>> = g.parts.iter().flatten().cloned().collect();
            prop_assert_eq!(flat.rings.len(), rings.len());
            for (span, ring) in flat.rings.iter().zip(&rings) {
                prop_assert_eq!(flat.span(*span), &ring[..]);
            }
        }

        #[test]
        fn decode_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = GridGeometry::decode(&bytes);
        }
    }
}
