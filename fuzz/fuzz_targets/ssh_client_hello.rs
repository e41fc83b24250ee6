#![no_main]
use drosera_sensor::protocols::ssh;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = ssh::parse_client_hello(data) {
        let _ = h.hassh();
    }
});
