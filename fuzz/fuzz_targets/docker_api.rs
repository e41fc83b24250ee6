#![no_main]
use drosera_sensor::protocols::docker::api;
use libfuzzer_sys::fuzz_target;

// Paths, queries and the JSON bodies of container create and exec (HTTP framing is the http
// service's, fuzzed by http_request).
fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = api::strip_version(&text);
    let _ = api::api_version(&text);
    let q = api::parse_query(&text);
    assert!(q.len() <= 32);
    let _ = api::full_image(&text);
    if let Some(c) = api::parse_create(data) {
        let _ = c.mounts_host_root();
        let _ = c.command_line();
    }
    let _ = api::parse_exec(data);
    let _ = api::container_name(&text);
});
