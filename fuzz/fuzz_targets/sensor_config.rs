#![no_main]
//! Sensor config loading: TOML parse with deny_unknown_fields, then every relation check.
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = drosera_sensor::config::Config::parse(text, Path::new("fuzz.toml"));
    }
});
