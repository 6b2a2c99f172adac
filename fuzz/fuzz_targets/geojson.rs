//! Fuzz target: the geojson importer (and validation of what it yields) on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = urbis::import::fuzzing::geojson(data);
});
