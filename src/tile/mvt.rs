//! Mapbox Vector Tile 2.1 encoding: geometry commands, per-layer key/value tables, and the
//! per-tile byte budget.
//!
//! Written over the protobuf types geozero exports rather than with geozero's `MvtWriter` or
//! the `mvt` crate, because neither orients rings, drops degenerate ones or clips (see
//! CRATES.md). Rules enforced here: exterior rings have positive area by the surveyor's
//! formula in tile coordinates (clockwise on screen, y down), holes negative; no repeated
//! consecutive points; rings with fewer than three distinct points or no area and lines with
//! fewer than two points are dropped; keys and values are deduplicated per layer in order of
//! first use, so equal inputs give equal bytes.

use super::clip::TilePoint;
use std::collections::HashMap;

/// Hash maps of the per-tile key and value tables: foldhash instead of SipHash, because value
/// deduplication hashed every property of every feature and SipHash was 9 % of a z14 tile's
/// generation time. Indices come from first use, never from hash order, so output is stable.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// Geometry kinds of a tile feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileGeomKind {
    /// Points.
    Point,
    /// Lines.
    Line,
    /// Polygons.
    Polygon,
}

/// A feature's geometry as MVT commands, with its importance for the byte budget.
#[derive(Debug, Clone, PartialEq)]
pub struct TileGeometry {
    /// The kind.
    pub kind: TileGeomKind,
    /// MVT geometry commands.
    pub commands: Vec<u32>,
    /// Size on screen: area for polygons, length for lines, 0 for points (tile units).
    pub importance: f64,
}

#[inline]
fn command(id: u32, count: usize) -> u32 {
    (id & 7) | ((count as u32) << 3)
}

#[inline]
fn zigzag(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

struct Cursor {
    at: [i32; 2],
}

impl Cursor {
    fn push(&mut self, out: &mut Vec<u32>, p: [i32; 2]) {
        out.push(zigzag(p[0] - self.at[0]));
        out.push(zigzag(p[1] - self.at[1]));
        self.at = p;
    }
}

fn to_i32(p: TilePoint) -> [i32; 2] {
    [p[0] as i32, p[1] as i32]
}

/// Twice the signed area of an open ring (positive = clockwise on screen, y down).
pub fn ring_area2(r: &[[i32; 2]]) -> i64 {
    let n = r.len();
    (0..n)
        .map(|i| {
            let (a, b) = (r[i], r[(i + 1) % n]);
            i64::from(a[0]) * i64::from(b[1]) - i64::from(b[0]) * i64::from(a[1])
        })
        .sum()
}

fn clean(pts: &[TilePoint]) -> Vec<[i32; 2]> {
    let mut v: Vec<[i32; 2]> = pts.iter().map(|p| to_i32(*p)).collect();
    v.dedup();
    v
}

/// Encodes points (already inside the clip box).
impl TileGeometry {
    /// An empty geometry buffer, to be filled by [`TileGeometry::set_points`] and reused
    /// feature after feature without allocating.
    pub fn empty() -> Self {
        TileGeometry {
            kind: TileGeomKind::Point,
            commands: Vec::new(),
            importance: 0.0,
        }
    }

    /// Refills this buffer with points (already inside the clip box); false when there are none.
    pub fn set_points(&mut self, points: impl ExactSizeIterator<Item = TilePoint>) -> bool {
        self.kind = TileGeomKind::Point;
        self.importance = 0.0;
        self.commands.clear();
        if points.len() == 0 {
            return false;
        }
        self.commands.push(command(1, points.len()));
        let mut c = Cursor { at: [0, 0] };
        for p in points {
            c.push(&mut self.commands, to_i32(p));
        }
        true
    }
}

/// Encodes points (already inside the clip box).
pub fn encode_points(points: &[TilePoint]) -> Option<TileGeometry> {
    let mut g = TileGeometry::empty();
    g.set_points(points.iter().copied()).then_some(g)
}

/// Encodes lines (already clipped); drops those that collapse to a point.
pub fn encode_lines(lines: &[Vec<TilePoint>]) -> Option<TileGeometry> {
    let mut out = Vec::new();
    let mut c = Cursor { at: [0, 0] };
    let mut length = 0.0;
    for line in lines {
        let l = clean(line);
        if l.len() < 2 {
            continue;
        }
        out.push(command(1, 1));
        c.push(&mut out, l[0]);
        out.push(command(2, l.len() - 1));
        for w in l.windows(2) {
            length += f64::from(w[1][0] - w[0][0]).hypot(f64::from(w[1][1] - w[0][1]));
            c.push(&mut out, w[1]);
        }
    }
    (!out.is_empty()).then_some(TileGeometry {
        kind: TileGeomKind::Line,
        commands: out,
        importance: length,
    })
}

/// Encodes polygons, each `[exterior, holes...]` as open rings (already clipped), oriented
/// and cleaned per the module rules.
pub fn encode_polygons(polygons: &[Vec<Vec<TilePoint>>]) -> Option<TileGeometry> {
    let mut out = Vec::new();
    let mut c = Cursor { at: [0, 0] };
    let mut area = 0.0;
    for rings in polygons {
        for (i, ring) in rings.iter().enumerate() {
            let mut r = clean(ring);
            if r.len() > 1 && r.first() == r.last() {
                r.pop();
            }
            let a = if r.len() >= 3 { ring_area2(&r) } else { 0 };
            if a == 0 {
                if i == 0 {
                    break; // no exterior: its holes go with it
                }
                continue;
            }
            let exterior = i == 0;
            if (a > 0) != exterior {
                r.reverse();
            }
            if exterior {
                area += a.abs() as f64 / 2.0;
            } else {
                area -= a.abs() as f64 / 2.0;
            }
            out.push(command(1, 1));
            c.push(&mut out, r[0]);
            out.push(command(2, r.len() - 1));
            for p in &r[1..] {
                c.push(&mut out, *p);
            }
            out.push(command(7, 1));
        }
    }
    (!out.is_empty()).then_some(TileGeometry {
        kind: TileGeomKind::Polygon,
        commands: out,
        importance: area.max(0.0),
    })
}

/// A property value as it goes into a tile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TileValue<'a> {
    /// Text.
    String(&'a str),
    /// Whole number (written as `uint` when ≥ 0, `sint` otherwise).
    Int(i64),
    /// Floating point (written as `double`).
    Double(f64),
    /// Boolean.
    Bool(bool),
}

/// Scratch for [`MvtLayer::add_numbered`]: the tile's value index for each layer-wide value
/// number (`u32::MAX`: not in the tile yet), and which entries were set, so that resetting
/// costs what the tile used, not the size of the layer. Kept per thread and reused.
#[derive(Debug, Default)]
pub struct ValueSlots {
    slots: Vec<u32>,
    touched: Vec<u32>,
}

impl ValueSlots {
    /// Makes room for value numbers below `distinct`, and clears what a previous (possibly
    /// interrupted) tile left.
    pub fn prepare(&mut self, distinct: u32) {
        self.reset();
        if self.slots.len() < distinct as usize {
            self.slots.resize(distinct as usize, u32::MAX);
        }
    }

    /// Clears the entries set since the last reset.
    pub fn reset(&mut self) {
        for &t in &self.touched {
            if let Some(s) = self.slots.get_mut(t as usize) {
                *s = u32::MAX;
            }
        }
        self.touched.clear();
    }
}

/// One layer of a tile being built.
///
/// Features, tags and geometry commands are kept in flat arenas and written to protobuf by
/// hand (the field layout of `vector_tile.proto`): building prost structs cost a `Vec` per
/// feature for tags and geometry, and prost computed every feature's length two or three times
/// while nesting messages; together that was about a third of a z14 tile's generation time.
/// The output is checked against prost's decoder (geozero's `Tile`) and Python's
/// `mapbox-vector-tile` in the tests.
///
/// Keys and string values are borrowed (from the memory-mapped layer file) for the life of the
/// layer, not copied: copying each distinct string twice (table and index) was a fifth of a
/// z14 tile's generation time.
pub struct MvtLayer<'a> {
    name: String,
    extent: u32,
    keys: Vec<&'a str>,
    key_index: FastMap<&'a str, u32>,
    /// Tile key of each store key number, for [`MvtLayer::add_indexed`] (`u32::MAX`: none yet).
    key_slots: Vec<u32>,
    values: Vec<TileValue<'a>>,
    str_index: FastMap<&'a str, u32>,
    int_index: FastMap<i64, u32>,
    dbl_index: FastMap<u64, u32>,
    bool_index: [Option<u32>; 2],
    tags: Vec<u32>,
    geoms: Vec<u32>,
    features: Vec<FeatureRec>,
}

#[derive(Debug, Clone, Copy)]
struct FeatureRec {
    id: Option<u64>,
    kind: u32,
    tags: (u32, u32),
    geom: (u32, u32),
    /// Packed (varint) byte lengths of the tags and the geometry, measured once.
    tag_bytes: u32,
    geom_bytes: u32,
    importance: f64,
    rank: u64,
}

/// The encoded layer and what the budget dropped.
#[derive(Debug, Clone, Default)]
pub struct EncodedLayer {
    /// The layer as a complete `Tile` message (tiles concatenate into one valid tile).
    pub bytes: Vec<u8>,
    /// Features kept.
    pub features: usize,
    /// Features dropped to fit the byte budget.
    pub dropped: usize,
}

#[inline]
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `values` as packed varints whose total length is `byte_len` (measured before):
/// the buffer is grown once and filled by index, with one- and two-byte values (most tags and
/// geometry deltas) written without the general loop (about 4 % of a cold z14 tile).
fn put_packed(out: &mut Vec<u8>, values: &[u32], byte_len: usize) {
    let start = out.len();
    out.resize(start + byte_len, 0);
    let buf = &mut out[start..];
    let mut i = 0;
    for &v in values {
        if v < 0x80 {
            buf[i] = v as u8;
            i += 1;
        } else if v < 0x4000 {
            buf[i] = (v as u8) | 0x80;
            buf[i + 1] = (v >> 7) as u8;
            i += 2;
        } else {
            let mut v = v;
            while v >= 0x80 {
                buf[i] = (v as u8) | 0x80;
                v >>= 7;
                i += 1;
            }
            buf[i] = v as u8;
            i += 1;
        }
    }
    debug_assert_eq!(i, byte_len);
}

/// Length of a length-delimited field (tag byte + length varint + body).
#[inline]
fn field_len(body: usize) -> usize {
    1 + varint_len(body as u64) + body
}

fn packed_len(values: &[u32]) -> usize {
    values.iter().map(|&v| varint_len(u64::from(v))).sum()
}

impl TileValue<'_> {
    fn body_len(&self) -> usize {
        match self {
            TileValue::String(s) => field_len(s.len()),
            TileValue::Int(i) if *i >= 0 => 1 + varint_len(*i as u64),
            TileValue::Int(i) => 1 + varint_len(((i << 1) ^ (i >> 63)) as u64),
            TileValue::Double(_) => 9,
            TileValue::Bool(_) => 2,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            TileValue::String(s) => {
                out.push(0x0A);
                put_varint(out, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            TileValue::Int(i) if *i >= 0 => {
                out.push(0x28); // uint_value
                put_varint(out, *i as u64);
            }
            TileValue::Int(i) => {
                out.push(0x30); // sint_value
                put_varint(out, ((i << 1) ^ (i >> 63)) as u64);
            }
            TileValue::Double(d) => {
                out.push(0x19); // double_value
                out.extend_from_slice(&d.to_le_bytes());
            }
            TileValue::Bool(b) => {
                out.push(0x38);
                out.push(u8::from(*b));
            }
        }
    }
}

impl<'a> MvtLayer<'a> {
    /// An empty layer.
    pub fn new(name: &str, extent: u32) -> Self {
        MvtLayer {
            name: name.to_string(),
            extent,
            keys: Vec::new(),
            key_index: FastMap::default(),
            key_slots: Vec::new(),
            values: Vec::new(),
            str_index: FastMap::default(),
            int_index: FastMap::default(),
            dbl_index: FastMap::default(),
            bool_index: [None; 2],
            tags: Vec::new(),
            geoms: Vec::new(),
            features: Vec::new(),
        }
    }

    /// Number of features added.
    pub fn len(&self) -> usize {
        self.features.len()
    }

    /// Makes room for about `features` more features.
    pub fn reserve(&mut self, features: usize) {
        self.features.reserve(features);
        self.tags.reserve(features * 8);
        self.geoms.reserve(features * 4);
        self.int_index.reserve(features);
        self.str_index.reserve(features / 2);
    }

    /// True when no feature was added.
    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    fn key(&mut self, k: &'a str) -> u32 {
        if let Some(&i) = self.key_index.get(k) {
            return i;
        }
        let i = self.keys.len() as u32;
        self.keys.push(k);
        self.key_index.insert(k, i);
        i
    }

    fn key_numbered(&mut self, number: u32, k: &'a str) -> u32 {
        let n = number as usize;
        if n >= self.key_slots.len() {
            self.key_slots.resize(n + 1, u32::MAX);
        }
        if self.key_slots[n] == u32::MAX {
            self.key_slots[n] = self.key(k);
        }
        self.key_slots[n]
    }

    fn value(&mut self, v: TileValue<'a>) -> u32 {
        let next = self.values.len() as u32;
        let slot = match v {
            TileValue::String(s) => self.str_index.entry(s).or_insert(next),
            TileValue::Int(i) => self.int_index.entry(i).or_insert(next),
            TileValue::Double(d) => self.dbl_index.entry(d.to_bits()).or_insert(next),
            TileValue::Bool(b) => self.bool_index[usize::from(b)].get_or_insert(next),
        };
        if *slot == next {
            self.values.push(v);
        }
        *slot
    }

    /// Adds a feature whose property keys carry a stable number (the layer file's key
    /// dictionary index), so keys are matched by number instead of hashed by name. Do not mix
    /// numbering schemes within one layer.
    pub fn add_indexed(
        &mut self,
        id: Option<u64>,
        geometry: &TileGeometry,
        rank: u64,
        props: impl IntoIterator<Item = (u32, &'a str, TileValue<'a>)>,
    ) {
        let start = self.tags.len() as u32;
        for (n, k, v) in props {
            let ki = self.key_numbered(n, k);
            let vi = self.value(v);
            self.tags.push(ki);
            self.tags.push(vi);
        }
        self.push_feature(id, geometry, rank, start);
    }

    /// Adds a feature whose keys are numbered as for [`MvtLayer::add_indexed`] and whose
    /// values carry layer-wide numbers (equal values, equal numbers; see
    /// `LayerReader::value_ids`): values are matched through `slots` by number, with no
    /// hashing. Do not mix with [`MvtLayer::add`] or [`MvtLayer::add_indexed`] in one layer.
    pub fn add_numbered(
        &mut self,
        id: Option<u64>,
        geometry: &TileGeometry,
        rank: u64,
        props: impl IntoIterator<Item = (u32, &'a str, u32, TileValue<'a>)>,
        slots: &mut ValueSlots,
    ) {
        let start = self.tags.len() as u32;
        for (n, k, no, v) in props {
            let ki = self.key_numbered(n, k);
            let vi = match slots.slots.get_mut(no as usize) {
                Some(s) if *s != u32::MAX => *s,
                Some(s) => {
                    let i = self.values.len() as u32;
                    self.values.push(v);
                    *s = i;
                    slots.touched.push(no);
                    i
                }
                None => self.value(v),
            };
            self.tags.push(ki);
            self.tags.push(vi);
        }
        self.push_feature(id, geometry, rank, start);
    }

    /// Adds a feature. `rank` breaks ties between equally important features when the budget
    /// drops some (lower ranks are dropped first).
    pub fn add(
        &mut self,
        id: Option<u64>,
        geometry: TileGeometry,
        rank: u64,
        props: impl IntoIterator<Item = (&'a str, TileValue<'a>)>,
    ) {
        let start = self.tags.len() as u32;
        for (k, v) in props {
            let ki = self.key(k);
            let vi = self.value(v);
            self.tags.push(ki);
            self.tags.push(vi);
        }
        self.push_feature(id, &geometry, rank, start);
    }

    fn push_feature(
        &mut self,
        id: Option<u64>,
        geometry: &TileGeometry,
        rank: u64,
        tags_start: u32,
    ) {
        let kind = match geometry.kind {
            TileGeomKind::Point => 1,
            TileGeomKind::Line => 2,
            TileGeomKind::Polygon => 3,
        };
        let g0 = self.geoms.len() as u32;
        self.geoms.extend_from_slice(&geometry.commands);
        let tag_bytes = packed_len(&self.tags[tags_start as usize..]) as u32;
        self.features.push(FeatureRec {
            id,
            kind,
            tags: (tags_start, self.tags.len() as u32),
            geom: (g0, self.geoms.len() as u32),
            tag_bytes,
            geom_bytes: packed_len(&geometry.commands) as u32,
            importance: geometry.importance,
            rank,
        });
    }

    fn feature_body_len(&self, f: &FeatureRec, tag_map: Option<(&[u32], &[u32])>) -> usize {
        let tags = &self.tags[f.tags.0 as usize..f.tags.1 as usize];
        let tag_bytes = match tag_map {
            None => f.tag_bytes as usize,
            Some((km, vm)) => tags
                .chunks(2)
                .map(|c| {
                    varint_len(u64::from(km[c[0] as usize]))
                        + varint_len(u64::from(vm[c[1] as usize]))
                })
                .sum(),
        };
        f.id.map_or(0, |id| 1 + varint_len(id))
            + if tags.is_empty() {
                0
            } else {
                field_len(tag_bytes)
            }
            + 2
            + field_len(f.geom_bytes as usize)
    }

    /// Encodes the layer. With a budget, the least important features (smallest polygons and
    /// lines, then points by rank) are dropped until the layer fits; unused keys and values go
    /// with them.
    pub fn encode(self, budget: Option<usize>) -> EncodedLayer {
        let total = self.features.len();
        let table_len: usize = self.keys.iter().map(|k| field_len(k.len())).sum::<usize>()
            + self
                .values
                .iter()
                .map(|v| field_len(v.body_len()))
                .sum::<usize>();
        let plain_bodies: Vec<usize> = self
            .features
            .iter()
            .map(|f| self.feature_body_len(f, None))
            .collect();
        let feature_lens: Vec<usize> = plain_bodies.iter().map(|b| field_len(*b)).collect();
        let all: usize = feature_lens.iter().sum();
        let fixed = field_len(self.name.len()) + 2 + 1 + varint_len(u64::from(self.extent)) + 16;
        let mut keep = vec![true; total];
        let mut remap: Option<(Vec<u32>, Vec<u32>)> = None;
        if let Some(limit) = budget
            && fixed + table_len + all > limit
        {
            // Most important first; keep while the worst case (each feature bringing its own
            // keys and values) still fits.
            let mut order: Vec<usize> = (0..total).collect();
            let f = &self.features;
            order.sort_by(|&a, &b| {
                f[b].importance
                    .total_cmp(&f[a].importance)
                    .then(f[b].rank.cmp(&f[a].rank))
                    .then(a.cmp(&b))
            });
            keep = vec![false; total];
            let mut used = fixed;
            for &i in &order {
                let tags = (f[i].tags.1 - f[i].tags.0) as usize;
                let cost = feature_lens[i] + tags * 12;
                if used + cost > limit {
                    break; // everything after is less important
                }
                used += cost;
                keep[i] = true;
            }
            // Renumber the keys and values the kept features use, in order of first use.
            let (mut km, mut vm) = (
                vec![u32::MAX; self.keys.len()],
                vec![u32::MAX; self.values.len()],
            );
            let (mut nk, mut nv) = (0u32, 0u32);
            for (i, fr) in f.iter().enumerate() {
                if !keep[i] {
                    continue;
                }
                for c in self.tags[fr.tags.0 as usize..fr.tags.1 as usize].chunks(2) {
                    if km[c[0] as usize] == u32::MAX {
                        km[c[0] as usize] = nk;
                        nk += 1;
                    }
                    if vm[c[1] as usize] == u32::MAX {
                        vm[c[1] as usize] = nv;
                        nv += 1;
                    }
                }
            }
            remap = Some((km, vm));
        }
        let dropped = keep.iter().filter(|k| !**k).count();
        let maps = remap.as_ref().map(|(k, v)| (k.as_slice(), v.as_slice()));
        // Keys and values in their (new) order.
        let keys: Vec<&str> = match maps {
            None => self.keys.clone(),
            Some((km, _)) => {
                let mut v: Vec<(u32, &str)> = self
                    .keys
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| km[*i] != u32::MAX)
                    .map(|(i, k)| (km[i], *k))
                    .collect();
                v.sort_unstable_by_key(|x| x.0);
                v.into_iter().map(|x| x.1).collect()
            }
        };
        let values: Vec<&TileValue> = match maps {
            None => self.values.iter().collect(),
            Some((_, vm)) => {
                let mut v: Vec<(u32, &TileValue)> = self
                    .values
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| vm[*i] != u32::MAX)
                    .map(|(i, x)| (vm[i], x))
                    .collect();
                v.sort_unstable_by_key(|x| x.0);
                v.into_iter().map(|x| x.1).collect()
            }
        };
        // Without renumbering, the bodies measured above are the ones written.
        let bodies: Vec<usize> = match maps {
            None => plain_bodies,
            Some(_) => self
                .features
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    if keep[i] {
                        self.feature_body_len(f, maps)
                    } else {
                        0
                    }
                })
                .collect(),
        };
        let layer_len = field_len(self.name.len())
            + bodies
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(b, _)| field_len(*b))
                .sum::<usize>()
            + keys.iter().map(|k| field_len(k.len())).sum::<usize>()
            + values
                .iter()
                .map(|v| field_len(v.body_len()))
                .sum::<usize>()
            + 1
            + varint_len(u64::from(self.extent))
            + 2;
        let mut out = Vec::with_capacity(field_len(layer_len));
        out.push(0x1A); // Tile.layers
        put_varint(&mut out, layer_len as u64);
        out.push(0x0A); // Layer.name
        put_varint(&mut out, self.name.len() as u64);
        out.extend_from_slice(self.name.as_bytes());
        let mut kept = 0;
        for (i, f) in self.features.iter().enumerate() {
            if !keep[i] {
                continue;
            }
            kept += 1;
            out.push(0x12); // Layer.features
            put_varint(&mut out, bodies[i] as u64);
            if let Some(id) = f.id {
                out.push(0x08);
                put_varint(&mut out, id);
            }
            let tags = &self.tags[f.tags.0 as usize..f.tags.1 as usize];
            if !tags.is_empty() {
                out.push(0x12); // Feature.tags, packed
                match maps {
                    None => {
                        put_varint(&mut out, u64::from(f.tag_bytes));
                        put_packed(&mut out, tags, f.tag_bytes as usize);
                    }
                    Some((km, vm)) => {
                        let mapped: Vec<u32> = tags
                            .chunks(2)
                            .flat_map(|c| [km[c[0] as usize], vm[c[1] as usize]])
                            .collect();
                        put_varint(&mut out, packed_len(&mapped) as u64);
                        mapped
                            .iter()
                            .for_each(|&t| put_varint(&mut out, u64::from(t)));
                    }
                }
            }
            out.push(0x18); // Feature.type
            out.push(f.kind as u8);
            let geom = &self.geoms[f.geom.0 as usize..f.geom.1 as usize];
            out.push(0x22); // Feature.geometry, packed
            put_varint(&mut out, u64::from(f.geom_bytes));
            put_packed(&mut out, geom, f.geom_bytes as usize);
        }
        for k in &keys {
            out.push(0x1A); // Layer.keys
            put_varint(&mut out, k.len() as u64);
            out.extend_from_slice(k.as_bytes());
        }
        for v in &values {
            out.push(0x22); // Layer.values
            put_varint(&mut out, v.body_len() as u64);
            v.write(&mut out);
        }
        out.push(0x28); // Layer.extent
        put_varint(&mut out, u64::from(self.extent));
        out.push(0x78); // Layer.version = 2
        out.push(2);
        debug_assert_eq!(out.len(), field_len(layer_len));
        EncodedLayer {
            bytes: out,
            features: kept,
            dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geozero::mvt::{Message, Tile};

    fn decode(bytes: &[u8]) -> Tile {
        Tile::decode(bytes).unwrap()
    }

    #[test]
    fn exterior_is_clockwise_and_hole_counter_clockwise_on_screen() {
        // Given counter-clockwise exterior and clockwise hole (on screen), both get flipped.
        let ext = vec![[0, 0], [0, 100], [100, 100], [100, 0]];
        let hole = vec![[10, 10], [20, 10], [20, 20], [10, 20]];
        let g = encode_polygons(&[vec![ext, hole]]).unwrap();
        // Decode the two rings back and check the signs.
        let rings = decode_rings(&g.commands);
        assert_eq!(rings.len(), 2);
        assert!(ring_area2(&rings[0]) > 0, "exterior must be positive");
        assert!(ring_area2(&rings[1]) < 0, "hole must be negative");
        assert_eq!(g.importance, 10_000.0 - 100.0);
    }

    #[test]
    fn degenerate_rings_and_repeated_points_go() {
        let flat = vec![[0, 0], [10, 0], [20, 0]];
        assert!(encode_polygons(&[vec![flat]]).is_none());
        let g = encode_lines(&[vec![[0, 0], [0, 0], [5, 5], [5, 5]]]).unwrap();
        assert_eq!(g.commands, vec![command(1, 1), 0, 0, command(2, 1), 10, 10]);
        assert!(encode_lines(&[vec![[3, 3], [3, 3]]]).is_none());
    }

    #[test]
    fn keys_and_values_are_shared_between_features() {
        let mut l = MvtLayer::new("roads", 4096);
        for i in 0..3 {
            l.add(
                Some(i),
                encode_points(&[[i as i64, 0]]).unwrap(),
                i,
                [
                    ("class", TileValue::String("primary")),
                    ("lanes", TileValue::Int(2)),
                ],
            );
        }
        let t = decode(&l.encode(None).bytes);
        let layer = &t.layers[0];
        assert_eq!(layer.keys, ["class", "lanes"]);
        assert_eq!(layer.values.len(), 2);
        assert_eq!(layer.features.len(), 3);
        assert_eq!(layer.features[2].id, Some(2));
        assert_eq!(layer.features[2].tags, vec![0, 0, 1, 1]);
    }

    #[test]
    fn tile_over_budget_drops_smallest_features_first() {
        let mut l = MvtLayer::new("buildings", 4096);
        for i in 0..400i64 {
            let s = 10 + i; // growing squares: feature i has area (10 + i)^2
            let ring = vec![[0, 0], [s, 0], [s, s], [0, s]];
            l.add(
                Some(i as u64),
                encode_polygons(&[vec![ring]]).unwrap(),
                0,
                [("name", TileValue::String("x"))],
            );
        }
        let full = l.encode(None);
        let mut l2 = MvtLayer::new("buildings", 4096);
        for i in 0..400i64 {
            let s = 10 + i;
            let ring = vec![[0, 0], [s, 0], [s, s], [0, s]];
            l2.add(
                Some(i as u64),
                encode_polygons(&[vec![ring]]).unwrap(),
                0,
                [("name", TileValue::String("x"))],
            );
        }
        let budget = full.bytes.len() / 2;
        let cut = l2.encode(Some(budget));
        assert!(cut.bytes.len() <= budget, "{} > {budget}", cut.bytes.len());
        assert!(cut.dropped > 0 && cut.dropped + cut.features == 400);
        let ids: Vec<u64> = decode(&cut.bytes).layers[0]
            .features
            .iter()
            .filter_map(|f| f.id)
            .collect();
        assert!(
            ids.iter().all(|&id| id >= cut.dropped as u64),
            "the smallest went first: {ids:?}"
        );
    }

    fn decode_lines(cmds: &[u32]) -> Vec<Vec<[i32; 2]>> {
        let (mut i, mut at, mut lines) = (0, [0i32, 0], Vec::new());
        let unzz = |v: u32| ((v >> 1) as i32) ^ -((v & 1) as i32);
        while i < cmds.len() {
            let (id, count) = (cmds[i] & 7, cmds[i] >> 3);
            i += 1;
            if id == 1 {
                lines.push(Vec::new());
            }
            for _ in 0..count {
                at = [at[0] + unzz(cmds[i]), at[1] + unzz(cmds[i + 1])];
                i += 2;
                if let Some(l) = lines.last_mut() {
                    l.push(at);
                }
            }
        }
        lines
    }

    use proptest::prelude::*;

    fn coord() -> impl Strategy<Value = i64> {
        -64i64..4160
    }

    /// A convex polygon (points on a circle at increasing angles), positive area on screen.
    fn convex_ring() -> impl Strategy<Value = Vec<[i64; 2]>> {
        (
            200i64..3900,
            200i64..3900,
            20i64..190,
            proptest::collection::btree_set(0u32..360, 3..24),
        )
            .prop_map(|(cx, cy, r, angles)| {
                let mut ring: Vec<[i64; 2]> = angles
                    .into_iter()
                    .map(|a| {
                        let t = f64::from(a).to_radians();
                        [
                            cx + (r as f64 * t.cos()).round() as i64,
                            cy + (r as f64 * t.sin()).round() as i64,
                        ]
                    })
                    .collect();
                ring.dedup();
                if ring.len() > 1 && ring.first() == ring.last() {
                    ring.pop();
                }
                ring
            })
    }

    proptest! {
        #[test]
        fn points_encode_then_decode_to_themselves(pts in proptest::collection::vec((coord(), coord()).prop_map(|(x, y)| [x, y]), 1..50)) {
            let g = encode_points(&pts).unwrap();
            let back: Vec<[i64; 2]> = decode_lines(&g.commands).concat().iter().map(|p| [i64::from(p[0]), i64::from(p[1])]).collect();
            prop_assert_eq!(back, pts);
        }

        #[test]
        fn lines_encode_then_decode_to_themselves(lines in proptest::collection::vec(proptest::collection::vec((coord(), coord()).prop_map(|(x, y)| [x, y]), 2..30), 1..5)) {
            let mut valid: Vec<Vec<[i64; 2]>> = lines.into_iter().map(|mut l| { l.dedup(); l }).filter(|l| l.len() >= 2).collect();
            valid.retain(|l| !l.is_empty());
            prop_assume!(!valid.is_empty());
            let g = encode_lines(&valid).unwrap();
            let back: Vec<Vec<[i64; 2]>> = decode_lines(&g.commands).into_iter().map(|l| l.iter().map(|p| [i64::from(p[0]), i64::from(p[1])]).collect()).collect();
            prop_assert_eq!(back, valid);
        }

        #[test]
        fn valid_polygons_encode_then_decode_to_themselves(ring in convex_ring()) {
            let a = ring_area2(&ring.iter().map(|p| [p[0] as i32, p[1] as i32]).collect::<Vec<_>>());
            prop_assume!(ring.len() >= 3 && a > 0);
            let g = encode_polygons(&[vec![ring.clone()]]).unwrap();
            let back = decode_rings(&g.commands);
            prop_assert_eq!(back.len(), 1);
            prop_assert_eq!(back[0].iter().map(|p| [i64::from(p[0]), i64::from(p[1])]).collect::<Vec<_>>(), ring);
        }

        #[test]
        fn layer_properties_survive_a_protobuf_round_trip(vals in proptest::collection::vec((any::<i64>(), any::<bool>(), "[a-z]{0,8}", -1e9f64..1e9), 1..20)) {
            let mut l = MvtLayer::new("t", 4096);
            for (i, (n, b, s, d)) in vals.iter().enumerate() {
                l.add(Some(i as u64), encode_points(&[[1, 1]]).unwrap(), 0, [("n", TileValue::Int(*n)), ("b", TileValue::Bool(*b)), ("s", TileValue::String(s)), ("d", TileValue::Double(*d))]);
            }
            let t = decode(&l.encode(None).bytes);
            let layer = &t.layers[0];
            for (i, (n, b, s, d)) in vals.iter().enumerate() {
                let f = &layer.features[i];
                prop_assert_eq!(f.id, Some(i as u64));
                let get = |k: &str| {
                    let ki = layer.keys.iter().position(|x| x == k).unwrap() as u32;
                    let pos = f.tags.chunks(2).find(|c| c[0] == ki).unwrap()[1];
                    layer.values[pos as usize].clone()
                };
                let nv = get("n");
                prop_assert_eq!(nv.uint_value.map(|u| u as i64).or(nv.sint_value), Some(*n));
                prop_assert_eq!(get("b").bool_value, Some(*b));
                prop_assert_eq!(get("s").string_value, Some(s.clone()));
                prop_assert_eq!(get("d").double_value, Some(*d));
            }
        }
    }

    /// Reads polygon rings back from commands (test helper).
    fn decode_rings(cmds: &[u32]) -> Vec<Vec<[i32; 2]>> {
        let (mut i, mut at, mut rings) = (0, [0i32, 0], Vec::new());
        let unzz = |v: u32| ((v >> 1) as i32) ^ -((v & 1) as i32);
        let mut cur = Vec::new();
        while i < cmds.len() {
            let (id, count) = (cmds[i] & 7, cmds[i] >> 3);
            i += 1;
            if id == 7 {
                rings.push(std::mem::take(&mut cur));
                continue;
            }
            for _ in 0..count {
                at = [at[0] + unzz(cmds[i]), at[1] + unzz(cmds[i + 1])];
                i += 2;
                cur.push(at);
            }
        }
        rings
    }
}
