//! Web Mercator and the global integer grid.
//!
//! A grid unit is `2^-32` of the world's circumference, about 0.93 cm at the equator. Latitudes
//! beyond the Web Mercator limit (±85.0511°) are clamped to the grid's edge rather than rejected,
//! so polygons that reach the poles (Antarctica) stay whole.

/// Number of bits of one grid axis.
pub const GRID_BITS: u32 = 32;
/// Number of grid units around the world, as a float.
pub const GRID_SIZE: f64 = 4_294_967_296.0;
/// Web Mercator's equatorial radius in metres (EPSG:3857).
pub const EARTH_RADIUS: f64 = 6_378_137.0;
/// Half the Web Mercator world width in metres.
pub const MERCATOR_HALF: f64 = std::f64::consts::PI * EARTH_RADIUS;
/// The latitude where Web Mercator's square world ends.
pub const MAX_LATITUDE: f64 = 85.051_128_779_806_59;

/// A position on the global grid: `x` grows east, `y` grows south.
pub type GridPoint = [u32; 2];

/// An axis-aligned box on the global grid, bounds inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GridBox {
    /// Westmost x.
    pub min_x: u32,
    /// Northmost y (grid y grows south).
    pub min_y: u32,
    /// Eastmost x.
    pub max_x: u32,
    /// Southmost y.
    pub max_y: u32,
}

impl Default for GridBox {
    fn default() -> Self {
        GridBox::EMPTY
    }
}

impl GridBox {
    /// The box that contains nothing; extending it with a point gives that point's box.
    pub const EMPTY: GridBox = GridBox {
        min_x: u32::MAX,
        min_y: u32::MAX,
        max_x: 0,
        max_y: 0,
    };
    /// The whole world.
    pub const WORLD: GridBox = GridBox {
        min_x: 0,
        min_y: 0,
        max_x: u32::MAX,
        max_y: u32::MAX,
    };

    /// A box from its bounds.
    pub fn new(min_x: u32, min_y: u32, max_x: u32, max_y: u32) -> Self {
        GridBox {
            min_x,
            min_y,
            max_x,
            max_y,
        }
    }

    /// True when the box holds no point (the `EMPTY` box).
    pub fn is_empty(&self) -> bool {
        self.min_x > self.max_x || self.min_y > self.max_y
    }

    /// Grows the box to hold `p`.
    pub fn extend(&mut self, p: GridPoint) {
        self.min_x = self.min_x.min(p[0]);
        self.min_y = self.min_y.min(p[1]);
        self.max_x = self.max_x.max(p[0]);
        self.max_y = self.max_y.max(p[1]);
    }

    /// Grows the box to hold `other`.
    pub fn union(&mut self, other: &GridBox) {
        self.min_x = self.min_x.min(other.min_x);
        self.min_y = self.min_y.min(other.min_y);
        self.max_x = self.max_x.max(other.max_x);
        self.max_y = self.max_y.max(other.max_y);
    }

    /// True when the two boxes share at least one grid point.
    pub fn intersects(&self, other: &GridBox) -> bool {
        self.min_x <= other.max_x
            && other.min_x <= self.max_x
            && self.min_y <= other.max_y
            && other.min_y <= self.max_y
    }

    /// Width in grid units.
    pub fn width(&self) -> u64 {
        u64::from(self.max_x.saturating_sub(self.min_x))
    }

    /// Height in grid units.
    pub fn height(&self) -> u64 {
        u64::from(self.max_y.saturating_sub(self.min_y))
    }

    /// The box covered by tile `(z, x, y)`, grown by `buffer` units of a 4096-extent tile.
    ///
    /// ```
    /// use urbis::tile::GridBox;
    ///
    /// // Tile 1/1/0 is the north-east quarter of the world.
    /// let b = GridBox::of_tile(1, 1, 0, 0);
    /// assert_eq!(b, GridBox::new(1 << 31, 0, u32::MAX, (1 << 31) - 1));
    /// // A buffer of 64 tile units at zoom 1 is 64 · 2^19 grid units (clamped at the edges).
    /// let buffered = GridBox::of_tile(1, 1, 0, 64);
    /// assert_eq!(buffered.min_x, (1 << 31) - 64 * (1 << 19));
    /// assert_eq!((buffered.min_y, buffered.max_x), (0, u32::MAX));
    /// ```
    pub fn of_tile(z: u8, x: u32, y: u32, buffer: u32) -> GridBox {
        let shift = GRID_BITS - u32::from(z);
        let unit = tile_unit(z);
        let pad = u64::from(buffer) * unit;
        let lo = |t: u32| {
            (u64::from(t) << shift)
                .saturating_sub(pad)
                .min(u64::from(u32::MAX)) as u32
        };
        let hi = |t: u32| {
            ((u64::from(t) + 1) << shift)
                .saturating_sub(1)
                .saturating_add(pad)
                .min(u64::from(u32::MAX)) as u32
        };
        GridBox {
            min_x: lo(x),
            min_y: lo(y),
            max_x: hi(x),
            max_y: hi(y),
        }
    }

    /// The box as `[west, south, east, north]` in degrees.
    pub fn to_lonlat_bounds(&self) -> [f64; 4] {
        let (w, n) = grid_to_lonlat([self.min_x, self.min_y]);
        let (e, s) = grid_to_lonlat([self.max_x, self.max_y]);
        [w, s, e, n]
    }
}

/// Grid units per tile-coordinate unit of a 4096-extent tile at zoom `z` (`2^(20-z)`, at least 1).
pub fn tile_unit(z: u8) -> u64 {
    1u64 << 20u32.saturating_sub(u32::from(z))
}

fn to_grid(v: f64) -> u32 {
    // floor, clamped to the grid: values are finite here (checked by callers).
    v.floor().clamp(0.0, f64::from(u32::MAX)) as u32
}

/// Projects longitude/latitude (EPSG:4326, degrees) onto the grid. Latitude is clamped to the
/// Web Mercator limit; callers reject non-finite and out-of-range input before calling.
///
/// ```
/// use urbis::tile::{grid_to_lonlat, lonlat_to_grid};
///
/// // (0°, 0°) is the centre of the grid; the poles clamp to its edges.
/// assert_eq!(lonlat_to_grid(0.0, 0.0), [1 << 31, 1 << 31]);
/// assert_eq!(lonlat_to_grid(-180.0, 90.0), [0, 0]);
/// // Helsinki and back, within a grid unit (about a centimetre).
/// let p = lonlat_to_grid(24.9384, 60.1699);
/// let (lon, lat) = grid_to_lonlat(p);
/// assert!((lon - 24.9384).abs() < 1e-7 && (lat - 60.1699).abs() < 1e-7);
/// ```
pub fn lonlat_to_grid(lon: f64, lat: f64) -> GridPoint {
    let lat = lat.clamp(-MAX_LATITUDE, MAX_LATITUDE);
    let x = (lon + 180.0) / 360.0;
    let s = lat.to_radians().sin();
    let y = 0.5 - ((1.0 + s) / (1.0 - s)).ln() / (4.0 * std::f64::consts::PI);
    [to_grid(x * GRID_SIZE), to_grid(y * GRID_SIZE)]
}

/// Metres on the ground per degree of latitude (and of longitude at the equator).
pub const METRES_PER_DEGREE: f64 = 111_320.0;

/// Snaps a WGS 84 position `[lon, lat]` to a grid of `metres` on the ground, to serve a
/// position no more precisely than that: the latitude to a multiple of `metres / 111,320`
/// degrees, then the longitude to a multiple of that many metres at the snapped latitude.
/// Every position of a square of about `metres` goes to one point, the same everywhere.
///
/// ```
/// use urbis::tile::mercator::{METRES_PER_DEGREE, snap_lonlat};
/// let [lon, lat] = snap_lonlat([24.93851, 60.16952], 100.0);
/// let dlat = 100.0 / METRES_PER_DEGREE;
/// let dlon = 100.0 / (METRES_PER_DEGREE * lat.to_radians().cos());
/// assert!(((lat / dlat) - (lat / dlat).round()).abs() < 1e-6);
/// assert!(((lon / dlon) - (lon / dlon).round()).abs() < 1e-6);
/// assert!((lat - 60.16952).abs() <= dlat / 2.0 && (lon - 24.93851).abs() <= dlon / 2.0);
/// ```
pub fn snap_lonlat(p: [f64; 2], metres: f64) -> [f64; 2] {
    if metres.is_nan() || metres <= 0.0 {
        return p;
    }
    let dlat = metres / METRES_PER_DEGREE;
    let lat = ((p[1] / dlat).round() * dlat).clamp(-90.0, 90.0);
    let dlon = metres / (METRES_PER_DEGREE * lat.to_radians().cos().max(1e-9));
    let lon = ((p[0] / dlon).round() * dlon).clamp(-180.0, 180.0);
    [lon, lat]
}

/// The tile of zoom `z` holding `[lon, lat]` (latitudes clamped to the Mercator range).
pub fn tile_containing(lon: f64, lat: f64, z: u8) -> (u32, u32) {
    let g = lonlat_to_grid(lon, lat);
    let shift = GRID_BITS - u32::from(z.min(GRID_BITS as u8));
    (
        (u64::from(g[0]) >> shift) as u32,
        (u64::from(g[1]) >> shift) as u32,
    )
}

/// The exact (unrounded) grid position of longitude/latitude, for tests and error bounds.
pub fn lonlat_to_grid_f64(lon: f64, lat: f64) -> [f64; 2] {
    let lat = lat.clamp(-MAX_LATITUDE, MAX_LATITUDE);
    let s = lat.to_radians().sin();
    [
        (lon + 180.0) / 360.0 * GRID_SIZE,
        (0.5 - ((1.0 + s) / (1.0 - s)).ln() / (4.0 * std::f64::consts::PI)) * GRID_SIZE,
    ]
}

/// Projects Web Mercator metres (EPSG:3857) onto the grid, clamped to the square world.
pub fn mercator_to_grid(x: f64, y: f64) -> GridPoint {
    let [gx, gy] = mercator_to_grid_f64(x, y);
    [to_grid(gx), to_grid(gy)]
}

/// The exact (unrounded) grid position of Web Mercator metres, clamped to the square world.
pub fn mercator_to_grid_f64(x: f64, y: f64) -> [f64; 2] {
    let gx = (x + MERCATOR_HALF) / (2.0 * MERCATOR_HALF);
    let gy = (MERCATOR_HALF - y) / (2.0 * MERCATOR_HALF);
    [
        (gx * GRID_SIZE).clamp(0.0, GRID_SIZE),
        (gy * GRID_SIZE).clamp(0.0, GRID_SIZE),
    ]
}

/// Rounds an exact grid position down to its grid point.
pub fn snap(p: [f64; 2]) -> GridPoint {
    [to_grid(p[0]), to_grid(p[1])]
}

/// The longitude/latitude of a grid point (its north-west corner).
pub fn grid_to_lonlat(p: GridPoint) -> (f64, f64) {
    let lon = f64::from(p[0]) / GRID_SIZE * 360.0 - 180.0;
    let n = std::f64::consts::PI * (1.0 - 2.0 * f64::from(p[1]) / GRID_SIZE);
    let lat = n.sinh().atan().to_degrees();
    (lon, lat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helsinki_round_trips_within_a_centimetre() {
        let p = lonlat_to_grid(24.9384, 60.1699);
        let (lon, lat) = grid_to_lonlat(p);
        assert!(
            (lon - 24.9384).abs() < 1e-7 && (lat - 60.1699).abs() < 1e-7,
            "{lon} {lat}"
        );
    }

    #[test]
    fn tile_local_coordinate_is_a_shift() {
        // The centre of the world is the top-left corner of tile 1/1/1.
        let p = lonlat_to_grid(0.0, 0.0);
        assert_eq!(p, [1 << 31, 1 << 31]);
        let z = 1u32;
        assert_eq!((p[0] >> (20 - z)) - (1 << 12), 0);
    }

    #[test]
    fn mercator_and_lonlat_agree() {
        let a = lonlat_to_grid(24.9384, 60.1699);
        let x = 24.9384f64.to_radians() * EARTH_RADIUS;
        let y = (std::f64::consts::FRAC_PI_4 + 60.1699f64.to_radians() / 2.0)
            .tan()
            .ln()
            * EARTH_RADIUS;
        let b = mercator_to_grid(x, y);
        assert!(
            a[0].abs_diff(b[0]) <= 1 && a[1].abs_diff(b[1]) <= 1,
            "{a:?} {b:?}"
        );
    }

    #[test]
    fn poles_clamp_to_the_grid_edge() {
        assert_eq!(lonlat_to_grid(-180.0, 90.0), [0, 0]);
        assert_eq!(lonlat_to_grid(180.0, -90.0), [u32::MAX, u32::MAX]);
    }

    #[test]
    fn tile_box_covers_exactly_the_tile() {
        let b = GridBox::of_tile(1, 1, 0, 0);
        assert_eq!(b, GridBox::new(1 << 31, 0, u32::MAX, (1 << 31) - 1));
        let buffered = GridBox::of_tile(2, 1, 1, 64);
        assert_eq!(buffered.min_x, (1 << 30) - 64 * (1 << 18));
    }
}
