#![no_main]
use drosera_sensor::config::PptpSection;
use drosera_sensor::protocols::pptp;
use libfuzzer_sys::fuzz_target;

// A PPTP control message: the header (length capped), Start-Control-Connection-Request and
// Outgoing-Call-Request, and the replies built for them.
fuzz_target!(|data: &[u8]| {
    let max = PptpSection::default().max_message_bytes;
    if let Some(h) = pptp::parse_header(data, max) {
        assert!((12..=max).contains(&(h.length as usize)));
    }
    if let Some(r) = pptp::parse_start_request(data) {
        assert!(r.host_name.len() <= 64 * 3 && r.vendor.len() <= 64 * 3);
    }
    if let Some(r) = pptp::parse_call_request(data) {
        assert_eq!(pptp::call_reply(&r, 1).len(), 32);
    }
});
