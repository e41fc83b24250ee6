#![no_main]
use drosera_sensor::protocols::tftp::parse;
use libfuzzer_sys::fuzz_target;

// One datagram as a TFTP packet; an error reply built to fit it never exceeds it.
fuzz_target!(|data: &[u8]| {
    if let Ok(parse::Packet::Rrq(r) | parse::Packet::Wrq(r)) = parse::parse(data) {
        assert!(r.options.len() <= parse::MAX_OPTIONS);
    }
    if let Some(e) = parse::error(parse::ERR_NOT_FOUND, &String::from_utf8_lossy(data), data.len()) {
        assert!(e.len() <= data.len());
    }
});
