//! The live state's table of devices, and the telemetry each keeps: laid out for a million
//! devices (see `benches/scale/registry.sh`).

use super::state::Device;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The last value of each telemetry name of a device, in a small vector (a device sends a
/// handful; a map's node would cost 400 bytes a device). Names are shared between devices.
/// Serialised as a JSON object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Telemetry(pub(super) Box<[(Arc<str>, f64)]>);

impl Telemetry {
    /// Sets `name` to `value`.
    pub fn insert(&mut self, name: Arc<str>, value: f64) {
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some(e) => e.1 = value,
            None => {
                // Allocated at its exact size once (a push then a shrink would leave a hole
                // in the heap per device).
                let mut v = Vec::with_capacity(self.0.len() + 1);
                v.extend(self.0.iter().cloned());
                v.push((name, value));
                v.sort_by(|a, b| a.0.cmp(&b.0));
                self.0 = v.into_boxed_slice();
            }
        }
    }

    /// Forgets every value.
    pub fn clear(&mut self) {
        self.0 = Box::default();
    }

    /// Names and values, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.0.iter().map(|(k, v)| (&**k, *v))
    }
}

impl Serialize for Telemetry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(&**k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Telemetry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m: BTreeMap<String, f64> = BTreeMap::deserialize(d)?;
        Ok(Telemetry(
            m.into_iter()
                .map(|(k, v)| (Arc::from(k), v))
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        ))
    }
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The devices of the state: a dense table by slot (the number the grid index's points carry) and
/// an index from id to slot; a removed device's slot is reused. At a million devices a
/// hash map of devices would have two million buckets of 150 bytes; this has a million rows
/// and two million buckets of 24.
#[derive(Default)]
pub struct Devices {
    index: FastMap<Arc<str>, u32>,
    table: Vec<Option<Device>>,
    free: Vec<u32>,
}

impl Devices {
    /// The device of id `id`.
    pub fn get(&self, id: &str) -> Option<&Device> {
        self.at(*self.index.get(id)?)
    }

    /// The device of id `id`, to change.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Device> {
        let s = *self.index.get(id)?;
        self.table.get_mut(s as usize)?.as_mut()
    }

    /// The device in slot `slot`.
    pub fn at(&self, slot: u32) -> Option<&Device> {
        self.table.get(slot as usize)?.as_ref()
    }

    /// The slot of device `id`.
    pub fn slot(&self, id: &str) -> Option<u32> {
        self.index.get(id).copied()
    }

    /// True if device `id` is here.
    pub fn contains_key(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// Adds (or replaces) a device; returns its slot.
    pub fn insert(&mut self, d: Device) -> u32 {
        if let Some(&s) = self.index.get(&*d.id) {
            self.table[s as usize] = Some(d);
            return s;
        }
        let s = match self.free.pop() {
            Some(s) => s,
            None => {
                self.table.push(None);
                (self.table.len() - 1) as u32
            }
        };
        self.index.insert(Arc::clone(&d.id), s);
        self.table[s as usize] = Some(d);
        s
    }

    /// Removes device `id`; its slot is free for another.
    pub fn remove(&mut self, id: &str) -> Option<Device> {
        let s = self.index.remove(id)?;
        self.free.push(s);
        self.table.get_mut(s as usize)?.take()
    }

    /// Every device, in slot order.
    pub fn values(&self) -> impl Iterator<Item = &Device> {
        self.table.iter().flatten()
    }

    /// Every id.
    pub fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.index.keys()
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Room for `n` more.
    pub fn reserve(&mut self, n: usize) {
        self.index.reserve(n);
        self.table.reserve(n);
    }
}
