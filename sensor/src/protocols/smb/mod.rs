//! SMB (445): SMB1 and SMB 2.1 as a Windows Server 2008 R2 or a Samba 4 (per persona) answers
//! them, far enough for logins, worms and file drops.
//!
//! What an SMB honeypot is for:
//! 1. NTLM credentials — every session setup carries the user, domain, workstation and an
//!    NTLMv2 response (recorded as a hashcat mode 5600 line) or an NTLMv1 one (hydra's `smb`
//!    module, old bots: mode 5500); the server challenge is ours, so the line is crackable
//!    offline. The login policy decides each login from the response itself (`login`), so the
//!    weak pairs of the accept list get in, like on a badly run server.
//! 2. Worm traffic — `nmap --script smb-vuln-ms17-010`, Metasploit and EternalBlue scanners
//!    probe MS17-010 with a PeekNamedPipe transaction on `IPC$`; the Windows persona answers
//!    STATUS_INSUFF_SERVER_RESOURCES (unpatched), and then answers the DoublePulsar ping like an
//!    implanted host, so the payload upload that follows arrives, is decrypted and kept as a
//!    sample (`doublepulsar`). Every step is an `Exploit` event with its CVE.
//! 3. File drops — a logged-in session may connect to a disk share (`C$`, `ADMIN$`, the
//!    persona's shares) and create and write files (SMB1 NT_CREATE/WRITE_ANDX, SMB2
//!    CREATE/WRITE): each written file is kept as a sample named `SHARE\path` (`files`).
//!
//! Anonymous (null) sessions get as far as `IPC$`, which is what scanners and
//! `smb-os-discovery` need. Everything else answers with the errors a real server gives.
//! Nothing received is ever executed or opened.
//!
//! Framing: direct-TCP NetBIOS session messages (1 type byte + 24-bit length), capped at
//! [`MAX_MESSAGE`]. This file reads and dispatches messages and holds what a connection keeps
//! ([`Conn`]: login, trees, open files, the implant's key); `smb1` and `smb2` parse and answer
//! their dialect's commands, `ntlm` holds NTLMSSP and SPNEGO, `persona` what the machine says
//! about itself. All parsers are pure functions over bytes.

mod doublepulsar;
mod files;
mod login;
pub(crate) mod ntlm;
mod persona;
mod smb1;
mod smb2;

pub use doublepulsar::{opcode as doublepulsar_opcode, parse_exec as doublepulsar_exec, step as doublepulsar_step};
pub use doublepulsar::{xor as doublepulsar_xor, xor_key as doublepulsar_xor_key, ExecChunk, Reassembly, Step};
pub use files::{place_write, Placement, MAX_OPEN_FILES};
pub use ntlm::{
    find_ntlmssp, ntlm_challenge, ntlm_version, ntlmssp_type, ntlmv1_proves, ntlmv2_proves, parse_ntlm_authenticate,
    spnego_challenge, spnego_init, NtlmAuth, NtlmTarget,
};
pub use persona::SmbPersona;
pub use smb1::{
    doublepulsar_request, is_doublepulsar_ping, is_ms17_010_probe, parse_nt_create, parse_smb1_session_setup,
    parse_trans, parse_tree_connect, parse_write_andx, smb1_dialects, smb1_security_blob, DoublePulsarRequest, Smb1,
    Trans, WriteAndX,
};
pub use smb2::{
    negotiate_response as smb2_negotiate_response, parse_create as smb2_parse_create, parse_write as smb2_parse_write,
    sign as smb2_sign, smb2_dialects, smb2_session_setup_blob, split_compound as smb2_split_compound, Smb2,
    Write as Smb2Write,
};

use crate::capture::PayloadCapture;
use crate::config::ServiceSection;
use crate::session::{Session, SessionResult};
use drosera_uplink::event::{CloseReason, Detail, MAX_PAYLOAD_PREFIX};
use files::Files;
use login::LoginOutcome;

/// Default NetBIOS host name (what the config's `banner` replaces), named in the NTLM challenge.
pub const DEFAULT_BANNER: &str = persona::WINDOWS_2008_R2.default_host;
/// Largest SMB message we accept (we announce 64 KiB reads and writes; exploit payloads are
/// bigger, and are recorded only up to this size).
pub const MAX_MESSAGE: usize = 128 * 1024;
/// Messages handled per connection before we close it (a 4 MiB upload in 64 KiB writes is 64;
/// the session's byte cap and timeouts bound a connection too).
const MAX_MESSAGES: usize = 2048;
/// Trees one connection may have connected at once.
const MAX_TREES: usize = 16;

const STATUS_SUCCESS: u32 = 0;
const STATUS_NO_MORE_FILES: u32 = 0x8000_0006;
const STATUS_NOT_IMPLEMENTED: u32 = 0xC000_0002;
const STATUS_INVALID_INFO_CLASS: u32 = 0xC000_0003;
const STATUS_INVALID_HANDLE: u32 = 0xC000_0008;
const STATUS_INVALID_PARAMETER: u32 = 0xC000_000D;
const STATUS_NO_SUCH_FILE: u32 = 0xC000_000F;
const STATUS_END_OF_FILE: u32 = 0xC000_0011;
const STATUS_MORE_PROCESSING_REQUIRED: u32 = 0xC000_0016;
const STATUS_ACCESS_DENIED: u32 = 0xC000_0022;
const STATUS_OBJECT_NAME_NOT_FOUND: u32 = 0xC000_0034;
const STATUS_LOGON_FAILURE: u32 = 0xC000_006D;
const STATUS_NOT_SUPPORTED: u32 = 0xC000_00BB;
const STATUS_BAD_NETWORK_NAME: u32 = 0xC000_00CC;
const STATUS_REQUEST_NOT_ACCEPTED: u32 = 0xC000_00D0;
const STATUS_TOO_MANY_OPENED_FILES: u32 = 0xC000_011F;
const STATUS_FS_DRIVER_REQUIRED: u32 = 0xC000_019C;
const STATUS_USER_SESSION_DELETED: u32 = 0xC000_0203;
const STATUS_INSUFF_SERVER_RESOURCES: u32 = 0xC000_0205;

/// CVE nmap's `smb-vuln-ms17-010` names for the MS17-010 probe.
const CVE_MS17_010_PROBE: &str = "CVE-2017-0143";
/// CVE of EternalBlue (the exploit transactions, and the implant it installs).
const CVE_ETERNALBLUE: &str = "CVE-2017-0144";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SmbError {
    #[error("truncated SMB data")]
    Truncated,
    #[error("SMB message too large ({0} bytes)")]
    TooLarge(usize),
    #[error("not an SMB message")]
    NotSmb,
    #[error("not an NTLMSSP message of the expected type")]
    NotNtlmssp,
}

fn u16le(b: &[u8], at: usize) -> Result<u16, SmbError> {
    let s = b.get(at..at.checked_add(2).ok_or(SmbError::Truncated)?).ok_or(SmbError::Truncated)?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32le(b: &[u8], at: usize) -> Result<u32, SmbError> {
    let s = b.get(at..at.checked_add(4).ok_or(SmbError::Truncated)?).ok_or(SmbError::Truncated)?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64le(b: &[u8], at: usize) -> Result<u64, SmbError> {
    let s = b.get(at..at.checked_add(8).ok_or(SmbError::Truncated)?).ok_or(SmbError::Truncated)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

/// `b[at..at + len]`, bounds-checked.
fn slice(b: &[u8], at: usize, len: usize) -> Result<&[u8], SmbError> {
    b.get(at..at.checked_add(len).ok_or(SmbError::Truncated)?).ok_or(SmbError::Truncated)
}

/// Parses the 4-byte direct-TCP header: the message length.
pub fn parse_netbios_header(h: [u8; 4]) -> Result<usize, SmbError> {
    let len = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
    if h[0] != 0 {
        return Err(SmbError::NotSmb);
    }
    if len > MAX_MESSAGE {
        return Err(SmbError::TooLarge(len));
    }
    Ok(len)
}

/// What a client message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Smb1(Smb1),
    Smb2(Smb2),
}

/// Parses one SMB message (without the NetBIOS header).
pub fn parse_message(msg: &[u8]) -> Result<Message, SmbError> {
    match msg.get(..4) {
        Some([0xff, b'S', b'M', b'B']) => smb1::parse(msg).map(Message::Smb1),
        Some([0xfe, b'S', b'M', b'B']) => smb2::parse(msg).map(Message::Smb2),
        _ => Err(SmbError::NotSmb),
    }
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

/// A UTF-16LE string (bounded to `max` code units, stopping at a NUL).
fn from_utf16(b: &[u8], max: usize) -> String {
    let units: Vec<u16> =
        b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0).take(max).collect();
    String::from_utf16_lossy(&units)
}

fn filetime_now() -> u64 {
    let unix =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() / 100).unwrap_or(0)
            as u64;
    unix + 116_444_736_000_000_000
}

/// The share name of a tree path (`\\host\share` → `share`).
fn share_of(path: &str) -> &str {
    path.trim_end_matches('\0').rsplit(['\\', '/']).next().unwrap_or("")
}

/// A connected tree.
#[derive(Debug, Clone)]
struct Tree {
    /// Share name as the client spelled it.
    share: String,
    /// A disk share (files may be created); otherwise `IPC$`.
    disk: bool,
}

/// The answer to a CREATE / NT_CREATE_ANDX, shared by both dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Created {
    id: u64,
    /// 1 opened, 2 created, 3 overwritten.
    action: u32,
    directory: bool,
}

/// What one create request asks for (both dialects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    pub name: String,
    pub desired_access: u32,
    pub disposition: u32,
    pub options: u32,
}

impl CreateRequest {
    fn wants_write(&self) -> bool {
        // FILE_WRITE_DATA, FILE_APPEND_DATA, GENERIC_WRITE, GENERIC_ALL, MAXIMUM_ALLOWED.
        self.desired_access & (0x2 | 0x4 | 0x4000_0000 | 0x1000_0000 | 0x0200_0000) != 0
    }
}

/// What one connection keeps between messages.
struct Conn<'a> {
    /// Our NetBIOS host name (the config's banner, or the persona's).
    host: &'a str,
    dns_host: String,
    persona: &'static SmbPersona,
    /// Our NTLM server challenge (in the hashcat line of every login).
    challenge: [u8; 8],
    /// The machine's server GUID (the same on every connection: `persona::server_identity`).
    guid: [u8; 16],
    /// SMB1 UID / SMB2 session id handed out at session setup.
    uid: u16,
    session_id: u64,
    recorded_dialects: bool,
    /// Who the session setup made the client (None: not logged in).
    login: Option<LoginOutcome>,
    /// SMB2 signing key of the logged-in session, when known.
    signing_key: Option<[u8; 16]>,
    trees: Vec<(u32, Tree)>,
    next_tree: u32,
    files: Files,
    /// The value our DoublePulsar ping answers carry (the XOR key is derived from it).
    pulsar_signature: u32,
    pulsar: Option<doublepulsar::Reassembly>,
    pulsar_upload: Option<PayloadCapture>,
    /// The implant was told to uninstall itself.
    pulsar_killed: bool,
    /// EternalBlue's large transactions, captured together (not a sample).
    exploit_bytes: Option<PayloadCapture>,
}

impl Conn<'_> {
    fn dialect_name(&self, smb2: bool) -> &'static str {
        if smb2 {
            "SMB 2.1"
        } else {
            smb1::NT_LM_0_12
        }
    }

    /// ServerStartTime of an SMB2 NEGOTIATE answer.
    fn boot_time(&self) -> u64 {
        if self.persona.reports_boot_time {
            persona::server_identity().boot_time
        } else {
            0
        }
    }

    fn ntlm_target(&self) -> NtlmTarget<'_> {
        self.persona.ntlm_target(self.host, &self.dns_host)
    }

    fn tree(&self, tid: u32) -> Option<&Tree> {
        self.trees.iter().find(|(t, _)| *t == tid).map(|(_, t)| t)
    }

    /// Decides a tree connect to `path` (both dialects) and records it.
    fn connect_tree(&mut self, session: &Session, path: &str) -> Result<(u32, bool), u32> {
        let share = share_of(path).to_string();
        let verdict = match &self.login {
            None => Err(STATUS_ACCESS_DENIED),
            Some(_) if self.trees.len() >= MAX_TREES => Err(STATUS_REQUEST_NOT_ACCEPTED),
            Some(_) if share.eq_ignore_ascii_case("IPC$") => Ok(false),
            Some(LoginOutcome::User(_)) if self.persona.is_disk_share(&share) => Ok(true),
            Some(_) if self.persona.is_disk_share(&share) => Err(STATUS_ACCESS_DENIED),
            Some(_) => Err(STATUS_BAD_NETWORK_NAME),
        };
        let shown: String = path.trim_end_matches('\0').chars().take(files::MAX_NAME).collect();
        session.emit(Detail::Command {
            line: format!("TREE_CONNECT {shown} {}", if verdict.is_ok() { "ok" } else { "refused" }),
        });
        let disk = verdict?;
        self.next_tree = self.next_tree.wrapping_add(1).max(1);
        let tid = self.next_tree;
        self.trees.push((tid, Tree { share, disk }));
        Ok((tid, disk))
    }

    fn disconnect_tree(&mut self, tid: u32) {
        self.trees.retain(|(t, _)| *t != tid);
    }

    /// Decides a create request on tree `tid` (both dialects) and records it.
    fn create(&mut self, session: &Session, tid: u32, req: &CreateRequest) -> Result<Created, u32> {
        let tree = self.tree(tid).ok_or(STATUS_USER_SESSION_DELETED)?.clone();
        let path = req.name.trim_start_matches('\\').trim_end_matches('\0');
        let name = format!("{}\\{}", tree.share, path);
        let directory_asked = req.options & 0x1 != 0; // FILE_DIRECTORY_FILE
        let verdict = if !tree.disk {
            Err(STATUS_ACCESS_DENIED)
        } else if path.is_empty() || directory_asked {
            // The share's root, or a directory: there, and stays empty.
            match req.disposition {
                2 if !path.is_empty() => Ok((2, true, false)),
                1 | 3 => Ok((if path.is_empty() { 1 } else { 2 }, true, false)),
                _ if path.is_empty() => Err(STATUS_ACCESS_DENIED),
                _ => Ok((2, true, false)),
            }
        } else {
            match req.disposition {
                // FILE_SUPERSEDE, FILE_CREATE, FILE_OPEN_IF, FILE_OVERWRITE_IF: a new file.
                0 | 2 | 3 | 5 if req.wants_write() => Ok((2, false, true)),
                0 | 2 | 3 | 5 => Ok((2, false, false)),
                // FILE_OPEN, FILE_OVERWRITE: nothing exists yet.
                _ => Err(STATUS_OBJECT_NAME_NOT_FOUND),
            }
        };
        let shown: String = name.chars().take(files::MAX_NAME).collect();
        session.emit(Detail::Command {
            line: format!(
                "CREATE {shown} disposition={} access={:#x} {}",
                req.disposition,
                req.desired_access,
                if verdict.is_ok() { "ok" } else { "refused" }
            ),
        });
        let (action, directory, writable) = verdict?;
        let id = self.files.open(name, writable, directory).ok_or(STATUS_TOO_MANY_OPENED_FILES)?;
        Ok(Created { id, action, directory })
    }

    /// Writes `data` at `offset` into open file `id` (both dialects).
    fn write(&mut self, session: &Session, id: u64, offset: u64, data: &[u8]) -> Result<(), u32> {
        match self.files.write(id, offset, data, || session.capture("smb-write")) {
            files::WriteOutcome::Done => Ok(()),
            files::WriteOutcome::Gap => {
                session.emit(Detail::Command { line: format!("WRITE at {offset}: not contiguous, capture ends") });
                Ok(())
            }
            files::WriteOutcome::NotWritable => Err(STATUS_ACCESS_DENIED),
            files::WriteOutcome::NoSuchFile => Err(STATUS_INVALID_HANDLE),
        }
    }

    /// Closes open file `id`, recording what was written to it.
    fn close(&mut self, session: &Session, id: u64) -> Result<(), u32> {
        let f = self.files.close(id).ok_or(STATUS_INVALID_HANDLE)?;
        if let Some((capture, name)) = f.finish() {
            session.emit_capture(capture, &name);
        }
        Ok(())
    }

    /// Adds an exploit transaction to the connection's exploit capture; the first one is an
    /// `Exploit` event.
    fn exploit_transaction(&mut self, session: &Session, command: u8, msg: &[u8]) {
        let first = self.exploit_bytes.is_none();
        self.exploit_bytes.get_or_insert_with(|| PayloadCapture::new(MAX_PAYLOAD_PREFIX)).update(msg);
        if first {
            exploit(
                session,
                "eternalblue-transaction",
                CVE_ETERNALBLUE,
                vec![("command".into(), format!("{command:#04x}")), ("bytes".into(), msg.len().to_string())],
            );
        }
    }

    /// The connection ends: files still open and unfinished uploads are recorded with what
    /// arrived (marked truncated), the exploit transactions as one payload.
    fn finish(&mut self, session: &Session) {
        for f in self.files.take_all() {
            if let Some((mut capture, name)) = f.finish() {
                capture.mark_truncated();
                session.emit_capture(capture, &name);
            }
        }
        if let Some(mut upload) = self.pulsar_upload.take() {
            upload.mark_truncated();
            session.emit_capture(upload, "doublepulsar-upload");
        }
        if let Some(bytes) = self.exploit_bytes.take() {
            session.emit(bytes.finish("smb1-exploit-transactions").payload);
        }
    }
}

/// Whether the conversation goes on after a message.
enum Flow {
    Continue,
    /// Nothing the client offers can be answered.
    End,
}

async fn read_message(session: &mut Session) -> SessionResult<Vec<u8>> {
    let mut h = [0u8; 4];
    session.read_exact(&mut h).await?;
    let len = parse_netbios_header(h).map_err(|_| CloseReason::ProtocolError)?;
    let mut msg = vec![0u8; len];
    session.read_exact(&mut msg).await?;
    Ok(msg)
}

async fn send(session: &mut Session, msg: &[u8]) -> SessionResult<()> {
    let len = msg.len().min(0x00ff_ffff) as u32;
    let mut out = Vec::with_capacity(4 + msg.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    session.write_all(&out).await
}

fn exploit(session: &Session, name: &str, cve: &str, extra: Vec<(String, String)>) {
    session.emit(Detail::Exploit { name: name.into(), cve: cve.into(), extra });
}

pub(crate) async fn handle(session: &mut Session, svc: &ServiceSection) -> SessionResult<()> {
    let persona = SmbPersona::of(session.persona());
    let host = svc.banner_or(persona.default_host);
    let mut conn = Conn {
        host,
        dns_host: host.to_lowercase(),
        persona,
        challenge: rand::random(),
        guid: persona::server_identity().guid,
        uid: 2048,
        session_id: (rand::random::<u64>() & 0x0000_ffff_ffff_0000) | 0x0000_0000_0000_0041,
        recorded_dialects: false,
        login: None,
        signing_key: None,
        trees: Vec::new(),
        next_tree: 2048,
        files: Files::default(),
        pulsar_signature: rand::random::<u32>() | 0x0100_0000,
        pulsar: None,
        pulsar_upload: None,
        pulsar_killed: false,
        exploit_bytes: None,
    };
    let r = serve(session, &mut conn).await;
    conn.finish(session);
    r
}

async fn serve(session: &mut Session, conn: &mut Conn<'_>) -> SessionResult<()> {
    for _ in 0..MAX_MESSAGES {
        let msg = read_message(session).await?;
        let flow = match parse_message(&msg).map_err(|_| CloseReason::ProtocolError)? {
            Message::Smb1(m) => smb1::respond(session, conn, &m, &msg).await?,
            Message::Smb2(m) => smb2::respond(session, conn, &m).await?,
        };
        if let Flow::End = flow {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntlm::tests::ntlm_authenticate;

    #[test]
    fn hostile_input_never_panics() {
        assert_eq!(parse_netbios_header([0, 0xff, 0xff, 0xff]), Err(SmbError::TooLarge(0xff_ffff)));
        let auth = ntlm_authenticate("u", "d", "w", &[1; 40]);
        for t in crate::protocols::hostile::truncations(&auth) {
            if let Ok(a) = parse_ntlm_authenticate(t) {
                let _ = ntlmv1_proves(&a, &[0; 8], "admin");
                let _ = ntlmv2_proves(&a, &[0; 8], "admin");
            }
        }
        for (i, mut buf) in crate::protocols::hostile::random_inputs(0x853c49e6748fea9b, 30_000, 300, false).enumerate()
        {
            if i % 3 == 0 && buf.len() >= 4 {
                buf[..4].copy_from_slice(&[0xff, b'S', b'M', b'B']);
            } else if i % 3 == 1 && buf.len() >= 4 {
                buf[..4].copy_from_slice(&[0xfe, b'S', b'M', b'B']);
            }
            if let Ok(m) = parse_message(&buf) {
                match m {
                    Message::Smb1(s) => {
                        let _ = parse_smb1_session_setup(&s);
                        let _ = smb1_security_blob(&s);
                        let _ = smb1_dialects(&s.bytes);
                        let _ = parse_tree_connect(&s);
                        let _ = parse_nt_create(&s);
                        let _ = parse_write_andx(&s, &buf);
                        let _ = parse_trans(&s, &buf);
                        if let Ok(Some(r)) = doublepulsar_request(&s, &buf) {
                            let _ = doublepulsar_exec(r.params, 0x1234_5678);
                        }
                    }
                    Message::Smb2(s) => {
                        let _ = smb2_dialects(&s);
                        let _ = smb2_session_setup_blob(&s);
                        let _ = smb2_parse_create(&s);
                        let _ = smb2_parse_write(&s);
                    }
                }
            }
            let _ = smb2_split_compound(&buf);
            if let Ok(a) = parse_ntlm_authenticate(&buf) {
                let _ = ntlmv1_proves(&a, &[0; 8], "admin");
                let _ = ntlmv2_proves(&a, &[0; 8], "admin");
            }
            let _ = doublepulsar_exec(&buf, 7);
        }
    }

    /// The stateful handlers, not only the parsers: hostile SMB1 and SMB2 messages of every
    /// command we answer reach a logged-in connection with a disk tree and an open file.
    #[tokio::test]
    async fn handlers_survive_hostile_messages() {
        use crate::rollup::RollupTable;
        use crate::session::{SessionEnv, SessionLimits};
        use crate::sink::EventSink;
        use std::sync::Arc;
        use tokio::io::AsyncReadExt;

        let (a, mut peer) = tokio::io::duplex(1 << 16);
        let (sink, mut rx) = EventSink::new(1 << 16, Arc::new(RollupTable::new(16)));
        let mut session = Session::new(
            Box::new(a),
            1,
            "192.0.2.9:4444".parse().unwrap(),
            "127.0.0.1:445".parse().unwrap(),
            drosera_uplink::event::Protocol::Smb,
            SessionLimits::default(),
            SessionEnv::basic(sink, Arc::from("t")),
        );
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1 << 16];
            while peer.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let mut conn = Conn {
            host: DEFAULT_BANNER,
            dns_host: "filesrv01".into(),
            persona: &persona::WINDOWS_2008_R2,
            challenge: [1; 8],
            guid: [2; 16],
            uid: 2048,
            session_id: 0x41,
            recorded_dialects: false,
            login: Some(LoginOutcome::User("admin".into())),
            signing_key: Some([3; 16]),
            trees: vec![(1, Tree { share: "C$".into(), disk: true }), (2, Tree { share: "IPC$".into(), disk: false })],
            next_tree: 2,
            files: Files::default(),
            pulsar_signature: 0x1234_5678,
            pulsar: None,
            pulsar_upload: None,
            pulsar_killed: false,
            exploit_bytes: None,
        };
        let smb1_commands = [0x04, 0x25, 0x2b, 0x2f, 0x32, 0x33, 0x71, 0x72, 0x73, 0x74, 0x75, 0xa0, 0xa1, 0xa2];
        for (i, mut buf) in
            crate::protocols::hostile::random_inputs(0x9e37_79b9_7f4a_7c15, 6000, 400, false).enumerate()
        {
            // Keep an open writable file around so WRITE/CLOSE/QUERY_INFO reach their code.
            if conn.files.get(1).is_none() && conn.files.by_fid(1).is_none() {
                conn.files = Files::default();
                let _ = conn.files.open("C$\\x".into(), true, false);
            }
            if i % 2 == 0 && buf.len() >= 36 {
                buf[..4].copy_from_slice(&[0xff, b'S', b'M', b'B']);
                buf[4] = smb1_commands[i / 2 % smb1_commands.len()];
                buf[24..26].copy_from_slice(&[(i % 3) as u8, 0]); // tid 0, 1 or 2
                buf[32] %= 32;
                if let Ok(Message::Smb1(m)) = parse_message(&buf) {
                    let _ = smb1::respond(&mut session, &mut conn, &m, &buf).await;
                }
            } else if buf.len() >= 72 {
                buf[..4].copy_from_slice(&[0xfe, b'S', b'M', b'B']);
                buf[12..14].copy_from_slice(&((i / 2 % 19) as u16).to_le_bytes());
                buf[20..24].copy_from_slice(&[0, 0, 0, 0]);
                buf[36..40].copy_from_slice(&((i % 3) as u32).to_le_bytes());
                if let Ok(Message::Smb2(m)) = parse_message(&buf) {
                    let _ = smb2::respond(&mut session, &mut conn, &m).await;
                }
            }
            conn.login = Some(LoginOutcome::User("admin".into()));
        }
        conn.finish(&session);
    }

    #[test]
    fn share_names() {
        assert_eq!(share_of("\\\\192.0.2.1\\IPC$\0"), "IPC$");
        assert_eq!(share_of("\\\\srv\\C$"), "C$");
        assert_eq!(share_of("ADMIN$"), "ADMIN$");
    }
}
