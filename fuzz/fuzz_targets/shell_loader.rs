#![no_main]
//! The echo-loader parser: each input line is split into commands (quotes, escapes, pipes,
//! redirections, here-documents) and what `echo`, `printf` and `base64 -d` would write is
//! applied to a bounded set of virtual files, as the fake shell does; then the same bytes go
//! through the fake shell itself (every flavor, typed, as a script and as a command's stdin).
use drosera_sensor::protocols::shell::files::VirtualFiles;
use drosera_sensor::protocols::shell::{fuzz_lines, lex, loader, resolve};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut files = VirtualFiles::new(4, 4096, 8192);
    for line in data.split(|&b| b == b'\n') {
        let mut piped: Option<Vec<u8>> = None;
        for c in lex::split(line) {
            let args = c.words.get(1..).unwrap_or_default();
            let out = match c.name() {
                b"echo" => loader::echo(args),
                b"printf" => loader::printf(args),
                b"base64" => loader::base64_decode(&piped.take().unwrap_or_default()),
                _ => Vec::new(),
            };
            match &c.stdout {
                Some(r) => {
                    let path = resolve("/tmp", &String::from_utf8_lossy(&r.target));
                    files.write(&path, &out, r.append);
                }
                None => piped = Some(out),
            }
            if c.name() == b"chmod" {
                for a in args {
                    let _ = files.take_if_written(&resolve("/tmp", &String::from_utf8_lossy(a)));
                }
            }
        }
    }
    let _ = files.take_all();
    fuzz_lines(data);
});
