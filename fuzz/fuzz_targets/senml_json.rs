//! Fuzz target: the SenML JSON and compact JSON payload parsers on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = urbis::live::fuzzing::senml_json(data);
    let _ = urbis::live::fuzzing::compact(data);
});
