#![no_main]
//! The legacy scp sink and the SSH version-line check, fed arbitrary client bytes.
use drosera_sensor::protocols::ssh::{hello, scp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut sink = scp::ScpSink::default();
    let mut rest = data;
    while !rest.is_empty() {
        let (n, _) = sink.feed(rest);
        if n == 0 {
            break;
        }
        rest = &rest[n..];
    }
    let _ = scp::parse_command(&String::from_utf8_lossy(data));
    let _ = hello::client_version_line(data);
});
