//! MSSQL (1433): TDS PRELOGIN and LOGIN7, answered with error 18456 like a real server.
//!
//! MSSQL was the most attacked service in the field report. Attackers brute-force `sa`, so the
//! valuable part is the LOGIN7 packet: user name, the (trivially obfuscated) password, client
//! host name, application and library names, and database. We answer PRELOGIN with a SQL Server
//! 2019 version and "encryption not supported" so clients log in in clear, parse LOGIN7, and
//! answer with the same ERROR token (18456, class 14) and DONE token a real server sends.

use crate::config::ServiceSection;
use crate::session::{Session, SessionResult};
use drosera_uplink::event::{CloseReason, Detail, Secret};

/// Largest TDS message (all packets of one message together) we accept.
pub const MAX_MESSAGE: usize = 32 * 1024;
const HEADER: usize = 8;

pub const TYPE_PRELOGIN: u8 = 0x12;
pub const TYPE_LOGIN7: u8 = 0x10;
pub const TYPE_RESPONSE: u8 = 0x04;
const STATUS_EOM: u8 = 0x01;

/// Default server name (what the config's `banner` replaces), shown in the login error.
pub const DEFAULT_BANNER: &str = "SQLSRV01";
/// Product version announced in PRELOGIN: SQL Server 2019 RTM (15.0.2000).
const DEFAULT_VERSION: [u8; 6] = [15, 0, 0x07, 0xd0, 0, 0];

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

pub fn parse_header(h: &[u8]) -> Result<Header, TdsError> {
    let h = h.get(..HEADER).ok_or(TdsError::Truncated)?;
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

/// Builds the PRELOGIN response payload.
pub fn prelogin_response(version: [u8; 6]) -> Vec<u8> {
    // Options: VERSION(6), ENCRYPTION(1) = NOT_SUP, INSTOPT(1), THREADID(0), MARS(1).
    let opts: [(u8, Vec<u8>); 5] =
        [(0x00, version.to_vec()), (0x01, vec![0x02]), (0x02, vec![0x00]), (0x03, vec![]), (0x04, vec![0x00])];
    let table_len = opts.len() * 5 + 1;
    let mut table = Vec::new();
    let mut data = Vec::new();
    for (token, d) in &opts {
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
    if payload.len() < 94 {
        return Err(TdsError::Truncated);
    }
    let field = |at: usize| -> Result<&[u8], TdsError> {
        let (off, chars) = ucs2(payload, at)?;
        payload.get(off..off + chars * 2).ok_or(TdsError::Truncated)
    };
    let tds_version = u32::from_le_bytes([payload[4], payload[5], payload[6], payload[7]]);
    let (_, sspi_len) = ucs2(payload, 78)?;
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
    loop {
        let mut h = [0u8; HEADER];
        session.read_exact(&mut h).await?;
        let hdr = parse_header(&h).map_err(|_| CloseReason::ProtocolError)?;
        if msg.len() + hdr.payload_len > MAX_MESSAGE {
            return Err(CloseReason::ProtocolError);
        }
        let start = msg.len();
        msg.resize(start + hdr.payload_len, 0);
        session.read_exact(&mut msg[start..]).await?;
        if hdr.status & STATUS_EOM != 0 {
            return Ok((hdr.kind, msg));
        }
    }
}

pub(crate) async fn handle(session: &mut Session, svc: &ServiceSection) -> SessionResult<()> {
    let server_name = svc.banner_or(DEFAULT_BANNER);
    let (kind, payload) = read_message(session).await?;
    let login_msg = if kind == TYPE_PRELOGIN {
        let opts = parse_prelogin(&payload).map_err(|_| CloseReason::ProtocolError)?;
        if let Some((_, v)) = opts.iter().find(|(t, _)| *t == 0x00) {
            session.emit(Detail::Fingerprint {
                kind: "tds_client_version".into(),
                value: hex::encode(v),
                extra: opts.iter().map(|(t, d)| (format!("prelogin_{t}"), hex::encode(d))).collect(),
            });
        }
        session.write_all(&packet(TYPE_RESPONSE, &prelogin_response(DEFAULT_VERSION))).await?;
        read_message(session).await?
    } else {
        (kind, payload)
    };
    if login_msg.0 != TYPE_LOGIN7 {
        return Err(CloseReason::ProtocolError);
    }
    let login = parse_login7(&login_msg.1).map_err(|_| CloseReason::ProtocolError)?;
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
    session.write_all(&packet(TYPE_RESPONSE, &login_failed_response(&login.user_name, server_name))).await?;
    Ok(())
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
        let r = prelogin_response(DEFAULT_VERSION);
        let opts = parse_prelogin(&r).unwrap();
        assert_eq!(opts[0], (0x00, DEFAULT_VERSION.to_vec()));
        assert_eq!(opts[1], (0x01, vec![0x02]));
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        let good = login7("sa", "x", "h", "a");
        for t in crate::protocols::hostile::truncations(&good) {
            let _ = parse_login7(t);
        }
        let mut bad = good.clone();
        bad[40..44].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(parse_login7(&bad), Err(TdsError::Truncated));
        for buf in crate::protocols::hostile::random_inputs(0x2545f4914f6cdd1d, 20_000, 300, false) {
            let _ = parse_login7(&buf);
            let _ = parse_prelogin(&buf);
            let _ = parse_header(&buf);
        }
        assert_eq!(parse_header(&[0x12, 1, 0, 3, 0, 0, 0, 0]), Err(TdsError::BadLength(3)));
    }
}
