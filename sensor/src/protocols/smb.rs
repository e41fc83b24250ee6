//! SMB (445): SMB1 and SMB2 negotiate, NTLMSSP session setup, MS17-010 and DoublePulsar probes.
//!
//! What an SMB honeypot is for: (1) NTLM credentials — every session setup carries the user,
//! domain, workstation and an NTLMv2 response, which we record as a hashcat mode 5600 line (the
//! server challenge is ours, so the line is crackable offline); (2) worm traffic — EternalBlue
//! scanners probe MS17-010 with a PeekNamedPipe transaction on `IPC$`, and check for DoublePulsar
//! with a Trans2 SESSION_SETUP whose multiplex id is 0x41. Both are recorded as exploit attempts.
//!
//! We never offer a file share: SMB2 logins always fail with STATUS_LOGON_FAILURE. For SMB1 we
//! answer negotiate, anonymous session setup and the tree connect to `IPC$` just enough for the
//! MS17-010 probe to arrive, and answer it the way a vulnerable host does so the scanner shows its
//! hand (the payload that follows is recorded, never executed).
//!
//! Framing: direct-TCP NetBIOS session messages (1 type byte + 24-bit length), capped at
//! [`MAX_MESSAGE`]. All parsers below are pure functions over bytes.

use crate::capture::PayloadCapture;
use crate::config::ServiceSection;
use crate::session::{Session, SessionResult};
use drosera_uplink::event::{CloseReason, Detail, Secret, MAX_PAYLOAD_PREFIX};

/// Default NetBIOS host name (what the config's `banner` replaces), named in the NTLM challenge.
pub const DEFAULT_BANNER: &str = "FILESRV01";
/// Largest SMB message we accept (real negotiate/session setup messages are < 4 KiB; exploit
/// payloads are bigger, and are recorded only up to this size).
pub const MAX_MESSAGE: usize = 128 * 1024;
/// Messages handled per connection before we close it.
const MAX_MESSAGES: usize = 64;

const STATUS_SUCCESS: u32 = 0;
const STATUS_MORE_PROCESSING_REQUIRED: u32 = 0xC000_0016;
const STATUS_LOGON_FAILURE: u32 = 0xC000_006D;
const STATUS_NOT_SUPPORTED: u32 = 0xC000_00BB;
const STATUS_NOT_IMPLEMENTED: u32 = 0xC000_0002;
const STATUS_INSUFF_SERVER_RESOURCES: u32 = 0xC000_0205;

const NTLMSSP_SIG: &[u8; 8] = b"NTLMSSP\0";
const NTLM_OID: [u8; 12] = [0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x02, 0x0a];

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
    let s = b.get(at..at + 2).ok_or(SmbError::Truncated)?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32le(b: &[u8], at: usize) -> Result<u32, SmbError> {
    let s = b.get(at..at + 4).ok_or(SmbError::Truncated)?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64le(b: &[u8], at: usize) -> Result<u64, SmbError> {
    let s = b.get(at..at + 8).ok_or(SmbError::Truncated)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
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

/// The SMB1 fields we act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smb1 {
    pub command: u8,
    pub tid: u16,
    pub pid: u16,
    pub uid: u16,
    pub mid: u16,
    /// Parameter words (WordCount × 2 bytes).
    pub words: Vec<u8>,
    /// The data bytes (ByteCount bytes).
    pub bytes: Vec<u8>,
}

/// The SMB2 fields we act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smb2 {
    pub command: u16,
    pub credits: u16,
    pub message_id: u64,
    pub process_id: u32,
    pub tree_id: u32,
    pub session_id: u64,
    /// The whole message (header included; body offsets are relative to its start).
    pub raw: Vec<u8>,
}

/// Parses one SMB message (without the NetBIOS header).
pub fn parse_message(msg: &[u8]) -> Result<Message, SmbError> {
    match msg.get(..4) {
        Some([0xff, b'S', b'M', b'B']) => {
            let command = *msg.get(4).ok_or(SmbError::Truncated)?;
            let wc = *msg.get(32).ok_or(SmbError::Truncated)? as usize;
            let words = msg.get(33..33 + wc * 2).ok_or(SmbError::Truncated)?.to_vec();
            let bc = u16le(msg, 33 + wc * 2)? as usize;
            let start = 35 + wc * 2;
            let bytes = msg.get(start..start + bc).or_else(|| msg.get(start..)).ok_or(SmbError::Truncated)?.to_vec();
            Ok(Message::Smb1(Smb1 {
                command,
                tid: u16le(msg, 24)?,
                pid: u16le(msg, 26)?,
                uid: u16le(msg, 28)?,
                mid: u16le(msg, 30)?,
                words,
                bytes,
            }))
        }
        Some([0xfe, b'S', b'M', b'B']) => {
            if msg.len() < 64 {
                return Err(SmbError::Truncated);
            }
            Ok(Message::Smb2(Smb2 {
                command: u16le(msg, 12)?,
                credits: u16le(msg, 14)?,
                message_id: u64le(msg, 24)?,
                process_id: u32le(msg, 32)?,
                tree_id: u32le(msg, 36)?,
                session_id: u64le(msg, 40)?,
                raw: msg.to_vec(),
            }))
        }
        _ => Err(SmbError::NotSmb),
    }
}

/// Dialect strings of an SMB1 NEGOTIATE (each `0x02 name NUL`).
pub fn smb1_dialects(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|&b| b == 0)
        .filter_map(|d| d.strip_prefix(&[0x02]))
        .take(32)
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .collect()
}

/// Dialect revisions of an SMB2 NEGOTIATE request.
pub fn smb2_dialects(m: &Smb2) -> Result<Vec<u16>, SmbError> {
    let count = u16le(&m.raw, 64 + 2)? as usize;
    (0..count.min(64)).map(|i| u16le(&m.raw, 64 + 36 + i * 2)).collect()
}

/// The security buffer of an SMB2 SESSION_SETUP request.
pub fn smb2_session_setup_blob(m: &Smb2) -> Result<&[u8], SmbError> {
    let off = u16le(&m.raw, 64 + 12)? as usize;
    let len = u16le(&m.raw, 64 + 14)? as usize;
    m.raw.get(off..off + len).ok_or(SmbError::Truncated)
}

/// An NTLMSSP AUTHENTICATE message, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NtlmAuth {
    pub user: String,
    pub domain: String,
    pub workstation: String,
    pub lm_response: Vec<u8>,
    pub nt_response: Vec<u8>,
}

impl NtlmAuth {
    /// The NTLMv2 response as a hashcat mode 5600 line
    /// (`user::domain:challenge:ntproofstr:blob`), or None for NTLMv1 / anonymous.
    pub fn hashcat_5600(&self, server_challenge: &[u8; 8]) -> Option<String> {
        if self.nt_response.len() <= 24 {
            return None;
        }
        let (proof, blob) = self.nt_response.split_at(16);
        Some(format!(
            "{}::{}:{}:{}:{}",
            self.user,
            self.domain,
            hex::encode(server_challenge),
            hex::encode(proof),
            hex::encode(blob)
        ))
    }
}

/// Finds the NTLMSSP message inside a (possibly SPNEGO-wrapped) security blob.
pub fn find_ntlmssp(blob: &[u8]) -> Option<&[u8]> {
    let at = blob.windows(8).position(|w| w == NTLMSSP_SIG)?;
    blob.get(at..)
}

/// The NTLMSSP message type (1 negotiate, 2 challenge, 3 authenticate).
pub fn ntlmssp_type(msg: &[u8]) -> Option<u32> {
    if msg.get(..8)? != NTLMSSP_SIG {
        return None;
    }
    u32le(msg, 8).ok()
}

fn secbuf(msg: &[u8], at: usize) -> Result<&[u8], SmbError> {
    let len = u16le(msg, at)? as usize;
    let off = u32le(msg, at + 4)? as usize;
    if len == 0 {
        return Ok(&[]);
    }
    msg.get(off..off.checked_add(len).ok_or(SmbError::Truncated)?).ok_or(SmbError::Truncated)
}

fn ntlm_string(b: &[u8], unicode: bool) -> String {
    if unicode {
        let units: Vec<u16> = b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        String::from_utf16_lossy(&units)
    } else {
        String::from_utf8_lossy(b).into_owned()
    }
}

/// Parses an NTLMSSP AUTHENTICATE (type 3) message.
pub fn parse_ntlm_authenticate(msg: &[u8]) -> Result<NtlmAuth, SmbError> {
    if ntlmssp_type(msg) != Some(3) {
        return Err(SmbError::NotNtlmssp);
    }
    let flags = u32le(msg, 60)?;
    let unicode = flags & 0x1 != 0;
    Ok(NtlmAuth {
        lm_response: secbuf(msg, 12)?.to_vec(),
        nt_response: secbuf(msg, 20)?.to_vec(),
        domain: ntlm_string(secbuf(msg, 28)?, unicode),
        user: ntlm_string(secbuf(msg, 36)?, unicode),
        workstation: ntlm_string(secbuf(msg, 44)?, unicode),
    })
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

/// Builds an NTLMSSP CHALLENGE (type 2) for `challenge`, naming our fake domain and host.
pub fn ntlm_challenge(challenge: &[u8; 8], domain: &str, host: &str, filetime: u64) -> Vec<u8> {
    let mut info = Vec::new();
    for (id, val) in [(2u16, domain), (1, host), (4, domain), (3, host)] {
        let v = utf16(&val.to_lowercase());
        let v = if id <= 2 { utf16(val) } else { v };
        info.extend_from_slice(&id.to_le_bytes());
        info.extend_from_slice(&(v.len() as u16).to_le_bytes());
        info.extend_from_slice(&v);
    }
    info.extend_from_slice(&7u16.to_le_bytes());
    info.extend_from_slice(&8u16.to_le_bytes());
    info.extend_from_slice(&filetime.to_le_bytes());
    info.extend_from_slice(&[0, 0, 0, 0]);
    let target = utf16(domain);
    let header_len = 56u32;
    let flags: u32 = 0xe28a_8215; // unicode, request target, NTLM, always sign, target type domain,
                                  // extended session security, target info, version, 128, 56, key exch
    let mut m = Vec::new();
    m.extend_from_slice(NTLMSSP_SIG);
    m.extend_from_slice(&2u32.to_le_bytes());
    m.extend_from_slice(&(target.len() as u16).to_le_bytes());
    m.extend_from_slice(&(target.len() as u16).to_le_bytes());
    m.extend_from_slice(&header_len.to_le_bytes());
    m.extend_from_slice(&flags.to_le_bytes());
    m.extend_from_slice(challenge);
    m.extend_from_slice(&[0; 8]);
    m.extend_from_slice(&(info.len() as u16).to_le_bytes());
    m.extend_from_slice(&(info.len() as u16).to_le_bytes());
    m.extend_from_slice(&(header_len + target.len() as u32).to_le_bytes());
    m.extend_from_slice(&[10, 0, 0x61, 0x4a, 0, 0, 0, 15]); // version 10.0.19041, NTLM rev 15
    m.extend_from_slice(&target);
    m.extend_from_slice(&info);
    m
}

fn der_len(n: usize, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend_from_slice(&[0x81, n as u8]);
    } else {
        out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    der_len(content.len(), &mut out);
    out.extend_from_slice(content);
    out
}

/// SPNEGO NegTokenInit advertising NTLMSSP (the negotiate response's security blob).
pub fn spnego_init() -> Vec<u8> {
    let mech_list = der(0x30, &NTLM_OID);
    let init = der(0x30, &der(0xa0, &mech_list));
    let mut inner = vec![0x06, 0x06, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x02];
    inner.extend_from_slice(&der(0xa0, &init));
    der(0x60, &inner)
}

/// SPNEGO NegTokenResp (accept-incomplete) carrying an NTLMSSP challenge.
pub fn spnego_challenge(ntlm: &[u8]) -> Vec<u8> {
    let mut seq = der(0xa0, &[0x0a, 0x01, 0x01]);
    seq.extend_from_slice(&der(0xa1, &NTLM_OID));
    seq.extend_from_slice(&der(0xa2, &der(0x04, ntlm)));
    der(0xa1, &der(0x30, &seq))
}

fn filetime_now() -> u64 {
    let unix =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() / 100).unwrap_or(0)
            as u64;
    unix + 116_444_736_000_000_000
}

fn smb2_header(req: &Smb2, command: u16, status: u32, session_id: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(64);
    h.extend_from_slice(&[0xfe, b'S', b'M', b'B']);
    h.extend_from_slice(&64u16.to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes()); // credit charge
    h.extend_from_slice(&status.to_le_bytes());
    h.extend_from_slice(&command.to_le_bytes());
    h.extend_from_slice(&req.credits.clamp(1, 64).to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes()); // SMB2_FLAGS_SERVER_TO_REDIR
    h.extend_from_slice(&0u32.to_le_bytes()); // next command
    h.extend_from_slice(&req.message_id.to_le_bytes());
    h.extend_from_slice(&req.process_id.to_le_bytes());
    h.extend_from_slice(&req.tree_id.to_le_bytes());
    h.extend_from_slice(&session_id.to_le_bytes());
    h.extend_from_slice(&[0; 16]);
    h
}

/// SMB2 NEGOTIATE response choosing `dialect`.
pub fn smb2_negotiate_response(req: &Smb2, dialect: u16, guid: &[u8; 16]) -> Vec<u8> {
    let blob = spnego_init();
    let mut m = smb2_header(req, 0, STATUS_SUCCESS, 0);
    m.extend_from_slice(&65u16.to_le_bytes());
    m.extend_from_slice(&1u16.to_le_bytes()); // signing enabled
    m.extend_from_slice(&dialect.to_le_bytes());
    m.extend_from_slice(&0u16.to_le_bytes());
    m.extend_from_slice(guid);
    m.extend_from_slice(&0x0000_0007u32.to_le_bytes()); // DFS, leasing, large MTU
    for _ in 0..3 {
        m.extend_from_slice(&(8u32 * 1024 * 1024).to_le_bytes());
    }
    m.extend_from_slice(&filetime_now().to_le_bytes());
    m.extend_from_slice(&0u64.to_le_bytes());
    m.extend_from_slice(&128u16.to_le_bytes());
    m.extend_from_slice(&(blob.len() as u16).to_le_bytes());
    m.extend_from_slice(&0u32.to_le_bytes());
    m.extend_from_slice(&blob);
    m
}

fn smb2_session_setup_response(req: &Smb2, status: u32, session_id: u64, blob: &[u8]) -> Vec<u8> {
    let mut m = smb2_header(req, 1, status, session_id);
    m.extend_from_slice(&9u16.to_le_bytes());
    m.extend_from_slice(&0u16.to_le_bytes());
    m.extend_from_slice(&72u16.to_le_bytes());
    m.extend_from_slice(&(blob.len() as u16).to_le_bytes());
    m.extend_from_slice(blob);
    m
}

fn smb2_error(req: &Smb2, status: u32) -> Vec<u8> {
    let mut m = smb2_header(req, req.command, status, req.session_id);
    m.extend_from_slice(&9u16.to_le_bytes());
    m.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
    m
}

fn smb1_header(req: &Smb1, command: u8, status: u32, tid: u16, uid: u16, mid: u16) -> Vec<u8> {
    let mut h = vec![0xff, b'S', b'M', b'B', command];
    h.extend_from_slice(&status.to_le_bytes());
    h.push(0x98); // flags: reply, case-insensitive, canonical paths
    h.extend_from_slice(&0xc803u16.to_le_bytes()); // flags2: unicode, NT status, long names
    h.extend_from_slice(&[0; 12]); // pid high, signature, reserved
    h.extend_from_slice(&tid.to_le_bytes());
    h.extend_from_slice(&req.pid.to_le_bytes());
    h.extend_from_slice(&uid.to_le_bytes());
    h.extend_from_slice(&mid.to_le_bytes());
    h
}

fn smb1_reply(req: &Smb1, status: u32, tid: u16, uid: u16, words: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut m = smb1_header(req, req.command, status, tid, uid, req.mid);
    m.push((words.len() / 2) as u8);
    m.extend_from_slice(words);
    m.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    m.extend_from_slice(bytes);
    m
}

/// SMB1 NEGOTIATE response selecting NT LM 0.12 (non-extended security, 8-byte challenge).
fn smb1_negotiate_response(req: &Smb1, index: u16, challenge: &[u8; 8]) -> Vec<u8> {
    let mut w = Vec::new();
    w.extend_from_slice(&index.to_le_bytes());
    w.push(0x03); // user security, encrypt passwords
    w.extend_from_slice(&50u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&16644u32.to_le_bytes());
    w.extend_from_slice(&65536u32.to_le_bytes());
    w.extend_from_slice(&0u32.to_le_bytes());
    w.extend_from_slice(&0x0000_e3fdu32.to_le_bytes());
    w.extend_from_slice(&filetime_now().to_le_bytes());
    w.extend_from_slice(&0u16.to_le_bytes());
    w.push(8);
    let mut b = challenge.to_vec();
    b.extend_from_slice(&utf16("WORKGROUP\0"));
    b.extend_from_slice(&utf16(DEFAULT_BANNER));
    b.extend_from_slice(&utf16("\0"));
    smb1_reply(req, STATUS_SUCCESS, 0, 0, &w, &b)
}

/// Is this SMB1 TRANS a PeekNamedPipe on FID 0 (the MS17-010 probe)?
pub fn is_ms17_010_probe(m: &Smb1) -> bool {
    // TRANS (0x25): setup words follow the 14 fixed parameter words; setup[0] = 0x23
    // (PeekNamedPipe), setup[1] = FID 0.
    m.command == 0x25 && m.words.len() >= 32 && m.words.get(28..30) == Some(&[0x23, 0x00][..])
}

/// Is this SMB1 TRANS2 SESSION_SETUP with multiplex id 0x41 (the DoublePulsar ping)?
pub fn is_doublepulsar_ping(m: &Smb1) -> bool {
    m.command == 0x32 && m.mid == 0x41 && m.words.len() >= 30 && m.words.get(28..30) == Some(&[0x0e, 0x00][..])
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

fn exploit(session: &Session, name: &str, extra: Vec<(String, String)>) {
    session.emit(Detail::Exploit { name: name.into(), cve: "CVE-2017-0144".into(), extra });
}

pub async fn handle(session: &mut Session, svc: &ServiceSection) -> SessionResult<()> {
    let host = svc.banner_or(DEFAULT_BANNER);
    let challenge: [u8; 8] = rand::random();
    let guid: [u8; 16] = rand::random();
    let session_id: u64 = rand::random::<u64>() | 1;
    let mut recorded_dialects = false;
    for _ in 0..MAX_MESSAGES {
        let msg = read_message(session).await?;
        let parsed = match parse_message(&msg) {
            Ok(m) => m,
            Err(_) => return Err(CloseReason::ProtocolError),
        };
        match parsed {
            Message::Smb1(m) => match m.command {
                0x72 => {
                    let dialects = smb1_dialects(&m.bytes);
                    if !recorded_dialects {
                        recorded_dialects = true;
                        session.emit(Detail::Fingerprint {
                            kind: "smb1_dialects".into(),
                            value: dialects.join(","),
                            extra: vec![],
                        });
                    }
                    if dialects.iter().any(|d| d.starts_with("SMB 2.")) {
                        // Multi-protocol negotiate: answer with the SMB2 wildcard dialect.
                        let req = Smb2 {
                            command: 0,
                            credits: 1,
                            message_id: 0,
                            process_id: 0,
                            tree_id: 0,
                            session_id: 0,
                            raw: Vec::new(),
                        };
                        send(session, &smb2_negotiate_response(&req, 0x02ff, &guid)).await?;
                    } else if let Some(i) = dialects.iter().position(|d| d == "NT LM 0.12") {
                        send(session, &smb1_negotiate_response(&m, i as u16, &challenge)).await?;
                    } else {
                        let r = smb1_reply(&m, STATUS_SUCCESS, 0, 0, &0xffffu16.to_le_bytes(), &[]);
                        send(session, &r).await?;
                        return Ok(());
                    }
                }
                0x73 => {
                    // SESSION_SETUP_ANDX: record what was offered, let anonymous in (scanners
                    // need it to reach IPC$), refuse named users.
                    let auth = parse_smb1_session_setup(&m);
                    let anonymous = auth.user.is_empty();
                    if !anonymous {
                        session.emit(Detail::Login {
                            username: auth.user.clone(),
                            secret: Secret::Hash {
                                format: "smb1-nt-response-hex".into(),
                                value: format!("{}:{}", hex::encode(challenge), hex::encode(&auth.nt_response)),
                            },
                            success: false,
                            extra: vec![
                                ("domain".into(), auth.domain.clone()),
                                ("dialect".into(), "NT LM 0.12".into()),
                            ],
                        });
                        send(session, &smb1_reply(&m, STATUS_LOGON_FAILURE, 0, 0, &[], &[])).await?;
                        continue;
                    }
                    let mut w = vec![0xff, 0, 0, 0];
                    w.extend_from_slice(&0u16.to_le_bytes());
                    let b =
                        utf16("Windows 7 Professional 7601 Service Pack 1\0Windows 7 Professional 6.1\0WORKGROUP\0");
                    send(session, &smb1_reply(&m, STATUS_SUCCESS, 0, 2048, &w, &b)).await?;
                }
                0x75 => {
                    let path = ntlm_string(&m.bytes, true);
                    let mut w = vec![0xff, 0, 0, 0];
                    w.extend_from_slice(&0u16.to_le_bytes());
                    let mut b = b"IPC\0".to_vec();
                    b.extend_from_slice(&utf16("\0"));
                    session.emit(Detail::Command { line: format!("TREE_CONNECT {}", path.trim_matches('\0')) });
                    send(session, &smb1_reply(&m, STATUS_SUCCESS, 2048, m.uid, &w, &b)).await?;
                }
                0x25 if is_ms17_010_probe(&m) => {
                    exploit(session, "ms17-010-probe", vec![("transaction".into(), "PeekNamedPipe".into())]);
                    send(session, &smb1_reply(&m, STATUS_INSUFF_SERVER_RESOURCES, m.tid, m.uid, &[], &[])).await?;
                }
                0x32 if is_doublepulsar_ping(&m) => {
                    exploit(session, "doublepulsar-ping", vec![("mid".into(), format!("{:#x}", m.mid))]);
                    send(session, &smb1_reply(&m, STATUS_NOT_IMPLEMENTED, m.tid, m.uid, &[], &[])).await?;
                }
                0x32 | 0x33 | 0x25 if msg.len() > 1024 => {
                    // Large transactions after the probe: the exploit itself. Keep it as payload.
                    let mut exploit_bytes = PayloadCapture::new(MAX_PAYLOAD_PREFIX);
                    exploit_bytes.update(&msg);
                    session.emit(exploit_bytes.finish(format!("smb1-cmd-{:#04x}", m.command)));
                    exploit(
                        session,
                        "eternalblue-transaction",
                        vec![("command".into(), format!("{:#04x}", m.command))],
                    );
                    send(session, &smb1_reply(&m, STATUS_NOT_IMPLEMENTED, m.tid, m.uid, &[], &[])).await?;
                }
                0x71 | 0x74 => return Ok(()),
                _ => send(session, &smb1_reply(&m, STATUS_NOT_SUPPORTED, m.tid, m.uid, &[], &[])).await?,
            },
            Message::Smb2(m) => match m.command {
                0 => {
                    let offered = smb2_dialects(&m).unwrap_or_default();
                    session.emit(Detail::Fingerprint {
                        kind: "smb2_dialects".into(),
                        value: offered.iter().map(|d| format!("{d:#06x}")).collect::<Vec<_>>().join(","),
                        extra: vec![],
                    });
                    let dialect =
                        [0x0302u16, 0x0300, 0x0210, 0x0202].into_iter().find(|d| offered.contains(d)).unwrap_or(0x0202);
                    send(session, &smb2_negotiate_response(&m, dialect, &guid)).await?;
                }
                1 => {
                    let blob = smb2_session_setup_blob(&m).unwrap_or(&[]);
                    let Some(ntlm) = find_ntlmssp(blob) else {
                        send(session, &smb2_error(&m, STATUS_LOGON_FAILURE)).await?;
                        continue;
                    };
                    match ntlmssp_type(ntlm) {
                        Some(1) => {
                            let token =
                                spnego_challenge(&ntlm_challenge(&challenge, "WORKGROUP", host, filetime_now()));
                            let r =
                                smb2_session_setup_response(&m, STATUS_MORE_PROCESSING_REQUIRED, session_id, &token);
                            send(session, &r).await?;
                        }
                        Some(3) => {
                            if let Ok(auth) = parse_ntlm_authenticate(ntlm) {
                                record_ntlm(session, &auth, &challenge);
                            }
                            send(session, &smb2_error(&m, STATUS_LOGON_FAILURE)).await?;
                        }
                        _ => send(session, &smb2_error(&m, STATUS_LOGON_FAILURE)).await?,
                    }
                }
                2 => return Ok(()), // LOGOFF
                _ => send(session, &smb2_error(&m, STATUS_NOT_SUPPORTED)).await?,
            },
        }
    }
    Ok(())
}

fn record_ntlm(session: &Session, auth: &NtlmAuth, challenge: &[u8; 8]) {
    let secret = match auth.hashcat_5600(challenge) {
        Some(line) => Secret::Hash { format: "hashcat-5600".into(), value: line },
        None if auth.nt_response.is_empty() => Secret::None,
        None => Secret::Hash {
            format: "netntlmv1-hex".into(),
            value: format!("{}:{}", hex::encode(challenge), hex::encode(&auth.nt_response)),
        },
    };
    session.emit(Detail::Login {
        username: auth.user.clone(),
        secret,
        success: false,
        extra: vec![
            ("domain".into(), auth.domain.clone()),
            ("workstation".into(), auth.workstation.clone()),
            ("method".into(), "ntlmssp".into()),
        ],
    });
}

/// SMB1 SESSION_SETUP_ANDX without extended security: account, domain and the NT response.
pub fn parse_smb1_session_setup(m: &Smb1) -> NtlmAuth {
    // Words: AndX(4) MaxBuffer(2) MaxMpx(2) VcNumber(2) SessionKey(4) OEMPasswordLen(2)
    // UnicodePasswordLen(2) Reserved(4) Capabilities(4) — 13 words.
    if m.words.len() < 26 {
        return NtlmAuth::default();
    }
    let oem_len = u16le(&m.words, 14).unwrap_or(0) as usize;
    let uni_len = u16le(&m.words, 16).unwrap_or(0) as usize;
    let b = &m.bytes;
    let lm = b.get(..oem_len).unwrap_or(&[]).to_vec();
    let nt = b.get(oem_len..oem_len + uni_len).unwrap_or(&[]).to_vec();
    let mut rest = b.get(oem_len + uni_len..).unwrap_or(&[]);
    // Unicode strings are aligned to 2 bytes from the SMB header start (odd offset → pad).
    if (33 + m.words.len() + 2 + oem_len + uni_len) % 2 == 1 && !rest.is_empty() {
        rest = &rest[1..];
    }
    let mut strings = rest.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect::<Vec<_>>().into_iter();
    let mut next = || -> String {
        let s: Vec<u16> = strings.by_ref().take_while(|&u| u != 0).take(256).collect();
        String::from_utf16_lossy(&s)
    };
    let user = next();
    let domain = next();
    NtlmAuth { user, domain, workstation: String::new(), lm_response: lm, nt_response: nt }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn ntlm_authenticate(user: &str, domain: &str, ws: &str, nt: &[u8]) -> Vec<u8> {
        let fields = [vec![0u8; 24], nt.to_vec(), utf16(domain), utf16(user), utf16(ws), vec![]];
        let mut m = NTLMSSP_SIG.to_vec();
        m.extend_from_slice(&3u32.to_le_bytes());
        let mut payload = Vec::new();
        let base = 72u32;
        for f in &fields {
            m.extend_from_slice(&(f.len() as u16).to_le_bytes());
            m.extend_from_slice(&(f.len() as u16).to_le_bytes());
            m.extend_from_slice(&(base + payload.len() as u32).to_le_bytes());
            payload.extend_from_slice(f);
        }
        m.extend_from_slice(&0xe288_8215u32.to_le_bytes());
        m.extend_from_slice(&[0; 8]);
        assert_eq!(m.len(), 72);
        m.extend_from_slice(&payload);
        m
    }

    #[test]
    fn ntlm_authenticate_to_hashcat_line() {
        let mut nt = vec![0xaa; 16];
        nt.extend_from_slice(&[0x01, 0x01, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9]);
        let msg = ntlm_authenticate("alice", "CORP", "WS1", &nt);
        let wrapped = [vec![0xa1, 0x81, 0x90, 0x30], msg.clone()].concat();
        let auth = parse_ntlm_authenticate(find_ntlmssp(&wrapped).unwrap()).unwrap();
        assert_eq!((auth.user.as_str(), auth.domain.as_str(), auth.workstation.as_str()), ("alice", "CORP", "WS1"));
        let line = auth.hashcat_5600(&[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(
            line,
            format!(
                "alice::CORP:0102030405060708:{}:{}",
                "aa".repeat(16),
                "0101000000000000".to_owned() + &"09".repeat(8)
            )
        );
    }

    #[test]
    fn challenge_and_spnego_are_well_formed() {
        let c = ntlm_challenge(&[7; 8], "WORKGROUP", "FILESRV01", 1);
        assert_eq!(ntlmssp_type(&c), Some(2));
        assert_eq!(&c[24..32], &[7; 8]);
        let s = spnego_challenge(&c);
        assert_eq!(s[0], 0xa1);
        assert!(find_ntlmssp(&s).is_some());
        let init = spnego_init();
        assert_eq!(init[0], 0x60);
        assert_eq!(init[1] as usize, init.len() - 2);
    }

    #[test]
    fn ms17_010_and_doublepulsar_signatures() {
        let mut words = vec![0u8; 32];
        words[28] = 0x23;
        let probe = Smb1 { command: 0x25, tid: 1, pid: 1, uid: 1, mid: 1, words: words.clone(), bytes: vec![] };
        assert!(is_ms17_010_probe(&probe));
        let mut w2 = vec![0u8; 30];
        w2[28] = 0x0e;
        let ping = Smb1 { command: 0x32, tid: 1, pid: 1, uid: 1, mid: 0x41, words: w2, bytes: vec![] };
        assert!(is_doublepulsar_ping(&ping));
        assert!(!is_doublepulsar_ping(&Smb1 { mid: 0x40, ..ping }));
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        assert_eq!(parse_netbios_header([0, 0xff, 0xff, 0xff]), Err(SmbError::TooLarge(0xff_ffff)));
        let auth = ntlm_authenticate("u", "d", "w", &[1; 40]);
        for t in crate::protocols::hostile::truncations(&auth) {
            let _ = parse_ntlm_authenticate(t);
        }
        for (i, mut buf) in crate::protocols::hostile::random_inputs(0x853c49e6748fea9b, 30_000, 200, false).enumerate()
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
                        let _ = smb1_dialects(&s.bytes);
                    }
                    Message::Smb2(s) => {
                        let _ = smb2_dialects(&s);
                        let _ = smb2_session_setup_blob(&s);
                    }
                }
            }
            let _ = parse_ntlm_authenticate(&buf);
        }
    }
}
