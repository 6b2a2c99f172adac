//! The command line's subcommands that are not the server or the importer: device
//! registration, API keys and classifications, the audit log, and the operations commands
//! (alert rules, the operation report, acceptance checks, the fleet simulator). Clients of the library, like
//! `main.rs`; every change they make is appended to the audit log.

pub mod audit;
pub mod devices;
pub mod export;
pub mod keys;
pub mod ops;
