#![no_main]
use drosera_sensor::config::Persona;
use drosera_sensor::protocols::redis::{resp, server};
use libfuzzer_sys::fuzz_target;

// RESP request lines, inline splitting, and the emulated server over whatever arguments the
// fuzzer's lines split into (every command name is reachable through the first word).
fuzz_target!(|data: &[u8]| {
    let f = server::flavor(Persona::Mixed);
    let mut dataset = server::Dataset::default();
    let mut conn = server::Conn::default();
    for line in data.split(|&b| b == b'\n').take(64) {
        let _ = resp::parse_bulk_len(line);
        let args = match resp::parse_start(line) {
            Ok(resp::Start::Inline(args)) => args,
            _ => continue,
        };
        let _ = resp::command_line(&args, 64);
        let out = server::execute(f, f.version, &mut dataset, &mut conn, &args, 1_700_000_000, "0123456789");
        assert!(dataset.keys.len() <= server::MAX_KEYS);
        for (_, _, v) in out.payloads {
            let _ = server::payload_kind(&v);
        }
    }
    let _ = server::glob(data, b"dbfilename");
});
