//! The per-tile byte budget and the final write: `MvtLayer::encode` measures the layer
//! exactly, and when it exceeds the budget keeps the most important features (largest
//! polygons and longest lines, then points by rank) that still fit, renumbers the keys and
//! values those use, and writes the layer as a complete `Tile` message.

use super::layer::FeatureRec;
use super::proto::{field_len, packed_len, put_packed, put_varint, varint_len};
use super::{MvtLayer, TileValue};

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

impl MvtLayer<'_> {
    /// Length of a feature's `Tile.Feature` message body, with its tags renumbered through
    /// `tag_map` (new key index by old, new value index by old) when given.
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
            // Most important first; keep while the layer still fits, counting each key and
            // value the first time a kept feature uses it (exactly what the table will hold;
            // the tag indices only shrink when renumbered). An estimate per tag let tiles
            // with long string values (OSM's `other_tags`) pass the budget by 8 %, found by
            // `urbis acceptance`.
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
            let mut key_in = vec![false; self.keys.len()];
            let mut value_in = vec![false; self.values.len()];
            for &i in &order {
                let tags = &self.tags[f[i].tags.0 as usize..f[i].tags.1 as usize];
                let mut cost = feature_lens[i];
                for c in tags.chunks(2) {
                    if !key_in[c[0] as usize] {
                        cost += field_len(self.keys[c[0] as usize].len());
                    }
                    if !value_in[c[1] as usize] {
                        cost += field_len(self.values[c[1] as usize].body_len());
                    }
                }
                if used + cost > limit {
                    break; // everything after is less important
                }
                used += cost;
                keep[i] = true;
                for c in tags.chunks(2) {
                    key_in[c[0] as usize] = true;
                    value_in[c[1] as usize] = true;
                }
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
    use crate::tile::mvt::{MvtLayer, TileValue, encode_polygons};
    use geozero::mvt::{Message, Tile};

    fn decode(bytes: &[u8]) -> Tile {
        Tile::decode(bytes).unwrap()
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

    #[test]
    fn long_distinct_values_count_against_the_budget() {
        // Every feature with its own long string (OSM's `other_tags`): the values table is
        // most of the layer.
        let long: Vec<String> = (0..2000)
            .map(|i| format!("{i:04}{}", "x".repeat(300)))
            .collect();
        let mk = || {
            let mut l = MvtLayer::new("points", 4096);
            for (i, v) in long.iter().enumerate() {
                l.add(
                    Some(i as u64),
                    crate::tile::mvt::encode_points(&[[i as i64 % 4096, 7]]).unwrap(),
                    0,
                    [("other_tags", TileValue::String(v))],
                );
            }
            l
        };
        let full = mk().encode(None);
        for budget in [
            full.bytes.len() / 3,
            full.bytes.len() / 2,
            full.bytes.len() - 1,
        ] {
            let cut = mk().encode(Some(budget));
            assert!(cut.bytes.len() <= budget, "{} > {budget}", cut.bytes.len());
            assert!(cut.dropped > 0);
            // And not far under it: the budget is used.
            assert!(
                cut.bytes.len() + 400 > budget,
                "{} of {budget}",
                cut.bytes.len()
            );
            assert_eq!(decode(&cut.bytes).layers[0].features.len(), cut.features);
        }
    }
}
