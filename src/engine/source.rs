//! The one seam of tile composition: a [`TileSource`] is anything that can draw its layer's
//! part of a tile within a byte budget. Layer file versions ([`ServedLayer`]) and live
//! layers ([`LiveLayer`], the live room's device positions) both are; the composer in
//! [`super::Engine`] treats them alike and divides the budget the same way for all.

use super::ServedLayer;
use super::render::render_layer_as;
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
