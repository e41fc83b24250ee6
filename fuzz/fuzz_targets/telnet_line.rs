#![no_main]
use drosera_sensor::protocols::shell::editor::LineEditor;
use drosera_sensor::protocols::{shell, telnet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The Telnet decoder, then the line editor, as the telnet handler runs them.
    let mut dec = telnet::TelnetDecoder::default();
    let mut ed = LineEditor::new(256);
    let mut echo = Vec::new();
    for &b in data {
        if let telnet::Decoded::Data(c) = dec.byte(b) {
            let _ = ed.feed(&[c], true, &mut echo);
        }
    }
    let clean = telnet::strip_iac(data);
    let _ = telnet::to_nvt(&clean);
    let _ = shell::extract_downloads(&String::from_utf8_lossy(&clean));
});
