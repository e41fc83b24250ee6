#![no_main]
use drosera_sensor::protocols::memcached::{self, parse};
use libfuzzer_sys::fuzz_target;

// A datagram with memcached's UDP frame, its first line as a command, and the reply cut to it.
fuzz_target!(|data: &[u8]| {
    if let Some((h, text)) = parse::udp_frame(data) {
        let (line, _) = parse::split_line(text).unwrap_or((text, &[]));
        if let Ok(cmd) = parse::parse_line(line) {
            assert!(cmd.keys.len() <= parse::MAX_KEYS);
            let body = memcached::response(&cmd);
            if let Some(reply) = parse::udp_reply(h.request_id, &body, data.len()) {
                assert!(reply.len() <= data.len());
            }
        }
    }
    let _ = parse::parse_line(data);
});
