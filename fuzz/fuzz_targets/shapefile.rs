//! Fuzz target: the shapefile importer (and validation of what it yields) on arbitrary bytes.
//!
//! geozero's Shapefile reader panics on some inconsistent records (part index out of range);
//! `urbis::import::shp` contains panics from geozero and dbase and reports the file as
//! corrupt, so they are not crashes here (see `pass_contained_panics`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    urbis::import::fuzzing::pass_contained_panics(&["geozero", "dbase"]);
    let _ = urbis::import::fuzzing::shapefile(data);
});
