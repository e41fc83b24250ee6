#![no_main]
//! The frame reader both ends use (`frame::read_frame`: length prefix checked against the cap
//! before allocating, then the body) and `frame::decode_body` on its own.
use drosera_uplink::frame;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("runtime"))
}

fuzz_target!(|data: &[u8]| {
    let _ = frame::decode_body(data);
    rt().block_on(async {
        let mut r = data;
        // Read frames until an error or the end, as the admin's connection loop does.
        for _ in 0..64 {
            match frame::read_frame(&mut r, 4096).await {
                Ok(Some(_)) => continue,
                _ => break,
            }
        }
    });
});
