//! hpfeeds messages from a broker (`drosera_admin::hpfeeds::Frame::decode`) and the stored
//! challenge-responses password recovery parses (`drosera_admin::recover::target_of`): never
//! panic, never allocate past the message's own bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((_, n))) = drosera_admin::hpfeeds::Frame::decode(rest, 4096) {
        rest = &rest[n..];
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = drosera_admin::recover::target_of(text);
        for format in drosera_admin::recover::algos::FORMATS {
            if let Some(t) = drosera_admin::recover::algos::Target::parse(format, text, Some(text)) {
                let _ = t.check(&drosera_admin::recover::algos::Candidate::new("password"));
            }
        }
    }
});
