#![no_main]
use drosera_sensor::protocols::rdp;
use libfuzzer_sys::fuzz_target;

// The X.224 Connection Request (cookie, negotiation request), the TLS ClientHello's JA3 and
// CredSSP's TSRequest framing, as an RDP client sends them in turn.
fuzz_target!(|data: &[u8]| {
    let _ = rdp::tpkt_length(data);
    let _ = rdp::parse_connection_request(data);
    let _ = rdp::tls_record_length(data);
    let _ = rdp::ja3(data);
    let mut hello = vec![0x16, 3, 1, (data.len() >> 8) as u8, data.len() as u8];
    hello.extend_from_slice(data);
    let _ = rdp::ja3(&hello);
    if let Ok(Some(total)) = rdp::der_total_length(data) {
        assert!(total >= 2);
    }
    let _ = rdp::ts_request_version(data);
    let _ = rdp::protocol_names(data.iter().fold(0u32, |a, b| a.rotate_left(8) ^ *b as u32));
});
