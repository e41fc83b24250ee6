#![no_main]
use drosera_sensor::protocols::epmap;
use libfuzzer_sys::fuzz_target;

// A DCE/RPC PDU: the header, a bind (and the bind_ack built for it), a request.
fuzz_target!(|data: &[u8]| {
    let Ok(h) = epmap::parse_header(data) else {
        return;
    };
    assert!((16..=epmap::MAX_FRAGMENT).contains(&(h.frag_length as usize)));
    if let Ok(b) = epmap::parse_bind(&h, data) {
        assert!(b.contexts.len() <= epmap::MAX_CONTEXTS);
        let ack = epmap::bind_ack(&b, h.call_id, 1, false);
        assert!(epmap::parse_header(&ack).is_ok());
        for c in &b.contexts {
            let _ = epmap::describe(c);
        }
    }
    let _ = epmap::parse_request(&h, data);
});
