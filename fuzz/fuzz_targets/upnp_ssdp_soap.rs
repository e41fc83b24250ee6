#![no_main]
use drosera_sensor::protocols::upnp::{self, parse};
use libfuzzer_sys::fuzz_target;

// A datagram as SSDP (the reply fits it) and as a SOAP body (bounded arguments).
fuzz_target!(|data: &[u8]| {
    if let Some(s) = parse::parse_ssdp(data) {
        if let Some(reply) = upnp::ssdp_reply(s.target, "http://192.0.2.1:49152/rootDesc.xml", data.len()) {
            assert!(reply.len() <= data.len());
        }
    }
    let args = parse::soap_args(data);
    assert!(args.len() <= parse::MAX_ARGS && args.iter().all(|(_, v)| v.len() <= parse::MAX_VALUE));
    let _ = parse::soap_action(&String::from_utf8_lossy(data));
});
