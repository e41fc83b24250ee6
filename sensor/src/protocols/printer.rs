//! Raw printing (9100, "JetDirect"): PJL and PostScript, so printer abuse and print-spam show up.
//!
//! Port 9100 takes whatever is sent as a print job. Attackers use it for PJL file-system access
//! (`FSDIRLIST`, `FSUPLOAD`, `FSDOWNLOAD` to plant files: PRET and similar tools), to change
//! the display (`RDYMSG`), for PostScript file operators, and for print spam. We answer the PJL
//! status and information requests a real HP printer answers (`@PJL INFO ID` with the model,
//! `INFO STATUS` with the ready message, which `RDYMSG` changes for the rest of the session,
//! `ECHO`, the file-system queries as an almost empty volume `0:`) and record each PJL command
//! and each PostScript line that names a file operator as a `Command`. The whole job, every
//! byte the client sent, is kept as a sample (source `printer-job`) through the session's
//! capture, bounded by the sample cap.
//!
//! The parser ([`Parser`]) is a pure function of the bytes fed to it; the handler only moves
//! bytes and replies. Bounded by the `[printer]` config section ([`PrinterSection`]): lines
//! longer than `max_line_bytes` are cut (the rest up to the next newline is skipped, still kept
//! in the job), at most `max_commands` commands are recorded per session (the rest are counted
//! in one last `Command`), the ready message is capped at [`MAX_RDYMSG`].

use crate::config::{PrinterSection, ServiceSection};
use crate::session::{Session, SessionResult};
use drosera_uplink::event::{CloseReason, Detail};

/// Longest ready message kept.
pub const MAX_RDYMSG: usize = 64;
/// The model `@PJL INFO ID` names when the config gives no banner.
pub const DEFAULT_BANNER: &str = "HP LaserJet 4250";
/// The Universal Exit Language sequence that starts and ends PJL jobs.
pub const UEL: &[u8] = b"\x1b%-12345X";

/// What one line asks of the printer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A command to record.
    Command(String),
    /// Bytes to send back.
    Reply(Vec<u8>),
}

/// The PJL/PostScript stream parser: feed it bytes as they arrive, it returns what to record
/// and what to answer.
#[derive(Debug, Clone)]
pub struct Parser {
    model: String,
    ready: String,
    line: Vec<u8>,
    /// Longest line examined (`printer.max_line_bytes`).
    max_line: usize,
    /// The current line was longer than `max_line`: skip to its end.
    overflow: bool,
    /// Binary bytes of an `FSDOWNLOAD` still to pass over.
    skip: u64,
}

impl Parser {
    /// A parser for a printer called `model` examining lines of at most `max_line` bytes.
    pub fn new(model: &str, max_line: usize) -> Parser {
        Parser { model: model.to_string(), ready: "Ready".into(), line: Vec::new(), max_line, overflow: false, skip: 0 }
    }

    /// The current ready message (`INFO STATUS`'s DISPLAY).
    pub fn ready_message(&self) -> &str {
        &self.ready
    }

    /// Feeds bytes; returns what they asked for.
    pub fn feed(&mut self, mut data: &[u8]) -> Vec<Action> {
        let mut out = Vec::new();
        while !data.is_empty() {
            if self.skip > 0 {
                let n = (self.skip.min(data.len() as u64)) as usize;
                self.skip -= n as u64;
                data = &data[n..];
                continue;
            }
            let (part, rest, ended) = match data.iter().position(|&b| b == b'\n') {
                Some(p) => (&data[..p], &data[p + 1..], true),
                None => (data, &data[data.len()..], false),
            };
            data = rest;
            if !self.overflow {
                let room = self.max_line.saturating_sub(self.line.len());
                if part.len() > room {
                    self.line.extend_from_slice(&part[..room]);
                    self.overflow = true;
                } else {
                    self.line.extend_from_slice(part);
                }
            }
            if ended {
                let line = std::mem::take(&mut self.line);
                self.overflow = false;
                self.line_done(&line, &mut out);
            }
        }
        out
    }

    fn line_done(&mut self, raw: &[u8], out: &mut Vec<Action>) {
        let mut line = raw;
        while let Some(rest) = line.strip_prefix(UEL) {
            line = rest;
        }
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r').trim();
        if line.is_empty() {
            return;
        }
        let upper = line.to_ascii_uppercase();
        if let Some(cmd) = upper.strip_prefix("@PJL") {
            out.push(Action::Command(format!("PJL {}", line[4..].trim())));
            if let Some(r) = self.pjl(cmd.trim(), line[4..].trim()) {
                out.push(Action::Reply(r));
            }
        } else if line.starts_with("%!") || postscript_file_operator(line) {
            out.push(Action::Command(format!("PostScript {line}")));
        }
    }

    /// The reply to one PJL command (`cmd` upper-cased, `orig` as sent, both without `@PJL`).
    fn pjl(&mut self, cmd: &str, orig: &str) -> Option<Vec<u8>> {
        let reply = |body: String| Some(format!("@PJL {orig}\r\n{body}\x0c").into_bytes());
        let name = quoted(orig).unwrap_or_default();
        if cmd.starts_with("INFO ID") {
            return reply(format!("\"{}\"\r\n", self.model));
        }
        if cmd.starts_with("INFO STATUS") {
            return reply(format!("CODE=10001\r\nDISPLAY=\"{}\"\r\nONLINE=TRUE\r\n", self.ready));
        }
        if cmd.starts_with("INFO CONFIG") {
            return reply(
                "IN TRAYS [1 ENUMERATED]\r\n\tINTRAY1 MP\r\nOUT TRAYS [1 ENUMERATED]\r\n\tNORMAL FACEDOWN\r\n\
                 LANGUAGES [3 ENUMERATED]\r\n\tPCL\r\n\tPOSTSCRIPT\r\n\tPDF\r\nMEMORY=134217728\r\n\
                 DISPLAY LINES=4\r\nDISPLAY CHARACTER SIZE=16\r\n"
                    .into(),
            );
        }
        if cmd.starts_with("INFO FILESYS") {
            return reply(
                "VOLUME TOTAL SIZE FREE SPACE LOCATION LABEL STATUS\r\n0:  7999488 7829504 RAM <HP> READ-WRITE\r\n"
                    .into(),
            );
        }
        if cmd.starts_with("INFO MEMORY") {
            return reply("TOTAL=99831824\r\nLARGEST=98238592\r\n".into());
        }
        if cmd.starts_with("INFO PAGECOUNT") {
            return reply("PAGECOUNT=48213\r\n".into());
        }
        if cmd.starts_with("INFO PRODINFO") {
            return reply(format!("FORMATTERNUMBER=\"Q6505A\"\r\nPRODUCT=\"{}\"\r\n", self.model));
        }
        if cmd.starts_with("INFO VARIABLES") {
            return reply(
                "COPIES=1 [2 RANGE]\r\n\t1\r\n\t999\r\nPAPER=LETTER [3 ENUMERATED]\r\n\tLETTER\r\n\tLEGAL\r\n\tA4\r\n"
                    .into(),
            );
        }
        if cmd.starts_with("INFO USTATUS") {
            return reply(
                "DEVICE=[3 ENUMERATED]\r\n\tOFF\r\n\tON\r\n\tVERBOSE\r\nJOB=[2 ENUMERATED]\r\n\tOFF\r\n\tON\r\n".into(),
            );
        }
        if cmd.starts_with("ECHO") {
            return Some(format!("@PJL {orig}\r\n\x0c").into_bytes());
        }
        if cmd.starts_with("RDYMSG") || cmd.starts_with("OPMSG") || cmd.starts_with("STMSG") {
            let mut msg = name;
            if msg.len() > MAX_RDYMSG {
                let mut end = MAX_RDYMSG;
                while !msg.is_char_boundary(end) {
                    end -= 1;
                }
                msg.truncate(end);
            }
            self.ready = msg;
            return None;
        }
        if cmd.starts_with("FSDIRLIST") {
            let entries = if is_root(&name) {
                ". TYPE=DIR\r\n.. TYPE=DIR\r\nPJL TYPE=DIR\r\nwebServer TYPE=DIR\r\nsaveDevice TYPE=DIR\r\n"
            } else {
                "FILEERROR=3\r\n"
            };
            return Some(format!("@PJL FSDIRLIST NAME=\"{name}\" ENTRY=1\r\n{entries}\x0c").into_bytes());
        }
        if cmd.starts_with("FSQUERY") {
            let what = if is_root(&name) { "TYPE=DIR" } else { "FILEERROR=3" };
            return Some(format!("@PJL FSQUERY NAME=\"{name}\" {what}\r\n\x0c").into_bytes());
        }
        if cmd.starts_with("FSUPLOAD") {
            return Some(format!("@PJL FSUPLOAD NAME=\"{name}\" FILEERROR=3\r\n\x0c").into_bytes());
        }
        if cmd.starts_with("FSDOWNLOAD") {
            self.skip = size_arg(cmd).unwrap_or(0);
        }
        None
    }
}

/// The first double-quoted value of a PJL command (`NAME="0:\..."`, `DISPLAY="..."`).
pub fn quoted(s: &str) -> Option<String> {
    let start = s.find('"')? + 1;
    let end = s[start..].find('"').map_or(s.len(), |e| start + e);
    Some(s[start..end].to_string())
}

/// The `SIZE=n` argument of a PJL command.
pub fn size_arg(upper: &str) -> Option<u64> {
    let at = upper.find("SIZE")?;
    let rest = upper[at + 4..].trim_start().strip_prefix('=')?.trim_start();
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).take(19).collect();
    digits.parse().ok()
}

fn is_root(name: &str) -> bool {
    matches!(name.trim_end_matches(['\\', '/']), "0:" | "0:\\" | "")
}

/// True for a PostScript line that uses a file operator (reading, writing, listing, deleting
/// the printer's files).
pub fn postscript_file_operator(line: &str) -> bool {
    const OPS: [&str; 6] = ["deletefile", "renamefile", "filenameforall", "file", "setfileposition", "setpassword"];
    line.split(|c: char| c.is_whitespace() || "()[]{}/<>".contains(c)).any(|w| OPS.contains(&w))
}

pub(crate) async fn handle(session: &mut Session, svc: &ServiceSection) -> SessionResult<()> {
    let model = if svc.banner.is_empty() { DEFAULT_BANNER } else { svc.banner.as_str() };
    let caps: PrinterSection = session.services().printer;
    let mut parser = Parser::new(model, caps.max_line_bytes);
    let mut job = session.capture("printer-job");
    let extra = session.file_cap();
    session.allow_bytes_in(extra);
    let mut recorded = 0usize;
    let mut unrecorded = 0u64;
    let mut buf = Vec::with_capacity(8192);
    let end = loop {
        let chunk = match session.peek_some(8192).await {
            Ok(c) => c,
            Err(e) => break e,
        };
        buf.clear();
        buf.extend_from_slice(chunk);
        let n = buf.len();
        session.consume(n);
        job.update(&buf);
        let mut failed = None;
        for action in parser.feed(&buf) {
            match action {
                Action::Command(line) if recorded < caps.max_commands => {
                    recorded += 1;
                    session.emit(Detail::Command { line });
                }
                Action::Command(_) => unrecorded += 1,
                Action::Reply(r) => {
                    if let Err(e) = session.write_all(&r).await {
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        if let Some(e) = failed {
            break e;
        }
    };
    if unrecorded > 0 {
        session.emit(Detail::Command { line: format!("({unrecorded} more commands not recorded)") });
    }
    if job.size() > 0 {
        if end == CloseReason::ByteCap {
            job.mark_truncated();
        }
        session.emit_capture(job, "");
    }
    match end {
        CloseReason::ClientClosed => Ok(()),
        e => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_LINE: usize = 1024;

    fn replies(a: &[Action]) -> String {
        a.iter()
            .filter_map(|x| match x {
                Action::Reply(r) => Some(String::from_utf8_lossy(r).into_owned()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn info_id_and_status_answer_like_an_hp() {
        let mut p = Parser::new(DEFAULT_BANNER, MAX_LINE);
        let a = p.feed(b"\x1b%-12345X@PJL INFO ID\r\n\x1b%-12345X\r\n");
        assert_eq!(replies(&a), "@PJL INFO ID\r\n\"HP LaserJet 4250\"\r\n\x0c");
        assert_eq!(a[0], Action::Command("PJL INFO ID".into()));
        let a = p.feed(b"@PJL RDYMSG DISPLAY = \"hacked\"\r\n@PJL INFO STA");
        assert!(replies(&a).is_empty());
        let a = p.feed(b"TUS\r\n");
        assert!(replies(&a).contains("DISPLAY=\"hacked\""), "{a:?}");
    }

    #[test]
    fn fsdownload_data_is_skipped_and_file_system_queries_answered() {
        let mut p = Parser::new(DEFAULT_BANNER, MAX_LINE);
        let a = p.feed(b"@PJL FSDOWNLOAD FORMAT:BINARY SIZE=5 NAME=\"0:\\x.sh\"\r\n@PJL\n@PJL ECHO x\r\n");
        // The 5 file bytes (which look like a command) are passed over.
        assert_eq!(a.len(), 3, "{a:?}");
        assert_eq!(a[1], Action::Command("PJL ECHO x".into()));
        let a = p.feed(b"@PJL FSDIRLIST NAME=\"0:\\\" ENTRY=1 COUNT=10\r\n@PJL FSUPLOAD NAME=\"0:\\etc\\passwd\"\r\n");
        let r = replies(&a);
        assert!(r.contains("PJL TYPE=DIR") && r.contains("FILEERROR=3"), "{r}");
        assert_eq!(size_arg("FORMAT:BINARY SIZE = 123 NAME"), Some(123));
        assert_eq!(quoted("NAME=\"0:\\a\""), Some("0:\\a".into()));
    }

    #[test]
    fn postscript_file_operators_are_recorded() {
        let mut p = Parser::new(DEFAULT_BANNER, MAX_LINE);
        let a = p.feed(b"%!PS-Adobe-3.0\n/x 1 def\n(/etc/passwd) (r) file\nshowpage\n");
        assert_eq!(
            a,
            vec![
                Action::Command("PostScript %!PS-Adobe-3.0".into()),
                Action::Command("PostScript (/etc/passwd) (r) file".into())
            ]
        );
    }

    #[test]
    fn long_lines_are_cut() {
        let mut p = Parser::new(DEFAULT_BANNER, MAX_LINE);
        let mut long = b"@PJL ECHO ".to_vec();
        long.extend(std::iter::repeat_n(b'a', 10 * MAX_LINE));
        assert!(p.feed(&long).is_empty());
        let a = p.feed(b"\n@PJL INFO ID\n");
        assert_eq!(a.len(), 4);
        if let Action::Reply(r) = &a[1] {
            assert!(r.len() < MAX_LINE + 32);
        }
    }

    #[test]
    fn hostile_input_never_panics() {
        for b in crate::protocols::hostile::random_inputs(0x9100_0000_0001, 20_000, 64, true) {
            let mut p = Parser::new(DEFAULT_BANNER, MAX_LINE);
            let mut m = b"@PJL ".to_vec();
            m.extend_from_slice(&b);
            m.push(b'\n');
            let _ = p.feed(&m);
            let _ = p.feed(&b);
        }
        for b in crate::protocols::hostile::random_inputs(0x9100_0000_0002, 5_000, 64, false) {
            let _ = Parser::new(DEFAULT_BANNER, MAX_LINE).feed(&b);
        }
    }
}
