//! Fuzz target: the flatgeobuf importer (and validation of what it yields) on arbitrary bytes.
//!
//! flatgeobuf 6.0.1 panics on some malformed files (slice out of range in its property
//! reader, index out of range in flatbuffers); `urbis::import::fgb` contains those panics and
//! reports the file as corrupt, so they are not crashes here (see `pass_contained_panics`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    urbis::import::fuzzing::pass_contained_panics(&["flatgeobuf", "flatbuffers"]);
    let _ = urbis::import::fuzzing::flatgeobuf(data);
});
