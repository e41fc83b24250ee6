#![no_main]
use drosera_sensor::protocols::sip::{self, parse};
use libfuzzer_sys::fuzz_target;

// One datagram as a SIP request: headers, Digest, SIPVicious, and the reply, which must fit it.
fuzz_target!(|data: &[u8]| {
    if let Ok(r) = parse::parse_request(data) {
        assert!(r.headers.len() <= parse::MAX_HEADERS && r.head_len <= data.len());
        let _ = parse::sipvicious(&r);
        if let Some(d) = r.header("authorization").and_then(parse::parse_digest) {
            let _ = parse::hashcat_11400(&d, r.method, "192.0.2.1", "198.51.100.7");
        }
        let done = sip::handle_request(&r, "192.0.2.1", "198.51.100.7", data.len());
        assert!(done.reply.is_none_or(|reply| reply.len() <= data.len()));
    }
});
