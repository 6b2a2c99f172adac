//! Pure tile maths: the global integer grid, Web Mercator and tile addressing.
//!
//! This room does no I/O and depends on nothing else of ours; `store`, `engine` and `live`
//! build on it. Invariants: every position the server handles lives on one global grid of
//! `2^32 × 2^32` units (Web Mercator, x to the east, y to the **south**, like tile rows), so the
//! tile-local coordinate of a grid point at zoom `z ≤ 20` with extent 4096 is an integer shift:
//! `(wx >> (20 - z)) - (x << 12)`.

pub mod mercator;

pub use mercator::{GridBox, GridPoint, grid_to_lonlat, lonlat_to_grid, mercator_to_grid};
