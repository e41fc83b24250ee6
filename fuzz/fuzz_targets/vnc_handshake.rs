#![no_main]
use drosera_sensor::protocols::vnc;
use libfuzzer_sys::fuzz_target;

// The client's ProtocolVersion message, its security type choice and its DES response.
fuzz_target!(|data: &[u8]| {
    let v = vnc::parse_version(data);
    let minor = vnc::negotiated_minor(v, 8);
    assert!(minor == 3 || minor == 7 || minor == 8);
    if let Some(head) = data.get(..12) {
        let _ = vnc::parse_version(head);
    }
    let _ = vnc::security_type_name(data.first().copied().unwrap_or(0));
    let mut challenge = [0u8; 16];
    for (c, d) in challenge.iter_mut().zip(data) {
        *c = *d;
    }
    let _ = vnc::john_line(&challenge, &vnc::des_response(&challenge, data));
});
