//! Pure tile maths and encoding: the global integer grid, Web Mercator, tile addresses,
//! clipping, and Mapbox Vector Tile encoding with a byte budget.
//!
//! This room does no I/O and depends on nothing else of ours; `store`, `engine` and `live`
//! build on it. Invariants: every position the server handles lives on one global grid of
//! `2^32 × 2^32` units (Web Mercator, x to the east, y to the **south**, like tile rows), so the
//! tile-local coordinate of a grid point at zoom `z ≤ 20` with extent 4096 is an integer shift:
//! `(wx >> (20 - z)) - (x << 12)`.

pub mod body;
pub mod clip;
pub mod mercator;
pub mod mvt;
pub mod tile_id;

pub use body::TileBody;
pub use mercator::{GridBox, GridPoint, grid_to_lonlat, lonlat_to_grid, mercator_to_grid};
pub use tile_id::{EXTENT, TileId, TileTransform};

/// What a tile may carry of a layer's properties: all of them, or only those of an
/// allow-list (security rules strip the others inside tile generation, so every cache key
/// that holds a tile holds the view it was made for).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LayerView {
    /// The only property names served, when set.
    pub attributes: Option<std::sync::Arc<std::collections::BTreeSet<String>>>,
}

impl LayerView {
    /// Every property.
    pub const ALL: LayerView = LayerView { attributes: None };

    /// True if property `key` may be served.
    ///
    /// ```
    /// use urbis::tile::LayerView;
    /// let v = LayerView { attributes: Some(std::sync::Arc::new(["name".to_string()].into())) };
    /// assert!(v.keeps("name") && !v.keeps("owner"));
    /// assert!(LayerView::ALL.keeps("owner"));
    /// ```
    pub fn keeps(&self, key: &str) -> bool {
        self.attributes.as_ref().is_none_or(|a| a.contains(key))
    }
}
