//! Urbis: a lightweight GIS engine and map tile server for smart-city operations.
//!
//! The crate is organised as rooms (see DESIGN.md): [`tile`] is pure tile maths and MVT
//! encoding, [`store`] the memory-mapped layer files and their catalog, [`import`] turns GIS
//! files into layer files, [`engine`] makes tiles from the store, [`api`] is the HTTP surface
//! and [`server`] puts them together. Dependencies point one way:
//! `tile` ← `store` ← `engine` ← `api` ← `server`, and `import` → `store`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod config;
pub mod engine;
pub mod import;
pub mod live;
pub mod server;
pub mod store;
pub mod tile;
