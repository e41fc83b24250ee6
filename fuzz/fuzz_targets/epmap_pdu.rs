#![no_main]
use drosera_sensor::config::EpmapSection;
use drosera_sensor::protocols::epmap;
use libfuzzer_sys::fuzz_target;

// A DCE/RPC PDU: the header, a bind (and the bind_ack built for it), a request.
fuzz_target!(|data: &[u8]| {
    let caps = EpmapSection::default();
    let Ok(h) = epmap::parse_header(data, caps.max_fragment_bytes) else {
        return;
    };
    assert!((16..=caps.max_fragment_bytes).contains(&(h.frag_length as usize)));
    if let Ok(b) = epmap::parse_bind(&h, data, caps.max_contexts) {
        assert!(b.contexts.len() <= caps.max_contexts);
        let ack = epmap::bind_ack(&b, h.call_id, 1, false);
        assert!(epmap::parse_header(&ack, caps.max_fragment_bytes).is_ok());
        for c in &b.contexts {
            let _ = epmap::describe(c);
        }
    }
    let _ = epmap::parse_request(&h, data);
});
