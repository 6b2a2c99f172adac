//! Entry points for the cargo-fuzz targets of the security room's parsers (`fuzz/`) and the
//! regression tests that replay what they found. None may panic, whatever the bytes. (Keys
//! as requests carry them are fuzzed from `api::fuzzing`, where requests are read.)

use super::policy::Policy;

/// A policy file; returns the number of roles it defines (built-in ones included).
pub fn policy(data: &[u8]) -> usize {
    Policy::parse(&String::from_utf8_lossy(data), "fuzz.toml").map_or(0, |p| p.roles.len())
}
