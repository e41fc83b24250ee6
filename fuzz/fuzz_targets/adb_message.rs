#![no_main]
use drosera_sensor::config::Persona;
use drosera_sensor::protocols::adb::{shell, sync, wire};
use libfuzzer_sys::fuzz_target;

// A message header, then the rest as a sync stream (in the fuzzer's own cuts), as shell v2
// stdin packets, as a service name and as a shell command line.
fuzz_target!(|data: &[u8]| {
    if data.len() >= 24 {
        let mut h = [0u8; 24];
        h.copy_from_slice(&data[..24]);
        if let Ok(hdr) = wire::parse_header(&h, wire::MAX_PAYLOAD) {
            assert!(hdr.data_length <= wire::MAX_PAYLOAD);
        }
    }
    let cut = data.first().map_or(1, |&b| b as usize % 61 + 1);
    let mut parser = sync::SyncParser::default();
    for piece in data.chunks(cut) {
        let mut at = 0;
        while at < piece.len() {
            let mut events = Vec::new();
            let used = parser.feed(&piece[at..], &mut events);
            assert!(used > 0 && events.len() <= sync::MAX_EVENTS);
            for e in events {
                if let sync::SyncEvent::Data { start, end } = e {
                    assert!(start < end && end <= piece.len() - at);
                }
            }
            at += used;
        }
    }
    let mut stdin = data.to_vec();
    let _ = shell::take_v2_packets(&mut stdin, 4096);
    let text = String::from_utf8_lossy(data);
    let _ = shell::parse_service(&text);
    let _ = shell::output(shell::device(Persona::Mixed), &text);
    let _ = wire::service_name(data);
});
