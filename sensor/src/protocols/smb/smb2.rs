//! SMB2: what Windows, Samba's smbclient and modern scanners speak.
//!
//! We answer NEGOTIATE with the best dialect offered (up to 3.0.2) and an SPNEGO token that
//! advertises NTLMSSP, answer the NTLMSSP NEGOTIATE of SESSION_SETUP with our challenge, and
//! record the AUTHENTICATE that follows (an NTLMv2 response as a crackable hashcat 5600 line)
//! before refusing it with STATUS_LOGON_FAILURE. No share is ever offered.

use super::ntlm::NtlmAuth;
use super::ntlm::{find_ntlmssp, ntlm_challenge, ntlmssp_type, parse_ntlm_authenticate, spnego_challenge, spnego_init};
use super::{filetime_now, send, u16le, u32le, u64le, Conn, Flow, SmbError};
use super::{STATUS_LOGON_FAILURE, STATUS_MORE_PROCESSING_REQUIRED, STATUS_NOT_SUPPORTED, STATUS_SUCCESS};
use crate::session::{Session, SessionResult};
use drosera_uplink::event::{Detail, Secret};

/// SMB2 command codes we act on ([MS-SMB2] 2.2.1.2).
const NEGOTIATE: u16 = 0x0000;
const SESSION_SETUP: u16 = 0x0001;
const LOGOFF: u16 = 0x0002;

/// Dialects we accept, best first (3.0.2, 3.0, 2.1, 2.0.2); 2.0.2 when the client offers none.
const DIALECTS: [u16; 4] = [0x0302, 0x0300, 0x0210, 0x0202];
/// NTLMSSP message types inside SESSION_SETUP.
const NTLM_NEGOTIATE: u32 = 1;
const NTLM_AUTHENTICATE: u32 = 3;

/// The SMB2 fields we act on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
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

/// Parses an SMB2 message (`msg` starts with `\xfeSMB`).
pub(super) fn parse(msg: &[u8]) -> Result<Smb2, SmbError> {
    if msg.len() < 64 {
        return Err(SmbError::Truncated);
    }
    Ok(Smb2 {
        command: u16le(msg, 12)?,
        credits: u16le(msg, 14)?,
        message_id: u64le(msg, 24)?,
        process_id: u32le(msg, 32)?,
        tree_id: u32le(msg, 36)?,
        session_id: u64le(msg, 40)?,
        raw: msg.to_vec(),
    })
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

fn header(req: &Smb2, command: u16, status: u32, session_id: u64) -> Vec<u8> {
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
pub fn negotiate_response(req: &Smb2, dialect: u16, guid: &[u8; 16]) -> Vec<u8> {
    let blob = spnego_init();
    let mut m = header(req, NEGOTIATE, STATUS_SUCCESS, 0);
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

fn session_setup_response(req: &Smb2, status: u32, session_id: u64, blob: &[u8]) -> Vec<u8> {
    let mut m = header(req, SESSION_SETUP, status, session_id);
    m.extend_from_slice(&9u16.to_le_bytes());
    m.extend_from_slice(&0u16.to_le_bytes());
    m.extend_from_slice(&72u16.to_le_bytes());
    m.extend_from_slice(&(blob.len() as u16).to_le_bytes());
    m.extend_from_slice(blob);
    m
}

fn error(req: &Smb2, status: u32) -> Vec<u8> {
    let mut m = header(req, req.command, status, req.session_id);
    m.extend_from_slice(&9u16.to_le_bytes());
    m.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
    m
}

/// Answers one SMB2 message.
pub(super) async fn respond(session: &mut Session, conn: &Conn<'_>, m: &Smb2) -> SessionResult<Flow> {
    match m.command {
        NEGOTIATE => {
            let offered = smb2_dialects(m).unwrap_or_default();
            session.emit(Detail::Fingerprint {
                kind: "smb2_dialects".into(),
                value: offered.iter().map(|d| format!("{d:#06x}")).collect::<Vec<_>>().join(","),
                extra: vec![],
            });
            let dialect = DIALECTS.into_iter().find(|d| offered.contains(d)).unwrap_or(0x0202);
            send(session, &negotiate_response(m, dialect, &conn.guid)).await?;
        }
        SESSION_SETUP => session_setup(session, conn, m).await?,
        LOGOFF => return Ok(Flow::End),
        _ => send(session, &error(m, STATUS_NOT_SUPPORTED)).await?,
    }
    Ok(Flow::Continue)
}

/// SESSION_SETUP: our challenge for an NTLMSSP NEGOTIATE; the AUTHENTICATE is recorded and
/// refused, like anything else.
async fn session_setup(session: &mut Session, conn: &Conn<'_>, m: &Smb2) -> SessionResult<()> {
    let blob = smb2_session_setup_blob(m).unwrap_or(&[]);
    let Some(ntlm) = find_ntlmssp(blob) else {
        return send(session, &error(m, STATUS_LOGON_FAILURE)).await;
    };
    match ntlmssp_type(ntlm) {
        Some(NTLM_NEGOTIATE) => {
            let token = spnego_challenge(&ntlm_challenge(&conn.challenge, "WORKGROUP", conn.host, filetime_now()));
            let r = session_setup_response(m, STATUS_MORE_PROCESSING_REQUIRED, conn.session_id, &token);
            send(session, &r).await
        }
        Some(NTLM_AUTHENTICATE) => {
            if let Ok(auth) = parse_ntlm_authenticate(ntlm) {
                record_ntlm(session, &auth, &conn.challenge);
            }
            send(session, &error(m, STATUS_LOGON_FAILURE)).await
        }
        _ => send(session, &error(m, STATUS_LOGON_FAILURE)).await,
    }
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
