//! Tile addresses and the transform from the global grid to tile-local coordinates.

use super::mercator::{GRID_BITS, GridBox, GridPoint};

/// Highest zoom the server accepts (the grid resolves ~1 cm, which zoom 24 tiles still use).
pub const MAX_TILE_ZOOM: u8 = 24;
/// Tile extent (coordinates per tile side) of the tiles Urbis makes.
pub const EXTENT: i64 = 4096;

/// A tile address: zoom, column, row (row 0 at the north), as in the XYZ scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    /// Zoom level.
    pub z: u8,
    /// Column, `0..2^z`.
    pub x: u32,
    /// Row, `0..2^z`, from the north.
    pub y: u32,
}

/// Why a tile address is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TileIdError {
    /// Zoom beyond [`MAX_TILE_ZOOM`].
    #[error("zoom {0} is out of range 0..={MAX_TILE_ZOOM}")]
    Zoom(u32),
    /// Column or row beyond `2^z - 1`.
    #[error("tile {x}/{y} does not exist at zoom {z}: x and y must be below {}", 1u64 << z)]
    Position {
        /// Zoom.
        z: u8,
        /// Column.
        x: u64,
        /// Row.
        y: u64,
    },
}

impl TileId {
    /// A checked tile address.
    ///
    /// ```
    /// use urbis::tile::TileId;
    ///
    /// let t = TileId::new(2, 1, 2).unwrap();
    /// assert_eq!((t.z, t.x, t.y), (2, 1, 2));
    /// assert_eq!(t.to_string(), "2/1/2");
    /// // Zoom 2 has four columns and rows; zooms stop at 24.
    /// assert!(TileId::new(2, 4, 0).is_err());
    /// assert!(TileId::new(25, 0, 0).is_err());
    /// ```
    pub fn new(z: u32, x: u64, y: u64) -> Result<TileId, TileIdError> {
        if z > u32::from(MAX_TILE_ZOOM) {
            return Err(TileIdError::Zoom(z));
        }
        let z = z as u8;
        let n = 1u64 << z;
        if x >= n || y >= n {
            return Err(TileIdError::Position { z, x, y });
        }
        Ok(TileId {
            z,
            x: x as u32,
            y: y as u32,
        })
    }

    /// The grid box of the tile grown by `buffer` tile units on each side.
    pub fn grid_box(&self, buffer: u32) -> GridBox {
        GridBox::of_tile(self.z, self.x, self.y, buffer)
    }

    /// Maps grid points into this tile's coordinates (extent 4096, y down). Points far outside
    /// the tile get large values; clipping brings them back.
    ///
    /// ```
    /// use urbis::tile::{EXTENT, TileId, lonlat_to_grid};
    ///
    /// // The tile's own corners land on 0 and EXTENT - 1.
    /// let t = TileId::new(2, 1, 2).unwrap();
    /// let b = t.grid_box(0);
    /// assert_eq!(t.transform().apply([b.min_x, b.min_y]), [0, 0]);
    /// assert_eq!(t.transform().apply([b.max_x, b.max_y]), [EXTENT - 1, EXTENT - 1]);
    /// // (0°, 0°) is the top-left corner of tile 1/1/1 and the bottom-right one of 1/0/0.
    /// let centre = lonlat_to_grid(0.0, 0.0);
    /// assert_eq!(TileId::new(1, 1, 1).unwrap().transform().apply(centre), [0, 0]);
    /// assert_eq!(TileId::new(1, 0, 0).unwrap().transform().apply(centre), [EXTENT, EXTENT]);
    /// ```
    pub fn transform(&self) -> TileTransform {
        TileTransform {
            z: self.z,
            ox: i64::from(self.x) * EXTENT,
            oy: i64::from(self.y) * EXTENT,
        }
    }
}

impl std::fmt::Display for TileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.z, self.x, self.y)
    }
}

/// The integer transform from the global grid to one tile's coordinates.
#[derive(Debug, Clone, Copy)]
pub struct TileTransform {
    z: u8,
    ox: i64,
    oy: i64,
}

impl TileTransform {
    /// The tile coordinate of a grid point: an integer shift, `(wx >> (20 - z)) - x·4096`
    /// (a left shift above zoom 20).
    #[inline]
    pub fn apply(&self, p: GridPoint) -> [i64; 2] {
        let s = i32::from(self.z) + 12 - GRID_BITS as i32;
        let (x, y) = (i64::from(p[0]), i64::from(p[1]));
        if s <= 0 {
            [(x >> -s) - self.ox, (y >> -s) - self.oy]
        } else {
            [(x << s) - self.ox, (y << s) - self.oy]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_addresses_are_refused() {
        assert!(TileId::new(25, 0, 0).is_err());
        assert!(TileId::new(3, 8, 0).is_err());
        assert_eq!(TileId::new(3, 7, 7).unwrap(), TileId { z: 3, x: 7, y: 7 });
    }

    #[test]
    fn transform_puts_the_tile_corners_at_zero_and_extent() {
        let t = TileId::new(2, 1, 2).unwrap();
        let b = t.grid_box(0);
        assert_eq!(t.transform().apply([b.min_x, b.min_y]), [0, 0]);
        assert_eq!(t.transform().apply([b.max_x, b.max_y]), [4095, 4095]);
        let deep = TileId::new(22, 5, 9).unwrap();
        let b = deep.grid_box(0);
        assert_eq!(deep.transform().apply([b.min_x, b.min_y]), [0, 0]);
    }
}
