//! Fuzz target: the shapefile importer (and validation of what it yields) on arbitrary bytes.
//!
//! geozero's Shapefile reader panics on some inconsistent records (part index out of range);
//! `urbis::import::shp` contains panics from geozero and dbase with `catch_unwind` and reports
//! the file as corrupt. libFuzzer's panic hook aborts on any panic, caught or not, so panics
//! raised inside those two crates are let through here; any other panic still aborts.
#![no_main]

static HOOK: std::sync::Once = std::sync::Once::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    HOOK.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.location().is_some_and(|l| l.file().contains("/geozero-") || l.file().contains("/dbase-")) {
                return;
            }
            fuzzer_hook(info);
        }));
    });
    let _ = urbis::import::fuzzing::shapefile(data);
});
