#![no_main]
use drosera_sensor::protocols::mssql;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mssql::parse_header(data);
    let _ = mssql::parse_prelogin(data);
    let _ = mssql::parse_login7(data);
    let _ = mssql::parse_login42(data);
});
