//! Pure tile maths and encoding: the global integer grid, Web Mercator, tile addresses,
//! clipping, and Mapbox Vector Tile encoding with a byte budget.
//!
//! This room does no I/O and depends on nothing else of ours; `store`, `engine` and `live`
//! build on it. Invariants: every position the server handles lives on one global grid of
//! `2^32 × 2^32` units (Web Mercator, x to the east, y to the **south**, like tile rows), so the
//! tile-local coordinate of a grid point at zoom `z ≤ 20` with extent 4096 is an integer shift:
//! `(wx >> (20 - z)) - (x << 12)`.

pub mod area;
pub mod body;
pub mod clip;
pub mod mercator;
pub mod mvt;
pub mod tile_id;

pub use body::TileBody;
pub use mercator::{GridBox, GridPoint, grid_to_lonlat, lonlat_to_grid, mercator_to_grid};
pub use tile_id::{EXTENT, TileId, TileTransform};

/// What a tile may carry of a layer: all its properties or only those of an allow-list, and
/// positions exact or snapped to a grid of some metres (live layers). Security rules decide
/// it and tile generation applies it, so every cache key that holds a tile holds the view it
/// was made for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LayerView {
    /// The only property names served, when set.
    pub attributes: Option<std::sync::Arc<std::collections::BTreeSet<String>>>,
    /// Positions are served no more precisely than this many metres, when set (see
    /// [`mercator::snap_lonlat`]).
    pub precision_m: Option<u32>,
    /// Only what meets this area is served, when set.
    pub area: Option<std::sync::Arc<area::Area>>,
}

impl LayerView {
    /// Every property, exact positions.
    pub const ALL: LayerView = LayerView {
        attributes: None,
        precision_m: None,
        area: None,
    };

    /// True if a position may be served (inside the area, when there is one).
    pub fn shows(&self, p: [f64; 2]) -> bool {
        self.area.as_ref().is_none_or(|a| a.contains(p))
    }

    /// True if something in grid box `b` may be served.
    pub fn shows_box(&self, b: &GridBox) -> bool {
        self.area.as_ref().is_none_or(|a| a.meets(b))
    }

    /// A position as this view may serve it.
    pub fn position(&self, p: [f64; 2]) -> [f64; 2] {
        match self.precision_m {
            Some(m) => mercator::snap_lonlat(p, f64::from(m)),
            None => p,
        }
    }

    /// True if property `key` may be served.
    ///
    /// ```
    /// use urbis::tile::LayerView;
    /// let v = LayerView {
    ///     attributes: Some(std::sync::Arc::new(["name".to_string()].into())),
    ///     precision_m: None,
    ///     area: None,
    /// };
    /// assert!(v.keeps("name") && !v.keeps("owner"));
    /// assert!(LayerView::ALL.keeps("owner"));
    /// ```
    pub fn keeps(&self, key: &str) -> bool {
        self.attributes.as_ref().is_none_or(|a| a.contains(key))
    }
}
