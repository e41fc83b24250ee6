//! The receiving end of the legacy scp protocol (`scp -t TARGET`, what `scp -O` and older
//! OpenSSH, dropbear's scp and many bots run over an SSH `exec` channel).
//!
//! WHY our own: it is tiny (control lines `C0644 SIZE NAME`, `D…`, `E`, `T…`, each answered
//! with a zero byte, then SIZE raw bytes and a zero byte), and no crate implements the server
//! side. Pure and incremental: [`ScpSink::feed`] takes whatever bytes arrived and returns one
//! step at a time, file data as borrowed slices, so an upload is streamed into the sample area
//! and never held whole. A control line is at most [`MAX_LINE`] bytes; a file's size is taken
//! from the attacker but never allocated: it only counts down the bytes that follow.

/// Longest control line accepted.
pub const MAX_LINE: usize = 4096;

/// What the sink did with the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// Everything given was used; more input is needed.
    NeedMore,
    /// Send these bytes back to the client.
    Reply(&'static [u8]),
    /// A file starts: its name (as the client sent it), size and mode.
    FileStart {
        name: String,
        size: u64,
        mode: u32,
    },
    /// The next bytes of the current file.
    Data(&'a [u8]),
    /// The current file is complete.
    FileEnd,
    /// The client entered a directory (`D`) or left one (`E`).
    Dir {
        name: String,
    },
    EndDir,
    /// The client broke the protocol; the sink is done.
    Error(String),
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Line,
    Data {
        left: u64,
    },
    /// The zero byte the client sends after a file's data.
    DataAck,
    Failed,
}

/// One scp receiving session.
#[derive(Debug)]
pub struct ScpSink {
    state: State,
    line: Vec<u8>,
    /// Directory depth entered with `D`.
    pub depth: u32,
}

impl Default for ScpSink {
    fn default() -> Self {
        ScpSink { state: State::Line, line: Vec::new(), depth: 0 }
    }
}

/// The ready byte the sink sends first, and its answer to every accepted line.
pub const OK: &[u8] = b"\0";

fn parse_header(line: &[u8]) -> Option<(u32, u64, String)> {
    let text = std::str::from_utf8(line.get(1..)?).ok()?;
    let mut parts = text.splitn(3, ' ');
    let mode = u32::from_str_radix(parts.next()?, 8).ok()?;
    let size = parts.next()?.parse::<u64>().ok()?;
    let name = parts.next()?.to_string();
    if name.is_empty() || name.contains('/') || name == ".." {
        return None;
    }
    Some((mode, size, name))
}

impl ScpSink {
    /// True once the client broke the protocol.
    pub fn failed(&self) -> bool {
        self.state == State::Failed
    }

    /// Takes bytes from `data`; returns how many it used and the step they made.
    pub fn feed<'a>(&mut self, data: &'a [u8]) -> (usize, Step<'a>) {
        match self.state {
            State::Failed => (data.len(), Step::NeedMore),
            State::Data { left } => {
                let n = (data.len() as u64).min(left) as usize;
                let left = left - n as u64;
                self.state = if left == 0 { State::DataAck } else { State::Data { left } };
                if n == 0 {
                    return if left == 0 { self.feed_ack(data) } else { (0, Step::NeedMore) };
                }
                (n, Step::Data(&data[..n]))
            }
            State::DataAck => self.feed_ack(data),
            State::Line => {
                let Some(nl) = data.iter().position(|&b| b == b'\n') else {
                    if self.line.len() + data.len() > MAX_LINE {
                        self.state = State::Failed;
                        return (data.len(), Step::Error("control line too long".into()));
                    }
                    self.line.extend_from_slice(data);
                    return (data.len(), Step::NeedMore);
                };
                if self.line.len() + nl > MAX_LINE {
                    self.state = State::Failed;
                    return (nl + 1, Step::Error("control line too long".into()));
                }
                self.line.extend_from_slice(&data[..nl]);
                let line = std::mem::take(&mut self.line);
                (nl + 1, self.line_step(&line))
            }
        }
    }

    fn feed_ack(&mut self, data: &[u8]) -> (usize, Step<'static>) {
        match data.first() {
            None => (0, Step::NeedMore),
            Some(0) => {
                self.state = State::Line;
                (1, Step::FileEnd)
            }
            Some(_) => {
                self.state = State::Failed;
                (1, Step::Error("no acknowledgement after the file data".into()))
            }
        }
    }

    fn line_step(&mut self, line: &[u8]) -> Step<'static> {
        match line.first() {
            Some(b'C') => match parse_header(line) {
                Some((mode, size, name)) => {
                    self.state = State::Data { left: size };
                    Step::FileStart { name, size, mode }
                }
                None => {
                    self.state = State::Failed;
                    Step::Error(format!("bad file line {:?}", String::from_utf8_lossy(line)))
                }
            },
            Some(b'D') => match parse_header(line) {
                Some((_, _, name)) => {
                    self.depth = self.depth.saturating_add(1);
                    Step::Dir { name }
                }
                None => {
                    self.state = State::Failed;
                    Step::Error("bad directory line".into())
                }
            },
            Some(b'E') => {
                self.depth = self.depth.saturating_sub(1);
                Step::EndDir
            }
            // Times (`scp -p`): acknowledged, nothing else.
            Some(b'T') => Step::Reply(OK),
            // The source's own warnings and errors.
            Some(1 | 2) => {
                self.state = State::Failed;
                Step::Error(String::from_utf8_lossy(&line[1..]).into_owned())
            }
            _ => {
                self.state = State::Failed;
                Step::Error(format!("unexpected line {:?}", String::from_utf8_lossy(line)))
            }
        }
    }
}

/// What an `scp` command line asks the server to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// `scp -t [-r] [-p] [-d] [-v] TARGET`: receive files. `to_dir` is true when TARGET names a
    /// directory (`-d`, `-r`, or a trailing `/`, `.` or `~`).
    Sink { target: String, to_dir: bool },
    /// `scp -f PATH…`: send files (a download, always refused).
    Source { paths: Vec<String> },
}

/// The scp mode of `cmd`, or `None` when it is not an scp server command.
pub fn parse_command(cmd: &str) -> Option<Command> {
    let mut words = cmd.split_whitespace();
    let prog = words.next()?;
    if prog.rsplit('/').next() != Some("scp") {
        return None;
    }
    let (mut sink, mut source, mut to_dir) = (false, false, false);
    let mut rest: Vec<String> = Vec::new();
    for w in words.take(64) {
        match w.strip_prefix('-') {
            Some(flags) if rest.is_empty() && !flags.is_empty() => {
                sink |= flags.contains('t');
                source |= flags.contains('f');
                to_dir |= flags.contains('d') || flags.contains('r');
            }
            _ => rest.push(w.to_string()),
        }
    }
    if sink {
        let target = rest.into_iter().next().unwrap_or_else(|| ".".into());
        let to_dir = to_dir || target.ends_with('/') || target == "." || target == "~";
        Some(Command::Sink { target, to_dir })
    } else if source {
        Some(Command::Source { paths: rest })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every step of `input` fed in pieces of `piece` bytes (file data joined per file).
    fn run(input: &[u8], piece: usize) -> Vec<String> {
        let mut s = ScpSink::default();
        let mut out = Vec::new();
        let mut data = Vec::new();
        for chunk in input.chunks(piece) {
            let mut rest = chunk;
            while !rest.is_empty() {
                let (n, step) = s.feed(rest);
                match step {
                    Step::Data(d) => data.extend_from_slice(d),
                    Step::FileEnd => out.push(format!("end {}", String::from_utf8_lossy(&std::mem::take(&mut data)))),
                    Step::NeedMore => {}
                    other => out.push(format!("{other:?}")),
                }
                rest = &rest[n..];
            }
        }
        out
    }

    #[test]
    fn files_dirs_and_times_in_any_split() {
        let input = b"T1700000000 0 1700000000 0\nC0755 5 x.bin\nhel\nl\0D0755 0 sub\nC0644 0 empty\n\0E\n";
        let want = vec![
            "Reply([0])".to_string(),
            "FileStart { name: \"x.bin\", size: 5, mode: 493 }".into(),
            "end hel\nl".into(),
            "Dir { name: \"sub\" }".into(),
            "FileStart { name: \"empty\", size: 0, mode: 420 }".into(),
            "end ".into(),
            "EndDir".into(),
        ];
        for piece in 1..=input.len() {
            assert_eq!(run(input, piece), want, "pieces of {piece}");
        }
    }

    #[test]
    fn protocol_errors_end_the_sink() {
        assert!(run(b"C0644 5 ../x\n", 64)[0].starts_with("Error"));
        assert!(run(b"X\n", 64)[0].starts_with("Error"));
        assert!(run(b"C0644 1 a\nzQ", 64).last().unwrap().starts_with("Error"));
        assert!(run(&[b'C'; 5000], 64).last().unwrap().starts_with("Error"));
    }

    #[test]
    fn commands() {
        let sink = |t: &str, d: bool| Some(Command::Sink { target: t.into(), to_dir: d });
        assert_eq!(parse_command("scp -t /tmp/"), sink("/tmp/", true));
        assert_eq!(parse_command("scp -v -t -- x.bin"), sink("x.bin", false));
        assert_eq!(parse_command("/usr/bin/scp -r -t ."), sink(".", true));
        assert_eq!(parse_command("scp -f /etc/passwd"), Some(Command::Source { paths: vec!["/etc/passwd".into()] }));
        assert_eq!(parse_command("ls -t"), None);
        assert_eq!(parse_command("scp x y"), None);
    }

    #[test]
    fn hostile_input_never_panics() {
        for b in crate::protocols::hostile::random_inputs(0x5c90_0000_0000_0001, 20_000, 200, false) {
            let mut s = ScpSink::default();
            let mut rest = &b[..];
            let mut rounds = 0;
            while !rest.is_empty() && rounds < 10_000 {
                let (n, _) = s.feed(rest);
                rest = &rest[n..];
                rounds += 1;
            }
            let _ = parse_command(&String::from_utf8_lossy(&b));
        }
    }
}
