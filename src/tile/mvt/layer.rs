//! One layer of a tile being built: its features, and the key and value tables they share.
//! Keys and values are deduplicated per layer in order of first use, so equal inputs give
//! equal bytes. A feature is added by name ([`MvtLayer::add`], for live tiles) or by the
//! numbers the layer file gives its keys and values ([`MvtLayer::add_numbered`], for stored
//! layers, with no hashing); the layer is then written by `MvtLayer::encode` (in `budget`).

use super::proto::packed_len;
use super::{TileGeomKind, TileGeometry};
use std::collections::HashMap;

/// Hash maps of the per-tile key and value tables: foldhash instead of SipHash, because value
/// deduplication hashed every property of every feature and SipHash was 9 % of a z14 tile's
/// generation time. Indices come from first use, never from hash order, so output is stable.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

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
    pub(super) name: String,
    pub(super) extent: u32,
    /// The key table, in order of first use.
    pub(super) keys: Vec<&'a str>,
    key_index: FastMap<&'a str, u32>,
    /// Tile key of each store key number, for [`MvtLayer::add_numbered`] (`u32::MAX`: none
    /// yet).
    key_slots: Vec<u32>,
    /// The value table, in order of first use.
    pub(super) values: Vec<TileValue<'a>>,
    str_index: FastMap<&'a str, u32>,
    int_index: FastMap<i64, u32>,
    dbl_index: FastMap<u64, u32>,
    bool_index: [Option<u32>; 2],
    /// Every feature's tags (key index, value index, ...), one run per feature.
    pub(super) tags: Vec<u32>,
    /// Every feature's geometry commands, one run per feature.
    pub(super) geoms: Vec<u32>,
    pub(super) features: Vec<FeatureRec>,
}

/// A feature of the layer: where its tags and commands lie in the arenas, and what the budget
/// needs to rank it.
#[derive(Debug, Clone, Copy)]
pub(super) struct FeatureRec {
    pub(super) id: Option<u64>,
    /// `Tile.GeomType`: 1 point, 2 line, 3 polygon.
    pub(super) kind: u32,
    /// Range in the layer's `tags`.
    pub(super) tags: (u32, u32),
    /// Range in the layer's `geoms`.
    pub(super) geom: (u32, u32),
    /// Packed (varint) byte lengths of the tags and the geometry, measured once.
    pub(super) tag_bytes: u32,
    pub(super) geom_bytes: u32,
    pub(super) importance: f64,
    pub(super) rank: u64,
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
    /// dictionary index) and whose values carry layer-wide numbers (equal values, equal
    /// numbers; see `LayerReader::value_ids`): keys are matched by number instead of hashed by
    /// name, and values through `slots` by number, with no hashing. `rank` is as for
    /// [`MvtLayer::add`]. Do not mix with [`MvtLayer::add`] in one layer.
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

    /// Records the feature whose tags were pushed from `tags_start` on.
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tile::mvt::encode_points;
    use geozero::mvt::{Message, Tile};
    use proptest::prelude::*;

    fn decode(bytes: &[u8]) -> Tile {
        Tile::decode(bytes).unwrap()
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
    fn numbered_keys_and_values_are_shared_between_features() {
        let mut l = MvtLayer::new("stored", 4096);
        let mut slots = ValueSlots::default();
        slots.prepare(3);
        let g = encode_points(&[[1, 1]]).unwrap();
        l.add_numbered(
            Some(0),
            &g,
            0,
            [
                (5, "class", 2, TileValue::String("primary")),
                (1, "lanes", 0, TileValue::Int(2)),
            ],
            &mut slots,
        );
        l.add_numbered(
            Some(1),
            &g,
            0,
            [
                (1, "lanes", 1, TileValue::Int(4)),
                (5, "class", 2, TileValue::String("primary")),
            ],
            &mut slots,
        );
        let t = decode(&l.encode(None).bytes);
        let layer = &t.layers[0];
        assert_eq!(layer.keys, ["class", "lanes"]);
        assert_eq!(layer.values.len(), 3);
        assert_eq!(layer.features[0].tags, vec![0, 0, 1, 1]);
        assert_eq!(layer.features[1].tags, vec![1, 2, 0, 0]);
        // The next tile starts from empty slots.
        slots.prepare(3);
        let mut next = MvtLayer::new("stored", 4096);
        next.add_numbered(
            None,
            &g,
            0,
            [(1, "lanes", 1, TileValue::Int(4))],
            &mut slots,
        );
        assert_eq!(decode(&next.encode(None).bytes).layers[0].values.len(), 1);
    }

    proptest! {
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
}
