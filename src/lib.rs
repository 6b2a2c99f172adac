//! Urbis: a lightweight GIS engine and map tile server for smart-city operations.
//!
//! The crate is organised as rooms (see DESIGN.md): [`tile`] is pure tile maths, [`store`]
//! the memory-mapped layer files and their catalog, [`import`] turns GIS files into layer
//! files. Dependencies point one way: `import` → `store` → `tile`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod import;
pub mod store;
pub mod tile;
