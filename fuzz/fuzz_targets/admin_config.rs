#![no_main]
//! Admin config loading: TOML parse with deny_unknown_fields, then validation.
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = drosera_admin::config::AdminConfig::parse(text, Path::new("fuzz.toml"));
    }
});
