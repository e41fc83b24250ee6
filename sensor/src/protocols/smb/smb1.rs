//! SMB1: what an EternalBlue scanner and an old client speak.
//!
//! We answer NEGOTIATE (NT LM 0.12 with an 8-byte challenge, or the SMB2 wildcard when the client
//! also offers SMB 2), record non-anonymous SESSION_SETUP_ANDX logins and refuse them, let the
//! anonymous session reach `IPC$` (TREE_CONNECT_ANDX), and answer the MS17-010 PeekNamedPipe
//! probe the way a vulnerable host does, so the scanner shows its hand: the DoublePulsar ping and
//! the exploit transactions that follow are recorded (the latter as payloads), never executed.

use super::ntlm::{ntlm_string, NtlmAuth};
use super::{exploit, filetime_now, send, smb2, u16le, utf16, Conn, Flow, SmbError};
use super::{DEFAULT_BANNER, STATUS_SUCCESS};
use super::{STATUS_INSUFF_SERVER_RESOURCES, STATUS_LOGON_FAILURE, STATUS_NOT_IMPLEMENTED, STATUS_NOT_SUPPORTED};
use crate::capture::PayloadCapture;
use crate::session::{Session, SessionResult};
use drosera_uplink::event::{Detail, Secret, MAX_PAYLOAD_PREFIX};

/// SMB1 command codes we act on ([MS-CIFS] 2.2.2.1).
const TRANSACTION: u8 = 0x25;
const TRANSACTION2: u8 = 0x32;
const TRANSACTION2_SECONDARY: u8 = 0x33;
const TREE_DISCONNECT: u8 = 0x71;
const NEGOTIATE: u8 = 0x72;
const SESSION_SETUP_ANDX: u8 = 0x73;
const LOGOFF_ANDX: u8 = 0x74;
const TREE_CONNECT_ANDX: u8 = 0x75;

/// The dialect a Windows client asks for in SMB1.
const NT_LM_0_12: &str = "NT LM 0.12";
/// Transactions larger than this after the probe are the exploit itself.
const EXPLOIT_TRANSACTION: usize = 1024;

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

/// Parses an SMB1 message (`msg` starts with `\xffSMB`).
pub(super) fn parse(msg: &[u8]) -> Result<Smb1, SmbError> {
    let command = *msg.get(4).ok_or(SmbError::Truncated)?;
    let wc = *msg.get(32).ok_or(SmbError::Truncated)? as usize;
    let words = msg.get(33..33 + wc * 2).ok_or(SmbError::Truncated)?.to_vec();
    let bc = u16le(msg, 33 + wc * 2)? as usize;
    let start = 35 + wc * 2;
    let bytes = msg.get(start..start + bc).or_else(|| msg.get(start..)).ok_or(SmbError::Truncated)?.to_vec();
    Ok(Smb1 {
        command,
        tid: u16le(msg, 24)?,
        pid: u16le(msg, 26)?,
        uid: u16le(msg, 28)?,
        mid: u16le(msg, 30)?,
        words,
        bytes,
    })
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

/// Is this SMB1 TRANS a PeekNamedPipe on FID 0 (the MS17-010 probe)?
pub fn is_ms17_010_probe(m: &Smb1) -> bool {
    // TRANS (0x25): setup words follow the 14 fixed parameter words; setup[0] = 0x23
    // (PeekNamedPipe), setup[1] = FID 0.
    m.command == TRANSACTION && m.words.len() >= 32 && m.words.get(28..30) == Some(&[0x23, 0x00][..])
}

/// Is this SMB1 TRANS2 SESSION_SETUP with multiplex id 0x41 (the DoublePulsar ping)?
pub fn is_doublepulsar_ping(m: &Smb1) -> bool {
    m.command == TRANSACTION2 && m.mid == 0x41 && m.words.len() >= 30 && m.words.get(28..30) == Some(&[0x0e, 0x00][..])
}

fn header(req: &Smb1, command: u8, status: u32, tid: u16, uid: u16, mid: u16) -> Vec<u8> {
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

fn reply(req: &Smb1, status: u32, tid: u16, uid: u16, words: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut m = header(req, req.command, status, tid, uid, req.mid);
    m.push((words.len() / 2) as u8);
    m.extend_from_slice(words);
    m.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    m.extend_from_slice(bytes);
    m
}

/// SMB1 NEGOTIATE response selecting NT LM 0.12 (non-extended security, 8-byte challenge).
fn negotiate_response(req: &Smb1, index: u16, challenge: &[u8; 8]) -> Vec<u8> {
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
    reply(req, STATUS_SUCCESS, 0, 0, &w, &b)
}

/// Answers one SMB1 message (`msg` is the whole message, for payload capture).
pub(super) async fn respond(session: &mut Session, conn: &mut Conn<'_>, m: &Smb1, msg: &[u8]) -> SessionResult<Flow> {
    match m.command {
        NEGOTIATE => negotiate(session, conn, m).await,
        SESSION_SETUP_ANDX => session_setup(session, conn, m).await,
        TREE_CONNECT_ANDX => tree_connect(session, m).await,
        TRANSACTION if is_ms17_010_probe(m) => {
            exploit(session, "ms17-010-probe", vec![("transaction".into(), "PeekNamedPipe".into())]);
            send(session, &reply(m, STATUS_INSUFF_SERVER_RESOURCES, m.tid, m.uid, &[], &[])).await?;
            Ok(Flow::Continue)
        }
        TRANSACTION2 if is_doublepulsar_ping(m) => {
            exploit(session, "doublepulsar-ping", vec![("mid".into(), format!("{:#x}", m.mid))]);
            send(session, &reply(m, STATUS_NOT_IMPLEMENTED, m.tid, m.uid, &[], &[])).await?;
            Ok(Flow::Continue)
        }
        TRANSACTION2 | TRANSACTION2_SECONDARY | TRANSACTION if msg.len() > EXPLOIT_TRANSACTION => {
            exploit_transaction(session, m, msg).await
        }
        TREE_DISCONNECT | LOGOFF_ANDX => Ok(Flow::End),
        _ => {
            send(session, &reply(m, STATUS_NOT_SUPPORTED, m.tid, m.uid, &[], &[])).await?;
            Ok(Flow::Continue)
        }
    }
}

/// NEGOTIATE: records the dialects offered (once per connection) and picks SMB2 (multi-protocol
/// negotiate), NT LM 0.12, or none (then the connection ends).
async fn negotiate(session: &mut Session, conn: &mut Conn<'_>, m: &Smb1) -> SessionResult<Flow> {
    let dialects = smb1_dialects(&m.bytes);
    if !conn.recorded_dialects {
        conn.recorded_dialects = true;
        session.emit(Detail::Fingerprint { kind: "smb1_dialects".into(), value: dialects.join(","), extra: vec![] });
    }
    if dialects.iter().any(|d| d.starts_with("SMB 2.")) {
        // Multi-protocol negotiate: answer with the SMB2 wildcard dialect.
        send(session, &smb2::negotiate_response(&smb2::Smb2::default(), 0x02ff, &conn.guid)).await?;
    } else if let Some(i) = dialects.iter().position(|d| d == NT_LM_0_12) {
        send(session, &negotiate_response(m, i as u16, &conn.challenge)).await?;
    } else {
        send(session, &reply(m, STATUS_SUCCESS, 0, 0, &0xffffu16.to_le_bytes(), &[])).await?;
        return Ok(Flow::End);
    }
    Ok(Flow::Continue)
}

/// SESSION_SETUP_ANDX: records what was offered, lets anonymous in (scanners need it to reach
/// IPC$), refuses named users.
async fn session_setup(session: &mut Session, conn: &Conn<'_>, m: &Smb1) -> SessionResult<Flow> {
    let auth = parse_smb1_session_setup(m);
    if !auth.user.is_empty() {
        session.emit(Detail::Login {
            username: auth.user.clone(),
            secret: Secret::Hash {
                format: "smb1-nt-response-hex".into(),
                value: format!("{}:{}", hex::encode(conn.challenge), hex::encode(&auth.nt_response)),
            },
            success: false,
            extra: vec![("domain".into(), auth.domain.clone()), ("dialect".into(), NT_LM_0_12.into())],
        });
        send(session, &reply(m, STATUS_LOGON_FAILURE, 0, 0, &[], &[])).await?;
        return Ok(Flow::Continue);
    }
    let mut w = vec![0xff, 0, 0, 0];
    w.extend_from_slice(&0u16.to_le_bytes());
    let b = utf16("Windows 7 Professional 7601 Service Pack 1\0Windows 7 Professional 6.1\0WORKGROUP\0");
    send(session, &reply(m, STATUS_SUCCESS, 0, 2048, &w, &b)).await?;
    Ok(Flow::Continue)
}

/// TREE_CONNECT_ANDX: records the share asked for and answers as `IPC$`.
async fn tree_connect(session: &mut Session, m: &Smb1) -> SessionResult<Flow> {
    let path = ntlm_string(&m.bytes, true);
    let mut w = vec![0xff, 0, 0, 0];
    w.extend_from_slice(&0u16.to_le_bytes());
    let mut b = b"IPC\0".to_vec();
    b.extend_from_slice(&utf16("\0"));
    session.emit(Detail::Command { line: format!("TREE_CONNECT {}", path.trim_matches('\0')) });
    send(session, &reply(m, STATUS_SUCCESS, 2048, m.uid, &w, &b)).await?;
    Ok(Flow::Continue)
}

/// A large transaction after the probe: the exploit itself, kept as a payload.
async fn exploit_transaction(session: &mut Session, m: &Smb1, msg: &[u8]) -> SessionResult<Flow> {
    let mut bytes = PayloadCapture::new(MAX_PAYLOAD_PREFIX);
    bytes.update(msg);
    session.emit(bytes.finish(format!("smb1-cmd-{:#04x}", m.command)));
    exploit(session, "eternalblue-transaction", vec![("command".into(), format!("{:#04x}", m.command))]);
    send(session, &reply(m, STATUS_NOT_IMPLEMENTED, m.tid, m.uid, &[], &[])).await?;
    Ok(Flow::Continue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ms17_010_and_doublepulsar_signatures() {
        let mut words = vec![0u8; 32];
        words[28] = 0x23;
        let probe = Smb1 { command: TRANSACTION, tid: 1, pid: 1, uid: 1, mid: 1, words: words.clone(), bytes: vec![] };
        assert!(is_ms17_010_probe(&probe));
        let mut w2 = vec![0u8; 30];
        w2[28] = 0x0e;
        let ping = Smb1 { command: TRANSACTION2, tid: 1, pid: 1, uid: 1, mid: 0x41, words: w2, bytes: vec![] };
        assert!(is_doublepulsar_ping(&ping));
        assert!(!is_doublepulsar_ping(&Smb1 { mid: 0x40, ..ping }));
    }
}
