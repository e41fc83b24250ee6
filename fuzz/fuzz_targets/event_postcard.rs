#![no_main]
use drosera_uplink::event::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut ev) = postcard::from_bytes::<Event>(data) {
        ev.clamp();
        let _ = ev.detail.to_fields();
    }
});
