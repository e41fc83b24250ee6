#![no_main]
use drosera_sensor::protocols::{dropper, smtp};
use libfuzzer_sys::fuzz_target;

// Command lines, paths, SASL responses, body pieces and subjects; and the URL extraction that
// ADB, Redis and Docker run over attacker shell text.
fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n').take(64) {
        let (verb, arg) = smtp::parse_command(line);
        let _ = smtp::parse_path(&arg, "FROM");
        let _ = smtp::parse_path(&arg, &verb);
        let _ = smtp::decode_plain(&arg);
        let _ = smtp::body_piece(line, true);
        let _ = smtp::body_piece(line, false);
    }
    let _ = smtp::subject(data);
    let d = dropper::downloads(&String::from_utf8_lossy(data));
    assert!(d.len() <= dropper::MAX_URLS);
});
