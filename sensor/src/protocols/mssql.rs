//! MSSQL (1433): TDS PRELOGIN, LOGIN7 (password or NTLM) and the legacy TDS 4.2 login,
//! answered with error 18456 like a real server.
//!
//! MSSQL was the most attacked service in the field report. Attackers brute-force `sa`, so the
//! valuable part is the login: user name, the (trivially obfuscated, or for TDS 4.2 clear)
//! password, client host name, application and library names, and database. We answer PRELOGIN
//! with the persona's SQL Server version and "encryption not supported" so clients log in in
//! clear, and every login with the ERROR token (18456, class 14) and DONE token a real server
//! sends. Three login forms arrive:
//! * LOGIN7 (TDS 7.x: tsql, sqlcmd, impacket, most bots) with a password;
//! * LOGIN7 with integrated (SSPI) authentication: its NTLMSSP NEGOTIATE gets our NTLM
//!   challenge (the same one the SMB service sends, naming the persona's machine, which is what
//!   `nmap --script ms-sql-ntlm-info` prints), and an AUTHENTICATE that follows is recorded as a
//!   crackable hashcat line;
//! * the TDS 4.2 LOGIN record (packet type 0x02, fixed 30-byte fields, password in clear) that
//!   hydra's `mssql` module still sends.
//!
//! Per persona: SQL Server 2012 SP4 on the Windows Server 2008 R2 persona (and `mixed`), SQL
//! Server 2019 on Linux for the Linux personas.

use crate::config::{Persona, ServiceSection};
use crate::protocols::smb::{find_ntlmssp, ntlm_challenge, ntlmssp_type, parse_ntlm_authenticate, SmbPersona};
use crate::session::{Session, SessionResult};
use drosera_uplink::event::{CloseReason, Detail, Secret};

/// Largest TDS message (all packets of one message together) we accept.
pub const MAX_MESSAGE: usize = 32 * 1024;
const HEADER: usize = 8;
/// Messages handled per connection (PRELOGIN, a login, an SSPI round).
const MAX_MESSAGES: usize = 8;

pub const TYPE_LOGIN42: u8 = 0x02;
pub const TYPE_RESPONSE: u8 = 0x04;
pub const TYPE_LOGIN7: u8 = 0x10;
pub const TYPE_SSPI: u8 = 0x11;
pub const TYPE_PRELOGIN: u8 = 0x12;
const STATUS_EOM: u8 = 0x01;
/// TDS token carrying an SSPI (NTLM) message from the server.
const TOKEN_SSPI: u8 = 0xed;

/// Default server name (what the config's `banner` replaces), shown in the login error: the
/// persona's machine, the same one the SMB service names.
pub const DEFAULT_BANNER: &str = crate::protocols::smb::DEFAULT_BANNER;

/// What the MSSQL service says it is, per persona.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MssqlPersona {
    /// PRELOGIN VERSION: major, minor, build (BE), sub-build (BE).
    pub version: [u8; 6],
    pub product: &'static str,
}

/// SQL Server 2012 SP4 (11.0.7001), which runs on Windows Server 2008 R2 SP1.
pub const SQL_2012_SP4: MssqlPersona =
    MssqlPersona { version: [11, 0, 0x1b, 0x59, 0, 0], product: "Microsoft SQL Server 2012 SP4" };
/// SQL Server 2019 on Linux, CU (15.0.4153).
pub const SQL_2019_LINUX: MssqlPersona =
    MssqlPersona { version: [15, 0, 0x10, 0x39, 0, 0], product: "Microsoft SQL Server 2019 on Linux" };

impl MssqlPersona {
    pub fn of(p: Persona) -> MssqlPersona {
        match p {
            Persona::Mixed | Persona::WindowsServer => SQL_2012_SP4,
            Persona::LinuxServer | Persona::IotRouter => SQL_2019_LINUX,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TdsError {
    #[error("truncated TDS data")]
    Truncated,
    #[error("TDS packet length {0} is invalid")]
    BadLength(usize),
    #[error("TDS message larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    #[error("unexpected TDS packet type {0:#04x}")]
    UnexpectedType(u8),
}

/// A TDS packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub status: u8,
    /// Payload length (without the header).
    pub payload_len: usize,
}

/// Parses a client's TDS packet header. Anything but a packet type a client sends (SQL batch,
/// TDS 4.2 login, RPC, attention, bulk load, transaction manager, LOGIN7, SSPI, PRELOGIN) is
/// refused at once, as SQL Server does (so a scanner's HTTP probe is not held waiting for a
/// length it never sends).
pub fn parse_header(h: &[u8]) -> Result<Header, TdsError> {
    let h = h.get(..HEADER).ok_or(TdsError::Truncated)?;
    if !matches!(h[0], 0x01 | 0x02 | 0x03 | 0x06 | 0x07 | 0x0e | 0x0f | 0x10 | 0x11 | 0x12) || h[1] > 0x1f {
        return Err(TdsError::UnexpectedType(h[0]));
    }
    let len = u16::from_be_bytes([h[2], h[3]]) as usize;
    if len < HEADER {
        return Err(TdsError::BadLength(len));
    }
    Ok(Header { kind: h[0], status: h[1], payload_len: len - HEADER })
}

/// Parses PRELOGIN options into (token, data) pairs.
pub fn parse_prelogin(payload: &[u8]) -> Result<Vec<(u8, Vec<u8>)>, TdsError> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let token = *payload.get(i).ok_or(TdsError::Truncated)?;
        if token == 0xff {
            return Ok(out);
        }
        let entry = payload.get(i + 1..i + 5).ok_or(TdsError::Truncated)?;
        let off = u16::from_be_bytes([entry[0], entry[1]]) as usize;
        let len = u16::from_be_bytes([entry[2], entry[3]]) as usize;
        let data = payload.get(off..off + len).ok_or(TdsError::Truncated)?;
        out.push((token, data.to_vec()));
        if out.len() > 16 {
            return Err(TdsError::BadLength(out.len()));
        }
        i += 5;
    }
}

/// Builds the PRELOGIN response payload. Like SQL Server, it answers the options the client
/// sent (`offered` tokens) among VERSION, ENCRYPTION (NOT_SUP), INSTOPT, THREADID (empty from
/// a server) and MARS; VERSION and ENCRYPTION always. `nmap -sV` matches the exact layout.
pub fn prelogin_response(version: [u8; 6], offered: &[u8]) -> Vec<u8> {
    let all: [(u8, Vec<u8>); 5] =
        [(0x00, version.to_vec()), (0x01, vec![0x02]), (0x02, vec![0x00]), (0x03, vec![]), (0x04, vec![0x00])];
    let opts: Vec<&(u8, Vec<u8>)> = all.iter().filter(|(t, _)| *t <= 0x01 || offered.contains(t)).collect();
    let table_len = opts.len() * 5 + 1;
    let mut table = Vec::new();
    let mut data = Vec::new();
    for (token, d) in opts {
        let off = (table_len + data.len()) as u16;
        table.push(*token);
        table.extend_from_slice(&off.to_be_bytes());
        table.extend_from_slice(&(d.len() as u16).to_be_bytes());
        data.extend_from_slice(d);
    }
    table.push(0xff);
    table.extend_from_slice(&data);
    table
}

/// The fields of a LOGIN7 record that matter to us.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Login7 {
    pub tds_version: u32,
    pub host_name: String,
    pub user_name: String,
    pub password: String,
    pub app_name: String,
    pub server_name: String,
    pub library: String,
    pub database: String,
    pub language: String,
    /// True when the client used integrated (SSPI/NTLM) authentication instead of a password.
    pub sspi: bool,
    /// The SSPI token (an NTLMSSP message), at most [`MAX_MESSAGE`] bytes.
    pub sspi_token: Vec<u8>,
}

fn ucs2(payload: &[u8], at: usize) -> Result<(usize, usize), TdsError> {
    let b = payload.get(at..at + 4).ok_or(TdsError::Truncated)?;
    Ok((u16::from_le_bytes([b[0], b[1]]) as usize, u16::from_le_bytes([b[2], b[3]]) as usize))
}

fn ucs2_string(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    String::from_utf16_lossy(&units)
}

/// Reverses the TDS password obfuscation: XOR 0xA5, then swap the nibbles of each byte.
pub fn decode_password(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().map(|b| (b ^ 0xa5).rotate_left(4)).collect()
}

/// Parses a LOGIN7 payload.
pub fn parse_login7(payload: &[u8]) -> Result<Login7, TdsError> {
    // The fixed part is 94 bytes since TDS 7.2; TDS 7.0 clients (nmap) send 86.
    if payload.len() < 86 {
        return Err(TdsError::Truncated);
    }
    let field = |at: usize| -> Result<&[u8], TdsError> {
        let (off, chars) = ucs2(payload, at)?;
        payload.get(off..off + chars * 2).ok_or(TdsError::Truncated)
    };
    let tds_version = u32::from_le_bytes([payload[4], payload[5], payload[6], payload[7]]);
    let (sspi_at, sspi_len) = ucs2(payload, 78)?;
    let sspi_token = payload.get(sspi_at..sspi_at + sspi_len).unwrap_or(&[]).to_vec();
    Ok(Login7 {
        tds_version,
        host_name: ucs2_string(field(36)?),
        user_name: ucs2_string(field(40)?),
        password: ucs2_string(&decode_password(field(44)?)),
        app_name: ucs2_string(field(48)?),
        server_name: ucs2_string(field(52)?),
        library: ucs2_string(field(60)?),
        language: ucs2_string(field(64)?),
        database: ucs2_string(field(68)?),
        sspi: sspi_len > 0,
        sspi_token,
    })
}

fn push_us_varchar(out: &mut Vec<u8>, s: &str, byte_len: bool) {
    let units: Vec<u16> = s.encode_utf16().take(255).collect();
    if byte_len {
        out.push(units.len() as u8);
    } else {
        out.extend_from_slice(&(units.len() as u16).to_le_bytes());
    }
    for u in units {
        out.extend_from_slice(&u.to_le_bytes());
    }
}

/// Builds the response to a failed login: ERROR token 18456 + DONE (error).
pub fn login_failed_response(user: &str, server: &str) -> Vec<u8> {
    let msg = format!("Login failed for user '{user}'.");
    let mut body = Vec::new();
    body.extend_from_slice(&18456u32.to_le_bytes());
    body.push(1); // state
    body.push(14); // class
    push_us_varchar(&mut body, &msg, false);
    push_us_varchar(&mut body, server, true);
    push_us_varchar(&mut body, "", true);
    body.extend_from_slice(&1u32.to_le_bytes()); // line number
    let mut out = vec![0xaa];
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(&body);
    // DONE: status DONE_ERROR (0x0002), cur cmd 0, row count 0 (u64 since TDS 7.2).
    out.push(0xfd);
    out.extend_from_slice(&0x0002u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out
}

/// The fields of a TDS 4.2 LOGIN record that matter to us (all single-byte strings).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Login42 {
    pub host_name: String,
    pub user_name: String,
    pub password: String,
    pub host_process: String,
    pub app_name: String,
    pub server_name: String,
    pub library: String,
    /// The TDS version the client asks for (`4.2.0.0`).
    pub tds_version: [u8; 4],
}

/// One fixed field of a TDS 4.2 LOGIN record: `len` bytes of data, its length byte after them.
fn field42(payload: &[u8], at: usize, len: usize) -> Result<String, TdsError> {
    let data = payload.get(at..at + len).ok_or(TdsError::Truncated)?;
    let n = (*payload.get(at + len).ok_or(TdsError::Truncated)? as usize).min(len);
    Ok(String::from_utf8_lossy(&data[..n]).into_owned())
}

/// Parses a TDS 4.2 LOGIN record (packet type 0x02): host name, user, password, host process,
/// application and server names are 30-byte fields each followed by their length byte; the
/// TDS version and the library name follow the 255-byte remote password area.
pub fn parse_login42(payload: &[u8]) -> Result<Login42, TdsError> {
    let version = payload.get(458..462).ok_or(TdsError::Truncated)?;
    Ok(Login42 {
        host_name: field42(payload, 0, 30)?,
        user_name: field42(payload, 31, 30)?,
        password: field42(payload, 62, 30)?,
        host_process: field42(payload, 93, 30)?,
        app_name: field42(payload, 140, 30)?,
        server_name: field42(payload, 171, 30)?,
        library: field42(payload, 462, 10)?,
        tds_version: [version[0], version[1], version[2], version[3]],
    })
}

/// The answer to a failed TDS 4.2 login: the same error 18456, in the 4.2 token layout
/// (single-byte strings, 2-byte line number, 4-byte row count).
pub fn login42_failed_response(user: &str, server: &str) -> Vec<u8> {
    let msg = format!("Login failed for user '{user}'.");
    let msg = &msg.as_bytes()[..msg.len().min(400)];
    let server = &server.as_bytes()[..server.len().min(255)];
    let mut body = Vec::new();
    body.extend_from_slice(&18456u32.to_le_bytes());
    body.push(1);
    body.push(14);
    body.extend_from_slice(&(msg.len() as u16).to_le_bytes());
    body.extend_from_slice(msg);
    body.push(server.len() as u8);
    body.extend_from_slice(server);
    body.push(0);
    body.extend_from_slice(&1u16.to_le_bytes());
    let mut out = vec![0xaa];
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(&body);
    out.push(0xfd);
    out.extend_from_slice(&0x0002u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out
}

/// The answer to an integrated login's NTLMSSP NEGOTIATE: an SSPI token with `ntlm`.
pub fn sspi_response(ntlm: &[u8]) -> Vec<u8> {
    let len = ntlm.len().min(u16::MAX as usize);
    let mut out = vec![TOKEN_SSPI];
    out.extend_from_slice(&(len as u16).to_le_bytes());
    out.extend_from_slice(&ntlm[..len]);
    out
}

/// Frames `payload` as one TDS response packet.
pub fn packet(kind: u8, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() + HEADER).min(u16::MAX as usize);
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&[kind, STATUS_EOM]);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 1, 0]);
    out.extend_from_slice(&payload[..len - HEADER]);
    out
}

/// Reads one TDS message (one or more packets up to EOM), bounded by [`MAX_MESSAGE`].
async fn read_message(session: &mut Session) -> SessionResult<(u8, Vec<u8>)> {
    let mut msg = Vec::new();
    let mut kind = 0;
    loop {
        let mut h = [0u8; HEADER];
        session.read_exact(&mut h).await?;
        let hdr = parse_header(&h).map_err(|_| CloseReason::ProtocolError)?;
        if (!msg.is_empty() && hdr.kind != kind) || msg.len() + hdr.payload_len > MAX_MESSAGE {
            return Err(CloseReason::ProtocolError);
        }
        kind = hdr.kind;
        let start = msg.len();
        msg.resize(start + hdr.payload_len, 0);
        session.read_exact(&mut msg[start..]).await?;
        if hdr.status & STATUS_EOM != 0 {
            return Ok((hdr.kind, msg));
        }
    }
}

/// What one connection keeps between messages.
struct Conn<'a> {
    server_name: &'a str,
    persona: MssqlPersona,
    /// Our NTLM challenge, once an integrated login asked for it.
    challenge: Option<[u8; 8]>,
}

/// Whether the conversation goes on.
enum Flow {
    Continue,
    End,
}

pub(crate) async fn handle(session: &mut Session, svc: &ServiceSection) -> SessionResult<()> {
    let persona = session.persona();
    let mut conn = Conn {
        server_name: svc.banner_or(SmbPersona::of(persona).default_host),
        persona: MssqlPersona::of(persona),
        challenge: None,
    };
    for _ in 0..MAX_MESSAGES {
        let (kind, payload) = read_message(session).await?;
        let flow = match kind {
            TYPE_PRELOGIN => prelogin(session, &conn, &payload).await?,
            TYPE_LOGIN7 => login7(session, &mut conn, &payload).await?,
            TYPE_LOGIN42 => login42(session, &conn, &payload).await?,
            TYPE_SSPI => sspi(session, &conn, &payload).await?,
            _ => return Err(CloseReason::ProtocolError),
        };
        if let Flow::End = flow {
            return Ok(());
        }
    }
    Ok(())
}

async fn prelogin(session: &mut Session, conn: &Conn<'_>, payload: &[u8]) -> SessionResult<Flow> {
    let opts = parse_prelogin(payload).map_err(|_| CloseReason::ProtocolError)?;
    if let Some((_, v)) = opts.iter().find(|(t, _)| *t == 0x00) {
        session.emit(Detail::Fingerprint {
            kind: "tds_client_version".into(),
            value: hex::encode(v),
            extra: opts.iter().map(|(t, d)| (format!("prelogin_{t}"), hex::encode(d))).collect(),
        });
    }
    let offered: Vec<u8> = opts.iter().map(|(t, _)| *t).collect();
    session.write_all(&packet(TYPE_RESPONSE, &prelogin_response(conn.persona.version, &offered))).await?;
    Ok(Flow::Continue)
}

async fn login7(session: &mut Session, conn: &mut Conn<'_>, payload: &[u8]) -> SessionResult<Flow> {
    let login = parse_login7(payload).map_err(|_| CloseReason::ProtocolError)?;
    if login.sspi && find_ntlmssp(&login.sspi_token).is_some_and(|n| ntlmssp_type(n) == Some(1)) {
        // Integrated login: our challenge; the client's AUTHENTICATE follows as SSPI.
        let challenge: [u8; 8] = rand::random();
        let smb = SmbPersona::of(session.persona());
        let dns = conn.server_name.to_lowercase();
        let token = ntlm_challenge(&challenge, &smb.ntlm_target(conn.server_name, &dns), filetime_now());
        conn.challenge = Some(challenge);
        session.emit(Detail::Command { line: format!("LOGIN7 integrated (NTLM) app={}", login.app_name) });
        session.write_all(&packet(TYPE_RESPONSE, &sspi_response(&token))).await?;
        return Ok(Flow::Continue);
    }
    let mut extra = vec![
        ("client_host".to_string(), login.host_name.clone()),
        ("app_name".to_string(), login.app_name.clone()),
        ("library".to_string(), login.library.clone()),
        ("server_name".to_string(), login.server_name.clone()),
        ("tds_version".to_string(), format!("{:#010x}", login.tds_version)),
    ];
    if !login.database.is_empty() {
        extra.push(("database".to_string(), login.database.clone()));
    }
    if login.sspi {
        extra.push(("method".to_string(), "sspi".to_string()));
    }
    session.emit(Detail::Login {
        username: login.user_name.clone(),
        secret: if login.sspi { Secret::None } else { Secret::Password(login.password.clone()) },
        success: false,
        extra,
    });
    session.write_all(&packet(TYPE_RESPONSE, &login_failed_response(&login.user_name, conn.server_name))).await?;
    Ok(Flow::End)
}

async fn login42(session: &mut Session, conn: &Conn<'_>, payload: &[u8]) -> SessionResult<Flow> {
    let login = parse_login42(payload).map_err(|_| CloseReason::ProtocolError)?;
    let v = login.tds_version;
    session.emit(Detail::Login {
        username: login.user_name.clone(),
        secret: Secret::Password(login.password.clone()),
        success: false,
        extra: vec![
            ("client_host".to_string(), login.host_name.clone()),
            ("client_process".to_string(), login.host_process.clone()),
            ("app_name".to_string(), login.app_name.clone()),
            ("library".to_string(), login.library.clone()),
            ("server_name".to_string(), login.server_name.clone()),
            ("tds_version".to_string(), format!("{}.{}.{}.{}", v[0], v[1], v[2], v[3])),
        ],
    });
    session.write_all(&packet(TYPE_RESPONSE, &login42_failed_response(&login.user_name, conn.server_name))).await?;
    Ok(Flow::End)
}

/// The second leg of an integrated login: the NTLMSSP AUTHENTICATE, recorded like SMB's.
async fn sspi(session: &mut Session, conn: &Conn<'_>, payload: &[u8]) -> SessionResult<Flow> {
    let Some(challenge) = conn.challenge else { return Err(CloseReason::ProtocolError) };
    let auth = find_ntlmssp(payload).and_then(|n| parse_ntlm_authenticate(n).ok()).ok_or(CloseReason::ProtocolError)?;
    let secret = match auth.hashcat_5600(&challenge) {
        Some(line) => Secret::Hash { format: "hashcat-5600".into(), value: line },
        None => Secret::None,
    };
    session.emit(Detail::Login {
        username: if auth.domain.is_empty() { auth.user.clone() } else { format!("{}\\{}", auth.domain, auth.user) },
        secret,
        success: false,
        extra: vec![("method".to_string(), "sspi".to_string()), ("workstation".to_string(), auth.workstation.clone())],
    });
    let user = format!("{}\\{}", auth.domain, auth.user);
    session.write_all(&packet(TYPE_RESPONSE, &login_failed_response(&user, conn.server_name))).await?;
    Ok(Flow::End)
}

fn filetime_now() -> u64 {
    let unix =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() / 100).unwrap_or(0)
            as u64;
    unix + 116_444_736_000_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a LOGIN7 payload the way a client does (including the password obfuscation).
    pub(crate) fn login7(user: &str, pass: &str, host: &str, app: &str) -> Vec<u8> {
        let enc = |s: &str| -> Vec<u8> { s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect() };
        let obf = |s: &str| -> Vec<u8> { enc(s).iter().map(|b| b.rotate_left(4) ^ 0xa5).collect() };
        let fields: Vec<(usize, Vec<u8>, usize)> = vec![
            (36, enc(host), host.encode_utf16().count()),
            (40, enc(user), user.encode_utf16().count()),
            (44, obf(pass), pass.encode_utf16().count()),
            (48, enc(app), app.encode_utf16().count()),
            (52, enc("db1"), 3),
            (60, enc("DB-Library"), 10),
            (64, vec![], 0),
            (68, enc("master"), 6),
        ];
        let mut p = vec![0u8; 94];
        p[4..8].copy_from_slice(&0x7400_0004u32.to_le_bytes());
        for (at, data, chars) in fields {
            let off = p.len() as u16;
            p[at..at + 2].copy_from_slice(&off.to_le_bytes());
            p[at + 2..at + 4].copy_from_slice(&(chars as u16).to_le_bytes());
            p.extend_from_slice(&data);
        }
        let len = p.len() as u32;
        p[0..4].copy_from_slice(&len.to_le_bytes());
        p
    }

    #[test]
    fn login7_round_trip_with_password_decoding() {
        let l = parse_login7(&login7("sa", "P@ssw0rd", "WIN-X", "OSQL-32")).unwrap();
        assert_eq!(l.user_name, "sa");
        assert_eq!(l.password, "P@ssw0rd");
        assert_eq!(l.host_name, "WIN-X");
        assert_eq!(l.app_name, "OSQL-32");
        assert_eq!(l.library, "DB-Library");
        assert_eq!(l.database, "master");
    }

    #[test]
    fn prelogin_response_parses_back() {
        let r = prelogin_response(SQL_2012_SP4.version, &[0, 1, 2, 3, 4]);
        let opts = parse_prelogin(&r).unwrap();
        assert_eq!(opts[0], (0x00, vec![11, 0, 0x1b, 0x59, 0, 0]), "11.0.7001");
        assert_eq!(opts[1], (0x01, vec![0x02]));
        assert_eq!(opts.len(), 5);
        // nmap's ms-sql-s probe sends no MARS: the answer is the 37-byte packet its
        // "Microsoft SQL Server 2012" line matches.
        let p = packet(TYPE_RESPONSE, &prelogin_response(SQL_2012_SP4.version, &[0, 1, 2, 3]));
        assert_eq!(p.len(), 0x25);
        assert_eq!(&p[..8], b"\x04\x01\x00\x25\x00\x00\x01\x00");
        assert_eq!(
            &p[8..30],
            b"\x00\x00\x15\x00\x06\x01\x00\x1b\x00\x01\x02\x00\x1c\x00\x01\x03\x00\x1d\x00\x00\xff\x0b"
        );
    }

    /// hydra 9.4's `mssql` module on the wire (captured): a TDS 4.2 LOGIN in two packets (512
    /// and 71 bytes) for user "sa user", password "p@ss wörd:%".
    const HYDRA_LOGIN42: &str = concat!(
        "020002000000020000000000000000000000000000000000000000000000000000000000000000736120757365720000",
        "00000000000000000000000000000000000000000007704073732077c3b672643a250000000000000000000000000000",
        "000000000c30303030303061300000000000000000000000000000000000201881b82c080301060a0901010000000000",
        "00000000737175656c646120312e30000000000000000000000000000000000000000b00000000000000000000000000",
        "000000000000000000000000000000000000000c704073732077c3b672643a2500000000000000000000000000000000",
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "00000000000000000000000000000000000000000000000000000000000000000000040200004d5344424c4942000000",
        "0706000000000d1100000000000000000000000000000000000000000000000002010047000002000000000000000001",
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000303030",
        "00000003000000",
    );
    #[test]
    fn hydra_tds42_login_is_read_exactly() {
        let raw = hex::decode(HYDRA_LOGIN42).unwrap();
        let first = parse_header(&raw).unwrap();
        assert_eq!((first.kind, first.status, first.payload_len), (TYPE_LOGIN42, 0, 504));
        let second = parse_header(&raw[512..]).unwrap();
        assert_eq!((second.kind, second.status), (TYPE_LOGIN42, STATUS_EOM));
        let payload = [&raw[8..512], &raw[520..]].concat();
        let l = parse_login42(&payload).unwrap();
        assert_eq!(l.user_name, "sa user");
        assert_eq!(l.password, "p@ss wörd:%");
        assert_eq!((l.app_name.as_str(), l.library.as_str(), l.host_name.as_str()), ("squelda 1.0", "MSDBLIB", ""));
        assert_eq!(l.tds_version, [4, 2, 0, 0]);
        for t in crate::protocols::hostile::truncations(&payload) {
            let _ = parse_login42(t);
        }
        let r = login42_failed_response("sa", "FILESRV01");
        assert_eq!(r[0], 0xaa, "hydra counts anything but a LOGINACK (0xe3) as a failure");
    }

    #[test]
    fn an_integrated_login_carries_its_ntlm_token() {
        // nmap's ms-sql-ntlm-info: a TDS 7.0 LOGIN7 (86-byte fixed part) with an NTLMSSP
        // NEGOTIATE as its SSPI data and no user name.
        let mut p = login7("", "", "nmap", "nmap");
        let token = b"NTLMSSP\0\x01\0\0\0\x01\xb2\0\0\x01\0\x01\0\x20\0\0\0\0\0\0\0\x20\0\0\0.".to_vec();
        let at = p.len() as u16;
        p[78..80].copy_from_slice(&at.to_le_bytes());
        p[80..82].copy_from_slice(&(token.len() as u16).to_le_bytes());
        p.extend_from_slice(&token);
        let l = parse_login7(&p).unwrap();
        assert!(l.sspi);
        assert_eq!(l.sspi_token, token);
        assert_eq!(ntlmssp_type(find_ntlmssp(&l.sspi_token).unwrap()), Some(1));
        let r = sspi_response(b"NTLMSSP\0\x02");
        assert_eq!(r[..3], [TOKEN_SSPI, 9, 0]);
    }

    #[test]
    fn hostile_input_never_panics() {
        let good = login7("sa", "x", "h", "a");
        for t in crate::protocols::hostile::truncations(&good) {
            let _ = parse_login7(t);
        }
        let mut bad = good.clone();
        bad[40..44].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(parse_login7(&bad), Err(TdsError::Truncated));
        for buf in crate::protocols::hostile::random_inputs(0x2545f4914f6cdd1d, 20_000, 600, false) {
            let _ = parse_login7(&buf);
            let _ = parse_login42(&buf);
            let _ = parse_prelogin(&buf);
            let _ = parse_header(&buf);
        }
        assert_eq!(parse_header(&[0x12, 1, 0, 3, 0, 0, 0, 0]), Err(TdsError::BadLength(3)));
        assert_eq!(parse_header(b"GET / HTTP/1.0"), Err(TdsError::UnexpectedType(b'G')));
    }
}
