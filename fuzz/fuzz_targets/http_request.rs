#![no_main]
use drosera_sensor::protocols::http;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    if let Some(first) = lines.next() {
        if let Ok(mut req) = http::parse_request_line(first) {
            for l in lines.take(http::MAX_HEADERS) {
                if let Ok(h) = http::parse_header_line(l) {
                    req.headers.push(h);
                }
            }
            let _ = req.content_length();
            let _ = req.keep_alive();
            let _ = req.is_form();
            let _ = req.expects_continue();
            let _ = req.is_chunked();
            if let Some(a) = req.header("authorization") {
                let _ = http::basic_auth(a);
            }
        }
    }
    // A body: form text or a file, and the login in it.
    let _ = http::looks_like_form(data);
    let _ = http::form_login(data);
    // A chunked body's size lines.
    for line in data.split(|&b| b == b'\n').take(64) {
        let _ = http::parse_chunk_size(line);
    }
});
