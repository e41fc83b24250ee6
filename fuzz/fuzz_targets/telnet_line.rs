#![no_main]
use drosera_sensor::protocols::telnet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let clean = telnet::strip_iac(data);
    let _ = telnet::extract_downloads(&String::from_utf8_lossy(&clean));
});
