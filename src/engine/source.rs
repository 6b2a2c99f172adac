//! The one seam of tile composition: a [`TileSource`] is anything that can draw its layer's
//! part of a tile within a byte budget. Layer file versions ([`ServedLayer`]) and live
//! layers ([`LiveLayer`], the live room's device positions) both are; the composer in
//! [`super::Engine`] treats them alike and divides the budget the same way for all.

use super::render::render_layer_as;
use super::{ServedArchive, ServedLayer};
use crate::live::Hub;
use crate::tile::{LayerView, TileBody, TileId};
use std::sync::Arc;

/// A layer that draws its part of a tile.
pub trait TileSource {
    /// The layer's name (the name of its MVT layer).
    fn name(&self) -> &str;
    /// `Some(version)` when the part depends only on the version, the tile and the budget,
    /// so the engine may cache it; `None` for a layer that changes at any moment and keeps
    /// its own cache, invalidated where it changes (live layers).
    fn version(&self) -> Option<u64>;
    /// This layer's part of `tile` with a buffer of `buffer` tile units, at most `budget` raw
    /// bytes (the least important features dropped first), gzip-compressed when `gzip`. A
    /// part alone is a valid one-layer tile, and raw parts concatenate into a valid tile. Only
    /// the properties `view` keeps are written.
    fn part(
        &self,
        tile: TileId,
        buffer: u32,
        budget: usize,
        gzip: bool,
        view: &LayerView,
    ) -> Arc<TileBody>;
}

impl TileSource for ServedLayer {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> Option<u64> {
        Some(self.version)
    }

    fn part(
        &self,
        tile: TileId,
        buffer: u32,
        budget: usize,
        gzip: bool,
        view: &LayerView,
    ) -> Arc<TileBody> {
        let e = render_layer_as(self, tile, buffer, Some(budget), view);
        let raw = if e.features > 0 { e.bytes } else { Vec::new() };
        Arc::new(TileBody::new(raw, gzip, e.features, e.dropped))
    }
}

/// A tile archive serves its tiles as they are: its layers, properties and geometry are the
/// archive's, whatever the budget. An attribute or area rule cannot be applied to tiles made
/// elsewhere, so a view with one gets nothing (the archive is served only whole).
impl TileSource for ServedArchive {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> Option<u64> {
        Some(self.version)
    }

    fn part(
        &self,
        tile: TileId,
        _buffer: u32,
        _budget: usize,
        gzip: bool,
        view: &LayerView,
    ) -> Arc<TileBody> {
        let empty = || Arc::new(TileBody::new(Vec::new(), gzip, 0, 0));
        if view.attributes.is_some() || view.area.is_some() {
            return empty();
        }
        let Some(stored) = self.archive.tile(tile.z, tile.x, tile.y) else {
            return empty();
        };
        // Parts are raw MVT (they concatenate into composites): unzip what the archive gzipped.
        let raw = if stored.starts_with(&[0x1f, 0x8b]) {
            use std::io::Read;
            let mut v = Vec::new();
            if flate2::read::GzDecoder::new(&stored[..])
                .read_to_end(&mut v)
                .is_err()
            {
                return empty();
            }
            v
        } else {
            stored
        };
        if raw.is_empty() {
            return empty();
        }
        // The features are not counted (the archive's tile is not decoded): one stands for
        // "not empty".
        Arc::new(TileBody::new(raw, gzip, 1, 0))
    }
}

/// A live layer of the hub, as a tile source.
pub struct LiveLayer {
    /// The hub holding the devices.
    pub hub: Arc<Hub>,
    /// The live layer's name.
    pub name: String,
}

impl TileSource for LiveLayer {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> Option<u64> {
        None
    }

    /// The hub renders with the buffer it was opened with (its tile invalidation relies on
    /// it; the server gives both rooms the same setting), so `buffer` is not used here.
    fn part(
        &self,
        tile: TileId,
        _buffer: u32,
        budget: usize,
        gzip: bool,
        view: &LayerView,
    ) -> Arc<TileBody> {
        self.hub.tile(&self.name, tile, budget, gzip, view)
    }
}
