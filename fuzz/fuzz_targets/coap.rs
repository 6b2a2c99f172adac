//! Fuzz target: the CoAP datagram handling (parse, route, authenticate, payload) on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = urbis::live::fuzzing::coap(data);
});
