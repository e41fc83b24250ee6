#![no_main]
use drosera_sensor::protocols::ftp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ftp::parse_command(data);
});
