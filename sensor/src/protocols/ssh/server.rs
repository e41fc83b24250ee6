//! The russh handler of one SSH connection: authentication like the persona's sshd, then the
//! shared fake shell, legacy scp and SFTP for the logins the policy lets in.
//!
//! Authentication: every password, public key and keyboard-interactive answer is recorded; the
//! one login policy (`Emitter::check_login`) decides; a refusal offers the persona's methods
//! again (as sshd does: `publickey,password` after each failure), and after MaxAuthTries
//! failures the server says "Too many authentication failures" and hangs up.
//!
//! After a login: a `session` channel may ask for a pty, a `shell` (keystrokes go through the
//! line editor, with echo when there is a pty), an `exec` (the command line runs through the
//! shell; `scp -t` gets the scp sink; a command that reads stdin, such as `cat > f` or `sh`,
//! gets the channel's data as its input), or the `sftp` subsystem. The connection has one shell
//! (its files and its current directory), as a login session has. Channels, uploads, lines and
//! bytes are bounded (see the constants); everything still open when the connection ends is
//! finished in `Drop`, so a loader cut off mid-file still leaves its sample.

use super::profile::Profile;
use super::scp::{self, ScpSink, Step};
use super::sftp::{Fuse, SftpTrap};
use super::tee::Fingerprint;
use crate::capture::PayloadCapture;
use crate::protocols::shell::editor::{Input, LineEditor};
use crate::protocols::shell::{self, Recorder, Shell, ShellLimits};
use crate::session::Emitter;
use drosera_uplink::event::{Detail, Secret};
use russh::keys::HashAlg;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Response, Session};
use russh::{Channel, ChannelId, MethodKind, MethodSet, Pty};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};

/// Session channels per connection (OpenSSH's MaxSessions).
const MAX_CHANNELS: usize = 10;
/// Files uploaded per connection (scp and SFTP together).
pub(super) const MAX_UPLOADS: usize = 4;
/// Directory depth followed in a recursive scp.
const MAX_SCP_DEPTH: usize = 16;

/// What a channel is doing.
enum Mode {
    /// Opened, no request yet.
    Idle,
    Shell,
    /// An `exec` whose command reads stdin: the channel's data until end-of-file.
    ExecStdin {
        line: Vec<u8>,
        stdin: Vec<u8>,
        /// Bytes past the cap, dropped (reported by the shell).
        dropped: u64,
    },
    Scp(Box<ScpState>),
    Sftp,
}

struct ScpState {
    sink: ScpSink,
    target: String,
    to_dir: bool,
    dirs: Vec<String>,
    current: Option<(String, PayloadCapture)>,
}

struct Chan {
    /// The channel object, kept only until a request says whether SFTP needs it (russh also
    /// queues the channel's data to it, so it is dropped as soon as it is not needed).
    channel: Option<Channel<Msg>>,
    pty: bool,
    mode: Mode,
    editor: LineEditor,
}

/// The shell's events go out through the connection's emitter.
struct EmitRecorder<'a> {
    em: &'a Emitter,
    source: &'static str,
}

impl Recorder for EmitRecorder<'_> {
    fn emit(&self, detail: Detail) {
        self.em.emit(detail);
    }
    fn capture(&self) -> PayloadCapture {
        self.em.capture(self.source)
    }
    fn emit_capture(&self, capture: PayloadCapture, name: &str) {
        self.em.emit_capture(capture, name);
    }
}

/// Terminal output over a pty: `\n` becomes `\r\n`.
fn crlf(out: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(out.len() + out.len() / 16);
    for &b in out {
        if b == b'\n' {
            v.push(b'\r');
        }
        v.push(b);
    }
    v
}

/// An upload the connection's cap ([`MAX_UPLOADS`]) does not let into the sample area: an
/// event says so (the scp client is told it succeeded, as its data is read and dropped).
pub(super) fn upload_not_kept(em: &Emitter, source: &str, path: &str, size: u64) {
    em.emit(Detail::Extension {
        kind: "upload_not_kept".into(),
        fields: vec![
            ("source".into(), source.into()),
            ("name".into(), path.into()),
            ("size".into(), size.to_string()),
            ("reason".into(), format!("more than {MAX_UPLOADS} uploads on one connection")),
        ],
    });
}

/// Per-connection russh handler.
pub(super) struct Trap {
    em: Emitter,
    profile: &'static Profile,
    fingerprint: Arc<Fingerprint>,
    /// Set once russh has started (used to hang up after MaxAuthTries).
    handle: Arc<OnceLock<russh::server::Handle>>,
    failures: usize,
    user: Option<String>,
    shell: Option<Shell>,
    limits: ShellLimits,
    max_line: usize,
    channels: HashMap<ChannelId, Chan>,
    uploads: Arc<AtomicUsize>,
    /// Largest upload followed (the sample cap plus one).
    max_file: u64,
}

impl Trap {
    pub fn new(
        em: Emitter,
        profile: &'static Profile,
        fingerprint: Arc<Fingerprint>,
        handle: Arc<OnceLock<russh::server::Handle>>,
        limits: ShellLimits,
        max_line: usize,
    ) -> Trap {
        let max_file = em.max_sample_bytes().map_or(u64::MAX, |s| s.saturating_add(1));
        Trap {
            em,
            profile,
            fingerprint,
            handle,
            failures: 0,
            user: None,
            shell: None,
            limits,
            max_line,
            channels: HashMap::new(),
            uploads: Arc::new(AtomicUsize::new(0)),
            max_file,
        }
    }

    fn reject(&self) -> Auth {
        Auth::Reject { proceed_with_methods: Some(MethodSet::from(self.profile.methods)), partial_success: false }
    }

    /// One login attempt: recorded, then decided by the policy (`password` is `None` for a
    /// public key, which never gets in).
    async fn attempt(&mut self, user: &str, secret: Secret, method: &str) -> Auth {
        self.fingerprint.once(&self.em, false);
        let ok = match &secret {
            Secret::Password(p) => self.em.check_login(user, p),
            _ => false,
        };
        self.em.emit(Detail::Login {
            username: user.to_string(),
            secret,
            success: ok,
            extra: vec![("method".into(), method.into())],
        });
        if ok {
            self.user = Some(user.to_string());
            return Auth::Accept;
        }
        self.failures += 1;
        if self.failures >= self.profile.max_auth_tries {
            if let Some(h) = self.handle.get() {
                // sshd's auth_maxtries_exceeded: a disconnect instead of another chance.
                let _ = h
                    .disconnect(
                        russh::Disconnect::ProtocolError,
                        "Too many authentication failures".into(),
                        String::new(),
                    )
                    .await;
            }
        }
        self.reject()
    }

    fn shell(&mut self) -> &mut Shell {
        let (flavor, user, limits) = (self.profile.flavor, self.user.clone().unwrap_or_default(), self.limits.clone());
        self.shell.get_or_insert_with(|| Shell::new(flavor, &user, limits))
    }

    fn home(&self) -> String {
        shell::home(self.profile.flavor, self.user.as_deref().unwrap_or("root"))
    }

    /// Ends a channel as a finished command does.
    fn end(session: &mut Session, channel: ChannelId, status: u32) {
        let _ = session.exit_status_request(channel, status);
        let _ = session.eof(channel);
        let _ = session.close(channel);
    }

    /// Lines typed into a shell channel.
    fn shell_data(&mut self, channel: ChannelId, data: &[u8], session: &mut Session) {
        let mut rest = data;
        while !rest.is_empty() {
            let Some(chan) = self.channels.get_mut(&channel) else { return };
            let pty = chan.pty;
            let mut echo = Vec::new();
            let (n, got) = chan.editor.feed(rest, pty, &mut echo);
            rest = &rest[n..];
            if !echo.is_empty() {
                let _ = session.data(channel, echo);
            }
            let reply = match got {
                None => continue,
                Some(Input::Line(line)) => {
                    let em = self.em.clone();
                    self.shell().input_line(&EmitRecorder { em: &em, source: "ssh-echo" }, &line)
                }
                Some(Input::Interrupt) => shell::Reply::default(),
                Some(Input::Eof) => shell::Reply { output: Vec::new(), exit: true },
                Some(Input::TooLong) => shell::Reply { output: Vec::new(), exit: true },
            };
            let out = if pty { crlf(&reply.output) } else { reply.output };
            if !out.is_empty() {
                let _ = session.data(channel, out);
            }
            if reply.exit {
                self.channels.remove(&channel);
                Self::end(session, channel, 0);
                return;
            }
            if pty {
                let prompt = self.shell().prompt();
                let _ = session.data(channel, prompt.into_bytes());
            }
        }
    }

    /// Bytes for an scp sink.
    fn scp_data(&mut self, channel: ChannelId, data: &[u8], session: &mut Session) {
        let home = self.home();
        let Some(Chan { mode: Mode::Scp(st), .. }) = self.channels.get_mut(&channel) else { return };
        let mut rest = data;
        while !rest.is_empty() {
            let (n, step) = st.sink.feed(rest);
            rest = &rest[n..];
            match step {
                Step::NeedMore => {}
                Step::Reply(b) => {
                    let _ = session.data(channel, b.to_vec());
                }
                Step::FileStart { name, size, .. } => {
                    let mut parts = vec![st.target.clone()];
                    parts.extend(st.dirs.iter().cloned());
                    let path = if st.to_dir || !st.dirs.is_empty() {
                        shell::resolve(&home, &format!("{}/{name}", parts.join("/")))
                    } else {
                        shell::resolve(&home, &st.target)
                    };
                    self.em.emit(Detail::Command { line: format!("scp upload {path}") });
                    let n = self.uploads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= MAX_UPLOADS {
                        // Past the per-connection cap the bytes are read and dropped: said so.
                        upload_not_kept(&self.em, "ssh-scp", &path, size);
                    }
                    st.current = (n < MAX_UPLOADS).then(|| (path, self.em.capture("ssh-scp")));
                    let _ = session.data(channel, scp::OK.to_vec());
                }
                Step::Data(d) => {
                    if let Some((_, c)) = st.current.as_mut() {
                        c.update(d);
                    }
                }
                Step::FileEnd => {
                    if let Some((path, c)) = st.current.take() {
                        self.em.emit_capture(c, &path);
                    }
                    let _ = session.data(channel, scp::OK.to_vec());
                }
                Step::Dir { name } => {
                    if st.dirs.len() < MAX_SCP_DEPTH {
                        st.dirs.push(name);
                    }
                    let _ = session.data(channel, scp::OK.to_vec());
                }
                Step::EndDir => {
                    st.dirs.pop();
                    let _ = session.data(channel, scp::OK.to_vec());
                }
                Step::Error(msg) => {
                    let _ = session.data(channel, format!("\x01scp: {msg}\n").into_bytes());
                    if let Some((path, mut c)) = st.current.take() {
                        c.mark_truncated();
                        self.em.emit_capture(c, &path);
                    }
                    self.channels.remove(&channel);
                    Self::end(session, channel, 1);
                    return;
                }
            }
        }
    }

    /// A channel ends (EOF or close): what it was doing is finished.
    fn finish_channel(&mut self, channel: ChannelId, session: Option<&mut Session>) {
        let Some(chan) = self.channels.remove(&channel) else { return };
        match chan.mode {
            Mode::ExecStdin { line, stdin, dropped } => {
                let em = self.em.clone();
                let r =
                    self.shell().run_with_stdin(&EmitRecorder { em: &em, source: "ssh-echo" }, &line, &stdin, dropped);
                if let Some(s) = session {
                    let out = if chan.pty { crlf(&r.output) } else { r.output };
                    if !out.is_empty() {
                        let _ = s.data(channel, out);
                    }
                    Self::end(s, channel, 0);
                }
            }
            Mode::Scp(st) => {
                if let Some((path, mut c)) = st.current {
                    c.mark_truncated();
                    self.em.emit_capture(c, &path);
                }
                if let Some(s) = session {
                    Self::end(s, channel, 0);
                }
            }
            // sftp-server exits 0 when its client sends end-of-file (scp checks that status).
            Mode::Shell | Mode::Sftp => {
                if let Some(s) = session {
                    Self::end(s, channel, 0);
                }
            }
            Mode::Idle => {}
        }
    }
}

impl Drop for Trap {
    /// The connection ended: open channels are finished and the shell's files kept.
    fn drop(&mut self) {
        let ids: Vec<ChannelId> = self.channels.keys().copied().collect();
        for id in ids {
            self.finish_channel(id, None);
        }
        if let Some(mut sh) = self.shell.take() {
            sh.finish(&EmitRecorder { em: &self.em, source: "ssh-echo" });
        }
    }
}

impl russh::server::Handler for Trap {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        self.fingerprint.once(&self.em, false);
        Ok(self.reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(self.attempt(user, Secret::Password(password.to_string()), "password").await)
    }

    async fn auth_publickey_offered(&mut self, user: &str, offer: PublicKeyOffer<'_>) -> Result<Auth, Self::Error> {
        let secret = Secret::PublicKey {
            algorithm: offer.algorithm.to_string(),
            fingerprint: offer.public_key.fingerprint(HashAlg::Sha256).to_string(),
        };
        Ok(self.attempt(user, secret, "publickey").await)
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        if !self.profile.methods.contains(&MethodKind::KeyboardInteractive) {
            return Ok(self.reject());
        }
        match response {
            None => Ok(Auth::Partial {
                name: Cow::Borrowed(""),
                instructions: Cow::Borrowed(""),
                prompts: Cow::Owned(vec![(Cow::Borrowed("Password: "), false)]),
            }),
            Some(mut r) => {
                let password = r.next().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
                Ok(self.attempt(user, Secret::Password(password), "keyboard-interactive").await)
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.channels.len() >= MAX_CHANNELS {
            // Dropping the handle refuses the channel.
            return Ok(());
        }
        let editor = LineEditor::new(self.max_line);
        self.channels.insert(channel.id(), Chan { channel: Some(channel), pty: false, mode: Mode::Idle, editor });
        reply.accept().await;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.channels.get_mut(&channel) {
            Some(c) => {
                c.pty = true;
                session.channel_success(channel)?;
            }
            None => session.channel_failure(channel)?,
        }
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        let Some(c) = self.channels.get_mut(&channel) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        c.channel = None;
        c.mode = Mode::Shell;
        let pty = c.pty;
        session.channel_success(channel)?;
        if pty {
            let sh = self.shell();
            let greeting = format!("{}{}", sh.motd(shell::Via::Sshd), sh.prompt());
            let _ = session.data(channel, crlf(greeting.as_bytes()));
        }
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(c) = self.channels.get_mut(&channel) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        c.channel = None;
        let pty = c.pty;
        session.channel_success(channel)?;
        let text = String::from_utf8_lossy(data).into_owned();
        if let Some(scp::Command::Source { paths }) = scp::parse_command(&text) {
            // A download: refused, as for a file the account may not read.
            self.em.emit(Detail::Command { line: text });
            let path = paths.first().cloned().unwrap_or_default();
            let _ = session.data(channel, format!("\x01scp: {path}: Permission denied\n").into_bytes());
            self.channels.remove(&channel);
            Self::end(session, channel, 1);
            return Ok(());
        }
        if let Some(scp::Command::Sink { target, to_dir }) = scp::parse_command(&text) {
            self.em.emit(Detail::Command { line: text });
            if let Some(c) = self.channels.get_mut(&channel) {
                c.mode = Mode::Scp(Box::new(ScpState {
                    sink: ScpSink::default(),
                    target,
                    to_dir,
                    dirs: Vec::new(),
                    current: None,
                }));
            }
            let _ = session.data(channel, scp::OK.to_vec());
            return Ok(());
        }
        if shell::reads_stdin(data) {
            if let Some(c) = self.channels.get_mut(&channel) {
                c.mode = Mode::ExecStdin { line: data.to_vec(), stdin: Vec::new(), dropped: 0 };
            }
            return Ok(());
        }
        let em = self.em.clone();
        let r = self.shell().run_script(&EmitRecorder { em: &em, source: "ssh-echo" }, data);
        let out = if pty { crlf(&r.output) } else { r.output };
        if !out.is_empty() {
            let _ = session.data(channel, out);
        }
        self.channels.remove(&channel);
        Self::end(session, channel, 0);
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let home = self.home();
        let taken = match self.channels.get_mut(&channel) {
            Some(c) if name == "sftp" && matches!(c.mode, Mode::Idle) => {
                c.mode = Mode::Sftp;
                c.channel.take()
            }
            _ => None,
        };
        let Some(ch) = taken else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        session.channel_success(channel)?;
        let trap = SftpTrap::new(self.em.clone(), home, self.uploads.clone(), MAX_UPLOADS, self.max_file);
        russh_sftp::server::run(Fuse { inner: ch.into_stream(), broken: false }, trap).await;
        Ok(())
    }

    async fn data(&mut self, channel: ChannelId, data: &[u8], session: &mut Session) -> Result<(), Self::Error> {
        let mode = self.channels.get(&channel).map(|c| match &c.mode {
            Mode::Shell => 1,
            Mode::ExecStdin { .. } => 2,
            Mode::Scp(_) => 3,
            Mode::Idle | Mode::Sftp => 0,
        });
        match mode {
            Some(1) => self.shell_data(channel, data, session),
            Some(2) => {
                // The input of a command is bounded like a file (base64 takes 4/3 of it).
                let cap = self.limits.file_budget.saturating_mul(4) / 3 + 4;
                if let Some(Chan { mode: Mode::ExecStdin { stdin, dropped, .. }, .. }) = self.channels.get_mut(&channel)
                {
                    let room = cap.saturating_sub(stdin.len());
                    let take = data.len().min(room);
                    stdin.extend_from_slice(&data[..take]);
                    *dropped += (data.len() - take) as u64;
                }
            }
            Some(3) => self.scp_data(channel, data, session),
            _ => {
                // Data before any request: the channel object is not needed any more.
                if let Some(c) = self.channels.get_mut(&channel) {
                    if matches!(c.mode, Mode::Idle) {
                        c.channel = None;
                    }
                }
            }
        }
        Ok(())
    }

    async fn channel_eof(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        let shell_without_pty = self.channels.get(&channel).is_some_and(|c| matches!(c.mode, Mode::Shell) && !c.pty);
        if shell_without_pty {
            // A script piped into `ssh host`: its last line may lack a line end.
            let pending = self.channels.get(&channel).map_or(0, |c| c.editor.pending());
            if pending > 0 {
                self.shell_data(channel, b"\n", session);
            }
        }
        let finishes = self.channels.get(&channel).is_some_and(|c| !matches!(c.mode, Mode::Idle));
        if finishes {
            self.finish_channel(channel, Some(session));
        }
        Ok(())
    }

    async fn channel_close(&mut self, channel: ChannelId, _session: &mut Session) -> Result<(), Self::Error> {
        self.finish_channel(channel, None);
        Ok(())
    }
}
