//! Urbis: a lightweight GIS engine and map tile server for smart-city operations.
//!
//! The crate is organised as rooms, described in `ARCHITECTURE.md` at the repository root
//! (the code map, the three flows, the invariants, where each file format is written down):
//! [`tile`] is pure tile maths and MVT encoding, [`store`] the memory-mapped layer files and
//! their catalog, [`import`] turns GIS files into layer files, [`live`] takes device reports
//! through one front door ([`live::Hub`]), [`engine`] composes tiles from layer files and live
//! layers, [`api`] is the HTTP surface, [`config`] the settings, and [`server`] puts them
//! together. Dependencies point one way: `tile` ← `store` ← `engine` ← `api` ← `server`,
//! `import` → `store`, and `live` → `tile`, read by `engine`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod export;
pub mod fonts;
pub mod governance;
pub mod import;
pub mod live;
pub mod ops;
pub mod raster;
pub mod security;
pub mod server;
pub mod store;
pub mod tile;
