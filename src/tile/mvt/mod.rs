//! Mapbox Vector Tile 2.1 encoding: geometry commands, per-layer key/value tables, and the
//! per-tile byte budget.
//!
//! Rules enforced here: exterior rings have positive area by the surveyor's formula in tile
//! coordinates (clockwise on screen, y down), holes negative; no repeated consecutive points;
//! rings with fewer than three distinct points or no area and lines with fewer than two points
//! are dropped; keys and values are deduplicated per layer in order of first use, so equal
//! inputs give equal bytes; a layer over its byte budget loses its least important features
//! first, along with the keys and values no kept feature uses.
//!
//! The encoder is written by hand, field by field of `vector_tile.proto`, rather than with
//! geozero's `MvtWriter` or the `mvt` crate, because neither orients rings, drops degenerate
//! ones or clips, so neither would keep the rules above (clipping itself is in
//! [`super::clip`]). Writing the protobuf directly also lets a layer be measured exactly
//! before it is written, which the byte budget needs; geozero's prost types only decode the
//! output, in the tests.
//!
//! Parts: `geometry` turns points, lines and polygons into commands ([`TileGeometry`]);
//! `layer` collects features and their key and value tables ([`MvtLayer`]); `budget` chooses
//! what to drop and writes the layer ([`MvtLayer::encode`], [`EncodedLayer`]); `proto` is the
//! protobuf writer (varints, packed fields, field lengths, values) the last two share.

mod budget;
mod geometry;
mod layer;
mod proto;

pub use budget::EncodedLayer;
pub use geometry::{
    TileGeomKind, TileGeometry, decode_commands, encode_lines, encode_points, encode_polygons,
    ring_area2,
};
pub use layer::{MvtLayer, TileValue, ValueSlots};
