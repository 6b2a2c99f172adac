//! An allowed area: a (multi)polygon in WGS 84 that a security rule limits a layer to. Kept
//! both in longitude/latitude (for device positions) and on the global grid (for the boxes of
//! stored features and tiles), with its grid bounds for a quick rejection. Two areas are the
//! same when their coordinates are: that identity goes into tile cache keys.

use super::mercator::{GridBox, lonlat_to_grid_f64};
use geo::{CoordsIter, Intersects, MapCoords, MultiPolygon, Point, Rect, coord};
use std::hash::{Hash, Hasher};

/// An allowed area.
#[derive(Debug, Clone)]
pub struct Area {
    id: u64,
    lonlat: MultiPolygon<f64>,
    grid: MultiPolygon<f64>,
    bounds: [f64; 4],
}

impl Area {
    /// The area of a WGS 84 (multi)polygon.
    ///
    /// ```
    /// use urbis::tile::area::Area;
    /// use geo::{MultiPolygon, polygon};
    /// let a = Area::new(MultiPolygon(vec![polygon![(x: 24.9, y: 60.1), (x: 25.0, y: 60.1),
    ///     (x: 25.0, y: 60.2), (x: 24.9, y: 60.2), (x: 24.9, y: 60.1)]]));
    /// assert!(a.contains([24.95, 60.15]) && !a.contains([25.1, 60.15]));
    /// ```
    pub fn new(lonlat: MultiPolygon<f64>) -> Area {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for c in lonlat.coords_iter() {
            c.x.to_bits().hash(&mut h);
            c.y.to_bits().hash(&mut h);
        }
        let grid = lonlat.map_coords(|c| {
            let g = lonlat_to_grid_f64(c.x, c.y);
            coord! { x: g[0], y: g[1] }
        });
        let mut bounds = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
        for p in &grid.0 {
            for c in &p.exterior().0 {
                bounds = [
                    bounds[0].min(c.x),
                    bounds[1].min(c.y),
                    bounds[2].max(c.x),
                    bounds[3].max(c.y),
                ];
            }
        }
        Area {
            id: h.finish(),
            lonlat,
            grid,
            bounds,
        }
    }

    /// True if the position `[lon, lat]` is inside or on the boundary.
    pub fn contains(&self, p: [f64; 2]) -> bool {
        self.lonlat.intersects(&Point::new(p[0], p[1]))
    }

    /// True if the grid box `b` (a feature's or a tile's) meets the area.
    pub fn meets(&self, b: &GridBox) -> bool {
        let (x0, y0, x1, y1) = (
            f64::from(b.min_x),
            f64::from(b.min_y),
            f64::from(b.max_x),
            f64::from(b.max_y),
        );
        if x1 < self.bounds[0] || x0 > self.bounds[2] || y1 < self.bounds[1] || y0 > self.bounds[3]
        {
            return false;
        }
        Rect::new(coord! { x: x0, y: y0 }, coord! { x: x1, y: y1 }).intersects(&self.grid)
    }
}

impl PartialEq for Area {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Area {}

impl Hash for Area {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}
