//! Fuzz target: the flatgeobuf importer (and validation of what it yields) on arbitrary bytes.
//!
//! flatgeobuf 6.0.1 panics on some malformed files (slice out of range in its property
//! reader, index out of range in flatbuffers); `urbis::import::fgb` contains those panics with `catch_unwind` and reports the
//! file as corrupt. libFuzzer's panic hook aborts on any panic, caught or not, so panics
//! raised inside the flatgeobuf crate are let through here; any other panic still aborts.
#![no_main]

static HOOK: std::sync::Once = std::sync::Once::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    HOOK.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.location().is_some_and(|l| l.file().contains("/flatgeobuf-") || l.file().contains("/flatbuffers-")) {
                return;
            }
            fuzzer_hook(info);
        }));
    });
    let _ = urbis::import::fuzzing::flatgeobuf(data);
});
