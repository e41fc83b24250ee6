//! SMB2: what Windows, Samba's smbclient, impacket and modern scanners speak.
//!
//! We negotiate SMB 2.1 at most (what Windows Server 2008 R2 speaks; 3.x would have us sign the
//! final session setup answer with a key we do not derive) without requiring signing, answer
//! SESSION_SETUP's NTLMSSP with our challenge and decide the AUTHENTICATE with the login policy
//! (`login`), then serve what a file drop needs: TREE_CONNECT, CREATE, WRITE, CLOSE, the usual
//! QUERY_INFO classes, SET_INFO, FLUSH, ECHO. Compound requests (several commands in one
//! message, as smbclient sends) are answered in one compound reply. Everything else gets the
//! error a Windows server gives.

use super::login::{self, LoginOutcome};
use super::ntlm::{
    find_ntlmssp, ntlm_challenge, ntlmssp_type, ntlmv2_session_key, parse_ntlm_authenticate, spnego_accept_completed,
    spnego_challenge, spnego_init,
};
use super::{filetime_now, from_utf16, send, slice, u16le, u32le, u64le, utf16, Conn, CreateRequest, Flow, SmbError};
use super::{
    STATUS_ACCESS_DENIED, STATUS_END_OF_FILE, STATUS_FS_DRIVER_REQUIRED, STATUS_INVALID_HANDLE,
    STATUS_INVALID_INFO_CLASS, STATUS_INVALID_PARAMETER, STATUS_LOGON_FAILURE, STATUS_MORE_PROCESSING_REQUIRED,
    STATUS_NOT_SUPPORTED, STATUS_NO_MORE_FILES, STATUS_SUCCESS, STATUS_USER_SESSION_DELETED,
};
use crate::session::{Session, SessionResult};
use drosera_uplink::event::Detail;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// SMB2 command codes ([MS-SMB2] 2.2.1.2).
const NEGOTIATE: u16 = 0x0000;
const SESSION_SETUP: u16 = 0x0001;
const LOGOFF: u16 = 0x0002;
const TREE_CONNECT: u16 = 0x0003;
const TREE_DISCONNECT: u16 = 0x0004;
const CREATE: u16 = 0x0005;
const CLOSE: u16 = 0x0006;
const FLUSH: u16 = 0x0007;
const READ: u16 = 0x0008;
const WRITE: u16 = 0x0009;
const IOCTL: u16 = 0x000b;
const CANCEL: u16 = 0x000c;
const ECHO: u16 = 0x000d;
const QUERY_DIRECTORY: u16 = 0x000e;
const QUERY_INFO: u16 = 0x0010;
const SET_INFO: u16 = 0x0011;

/// Dialects we accept, best first (2.1, 2.0.2); 2.0.2 when the client offers none of them.
const DIALECTS: [u16; 2] = [0x0210, 0x0202];
/// NTLMSSP message types inside SESSION_SETUP.
const NTLM_NEGOTIATE: u32 = 1;
const NTLM_AUTHENTICATE: u32 = 3;
/// Header flags.
const FLAGS_SERVER_TO_REDIR: u32 = 0x1;
const FLAGS_SIGNED: u32 = 0x8;
const FLAGS_RELATED_OPERATIONS: u32 = 0x4;
/// Session flags of a SESSION_SETUP answer.
const SESSION_FLAG_IS_NULL: u16 = 0x2;
/// Most commands in one compound request.
const MAX_COMPOUND: usize = 16;
/// Read, write and transaction sizes we announce (no LARGE_MTU: 64 KiB stays under
/// `MAX_MESSAGE`).
const MAX_IO: u32 = 65536;
/// Credits granted per answer at most.
const MAX_CREDITS: u16 = 256;
/// A related compound request names "the file of the previous command" with this id.
const FILE_ID_PREVIOUS: u64 = u64::MAX;
const STATUS_BUFFER_OVERFLOW: u32 = 0x8000_0005;
const STATUS_NETWORK_NAME_DELETED: u32 = 0xC000_00C9;

/// The SMB2 fields we act on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Smb2 {
    pub command: u16,
    pub credit_charge: u16,
    pub credits: u16,
    pub flags: u32,
    pub message_id: u64,
    pub process_id: u32,
    pub tree_id: u32,
    pub session_id: u64,
    /// The whole message (header included; body offsets are relative to its start).
    pub raw: Vec<u8>,
}

/// Parses an SMB2 message (`msg` starts with `\xfeSMB`; one command, not a compound).
pub(super) fn parse(msg: &[u8]) -> Result<Smb2, SmbError> {
    if msg.len() < 64 {
        return Err(SmbError::Truncated);
    }
    Ok(Smb2 {
        command: u16le(msg, 12)?,
        credit_charge: u16le(msg, 6)?,
        credits: u16le(msg, 14)?,
        flags: u32le(msg, 16)?,
        message_id: u64le(msg, 24)?,
        process_id: u32le(msg, 32)?,
        tree_id: u32le(msg, 36)?,
        session_id: u64le(msg, 40)?,
        raw: msg.to_vec(),
    })
}

/// Splits a compound request into its commands (each starts with its own header; the
/// header's NextCommand says where the next one starts). Bounded to [`MAX_COMPOUND`].
pub fn split_compound(msg: &[u8]) -> Result<Vec<&[u8]>, SmbError> {
    let mut parts = Vec::new();
    let mut rest = msg;
    loop {
        if parts.len() >= MAX_COMPOUND || rest.get(..4) != Some(&[0xfe, b'S', b'M', b'B'][..]) {
            return Err(SmbError::NotSmb);
        }
        let next = u32le(rest, 20)? as usize;
        if next == 0 {
            parts.push(rest);
            return Ok(parts);
        }
        if next < 64 || next % 8 != 0 || next > rest.len() {
            return Err(SmbError::Truncated);
        }
        parts.push(&rest[..next]);
        rest = &rest[next..];
    }
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
    slice(&m.raw, off, len)
}

/// The path of a TREE_CONNECT request.
fn tree_connect_path(m: &Smb2) -> Result<String, SmbError> {
    let off = u16le(&m.raw, 64 + 4)? as usize;
    let len = u16le(&m.raw, 64 + 6)? as usize;
    Ok(from_utf16(slice(&m.raw, off, len)?, super::files::MAX_NAME * 2))
}

/// Parses a CREATE request.
pub fn parse_create(m: &Smb2) -> Result<CreateRequest, SmbError> {
    let b = 64;
    let off = u16le(&m.raw, b + 44)? as usize;
    let len = u16le(&m.raw, b + 46)? as usize;
    let name = if len == 0 { String::new() } else { from_utf16(slice(&m.raw, off, len)?, super::files::MAX_NAME) };
    Ok(CreateRequest {
        name,
        desired_access: u32le(&m.raw, b + 24)?,
        disposition: u32le(&m.raw, b + 36)?,
        options: u32le(&m.raw, b + 40)?,
    })
}

/// One WRITE request: file, offset, data (a slice of the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write<'a> {
    pub file_id: u64,
    pub offset: u64,
    pub data: &'a [u8],
}

/// Parses a WRITE request.
pub fn parse_write(m: &Smb2) -> Result<Write<'_>, SmbError> {
    let b = 64;
    let at = u16le(&m.raw, b + 2)? as usize;
    let len = u32le(&m.raw, b + 4)? as usize;
    Ok(Write { file_id: u64le(&m.raw, b + 16)?, offset: u64le(&m.raw, b + 8)?, data: slice(&m.raw, at, len)? })
}

/// The persistent file id of a request whose FileId field is at `at` in the body.
fn file_id(m: &Smb2, at: usize) -> Result<u64, SmbError> {
    u64le(&m.raw, 64 + at)
}

fn header(req: &Smb2, status: u32, session_id: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(128);
    h.extend_from_slice(&[0xfe, b'S', b'M', b'B']);
    h.extend_from_slice(&64u16.to_le_bytes());
    h.extend_from_slice(&req.credit_charge.to_le_bytes());
    h.extend_from_slice(&status.to_le_bytes());
    h.extend_from_slice(&req.command.to_le_bytes());
    h.extend_from_slice(&req.credits.clamp(1, MAX_CREDITS).to_le_bytes());
    h.extend_from_slice(&(FLAGS_SERVER_TO_REDIR | (req.flags & FLAGS_RELATED_OPERATIONS)).to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes()); // next command (set when compounding)
    h.extend_from_slice(&req.message_id.to_le_bytes());
    h.extend_from_slice(&req.process_id.to_le_bytes());
    h.extend_from_slice(&req.tree_id.to_le_bytes());
    h.extend_from_slice(&session_id.to_le_bytes());
    h.extend_from_slice(&[0; 16]);
    h
}

/// An answer with `body` in the request's session.
fn answer(req: &Smb2, status: u32, body: &[u8]) -> Vec<u8> {
    let mut m = header(req, status, req.session_id);
    m.extend_from_slice(body);
    m
}

/// An error answer (StructureSize 9).
fn error(req: &Smb2, status: u32) -> Vec<u8> {
    answer(req, status, &[9, 0, 0, 0, 0, 0, 0, 0, 0])
}

/// The 4-byte body of LOGOFF, TREE_DISCONNECT, FLUSH, ECHO answers.
fn empty(req: &Smb2) -> Vec<u8> {
    answer(req, STATUS_SUCCESS, &[4, 0, 0, 0])
}

/// SMB2 NEGOTIATE response choosing `dialect`, from the server `guid` that booted at
/// `boot_time` (FILETIME; 0 for none, as Samba sends).
pub fn negotiate_response(req: &Smb2, dialect: u16, guid: &[u8; 16], boot_time: u64) -> Vec<u8> {
    let blob = spnego_init();
    let mut m = header(&Smb2 { command: NEGOTIATE, ..req.clone() }, STATUS_SUCCESS, 0);
    m.extend_from_slice(&65u16.to_le_bytes());
    m.extend_from_slice(&1u16.to_le_bytes()); // signing enabled, not required
    m.extend_from_slice(&dialect.to_le_bytes());
    m.extend_from_slice(&0u16.to_le_bytes());
    m.extend_from_slice(guid);
    m.extend_from_slice(&0x0000_0001u32.to_le_bytes()); // DFS
    for _ in 0..3 {
        m.extend_from_slice(&MAX_IO.to_le_bytes());
    }
    m.extend_from_slice(&filetime_now().to_le_bytes());
    m.extend_from_slice(&boot_time.to_le_bytes());
    m.extend_from_slice(&128u16.to_le_bytes());
    m.extend_from_slice(&(blob.len() as u16).to_le_bytes());
    m.extend_from_slice(&0u32.to_le_bytes());
    m.extend_from_slice(&blob);
    m
}

fn session_setup_response(req: &Smb2, status: u32, session_id: u64, flags: u16, blob: &[u8]) -> Vec<u8> {
    let mut m = header(req, status, session_id);
    m.extend_from_slice(&9u16.to_le_bytes());
    m.extend_from_slice(&flags.to_le_bytes());
    m.extend_from_slice(&72u16.to_le_bytes());
    m.extend_from_slice(&(blob.len() as u16).to_le_bytes());
    m.extend_from_slice(blob);
    m
}

/// Answers one SMB2 message (a single command or a compound).
pub(super) async fn respond(session: &mut Session, conn: &mut Conn<'_>, first: &Smb2) -> SessionResult<Flow> {
    let Ok(parts) = split_compound(&first.raw) else {
        send(session, &error(first, STATUS_INVALID_PARAMETER)).await?;
        return Ok(Flow::Continue);
    };
    // Each answer, and whether it is signed (its request was, and we have the session key).
    let mut answers: Vec<(Vec<u8>, bool)> = Vec::new();
    let mut previous_file = None;
    for part in parts {
        let Ok(m) = parse(part) else { break };
        let Some(r) = command(session, conn, &m, previous_file) else { continue };
        if m.command == CREATE && u32le(&r, 8) == Ok(STATUS_SUCCESS) {
            previous_file = u64le(&r, 64 + 64).ok();
        }
        answers.push((r, m.flags & FLAGS_SIGNED != 0));
    }
    let last = answers.len().saturating_sub(1);
    let mut out: Vec<u8> = Vec::new();
    for (i, (mut r, signed)) in answers.into_iter().enumerate() {
        if i < last {
            // A compound answer: each but the last padded to 8 bytes, NextCommand pointing on.
            r.resize(r.len().next_multiple_of(8), 0);
            let next = r.len() as u32;
            r[20..24].copy_from_slice(&next.to_le_bytes());
        }
        if let (true, Some(key)) = (signed, &conn.signing_key) {
            sign(&mut r, key);
        }
        out.extend_from_slice(&r);
    }
    if !out.is_empty() {
        send(session, &out).await?;
    }
    Ok(Flow::Continue)
}

/// Signs an SMB 2.x message: HMAC-SHA256 over it with the signature field zeroed, the first 16
/// bytes into that field ([MS-SMB2] 3.1.4.1).
pub fn sign(msg: &mut [u8], key: &[u8; 16]) {
    if msg.len() < 64 {
        return;
    }
    let flags = u32::from_le_bytes([msg[16], msg[17], msg[18], msg[19]]) | FLAGS_SIGNED;
    msg[16..20].copy_from_slice(&flags.to_le_bytes());
    msg[48..64].fill(0);
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return };
    mac.update(msg);
    let sig = mac.finalize().into_bytes();
    msg[48..64].copy_from_slice(&sig[..16]);
}

/// The answer to one command (None: CANCEL, which gets none). `previous_file` is the file
/// a related compound command refers to.
fn command(session: &Session, conn: &mut Conn<'_>, m: &Smb2, previous_file: Option<u64>) -> Option<Vec<u8>> {
    let needs_login = !matches!(m.command, NEGOTIATE | SESSION_SETUP | ECHO | CANCEL);
    if needs_login && conn.login.is_none() {
        return Some(error(m, STATUS_USER_SESSION_DELETED));
    }
    let fid = |at: usize| -> Option<u64> {
        match file_id(m, at) {
            Ok(FILE_ID_PREVIOUS) => previous_file,
            Ok(id) => Some(id),
            Err(_) => None,
        }
    };
    Some(match m.command {
        NEGOTIATE => {
            let offered = smb2_dialects(m).unwrap_or_default();
            session.emit(Detail::Fingerprint {
                kind: "smb2_dialects".into(),
                value: offered.iter().map(|d| format!("{d:#06x}")).collect::<Vec<_>>().join(","),
                extra: vec![],
            });
            let dialect = DIALECTS
                .into_iter()
                .filter(|d| *d <= conn.persona.smb2_max)
                .find(|d| offered.contains(d))
                .unwrap_or(0x0202);
            negotiate_response(m, dialect, &conn.guid, conn.boot_time())
        }
        SESSION_SETUP => session_setup(session, conn, m),
        LOGOFF => {
            conn.login = None;
            empty(m)
        }
        TREE_CONNECT => tree_connect(session, conn, m),
        TREE_DISCONNECT => {
            conn.disconnect_tree(m.tree_id);
            empty(m)
        }
        CREATE => create(session, conn, m),
        CLOSE => match fid(8) {
            Some(id) => close(session, conn, m, id),
            None => error(m, STATUS_INVALID_PARAMETER),
        },
        WRITE => write(session, conn, m, previous_file),
        QUERY_INFO => match fid(24) {
            Some(id) => query_info(conn, m, id),
            None => error(m, STATUS_INVALID_PARAMETER),
        },
        SET_INFO => match fid(16).and_then(|id| conn.files.get(id)) {
            Some(_) => answer(m, STATUS_SUCCESS, &[2, 0]),
            None => error(m, STATUS_INVALID_HANDLE),
        },
        FLUSH | ECHO => empty(m),
        READ => error(m, STATUS_END_OF_FILE),
        QUERY_DIRECTORY => error(m, STATUS_NO_MORE_FILES),
        IOCTL => {
            // FSCTL_DFS_GET_REFERRALS: no DFS here; the rest is not offered.
            let ctl = u32le(&m.raw, 64 + 4).unwrap_or(0);
            error(m, if ctl == 0x0006_0194 { STATUS_FS_DRIVER_REQUIRED } else { STATUS_NOT_SUPPORTED })
        }
        CANCEL => return None,
        _ => error(m, STATUS_NOT_SUPPORTED),
    })
}

/// SESSION_SETUP: our challenge for an NTLMSSP NEGOTIATE; the AUTHENTICATE is decided by the
/// login policy and recorded.
fn session_setup(session: &Session, conn: &mut Conn<'_>, m: &Smb2) -> Vec<u8> {
    let blob = smb2_session_setup_blob(m).unwrap_or(&[]);
    let Some(ntlm) = find_ntlmssp(blob) else {
        return error(m, STATUS_LOGON_FAILURE);
    };
    let spnego = !blob.starts_with(b"NTLMSSP\0");
    match ntlmssp_type(ntlm) {
        Some(NTLM_NEGOTIATE) => {
            let challenge = ntlm_challenge(&conn.challenge, &conn.ntlm_target(), filetime_now());
            let token = if spnego { spnego_challenge(&challenge) } else { challenge };
            session_setup_response(m, STATUS_MORE_PROCESSING_REQUIRED, conn.session_id, 0, &token)
        }
        Some(NTLM_AUTHENTICATE) => {
            let Ok(auth) = parse_ntlm_authenticate(ntlm) else { return error(m, STATUS_LOGON_FAILURE) };
            let (outcome, password) =
                login::decide(session, &auth, &conn.challenge, "ntlmssp", conn.dialect_name(true));
            if !outcome.succeeded() {
                return error(m, STATUS_LOGON_FAILURE);
            }
            // A client that signs (smbclient on IPC$) gets signed answers: the key comes from
            // the password the response proved (unknown for `*` accept entries: no signing).
            conn.signing_key = password.and_then(|pw| ntlmv2_session_key(&auth, &pw));
            let flags = if outcome == LoginOutcome::Anonymous { SESSION_FLAG_IS_NULL } else { 0 };
            conn.login = Some(outcome);
            let token = if spnego { spnego_accept_completed() } else { Vec::new() };
            session_setup_response(m, STATUS_SUCCESS, conn.session_id, flags, &token)
        }
        _ => error(m, STATUS_LOGON_FAILURE),
    }
}

fn tree_connect(session: &Session, conn: &mut Conn<'_>, m: &Smb2) -> Vec<u8> {
    let Ok(path) = tree_connect_path(m) else { return error(m, STATUS_INVALID_PARAMETER) };
    match conn.connect_tree(session, &path) {
        Ok((tid, disk)) => {
            let mut r = header(&Smb2 { tree_id: tid, ..m.clone() }, STATUS_SUCCESS, m.session_id);
            r.extend_from_slice(&16u16.to_le_bytes());
            r.push(if disk { 1 } else { 2 }); // share type: disk or pipe
            r.push(0);
            r.extend_from_slice(&0u32.to_le_bytes()); // share flags: manual caching
            r.extend_from_slice(&0u32.to_le_bytes()); // capabilities
            r.extend_from_slice(&0x001f_01ffu32.to_le_bytes()); // maximal access
            r
        }
        Err(status) => error(m, status),
    }
}

fn create(session: &Session, conn: &mut Conn<'_>, m: &Smb2) -> Vec<u8> {
    let Ok(req) = parse_create(m) else { return error(m, STATUS_INVALID_PARAMETER) };
    if conn.tree(m.tree_id).is_none() {
        return error(m, STATUS_NETWORK_NAME_DELETED);
    }
    let created = match conn.create(session, m.tree_id, &req) {
        Ok(c) => c,
        Err(status) => return error(m, status),
    };
    let now = filetime_now();
    let mut b = Vec::with_capacity(89);
    b.extend_from_slice(&89u16.to_le_bytes());
    b.push(0); // no oplock
    b.push(0);
    b.extend_from_slice(&created.action.to_le_bytes());
    for _ in 0..4 {
        b.extend_from_slice(&now.to_le_bytes());
    }
    b.extend_from_slice(&0u64.to_le_bytes()); // allocation size
    b.extend_from_slice(&0u64.to_le_bytes()); // end of file
    b.extend_from_slice(&(if created.directory { 0x10u32 } else { 0x20 }).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&created.id.to_le_bytes()); // persistent
    b.extend_from_slice(&created.id.to_le_bytes()); // volatile
    b.extend_from_slice(&0u32.to_le_bytes()); // no create contexts
    b.extend_from_slice(&0u32.to_le_bytes());
    b.push(0);
    answer(m, STATUS_SUCCESS, &b)
}

fn close(session: &Session, conn: &mut Conn<'_>, m: &Smb2, id: u64) -> Vec<u8> {
    let size = conn.files.get(id).map(|f| f.size()).unwrap_or(0);
    if let Err(status) = conn.close(session, id) {
        return error(m, status);
    }
    let mut b = Vec::with_capacity(60);
    b.extend_from_slice(&60u16.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes()); // no attributes asked back
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&[0; 32]);
    b.extend_from_slice(&size.to_le_bytes());
    b.extend_from_slice(&size.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    answer(m, STATUS_SUCCESS, &b)
}

fn write(session: &Session, conn: &mut Conn<'_>, m: &Smb2, previous_file: Option<u64>) -> Vec<u8> {
    let Ok(w) = parse_write(m) else { return error(m, STATUS_INVALID_PARAMETER) };
    let id = if w.file_id == FILE_ID_PREVIOUS { previous_file.unwrap_or(0) } else { w.file_id };
    if let Err(status) = conn.write(session, id, w.offset, w.data) {
        return error(m, status);
    }
    let mut b = Vec::with_capacity(17);
    b.extend_from_slice(&17u16.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&(w.data.len() as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.push(0);
    answer(m, STATUS_SUCCESS, &b)
}

/// QUERY_INFO on an open file or directory: the file and file-system classes clients ask
/// while copying a file; security descriptors are refused.
fn query_info(conn: &Conn<'_>, m: &Smb2, id: u64) -> Vec<u8> {
    let Some(f) = conn.files.get(id) else { return error(m, STATUS_INVALID_HANDLE) };
    let info_type = m.raw.get(64 + 2).copied().unwrap_or(0);
    let class = m.raw.get(64 + 3).copied().unwrap_or(0);
    let max = u32le(&m.raw, 64 + 4).unwrap_or(0) as usize;
    let now = filetime_now().to_le_bytes();
    let size = f.size();
    let attributes: u32 = if f.directory { 0x10 } else { 0x20 };
    let basic = || {
        let mut d = Vec::new();
        for _ in 0..4 {
            d.extend_from_slice(&now);
        }
        d.extend_from_slice(&attributes.to_le_bytes());
        d.extend_from_slice(&0u32.to_le_bytes());
        d
    };
    let standard = || {
        let mut d = Vec::new();
        d.extend_from_slice(&size.next_multiple_of(4096).to_le_bytes());
        d.extend_from_slice(&size.to_le_bytes());
        d.extend_from_slice(&1u32.to_le_bytes());
        d.extend_from_slice(&[0, f.directory as u8, 0, 0]);
        d
    };
    let data: Vec<u8> = match (info_type, class) {
        (1, 4) => basic(),
        (1, 5) => standard(),
        (1, 6) => (0x0001_0000_0000_0000u64 | id).to_le_bytes().to_vec(),
        (1, 7) => 0u32.to_le_bytes().to_vec(),
        (1, 18) => {
            let name = utf16(&f.name);
            let mut d = basic();
            d.extend(standard());
            d.extend_from_slice(&(0x0001_0000_0000_0000u64 | id).to_le_bytes());
            d.extend_from_slice(&0u32.to_le_bytes()); // EA size
            d.extend_from_slice(&0x0012_019fu32.to_le_bytes()); // access
            d.extend_from_slice(&0u64.to_le_bytes()); // position
            d.extend_from_slice(&0u32.to_le_bytes()); // mode
            d.extend_from_slice(&0u32.to_le_bytes()); // alignment
            d.extend_from_slice(&(name.len() as u32).to_le_bytes());
            d.extend_from_slice(&name);
            d
        }
        (1, 34) => {
            let mut d = Vec::new();
            for _ in 0..4 {
                d.extend_from_slice(&now);
            }
            d.extend_from_slice(&size.next_multiple_of(4096).to_le_bytes());
            d.extend_from_slice(&size.to_le_bytes());
            d.extend_from_slice(&attributes.to_le_bytes());
            d.extend_from_slice(&0u32.to_le_bytes());
            d
        }
        (1, 35) => [attributes.to_le_bytes(), [0; 4]].concat(),
        (2, 1) => {
            let mut d = Vec::new();
            d.extend_from_slice(&now);
            d.extend_from_slice(&0x5a3c_1e27u32.to_le_bytes());
            d.extend_from_slice(&0u32.to_le_bytes()); // label length
            d.extend_from_slice(&[0, 0]);
            d
        }
        (2, 3) => [26_214_143u64.to_le_bytes(), 9_872_311u64.to_le_bytes()]
            .concat()
            .into_iter()
            .chain(8u32.to_le_bytes())
            .chain(512u32.to_le_bytes())
            .collect(),
        (2, 4) => [7u32.to_le_bytes(), 0x20u32.to_le_bytes()].concat(),
        (2, 5) => {
            let name = utf16("NTFS");
            let mut d = Vec::new();
            d.extend_from_slice(&0x00c7_00ffu32.to_le_bytes());
            d.extend_from_slice(&255u32.to_le_bytes());
            d.extend_from_slice(&(name.len() as u32).to_le_bytes());
            d.extend_from_slice(&name);
            d
        }
        (2, 7) => [26_214_143u64, 9_872_311, 9_872_311]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .chain(8u32.to_le_bytes())
            .chain(512u32.to_le_bytes())
            .collect(),
        (3, _) => return error(m, STATUS_ACCESS_DENIED),
        _ => return error(m, STATUS_INVALID_INFO_CLASS),
    };
    let (data, status) =
        if data.len() > max { (&data[..max], STATUS_BUFFER_OVERFLOW) } else { (&data[..], STATUS_SUCCESS) };
    let mut b = Vec::with_capacity(8 + data.len());
    b.extend_from_slice(&9u16.to_le_bytes());
    b.extend_from_slice(&72u16.to_le_bytes());
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(data);
    if data.is_empty() {
        b.push(0);
    }
    answer(m, status, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smb2_msg(command: u16, next: u32, body: &[u8]) -> Vec<u8> {
        let mut h = vec![0xfe, b'S', b'M', b'B', 64, 0, 0, 0, 0, 0, 0, 0];
        h.extend_from_slice(&command.to_le_bytes());
        h.extend_from_slice(&[1, 0, 0, 0, 0, 0]);
        h.extend_from_slice(&next.to_le_bytes());
        h.resize(64, 0);
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn compounds_split_and_bad_offsets_are_errors() {
        let mut a = smb2_msg(CREATE, 72, &[0; 8]);
        let b = smb2_msg(CLOSE, 0, &[0; 24]);
        a.extend_from_slice(&b);
        let parts = split_compound(&a).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(u16le(parts[1], 12).unwrap(), CLOSE);
        let mut bad = a.clone();
        bad[20] = 70; // not 8-aligned
        assert!(split_compound(&bad).is_err());
        bad[20] = 0xf8;
        bad[21] = 0xff; // past the end
        assert!(split_compound(&bad).is_err());
    }

    #[test]
    fn write_and_create_parse() {
        let mut body = vec![0u8; 48];
        body[0] = 49;
        body[2..4].copy_from_slice(&112u16.to_le_bytes());
        body[4..8].copy_from_slice(&3u32.to_le_bytes());
        body[8..16].copy_from_slice(&4096u64.to_le_bytes());
        body[16..24].copy_from_slice(&9u64.to_le_bytes());
        body.extend_from_slice(b"abc");
        let m = parse(&smb2_msg(WRITE, 0, &body)).unwrap();
        let w = parse_write(&m).unwrap();
        assert_eq!((w.file_id, w.offset, w.data), (9, 4096, &b"abc"[..]));
        let mut short = m.clone();
        short.raw.truncate(113);
        assert!(parse_write(&short).is_err());

        let mut body = vec![0u8; 56];
        body[24..28].copy_from_slice(&0x0013_019fu32.to_le_bytes());
        body[36..40].copy_from_slice(&5u32.to_le_bytes());
        body[44..46].copy_from_slice(&120u16.to_le_bytes());
        let name = utf16("dir\\x.exe");
        body[46..48].copy_from_slice(&(name.len() as u16).to_le_bytes());
        body.extend_from_slice(&name);
        let m = parse(&smb2_msg(CREATE, 0, &body)).unwrap();
        let c = parse_create(&m).unwrap();
        assert_eq!((c.name.as_str(), c.disposition), ("dir\\x.exe", 5));
    }
}
