#![no_main]
use drosera_sensor::config::PrinterSection;
use drosera_sensor::protocols::printer;
use libfuzzer_sys::fuzz_target;

// A print job fed in two pieces (split where the first byte says): PJL commands and their
// replies, FSDOWNLOAD data, PostScript lines.
fuzz_target!(|data: &[u8]| {
    let cut = data.first().map_or(0, |&b| b as usize).min(data.len());
    let max_line = PrinterSection::default().max_line_bytes;
    let mut p = printer::Parser::new(printer::DEFAULT_BANNER, max_line);
    for part in [&data[..cut], &data[cut..]] {
        for a in p.feed(part) {
            if let printer::Action::Reply(r) = a {
                assert!(r.len() <= 2 * max_line + 512);
            }
        }
    }
    assert!(p.ready_message().len() <= printer::MAX_RDYMSG);
});
