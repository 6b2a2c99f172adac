//! Fuzz target: the SenML CBOR payload parser on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = urbis::live::fuzzing::senml_cbor(data);
});
