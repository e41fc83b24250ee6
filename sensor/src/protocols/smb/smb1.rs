//! SMB1: what EternalBlue scanners, nmap's scripts, old clients and worms speak.
//!
//! We answer NEGOTIATE (NT LM 0.12, extended security when the client asks for it, or the SMB2
//! wildcard when it also offers SMB 2), SESSION_SETUP_ANDX (NTLMSSP inside SPNEGO, or the old
//! basic form with the account name in clear: both decided by `login`), TREE_CONNECT_ANDX,
//! NT_CREATE_ANDX / WRITE_ANDX / CLOSE on disk shares (the written file is kept), the MS17-010
//! PeekNamedPipe probe (answered per persona), the DoublePulsar commands (TRANS2
//! SESSION_SETUP: ping, exec upload, kill) and the exploit transactions that carry EternalBlue
//! (recorded as one payload).
//!
//! Strings follow the client's flags: UTF-16 (aligned to 2 bytes from the header's start) when
//! it sets FLAGS2_UNICODE, single-byte otherwise. nmap sends no UNICODE flag, which is how its
//! "guest" once became `敵瑳`: its ASCII strings were read as UTF-16 behind an alignment byte
//! that is not there.

use super::doublepulsar::{self as dp, Step};
use super::login::{self, LoginOutcome};
use super::ntlm::{
    find_ntlmssp, ntlm_challenge, ntlmssp_type, parse_ntlm_authenticate, spnego_accept_completed, spnego_challenge,
    spnego_init, NtlmAuth,
};
use super::{exploit, filetime_now, from_utf16, send, slice, smb2, u16le, u32le, utf16, Conn, CreateRequest, Flow};
use super::{SmbError, CVE_ETERNALBLUE, CVE_MS17_010_PROBE};
use super::{
    STATUS_INSUFF_SERVER_RESOURCES, STATUS_INVALID_HANDLE, STATUS_INVALID_PARAMETER, STATUS_LOGON_FAILURE,
    STATUS_MORE_PROCESSING_REQUIRED, STATUS_NOT_IMPLEMENTED, STATUS_NOT_SUPPORTED, STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_SUCCESS,
};
use crate::session::{Session, SessionResult};
use drosera_uplink::event::Detail;

/// SMB1 command codes we act on ([MS-CIFS] 2.2.2.1).
const CLOSE: u8 = 0x04;
const TRANSACTION: u8 = 0x25;
const ECHO: u8 = 0x2b;
const WRITE_ANDX: u8 = 0x2f;
const TRANSACTION2: u8 = 0x32;
const TRANSACTION2_SECONDARY: u8 = 0x33;
const TREE_DISCONNECT: u8 = 0x71;
const NEGOTIATE: u8 = 0x72;
const SESSION_SETUP_ANDX: u8 = 0x73;
const LOGOFF_ANDX: u8 = 0x74;
const TREE_CONNECT_ANDX: u8 = 0x75;
const NT_TRANSACT: u8 = 0xa0;
const NT_TRANSACT_SECONDARY: u8 = 0xa1;
const NT_CREATE_ANDX: u8 = 0xa2;

/// FLAGS2 bits.
const FLAGS2_LONG_NAMES: u16 = 0x0001;
const FLAGS2_EAS: u16 = 0x0002;
const FLAGS2_SECURITY_SIGNATURE: u16 = 0x0004;
const FLAGS2_SECURITY_SIGNATURE_REQUIRED: u16 = 0x0010;
const FLAGS2_IS_LONG_NAME: u16 = 0x0040;
const FLAGS2_EXTENDED_SECURITY: u16 = 0x0800;
const FLAGS2_NT_STATUS: u16 = 0x4000;
const FLAGS2_UNICODE: u16 = 0x8000;
/// Capability: extended security (SPNEGO) in SESSION_SETUP.
const CAP_EXTENDED_SECURITY: u32 = 0x8000_0000;

/// The dialect a Windows client asks for in SMB1 (and its older synonym Samba prefers).
pub(super) const NT_LM_0_12: &str = "NT LM 0.12";
const NT_LANMAN_1_0: &str = "NT LANMAN 1.0";
/// Transactions larger than this that we do not otherwise understand are exploit traffic.
const EXPLOIT_TRANSACTION: usize = 1024;
/// Longest string read from a request (characters).
const MAX_STRING: usize = 256;
/// Most setup words read from a transaction.
const MAX_SETUP: usize = 8;
/// Read/write sizes we announce (MaxBufferSize; large read/write-X let clients send 64 KiB).
const MAX_BUFFER: u32 = 16644;

/// The SMB1 fields we act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smb1 {
    pub command: u8,
    pub flags: u8,
    pub flags2: u16,
    pub tid: u16,
    pub pid: u16,
    pub uid: u16,
    pub mid: u16,
    /// Parameter words (WordCount × 2 bytes).
    pub words: Vec<u8>,
    /// The data bytes (ByteCount bytes, or what arrived).
    pub bytes: Vec<u8>,
}

impl Smb1 {
    fn unicode(&self) -> bool {
        self.flags2 & FLAGS2_UNICODE != 0
    }

    /// Offset of `bytes` from the start of the SMB header (strings align to it).
    fn bytes_at(&self) -> usize {
        33 + self.words.len() + 2
    }
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
        flags: *msg.get(9).ok_or(SmbError::Truncated)?,
        flags2: u16le(msg, 10)?,
        tid: u16le(msg, 24)?,
        pid: u16le(msg, 26)?,
        uid: u16le(msg, 28)?,
        mid: u16le(msg, 30)?,
        words,
        bytes,
    })
}

/// Reads a NUL-terminated string at `*pos` of `b` (whose first byte is `base` bytes after the
/// SMB header's start), UTF-16 aligned to 2 from the header when `unicode`, single-byte
/// otherwise; moves `*pos` past it. Bounded to [`MAX_STRING`] characters.
fn take_string(b: &[u8], pos: &mut usize, base: usize, unicode: bool) -> String {
    if unicode {
        if (base + *pos) % 2 == 1 {
            *pos += 1;
        }
        let rest = b.get(*pos..).unwrap_or(&[]);
        let units = rest.chunks_exact(2).position(|c| c == [0, 0]).unwrap_or(rest.len() / 2);
        let s = from_utf16(&rest[..units * 2], MAX_STRING);
        *pos += units * 2 + 2;
        s
    } else {
        let rest = b.get(*pos..).unwrap_or(&[]);
        let n = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        let s: String = String::from_utf8_lossy(&rest[..n]).chars().take(MAX_STRING).collect();
        *pos += n + 1;
        s
    }
}

/// Encodes `s` as a NUL-terminated string for a reply whose data so far ends `at` bytes after
/// the header's start (adds the alignment byte UTF-16 needs).
fn push_string(out: &mut Vec<u8>, s: &str, at: usize, unicode: bool) {
    if unicode {
        if (at + out.len()) % 2 == 1 {
            out.push(0);
        }
        out.extend_from_slice(&utf16(s));
        out.extend_from_slice(&[0, 0]);
    } else {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
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

/// The security blob of an extended-security SESSION_SETUP_ANDX (12 words), if it is one.
pub fn smb1_security_blob(m: &Smb1) -> Option<&[u8]> {
    if m.words.len() != 24 {
        return None;
    }
    let len = u16le(&m.words, 14).ok()? as usize;
    m.bytes.get(..len)
}

/// SMB1 SESSION_SETUP_ANDX without extended security (13 words): account, domain and the LM
/// and NT responses.
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
    let nt = b.get(oem_len..oem_len.saturating_add(uni_len)).unwrap_or(&[]).to_vec();
    let mut pos = oem_len.saturating_add(uni_len);
    let unicode = m.unicode();
    let user = take_string(b, &mut pos, m.bytes_at(), unicode);
    let domain = take_string(b, &mut pos, m.bytes_at(), unicode);
    NtlmAuth { user, domain, lm_response: lm, nt_response: nt, ..NtlmAuth::default() }
}

/// TREE_CONNECT_ANDX: the path asked for and the service type.
pub fn parse_tree_connect(m: &Smb1) -> Result<(String, String), SmbError> {
    let pw_len = u16le(&m.words, 6)? as usize;
    let mut pos = pw_len;
    if pos > m.bytes.len() {
        return Err(SmbError::Truncated);
    }
    let path = take_string(&m.bytes, &mut pos, m.bytes_at(), m.unicode());
    let service = take_string(&m.bytes, &mut pos, m.bytes_at(), false);
    Ok((path, service))
}

/// NT_CREATE_ANDX: name, access, disposition, options.
pub fn parse_nt_create(m: &Smb1) -> Result<CreateRequest, SmbError> {
    // Words: AndX(4) Reserved(1) NameLength(2) Flags(4) RootDirectoryFID(4) DesiredAccess(4)
    // AllocationSize(8) ExtFileAttributes(4) ShareAccess(4) CreateDisposition(4)
    // CreateOptions(4) ImpersonationLevel(4) SecurityFlags(1).
    if m.words.len() < 48 {
        return Err(SmbError::Truncated);
    }
    let mut pos = 0;
    let name = take_string(&m.bytes, &mut pos, m.bytes_at(), m.unicode());
    Ok(CreateRequest {
        name,
        desired_access: u32le(&m.words, 15)?,
        disposition: u32le(&m.words, 35)?,
        options: u32le(&m.words, 39)?,
    })
}

/// One WRITE_ANDX: file, offset and the data (a slice of `msg`, the whole SMB message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteAndX<'a> {
    pub fid: u16,
    pub offset: u64,
    pub data: &'a [u8],
}

/// Parses a WRITE_ANDX request (12 or 14 words; `msg` is the whole message, which the data
/// offset counts from).
pub fn parse_write_andx<'a>(m: &Smb1, msg: &'a [u8]) -> Result<WriteAndX<'a>, SmbError> {
    // Words: AndX(4) FID(2) Offset(4) Timeout(4) WriteMode(2) Remaining(2) DataLengthHigh(2)
    // DataLength(2) DataOffset(2) [OffsetHigh(4)].
    if m.words.len() < 24 {
        return Err(SmbError::Truncated);
    }
    let fid = u16le(&m.words, 4)?;
    let low = u32le(&m.words, 6)? as u64;
    let high = if m.words.len() >= 28 { u32le(&m.words, 24)? as u64 } else { 0 };
    let len = ((u16le(&m.words, 18)? as usize) << 16) | u16le(&m.words, 20)? as usize;
    let at = u16le(&m.words, 22)? as usize;
    Ok(WriteAndX { fid, offset: (high << 32) | low, data: slice(msg, at, len)? })
}

/// The parts of a TRANSACTION or TRANSACTION2 request (primary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trans<'a> {
    pub timeout: u32,
    /// Where `params` starts, from the header's start (strings in it align to that).
    pub params_at: usize,
    pub setup: Vec<u16>,
    pub params: &'a [u8],
    pub data: &'a [u8],
}

/// Parses a TRANSACTION / TRANSACTION2 primary request (`msg`: the whole message, which the
/// parameter and data offsets count from).
pub fn parse_trans<'a>(m: &Smb1, msg: &'a [u8]) -> Result<Trans<'a>, SmbError> {
    // Words: TotalParameterCount(2) TotalDataCount(2) MaxParameterCount(2) MaxDataCount(2)
    // MaxSetupCount(1) Reserved(1) Flags(2) Timeout(4) Reserved2(2) ParameterCount(2)
    // ParameterOffset(2) DataCount(2) DataOffset(2) SetupCount(1) Reserved3(1) Setup[SetupCount].
    if m.words.len() < 28 {
        return Err(SmbError::Truncated);
    }
    let w = &m.words;
    let setup_count = (w[26] as usize).min(MAX_SETUP);
    let setup = (0..setup_count).map_while(|i| u16le(w, 28 + i * 2).ok()).collect();
    let params_at = u16le(w, 20)? as usize;
    Ok(Trans {
        timeout: u32le(w, 12)?,
        params_at,
        setup,
        params: slice(msg, params_at, u16le(w, 18)? as usize)?,
        data: slice(msg, u16le(w, 24)? as usize, u16le(w, 22)? as usize)?,
    })
}

/// Is this SMB1 TRANS a PeekNamedPipe on FID 0 (the MS17-010 probe)?
pub fn is_ms17_010_probe(m: &Smb1) -> bool {
    // Setup words follow the 14 fixed parameter words: setup[0] = 0x23 (PeekNamedPipe),
    // setup[1] = FID 0.
    m.command == TRANSACTION
        && m.words.len() >= 32
        && m.words.get(28..30) == Some(&[0x23, 0x00][..])
        && m.words.get(30..32) == Some(&[0, 0][..])
}

/// Is this a TRANS2 SESSION_SETUP (a DoublePulsar command)?
pub fn is_doublepulsar_ping(m: &Smb1) -> bool {
    m.command == TRANSACTION2 && m.words.len() >= 30 && u16le(&m.words, 28) == Ok(dp::TRANS2_SESSION_SETUP)
}

/// A DoublePulsar command: opcode (from the timeout), the still-encrypted parameters and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoublePulsarRequest<'a> {
    pub opcode: u8,
    pub params: &'a [u8],
    pub data: &'a [u8],
}

/// The DoublePulsar command in `m`, if it is a TRANS2 SESSION_SETUP.
pub fn doublepulsar_request<'a>(m: &Smb1, msg: &'a [u8]) -> Result<Option<DoublePulsarRequest<'a>>, SmbError> {
    if !is_doublepulsar_ping(m) {
        return Ok(None);
    }
    let t = parse_trans(m, msg)?;
    Ok(Some(DoublePulsarRequest { opcode: dp::opcode(t.timeout), params: t.params, data: t.data }))
}

/// The reply header: flags and flags2 follow the request (Windows echoes the client's
/// UNICODE and EXTENDED_SECURITY choices; the SMBProgNeg probe of `nmap -sV` sees its own
/// flags2 back in the negotiate answer).
fn header(req: &Smb1, command: u8, status: u32, tid: u16, uid: u16, mid: u16) -> Vec<u8> {
    let flags2 = if command == NEGOTIATE {
        req.flags2 & !(FLAGS2_SECURITY_SIGNATURE | FLAGS2_SECURITY_SIGNATURE_REQUIRED)
    } else {
        FLAGS2_NT_STATUS
            | FLAGS2_LONG_NAMES
            | FLAGS2_EAS
            | (req.flags2 & (FLAGS2_UNICODE | FLAGS2_EXTENDED_SECURITY | FLAGS2_IS_LONG_NAME))
    };
    let mut h = vec![0xff, b'S', b'M', b'B', command];
    h.extend_from_slice(&status.to_le_bytes());
    h.push(0x80 | (req.flags & 0x18)); // reply, and the client's case/canonical flags
    h.extend_from_slice(&flags2.to_le_bytes());
    h.extend_from_slice(&[0; 12]); // pid high, signature, reserved
    h.extend_from_slice(&tid.to_le_bytes());
    h.extend_from_slice(&req.pid.to_le_bytes());
    h.extend_from_slice(&uid.to_le_bytes());
    h.extend_from_slice(&mid.to_le_bytes());
    h
}

fn reply_with(req: &Smb1, status: u32, tid: u16, uid: u16, words: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut m = header(req, req.command, status, tid, uid, req.mid);
    m.push((words.len() / 2) as u8);
    m.extend_from_slice(words);
    m.extend_from_slice(&(bytes.len().min(u16::MAX as usize) as u16).to_le_bytes());
    m.extend_from_slice(bytes);
    m
}

/// A reply in the request's tree and session.
fn reply(req: &Smb1, status: u32, words: &[u8], bytes: &[u8]) -> Vec<u8> {
    reply_with(req, status, req.tid, req.uid, words, bytes)
}

/// An error reply (no words, no bytes).
fn error(req: &Smb1, status: u32) -> Vec<u8> {
    reply(req, status, &[], &[])
}

/// Where the data of a reply with `words` starts, from the header's start.
fn data_at(words: &[u8]) -> usize {
    33 + words.len() + 2
}

/// SMB1 NEGOTIATE response selecting an NT dialect at `index`: extended security (GUID and
/// SPNEGO token) when the client asked for it, else the 8-byte challenge, workgroup and name.
fn negotiate_response(req: &Smb1, conn: &Conn<'_>, index: u16) -> Vec<u8> {
    let extended = req.flags2 & FLAGS2_EXTENDED_SECURITY != 0;
    let caps = conn.persona.capabilities | if extended { CAP_EXTENDED_SECURITY } else { 0 };
    let mut w = Vec::new();
    w.extend_from_slice(&index.to_le_bytes());
    w.push(0x03); // user security, encrypt passwords, no signing
    w.extend_from_slice(&50u16.to_le_bytes()); // max mpx
    w.extend_from_slice(&1u16.to_le_bytes()); // max VCs
    w.extend_from_slice(&MAX_BUFFER.to_le_bytes());
    w.extend_from_slice(&65536u32.to_le_bytes()); // max raw
    w.extend_from_slice(&0u32.to_le_bytes()); // session key
    w.extend_from_slice(&caps.to_le_bytes());
    w.extend_from_slice(&filetime_now().to_le_bytes());
    w.extend_from_slice(&0u16.to_le_bytes()); // time zone: UTC
    let mut b = Vec::new();
    if extended {
        w.push(0);
        b.extend_from_slice(&conn.guid);
        b.extend_from_slice(&spnego_init());
    } else {
        w.push(8);
        b.extend_from_slice(&conn.challenge);
        b.extend_from_slice(&utf16(conn.persona.workgroup));
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&utf16(conn.host));
        b.extend_from_slice(&[0, 0]);
    }
    reply_with(req, STATUS_SUCCESS, 0, 0, &w, &b)
}

/// Answers one SMB1 message (`msg` is the whole message, for offsets and payload capture).
pub(super) async fn respond(session: &mut Session, conn: &mut Conn<'_>, m: &Smb1, msg: &[u8]) -> SessionResult<Flow> {
    match m.command {
        NEGOTIATE => return negotiate(session, conn, m).await,
        SESSION_SETUP_ANDX => session_setup(session, conn, m).await?,
        TREE_CONNECT_ANDX => tree_connect(session, conn, m).await?,
        TREE_DISCONNECT => {
            conn.disconnect_tree(m.tid as u32);
            send(session, &error(m, STATUS_SUCCESS)).await?;
        }
        LOGOFF_ANDX => {
            conn.login = None;
            send(session, &reply(m, STATUS_SUCCESS, &[0xff, 0, 0, 0], &[])).await?;
        }
        TRANSACTION if is_ms17_010_probe(m) => {
            let status = if conn.persona.vulnerable { STATUS_INSUFF_SERVER_RESOURCES } else { STATUS_INVALID_HANDLE };
            exploit(
                session,
                "ms17-010-probe",
                CVE_MS17_010_PROBE,
                vec![
                    ("transaction".into(), "PeekNamedPipe".into()),
                    ("answered".into(), if conn.persona.vulnerable { "vulnerable" } else { "patched" }.into()),
                ],
            );
            send(session, &error(m, status)).await?;
        }
        TRANSACTION2 if is_doublepulsar_ping(m) => doublepulsar(session, conn, m, msg).await?,
        TRANSACTION2 => transaction2(session, conn, m, msg).await?,
        NT_TRANSACT if msg.len() > EXPLOIT_TRANSACTION => {
            conn.exploit_transaction(session, m.command, msg);
            // The interim answer to a transaction whose rest follows in secondary requests.
            send(session, &error(m, STATUS_SUCCESS)).await?;
        }
        TRANSACTION2_SECONDARY | NT_TRANSACT_SECONDARY => {
            // Secondary requests get no answer; their bytes are the exploit.
            conn.exploit_transaction(session, m.command, msg);
        }
        TRANSACTION if msg.len() > EXPLOIT_TRANSACTION => {
            conn.exploit_transaction(session, m.command, msg);
            send(session, &error(m, STATUS_NOT_IMPLEMENTED)).await?;
        }
        NT_CREATE_ANDX => nt_create(session, conn, m).await?,
        WRITE_ANDX => write_andx(session, conn, m, msg).await?,
        CLOSE => {
            let status = match u16le(&m.words, 0).ok().and_then(|fid| conn.files.by_fid(fid)) {
                Some(id) => conn.close(session, id).err().unwrap_or(STATUS_SUCCESS),
                None => STATUS_INVALID_HANDLE,
            };
            send(session, &error(m, status)).await?;
        }
        ECHO => send(session, &reply(m, STATUS_SUCCESS, &1u16.to_le_bytes(), &m.bytes)).await?,
        _ => send(session, &error(m, STATUS_NOT_SUPPORTED)).await?,
    }
    Ok(Flow::Continue)
}

/// NEGOTIATE: records the dialects offered (once per connection) and picks SMB2 (multi-protocol
/// negotiate), an NT dialect, or none (then the connection ends).
async fn negotiate(session: &mut Session, conn: &mut Conn<'_>, m: &Smb1) -> SessionResult<Flow> {
    let dialects = smb1_dialects(&m.bytes);
    if !conn.recorded_dialects {
        conn.recorded_dialects = true;
        session.emit(Detail::Fingerprint { kind: "smb1_dialects".into(), value: dialects.join(","), extra: vec![] });
    }
    let nt = |name: &str| dialects.iter().position(|d| d == name);
    let nt_index = if conn.persona.samba { nt(NT_LANMAN_1_0).or_else(|| nt(NT_LM_0_12)) } else { nt(NT_LM_0_12) };
    if conn.persona.smb2_max > 0x0202 && dialects.iter().any(|d| d == "SMB 2.???") {
        // Multi-protocol negotiate: the SMB2 wildcard; the client follows with an SMB2 NEGOTIATE.
        send(session, &smb2::negotiate_response(&smb2::Smb2::default(), 0x02ff, &conn.guid, conn.boot_time())).await?;
    } else if dialects.iter().any(|d| d == "SMB 2.002") {
        send(session, &smb2::negotiate_response(&smb2::Smb2::default(), 0x0202, &conn.guid, conn.boot_time())).await?;
    } else if let Some(i) = nt_index {
        send(session, &negotiate_response(m, conn, i as u16)).await?;
    } else {
        send(session, &reply_with(m, STATUS_SUCCESS, 0, 0, &0xffffu16.to_le_bytes(), &[])).await?;
        return Ok(Flow::End);
    }
    Ok(Flow::Continue)
}

/// The words and bytes of a successful SESSION_SETUP_ANDX answer: `blob` is Some for
/// extended security (then NativeOS and NativeLanMan follow it), None for the basic form (then
/// the primary domain follows too).
fn session_setup_reply(req: &Smb1, conn: &Conn<'_>, status: u32, blob: Option<&[u8]>) -> Vec<u8> {
    let unicode = req.unicode();
    let mut w = vec![0xff, 0, 0, 0];
    w.extend_from_slice(&0u16.to_le_bytes()); // action: not guest
    let mut b = Vec::new();
    if let Some(blob) = blob {
        w.extend_from_slice(&(blob.len() as u16).to_le_bytes());
        b.extend_from_slice(blob);
    }
    let at = data_at(&w);
    push_string(&mut b, conn.persona.native_os, at, unicode);
    push_string(&mut b, conn.persona.native_lanman, at, unicode);
    if blob.is_none() {
        push_string(&mut b, conn.persona.workgroup, at, unicode);
    }
    reply_with(req, status, 0, conn.uid, &w, &b)
}

/// SESSION_SETUP_ANDX: NTLMSSP (extended security) or the basic form; the login is decided by
/// the policy, anonymous gets a null session.
async fn session_setup(session: &mut Session, conn: &mut Conn<'_>, m: &Smb1) -> SessionResult<()> {
    if let Some(blob) = smb1_security_blob(m) {
        let spnego = !blob.starts_with(b"NTLMSSP\0");
        let Some(ntlm) = find_ntlmssp(blob) else {
            return send(session, &error(m, STATUS_LOGON_FAILURE)).await;
        };
        match ntlmssp_type(ntlm) {
            Some(1) => {
                let challenge = ntlm_challenge(&conn.challenge, &conn.ntlm_target(), filetime_now());
                let token = if spnego { spnego_challenge(&challenge) } else { challenge };
                let r = session_setup_reply(m, conn, STATUS_MORE_PROCESSING_REQUIRED, Some(&token));
                send(session, &r).await
            }
            Some(3) => {
                let Ok(auth) = parse_ntlm_authenticate(ntlm) else {
                    return send(session, &error(m, STATUS_LOGON_FAILURE)).await;
                };
                let (outcome, _) = login::decide(session, &auth, &conn.challenge, "ntlmssp", conn.dialect_name(false));
                finish_login(session, conn, m, outcome, Some(if spnego { spnego_accept_completed() } else { vec![] }))
                    .await
            }
            _ => send(session, &error(m, STATUS_LOGON_FAILURE)).await,
        }
    } else {
        let auth = parse_smb1_session_setup(m);
        let (outcome, _) = login::decide(session, &auth, &conn.challenge, "smb1-basic", conn.dialect_name(false));
        finish_login(session, conn, m, outcome, None).await
    }
}

async fn finish_login(
    session: &mut Session,
    conn: &mut Conn<'_>,
    m: &Smb1,
    outcome: LoginOutcome,
    blob: Option<Vec<u8>>,
) -> SessionResult<()> {
    if !outcome.succeeded() {
        return send(session, &error(m, STATUS_LOGON_FAILURE)).await;
    }
    conn.login = Some(outcome);
    let r = session_setup_reply(m, conn, STATUS_SUCCESS, blob.as_deref());
    send(session, &r).await
}

/// TREE_CONNECT_ANDX: `IPC$` for every session, disk shares for logged-in users.
async fn tree_connect(session: &mut Session, conn: &mut Conn<'_>, m: &Smb1) -> SessionResult<()> {
    let Ok((path, _service)) = parse_tree_connect(m) else {
        return send(session, &error(m, STATUS_INVALID_PARAMETER)).await;
    };
    let (tid, disk) = match conn.connect_tree(session, &path) {
        Ok(t) => t,
        Err(status) => return send(session, &error(m, status)).await,
    };
    // Extended response (7 words): AndX, OptionalSupport, MaximalShareAccessRights,
    // GuestMaximalShareAccessRights.
    let mut w = vec![0xff, 0, 0, 0];
    w.extend_from_slice(&0x0001u16.to_le_bytes());
    w.extend_from_slice(&0x001f_01ffu32.to_le_bytes());
    w.extend_from_slice(&0u32.to_le_bytes());
    let mut b = Vec::new();
    b.extend_from_slice(if disk { b"A:\0" } else { b"IPC\0" });
    push_string(&mut b, if disk { "NTFS" } else { "" }, data_at(&w), m.unicode());
    send(session, &reply_with(m, STATUS_SUCCESS, tid as u16, m.uid, &w, &b)).await
}

/// NT_CREATE_ANDX on a disk share: a new file (or a directory) to write to.
async fn nt_create(session: &mut Session, conn: &mut Conn<'_>, m: &Smb1) -> SessionResult<()> {
    let Ok(req) = parse_nt_create(m) else {
        return send(session, &error(m, STATUS_INVALID_PARAMETER)).await;
    };
    let created = match conn.create(session, m.tid as u32, &req) {
        Ok(c) => c,
        Err(status) => return send(session, &error(m, status)).await,
    };
    let now = filetime_now();
    let mut w = vec![0xff, 0, 0, 0];
    w.push(0); // no oplock
    w.extend_from_slice(&(created.id as u16).to_le_bytes());
    w.extend_from_slice(&created.action.to_le_bytes());
    for _ in 0..4 {
        w.extend_from_slice(&now.to_le_bytes());
    }
    let attributes: u32 = if created.directory { 0x10 } else { 0x20 };
    w.extend_from_slice(&attributes.to_le_bytes());
    w.extend_from_slice(&0u64.to_le_bytes()); // allocation size
    w.extend_from_slice(&0u64.to_le_bytes()); // end of file
    w.extend_from_slice(&0u16.to_le_bytes()); // resource type: disk file
    w.extend_from_slice(&0u16.to_le_bytes()); // pipe state
    w.push(created.directory as u8);
    send(session, &reply(m, STATUS_SUCCESS, &w, &[])).await
}

/// WRITE_ANDX: the bytes go to the open file's capture.
async fn write_andx(session: &mut Session, conn: &mut Conn<'_>, m: &Smb1, msg: &[u8]) -> SessionResult<()> {
    let Ok(wr) = parse_write_andx(m, msg) else {
        return send(session, &error(m, STATUS_INVALID_PARAMETER)).await;
    };
    let Some(id) = conn.files.by_fid(wr.fid) else {
        return send(session, &error(m, STATUS_INVALID_HANDLE)).await;
    };
    if let Err(status) = conn.write(session, id, wr.offset, wr.data) {
        return send(session, &error(m, status)).await;
    }
    let n = wr.data.len() as u32;
    let mut w = vec![0xff, 0, 0, 0];
    w.extend_from_slice(&(n as u16).to_le_bytes());
    w.extend_from_slice(&0xffffu16.to_le_bytes()); // available
    w.extend_from_slice(&((n >> 16) as u16).to_le_bytes());
    w.extend_from_slice(&0u16.to_le_bytes());
    send(session, &reply(m, STATUS_SUCCESS, &w, &[])).await
}

/// TRANS2 subcommands (other than SESSION_SETUP): the few a file client needs, answered
/// believably; the rest refused. Large unknown ones are exploit traffic.
async fn transaction2(session: &mut Session, conn: &mut Conn<'_>, m: &Smb1, msg: &[u8]) -> SessionResult<()> {
    const FIND_FIRST2: u16 = 0x01;
    const QUERY_FS_INFORMATION: u16 = 0x03;
    const QUERY_PATH_INFORMATION: u16 = 0x05;
    const SET_FILE_INFORMATION: u16 = 0x08;
    let Ok(t) = parse_trans(m, msg) else {
        if msg.len() > EXPLOIT_TRANSACTION {
            conn.exploit_transaction(session, m.command, msg);
        }
        return send(session, &error(m, STATUS_INVALID_PARAMETER)).await;
    };
    let sub = t.setup.first().copied().unwrap_or(0xffff);
    let tree = conn.tree(m.tid as u32).cloned();
    let status = match (sub, tree) {
        (_, None) => STATUS_INVALID_HANDLE,
        (QUERY_FS_INFORMATION, Some(tree)) if tree.disk => {
            let level = u16le(t.params, 0).unwrap_or(0);
            return match fs_information(level) {
                Some(data) => send(session, &trans2_reply(m, &[], &data)).await,
                None => send(session, &error(m, STATUS_NOT_SUPPORTED)).await,
            };
        }
        (QUERY_PATH_INFORMATION, Some(tree)) if tree.disk => {
            // Only the share's root exists.
            let mut pos = 6;
            let name = take_string(t.params, &mut pos, t.params_at, m.unicode());
            let level = u16le(t.params, 0).unwrap_or(0);
            if name.trim_matches('\\').is_empty() {
                if let Some(data) = path_information(level) {
                    return send(session, &trans2_reply(m, &[0, 0], &data)).await;
                }
                STATUS_NOT_SUPPORTED
            } else {
                STATUS_OBJECT_NAME_NOT_FOUND
            }
        }
        (FIND_FIRST2, Some(tree)) if tree.disk => super::STATUS_NO_SUCH_FILE,
        (SET_FILE_INFORMATION, Some(tree)) if tree.disk => {
            return send(session, &trans2_reply(m, &[0, 0], &[])).await;
        }
        _ if msg.len() > EXPLOIT_TRANSACTION => {
            conn.exploit_transaction(session, m.command, msg);
            STATUS_NOT_IMPLEMENTED
        }
        (_, Some(_)) => STATUS_NOT_SUPPORTED,
    };
    send(session, &error(m, status)).await
}

/// A TRANS2 answer carrying `params` and `data`.
fn trans2_reply(req: &Smb1, params: &[u8], data: &[u8]) -> Vec<u8> {
    // Words (10): TotalParameterCount, TotalDataCount, Reserved, ParameterCount,
    // ParameterOffset, ParameterDisplacement, DataCount, DataOffset, DataDisplacement,
    // SetupCount + Reserved.
    let words_len = 20;
    let base = 33 + words_len + 2;
    let param_at = (base + 3) & !3;
    let data_at = (param_at + params.len() + 3) & !3;
    let mut w = Vec::with_capacity(words_len);
    for v in [params.len(), data.len(), 0, params.len(), param_at, 0, data.len(), data_at, 0] {
        w.extend_from_slice(&(v as u16).to_le_bytes());
    }
    w.extend_from_slice(&[0, 0]);
    let mut b = vec![0u8; param_at - base];
    b.extend_from_slice(params);
    b.resize(data_at - base, 0);
    b.extend_from_slice(data);
    reply(req, STATUS_SUCCESS, &w, &b)
}

/// QUERY_FS_INFORMATION answers for an NTFS volume.
fn fs_information(level: u16) -> Option<Vec<u8>> {
    let mut d = Vec::new();
    match level {
        // SMB_QUERY_FS_VOLUME_INFO / FileFsVolumeInformation (pass-through 1001).
        0x0102 | 1001 => {
            d.extend_from_slice(&filetime_now().to_le_bytes());
            d.extend_from_slice(&0x5a3c_1e27u32.to_le_bytes()); // serial
            let label = utf16("");
            d.extend_from_slice(&(label.len() as u32).to_le_bytes());
            d.extend_from_slice(&[0, 0]);
        }
        // SMB_QUERY_FS_SIZE_INFO / FileFsSizeInformation (1003).
        0x0103 | 1003 => {
            d.extend_from_slice(&26_214_143u64.to_le_bytes());
            d.extend_from_slice(&9_872_311u64.to_le_bytes());
            d.extend_from_slice(&8u32.to_le_bytes());
            d.extend_from_slice(&512u32.to_le_bytes());
        }
        // SMB_QUERY_FS_DEVICE_INFO (1004).
        0x0104 | 1004 => {
            d.extend_from_slice(&7u32.to_le_bytes()); // FILE_DEVICE_DISK
            d.extend_from_slice(&0x20u32.to_le_bytes()); // FILE_DEVICE_IS_MOUNTED
        }
        // SMB_QUERY_FS_ATTRIBUTE_INFO / FileFsAttributeInformation (1005).
        0x0105 | 1005 => {
            let name = utf16("NTFS");
            d.extend_from_slice(&0x00c7_00ffu32.to_le_bytes());
            d.extend_from_slice(&255u32.to_le_bytes());
            d.extend_from_slice(&(name.len() as u32).to_le_bytes());
            d.extend_from_slice(&name);
        }
        _ => return None,
    }
    Some(d)
}

/// QUERY_PATH_INFORMATION answers for the share's root directory.
fn path_information(level: u16) -> Option<Vec<u8>> {
    let now = filetime_now().to_le_bytes();
    let mut d = Vec::new();
    match level {
        // SMB_QUERY_FILE_BASIC_INFO / FileBasicInformation (1004).
        0x0101 | 1004 => {
            for _ in 0..4 {
                d.extend_from_slice(&now);
            }
            d.extend_from_slice(&0x10u32.to_le_bytes());
            d.extend_from_slice(&0u32.to_le_bytes());
        }
        // SMB_QUERY_FILE_STANDARD_INFO / FileStandardInformation (1005).
        0x0102 | 1005 => {
            d.extend_from_slice(&0u64.to_le_bytes());
            d.extend_from_slice(&0u64.to_le_bytes());
            d.extend_from_slice(&1u32.to_le_bytes());
            d.extend_from_slice(&[0, 1, 0, 0]); // not delete pending, directory
        }
        _ => return None,
    }
    Some(d)
}

/// TRANS2 SESSION_SETUP: a DoublePulsar command. The Windows persona answers like an
/// implanted host (multiplex id + status, the key's seed and the architecture in the
/// signature field) and keeps the decrypted exec upload; Samba has no implant.
async fn doublepulsar(session: &mut Session, conn: &mut Conn<'_>, m: &Smb1, msg: &[u8]) -> SessionResult<()> {
    let req = match doublepulsar_request(m, msg) {
        Ok(Some(r)) => r,
        _ => return send(session, &error(m, STATUS_INVALID_PARAMETER)).await,
    };
    let implanted = conn.persona.vulnerable && !conn.pulsar_killed;
    let key = dp::xor_key(conn.pulsar_signature);
    let name = match req.opcode {
        dp::PING => "doublepulsar-ping",
        dp::EXEC => "doublepulsar-exec",
        dp::KILL => "doublepulsar-kill",
        _ => "doublepulsar-unknown",
    };
    let mut extra = vec![
        ("opcode".to_string(), format!("{:#04x}", req.opcode)),
        ("implant".to_string(), if implanted { "answered" } else { "absent" }.to_string()),
    ];
    // One event per ping or kill; an upload is one event, at its first chunk.
    let first = req.opcode != dp::EXEC || !implanted || conn.pulsar.is_none();
    let status = match req.opcode {
        _ if !implanted => None,
        dp::PING => Some(dp::STATUS_SUCCESS),
        dp::KILL => {
            conn.pulsar_killed = true;
            Some(dp::STATUS_SUCCESS)
        }
        dp::EXEC => Some(exec_chunk(session, conn, &req, key, &mut extra)),
        _ => None,
    };
    if first || status == Some(dp::STATUS_INVALID_PARAMS) {
        exploit(session, name, CVE_ETERNALBLUE, extra);
    }
    let mid = m.mid.wrapping_add(status.unwrap_or(0));
    let mut r = header(m, m.command, STATUS_NOT_IMPLEMENTED, m.tid, m.uid, mid);
    if implanted {
        // Signature field: the key's seed, then the architecture (non-zero: x64).
        r[14..18].copy_from_slice(&conn.pulsar_signature.to_le_bytes());
        r[18..22].copy_from_slice(&1u32.to_le_bytes());
    }
    r.extend_from_slice(&[0, 0, 0]);
    send(session, &r).await
}

/// One exec chunk: decrypts it and streams it into the upload's capture; the DoublePulsar
/// status to answer.
fn exec_chunk(
    session: &Session,
    conn: &mut Conn<'_>,
    req: &DoublePulsarRequest<'_>,
    key: u32,
    extra: &mut Vec<(String, String)>,
) -> u16 {
    let Ok(chunk) = dp::parse_exec(req.params, key) else {
        return dp::STATUS_INVALID_PARAMS;
    };
    extra.push(("total".into(), chunk.total.to_string()));
    extra.push(("xor_key".into(), format!("{key:#010x}")));
    let step = dp::step(conn.pulsar, &chunk, req.data.len());
    if step == Step::Invalid {
        extra.push(("chunk".into(), format!("{} bytes at {}: out of order", chunk.chunk, chunk.offset)));
        return dp::STATUS_INVALID_PARAMS;
    }
    if chunk.offset == 0 {
        // A new upload: an unfinished earlier one is recorded with what arrived.
        if let Some(mut old) = conn.pulsar_upload.take() {
            old.mark_truncated();
            session.emit_capture(old, "doublepulsar-upload");
        }
    }
    let mut data = req.data.to_vec();
    dp::xor(&mut data, key);
    conn.pulsar_upload.get_or_insert_with(|| session.capture("smb-doublepulsar")).update(&data);
    match step {
        Step::More(r) => conn.pulsar = Some(r),
        _ => {
            conn.pulsar = None;
            if let Some(upload) = conn.pulsar_upload.take() {
                session.emit_capture(upload, "doublepulsar-upload");
            }
        }
    }
    dp::STATUS_SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smb1_msg(command: u8, flags2: u16, words: &[u8], bytes: &[u8]) -> Vec<u8> {
        let mut m = vec![0xff, b'S', b'M', b'B', command, 0, 0, 0, 0, 0x18];
        m.extend_from_slice(&flags2.to_le_bytes());
        m.extend_from_slice(&[0; 20]);
        m.push((words.len() / 2) as u8);
        m.extend_from_slice(words);
        m.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        m.extend_from_slice(bytes);
        m
    }

    #[test]
    fn ms17_010_and_doublepulsar_signatures() {
        let mut words = vec![0u8; 32];
        words[28] = 0x23;
        let probe = Smb1 {
            command: TRANSACTION,
            flags: 0x18,
            flags2: 0xc001,
            tid: 1,
            pid: 1,
            uid: 1,
            mid: 1,
            words: words.clone(),
            bytes: vec![],
        };
        assert!(is_ms17_010_probe(&probe));
        words[30] = 1;
        assert!(!is_ms17_010_probe(&Smb1 { words, ..probe.clone() }), "FID 1 is not the probe");
        let mut w2 = vec![0u8; 30];
        w2[28] = 0x0e;
        let ping = Smb1 { command: TRANSACTION2, mid: 0x41, words: w2, ..probe };
        assert!(is_doublepulsar_ping(&ping));
    }

    /// nmap 7.93's basic (non-extended) SESSION_SETUP_ANDX for its guest account, as captured
    /// on the wire: FLAGS2 without UNICODE, so every string is single-byte with no alignment
    /// byte. Read as UTF-16 behind an alignment byte this was the user `敵瑳`.
    #[test]
    fn nmap_basic_session_setup_is_read_as_ascii() {
        let msg = hex::decode(NMAP_GUEST_SESSION_SETUP).unwrap();
        let m = parse(&msg).unwrap();
        assert_eq!(m.flags2 & FLAGS2_UNICODE, 0);
        let auth = parse_smb1_session_setup(&m);
        assert_eq!(auth.user, "guest");
        assert_eq!(auth.domain, "");
        assert_eq!(auth.nt_response.len(), 24);
    }

    /// The same form with UNICODE set: the strings are UTF-16, aligned from the header.
    #[test]
    fn unicode_basic_session_setup_skips_the_alignment_byte() {
        let mut w = vec![0xff, 0, 0, 0, 0xff, 0xff, 2, 0, 1, 0, 0, 0, 0, 0];
        w.extend_from_slice(&1u16.to_le_bytes()); // OEM password: 1 byte
        w.extend_from_slice(&24u16.to_le_bytes());
        w.extend_from_slice(&[0; 8]);
        assert_eq!(w.len(), 26);
        // Bytes start at 33 + 26 + 2 = 61; after 25 password bytes the offset is 86 (even):
        // no pad. With a 2-byte OEM password it is odd, and one pad byte follows.
        for oem in [1usize, 2] {
            w[14..16].copy_from_slice(&(oem as u16).to_le_bytes());
            let mut b = vec![0u8; oem + 24];
            if (61 + b.len()) % 2 == 1 {
                b.push(0);
            }
            b.extend_from_slice(&utf16("Administrator\0CORP\0"));
            let msg = smb1_msg(SESSION_SETUP_ANDX, 0xc801, &w, &b);
            let auth = parse_smb1_session_setup(&parse(&msg).unwrap());
            assert_eq!((auth.user.as_str(), auth.domain.as_str()), ("Administrator", "CORP"), "oem {oem}");
        }
    }

    #[test]
    fn tree_connect_create_and_write_parse() {
        let mut b = vec![0u8]; // 1-byte password
                               // Bytes start at 33 + 8 + 2 = 43 (odd); after the password, 44: aligned.
        b.extend_from_slice(&utf16("\\\\192.0.2.1\\C$\0"));
        b.extend_from_slice(b"?????\0");
        let msg = smb1_msg(TREE_CONNECT_ANDX, 0xc801, &[0xff, 0, 0, 0, 8, 0, 1, 0], &b);
        let (path, service) = parse_tree_connect(&parse(&msg).unwrap()).unwrap();
        assert_eq!((path.as_str(), service.as_str()), ("\\\\192.0.2.1\\C$", "?????"));

        let mut w = vec![0u8; 48];
        w[15..19].copy_from_slice(&0x0013_019fu32.to_le_bytes());
        w[35..39].copy_from_slice(&5u32.to_le_bytes());
        let mut b = vec![0u8]; // pad: bytes start at 33 + 48 + 2 = 83
        b.extend_from_slice(&utf16("\\x.exe\0"));
        let msg = smb1_msg(NT_CREATE_ANDX, 0xc801, &w, &b);
        let c = parse_nt_create(&parse(&msg).unwrap()).unwrap();
        assert_eq!((c.name.as_str(), c.disposition), ("\\x.exe", 5));
        assert!(c.wants_write());

        let mut w = vec![0xff, 0, 0, 0];
        w.extend_from_slice(&7u16.to_le_bytes()); // FID
        w.extend_from_slice(&100u32.to_le_bytes()); // offset
        w.extend_from_slice(&[0; 8]); // timeout, write mode, remaining
        w.extend_from_slice(&0u16.to_le_bytes()); // length high
        w.extend_from_slice(&4u16.to_le_bytes()); // length
        w.extend_from_slice(&64u16.to_le_bytes()); // data offset
        w.extend_from_slice(&1u32.to_le_bytes()); // offset high
        let msg = smb1_msg(WRITE_ANDX, 0xc801, &w, &[0, b'M', b'Z', 0x90, 0]);
        let m = parse(&msg).unwrap();
        let wr = parse_write_andx(&m, &msg).unwrap();
        assert_eq!((wr.fid, wr.offset, wr.data), (7, (1u64 << 32) | 100, &b"MZ\x90\0"[..]));
        let mut bad = msg.clone();
        bad[33 + 22] = 0xff; // data offset past the end
        assert!(parse_write_andx(&parse(&bad).unwrap(), &bad).is_err());
    }

    #[test]
    fn strings_are_aligned_in_replies() {
        let mut b = vec![1, 2, 3];
        push_string(&mut b, "A", 43, true);
        assert_eq!(b, vec![1, 2, 3, b'A', 0, 0, 0], "43 + 3 is even: no pad");
        let mut b = vec![1, 2];
        push_string(&mut b, "A", 43, true);
        assert_eq!(b, vec![1, 2, 0, b'A', 0, 0, 0]);
        let mut b = vec![];
        push_string(&mut b, "Nmap", 43, false);
        assert_eq!(b, b"Nmap\0");
    }

    /// Captured from `nmap -p445 --script smb-os-discovery` (nmap 7.93) against the sensor.
    const NMAP_GUEST_SESSION_SETUP: &str = concat!(
        "ff534d42730000000018456000004fcba7291ec8ff93000000003216000001000dff000000ffff010001000000000018",
        "00180000000000500000004a00abfa8b4e8641ffdbb6ff9c533ba3489af7cc9f80efa3820aabfa8b4e8641ffdbb6ff9c",
        "533ba3489af7cc9f80efa3820a677565737400004e6d6170004e6174697665204c616e6d616e00",
    );
}
