#![no_main]
use drosera_sensor::protocols::mysql;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mysql::parse_login(data);
    if data.len() >= 4 {
        let _ = mysql::parse_header([data[0], data[1], data[2], data[3]]);
    }
});
