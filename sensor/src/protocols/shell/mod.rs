//! The fake shell behind every login that "succeeds": Telnet after its login prompt, and SSH
//! `shell` and `exec` channel requests.
//!
//! WHY one shell for both: an attacker's session looks the same over either transport (recon
//! commands, a dropper, an echo-loader), and what the sensor records must not depend on the
//! transport. The shell is synchronous and owns no socket: a transport hands it lines
//! ([`Shell::input_line`]) or a whole command string ([`Shell::run_script`]) and sends back the
//! [`Reply`]; every event goes out through a [`Recorder`], so the same code runs under a
//! Telnet `Session`, under russh's callbacks, and in unit tests.
//!
//! What it does with a line:
//! * records it as a `Command` event (at most `max_events` per session; later lines are counted
//!   and reported once at the end),
//! * records every wget/curl/tftp/ftpget URL as `DownloadOffered` ([`downloads`]),
//! * answers believably for its [`Flavor`] (BusyBox on a router, Debian's bash, Windows `cmd`),
//! * follows the files that `echo`, `printf`, `base64 -d` and here-documents write
//!   ([`files`], [`loader`]) and keeps each one as a sample once the attacker makes it
//!   executable, runs it, deletes it or leaves.
//!
//! Nothing is ever executed or fetched: every command is a lookup in a table of canned answers.

mod commands;
pub mod downloads;
pub mod editor;
pub mod files;
pub mod lex;
pub mod loader;

pub use downloads::extract_downloads;

use crate::capture::PayloadCapture;
use drosera_uplink::event::Detail;
use files::{VirtualFile, VirtualFiles};

/// Which system the shell pretends to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// A router's BusyBox `ash` (MIPS, root).
    BusyBox,
    /// Debian 12's `bash`.
    Debian,
    /// Windows Server's `cmd.exe` (OpenSSH for Windows, Microsoft Telnet).
    WindowsCmd,
}

/// Which program logged the user in (they print the last login differently).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// sshd.
    Sshd,
    /// login(1), behind a telnetd.
    Login,
}

/// Where the shell's events go: a Telnet session or an SSH connection's emitter.
pub(crate) trait Recorder {
    fn emit(&self, detail: Detail);
    /// A capture for a file rebuilt by the shell (source `telnet-echo` or `ssh-echo`).
    fn capture(&self) -> PayloadCapture;
    fn emit_capture(&self, capture: PayloadCapture, name: &str);
}

/// Per-session caps of a shell.
#[derive(Clone, Debug)]
pub struct ShellLimits {
    /// `Command` events per session; later lines are counted, not recorded one by one.
    pub max_events: usize,
    /// Lines processed per session; past it the shell asks the transport to close.
    pub max_lines: u64,
    /// Files followed at once.
    pub max_files: usize,
    /// Largest file followed (the sample cap plus one, so a larger one is reported as such).
    pub max_file: usize,
    /// Bytes of all followed files together (the session's payload cap).
    pub file_budget: usize,
    /// Output bytes per line.
    pub max_output: usize,
}

impl Default for ShellLimits {
    fn default() -> Self {
        ShellLimits {
            max_events: 200,
            max_lines: 20_000,
            max_files: 16,
            max_file: 16 << 20,
            file_budget: 1 << 20,
            max_output: 64 << 10,
        }
    }
}

impl ShellLimits {
    /// The caps of a session whose payload cap is `max_payload` (it bounds the files followed
    /// in memory) on a sensor whose sample cap is `max_sample` (`None`: no sample area, files
    /// are only hashed).
    pub fn for_session(max_payload: usize, max_sample: Option<u64>) -> ShellLimits {
        let max_file = max_sample.map_or(usize::MAX, |s| usize::try_from(s.saturating_add(1)).unwrap_or(usize::MAX));
        ShellLimits { file_budget: max_payload, max_file, ..ShellLimits::default() }
    }
}

/// The shell's answer to one line.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Reply {
    /// What the terminal shows, with `\n` line ends (a pty transport turns them into `\r\n`).
    pub output: Vec<u8>,
    /// The user logged out (`exit`), or the session's line cap was reached.
    pub exit: bool,
}

/// A line with a here-document, waiting for its body.
struct Pending {
    commands: Vec<lex::Command>,
    /// Index of the command that reads the body.
    at: usize,
    delimiter: Vec<u8>,
    strip_tabs: bool,
    body: Vec<u8>,
    /// Body lines were dropped at the cap: what the command writes is marked truncated.
    cut: bool,
}

/// Nested `sh -c`, `… | sh` scripts run at most this deep.
const MAX_DEPTH: u8 = 2;
/// Lines of a nested script that are run.
const MAX_NESTED_LINES: usize = 256;
/// Nested lines run for one input (a typed line, an `exec`): without it a script that runs
/// itself costs 256 × 256 lines per typed line, seconds of a Pi's CPU.
const MAX_NESTED_PER_INPUT: usize = 1024;

/// One session's shell.
pub(crate) struct Shell {
    flavor: Flavor,
    user: String,
    cwd: String,
    files: VirtualFiles,
    pending: Option<Pending>,
    limits: ShellLimits,
    lines: u64,
    events: usize,
    shed_lines: u64,
    shed_bytes: u64,
    /// Input bytes (here-document bodies, an `exec`'s stdin) dropped past the caps.
    shed_input: u64,
    /// Nested lines run for the current input (see [`MAX_NESTED_PER_INPUT`]).
    nested_run: usize,
    /// `DownloadOffered` events recorded, and those past `max_events` only counted.
    offered: usize,
    shed_offers: u64,
}

impl Shell {
    pub fn new(flavor: Flavor, user: &str, limits: ShellLimits) -> Shell {
        let files = VirtualFiles::new(limits.max_files, limits.max_file, limits.file_budget);
        let user = if user.is_empty() || flavor == Flavor::BusyBox { "root".to_string() } else { user.to_string() };
        let cwd = commands::home(flavor, &user);
        Shell {
            flavor,
            user,
            cwd,
            files,
            pending: None,
            limits,
            lines: 0,
            events: 0,
            shed_lines: 0,
            shed_bytes: 0,
            shed_input: 0,
            nested_run: 0,
            offered: 0,
            shed_offers: 0,
        }
    }

    /// What the system prints right after a login (before the first prompt), as sshd or
    /// login(1) (`via`) shows it.
    pub fn motd(&self, via: Via) -> String {
        commands::motd(self.flavor, &self.user, via)
    }

    /// The prompt to show now (`> ` while a here-document is being read).
    pub fn prompt(&self) -> String {
        if self.pending.is_some() {
            return "> ".into();
        }
        commands::prompt(self.flavor, &self.user, &self.cwd)
    }

    /// Runs one line the attacker typed.
    pub fn input_line(&mut self, rec: &dyn Recorder, raw: &[u8]) -> Reply {
        self.nested_run = 0;
        self.lines += 1;
        if self.lines > self.limits.max_lines {
            return Reply { output: Vec::new(), exit: true };
        }
        self.record(rec, raw);
        if let Some(p) = self.pending.as_mut() {
            let l = if p.strip_tabs { trim_tabs(raw) } else { raw };
            if l == p.delimiter.as_slice() {
                let p = self.pending.take();
                return match p {
                    Some(p) => self.execute_input(rec, &p.commands, (p.at, &p.body), p.cut),
                    None => Reply::default(),
                };
            }
            // The body is bounded by the bytes a file may hold (base64 takes 4/3 of them).
            let cap = self.limits.file_budget.saturating_mul(4) / 3 + 4;
            let body_line = if p.strip_tabs { trim_tabs(raw) } else { raw };
            if p.body.len() + body_line.len() < cap {
                p.body.extend_from_slice(body_line);
                p.body.push(b'\n');
            } else {
                p.cut = true;
                self.shed_input += body_line.len() as u64 + 1;
            }
            return Reply::default();
        }
        self.line(rec, raw, 0)
    }

    /// Runs a whole command string (an SSH `exec` request, a script on stdin): each line as if
    /// typed, here-documents included. Output is gathered; `exit` stops it.
    pub fn run_script(&mut self, rec: &dyn Recorder, script: &[u8]) -> Reply {
        let mut out = Vec::new();
        let mut lines = script.split(|&b| b == b'\n').peekable();
        while let Some(l) = lines.next() {
            if lines.peek().is_none() && l.is_empty() {
                break;
            }
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            let r = self.input_line(rec, l);
            append_capped(&mut out, &r.output, self.limits.max_output);
            if r.exit {
                return Reply { output: out, exit: true };
            }
        }
        Reply { output: out, exit: false }
    }

    /// Runs one command line whose standard input is `stdin` (an SSH `exec` of `cat > f`,
    /// `sh`, `base64 -d > f`, fed by the client's channel data until it sent end-of-file).
    /// `dropped` counts the bytes the transport dropped past its cap: they are reported, and
    /// files written from the cut input are marked truncated.
    pub fn run_with_stdin(&mut self, rec: &dyn Recorder, line: &[u8], stdin: &[u8], dropped: u64) -> Reply {
        let cut = dropped > 0;
        self.shed_input += dropped;
        self.nested_run = 0;
        self.lines += 1;
        if self.lines > self.limits.max_lines {
            return Reply { output: Vec::new(), exit: true };
        }
        self.record(rec, line);
        self.offer_downloads(rec, line);
        let cmds = lex::split(line);
        let at = stdin_reader(&cmds).unwrap_or(0);
        // `ssh host sh < script`: the script's lines are typed commands, each recorded.
        let bare_shell = cmds.len() == 1
            && matches!(cmds[0].name(), b"sh" | b"bash" | b"ash")
            && cmds[0].words.iter().skip(1).all(|w| matches!(w.as_slice(), b"-s" | b"-i" | b"-l" | b"-"));
        if bare_shell {
            self.files.input_cut = cut;
            let r = self.run_script(rec, stdin);
            self.files.input_cut = false;
            return r;
        }
        self.execute_input(rec, &cmds, (at, stdin), cut)
    }

    /// Runs `cmds` with the `.1` bytes as the standard input of command `.0`; `cut` marks
    /// what they write as truncated.
    fn execute_input(&mut self, rec: &dyn Recorder, cmds: &[lex::Command], input: (usize, &[u8]), cut: bool) -> Reply {
        self.files.input_cut = cut;
        let r = self.execute(rec, cmds, Some(input), 0);
        self.files.input_cut = false;
        r
    }

    /// The session ends: a here-document still open is run with what arrived, every file
    /// written is kept, and what was counted instead of recorded is reported.
    pub fn finish(&mut self, rec: &dyn Recorder) {
        if let Some(p) = self.pending.take() {
            let _ = self.execute_input(rec, &p.commands, (p.at, &p.body), p.cut);
        }
        for f in self.files.take_all() {
            keep(rec, f);
        }
        if self.shed_lines > 0 || self.files.shed_files > 0 || self.shed_input > 0 || self.shed_offers > 0 {
            rec.emit(Detail::Extension {
                kind: "shell_shed".into(),
                fields: vec![
                    ("lines_not_recorded".into(), self.shed_lines.to_string()),
                    ("bytes_not_recorded".into(), self.shed_bytes.to_string()),
                    ("files_not_followed".into(), self.files.shed_files.to_string()),
                    ("input_bytes_not_followed".into(), self.shed_input.to_string()),
                    ("downloads_not_recorded".into(), self.shed_offers.to_string()),
                ],
            });
            self.shed_offers = 0;
            self.shed_lines = 0;
            self.shed_bytes = 0;
            self.shed_input = 0;
            self.files.shed_files = 0;
        }
    }

    fn record(&mut self, rec: &dyn Recorder, raw: &[u8]) {
        if self.events < self.limits.max_events {
            self.events += 1;
            rec.emit(Detail::Command { line: String::from_utf8_lossy(raw).into_owned() });
        } else {
            self.shed_lines += 1;
            self.shed_bytes += raw.len() as u64;
        }
    }

    /// Records the URLs `line` would fetch, at most `max_events` per session (a script that
    /// loops over a download would otherwise make an event per nested line); later ones are
    /// counted.
    fn offer_downloads(&mut self, rec: &dyn Recorder, line: &[u8]) {
        for (tool, url) in extract_downloads(&String::from_utf8_lossy(line)) {
            if self.offered < self.limits.max_events {
                self.offered += 1;
                rec.emit(Detail::DownloadOffered { url, tool });
            } else {
                self.shed_offers += 1;
            }
        }
    }

    /// One (already recorded) line: downloads, then its commands (or wait for a heredoc body).
    fn line(&mut self, rec: &dyn Recorder, raw: &[u8], depth: u8) -> Reply {
        self.offer_downloads(rec, raw);
        let cmds = lex::split(raw);
        if let Some(at) = cmds.iter().position(|c| c.heredoc.is_some()) {
            if depth == 0 {
                if let Some(h) = cmds[at].heredoc.clone() {
                    self.pending = Some(Pending {
                        commands: cmds,
                        at,
                        delimiter: h.delimiter,
                        strip_tabs: h.strip_tabs,
                        body: Vec::new(),
                        cut: false,
                    });
                    return Reply::default();
                }
            }
        }
        self.execute(rec, &cmds, None, depth)
    }

    /// Runs a nested script (`sh -c`, `… | sh`) line by line, without recording its lines as
    /// typed commands (they are part of a recorded line).
    fn nested(&mut self, rec: &dyn Recorder, script: &[u8], depth: u8) -> Reply {
        let mut out = Vec::new();
        if depth > MAX_DEPTH {
            return Reply::default();
        }
        for l in script.split(|&b| b == b'\n').take(MAX_NESTED_LINES) {
            if self.nested_run >= MAX_NESTED_PER_INPUT {
                break;
            }
            self.nested_run += 1;
            let r = self.line(rec, l.strip_suffix(b"\r").unwrap_or(l), depth);
            append_capped(&mut out, &r.output, self.limits.max_output);
            if r.exit {
                return Reply { output: out, exit: true };
            }
        }
        Reply { output: out, exit: false }
    }

    /// Runs the simple commands of one line, wiring pipes and redirections.
    fn execute(
        &mut self,
        rec: &dyn Recorder,
        cmds: &[lex::Command],
        heredoc: Option<(usize, &[u8])>,
        depth: u8,
    ) -> Reply {
        let mut out = Vec::new();
        let mut pipe: Option<Vec<u8>> = None;
        for (i, c) in cmds.iter().enumerate() {
            let piped = if c.pipe_in { pipe.take() } else { None };
            let stdin: Option<&[u8]> = match heredoc {
                Some((at, body)) if at == i => Some(body),
                _ => piped.as_deref(),
            };
            let r = commands::run(self, rec, c, stdin, depth);
            append_capped(&mut out, &r.stderr, self.limits.max_output);
            if r.exit {
                return Reply { output: out, exit: true };
            }
            let next_reads = cmds.get(i + 1).is_some_and(|n| n.pipe_in);
            match &c.stdout {
                Some(redir) => {
                    let path = self.resolve(&redir.target);
                    if !is_device(&path) {
                        self.files.write(&path, &r.stdout, redir.append);
                    }
                    if next_reads {
                        pipe = Some(Vec::new());
                    }
                }
                None if next_reads => pipe = Some(r.stdout),
                None => append_capped(&mut out, &r.stdout, self.limits.max_output),
            }
        }
        Reply { output: out, exit: false }
    }

    /// `word` as an absolute, normalised path (relative to the current directory).
    fn resolve(&self, word: &[u8]) -> String {
        resolve(&self.cwd, &String::from_utf8_lossy(word))
    }

    /// The attacker showed `path` is complete: keep it if it was written.
    fn complete(&mut self, rec: &dyn Recorder, path: &str) -> bool {
        match self.files.take_if_written(path) {
            Some(f) => {
                keep(rec, f);
                true
            }
            None => false,
        }
    }
}

/// The home directory of `user` on a `flavor` system.
pub fn home(flavor: Flavor, user: &str) -> String {
    commands::home(flavor, user)
}

/// The first command of `cmds` that would read its standard input (not a pipe): `cat`,
/// `base64 -d`, `sh`, `bash`, `tee` or `dd` without a file argument.
fn stdin_reader(cmds: &[lex::Command]) -> Option<usize> {
    cmds.iter().position(|c| {
        if c.pipe_in {
            return false;
        }
        let args = c.words.get(1..).unwrap_or_default();
        let no_file = args.iter().all(|a| a.starts_with(b"-"));
        match c.name() {
            b"cat" | b"sh" | b"bash" | b"ash" | b"base64" => no_file,
            b"tee" => true,
            b"dd" => !args.iter().any(|a| a.starts_with(b"if=")),
            _ => false,
        }
    })
}

/// True when the command line `line` reads its standard input (see [`Shell::run_with_stdin`]).
pub fn reads_stdin(line: &[u8]) -> bool {
    !line.contains(&b'\n') && stdin_reader(&lex::split(line)).is_some()
}

/// Keeps a rebuilt file as a sample, named by its path.
fn keep(rec: &dyn Recorder, f: VirtualFile) {
    let mut c = rec.capture();
    c.update(&f.data);
    if f.truncated {
        c.mark_truncated();
    }
    rec.emit_capture(c, &f.path);
}

/// Devices a redirection may name that are not files (`/dev/shm/x` is a file).
fn is_device(path: &str) -> bool {
    matches!(path, "/dev/null" | "/dev/zero" | "/dev/stdout" | "/dev/stderr" | "/dev/tty" | "/dev/console")
}

fn trim_tabs(l: &[u8]) -> &[u8] {
    let n = l.iter().take_while(|&&b| b == b'\t').count();
    &l[n..]
}

fn append_capped(out: &mut Vec<u8>, add: &[u8], cap: usize) {
    let room = cap.saturating_sub(out.len());
    out.extend_from_slice(&add[..add.len().min(room)]);
}

/// `path` made absolute against `cwd` and normalised (`.`, `..`, repeated `/`).
pub fn resolve(cwd: &str, path: &str) -> String {
    let joined = if path.starts_with('/') { path.to_string() } else { format!("{cwd}/{path}") };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/').take(256) {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            _ => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Runs the lines of `input` through a shell of each flavor, as a transport would (typed
/// lines, then the whole input as an `exec` script and as a command's stdin), with small caps
/// and a recorder that drops what it gets. For the `shell_loader` fuzz target: the real code
/// path, not a copy of it.
#[doc(hidden)]
pub fn fuzz_lines(input: &[u8]) {
    struct Drop;
    impl Recorder for Drop {
        fn emit(&self, _: Detail) {}
        fn capture(&self) -> PayloadCapture {
            PayloadCapture::new(64)
        }
        fn emit_capture(&self, capture: PayloadCapture, name: &str) {
            let _ = capture.finish(name);
        }
    }
    let limits = ShellLimits {
        max_events: 8,
        max_lines: 512,
        max_files: 4,
        max_file: 4096,
        file_budget: 8192,
        max_output: 4096,
    };
    for flavor in [Flavor::BusyBox, Flavor::Debian, Flavor::WindowsCmd] {
        let mut sh = Shell::new(flavor, "root", limits.clone());
        for line in input.split(|&b| b == b'\n') {
            if sh.input_line(&Drop, line).exit {
                break;
            }
        }
        sh.finish(&Drop);
        let _ = sh.run_script(&Drop, input);
        let (first, rest) = input.split_at(input.iter().position(|&b| b == b'\n').unwrap_or(input.len()));
        let _ = sh.run_with_stdin(&Drop, first, rest, 1);
        sh.finish(&Drop);
    }
}

#[cfg(test)]
mod tests;
