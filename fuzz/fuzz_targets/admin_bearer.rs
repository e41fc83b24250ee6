#![no_main]
//! The dashboard's `Authorization: Bearer` parsing (issue 21): any bytes, never a panic; a
//! token found is non-empty printable ASCII of at most 128 bytes.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(t) = drosera_admin::users::bearer_token(data) {
        assert!(!t.is_empty() && t.len() <= 128 && t.bytes().all(|b| b.is_ascii_graphic()));
    }
});
