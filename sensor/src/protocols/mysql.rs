//! MySQL (3306): a believable server greeting, then the client's login, refused with error 1045.
//!
//! Credential stuffing against MySQL never gets past the handshake, so that is all we speak:
//! Handshake v10 with a random salt and `mysql_native_password`, no TLS offered (so clients stay
//! in clear and we see the login), then the HandshakeResponse41 is parsed for the user name, the
//! auth plugin, the auth response (recorded as hex — it is a salted hash, not a password), the
//! database and the client's connection attributes. Every answer is `ERR 1045 Access denied`.
//!
//! The version string follows the persona ([`server_version`]): Debian 12 ships MariaDB, not
//! MySQL, so the `linux-server` persona (Debian OpenSSH, Apache and vsftpd) is Debian's MariaDB
//! 10.11 (`5.5.5-10.11.6-MariaDB-0+deb12u1`, which `nmap -sV` names as such), a router is a
//! plain MariaDB build, and the `mixed` and `windows-server` personas are MySQL 8.0 (the same
//! on the wire on Windows).

use crate::config::{Persona, ServiceSection};
use crate::session::{Session, SessionResult};
use drosera_uplink::event::{CloseReason, Detail, Secret};

/// Default version string (the `mixed` persona): a current MySQL 8.0.
pub const DEFAULT_BANNER: &str = "8.0.36";
/// Debian 12's MariaDB, as its server announces itself (the `5.5.5-` prefix is how MariaDB
/// tells old clients that it is newer than MySQL 5.5).
pub const DEBIAN_MARIADB: &str = "5.5.5-10.11.6-MariaDB-0+deb12u1";
/// A MariaDB built without a distribution suffix (OpenWrt and other embedded builds).
pub const PLAIN_MARIADB: &str = "5.5.5-10.11.6-MariaDB";

/// The version string the greeting announces for a persona (the config's `banner` replaces it).
pub fn server_version(persona: Persona) -> &'static str {
    match persona {
        Persona::Mixed | Persona::WindowsServer => DEFAULT_BANNER,
        Persona::LinuxServer => DEBIAN_MARIADB,
        Persona::IotRouter => PLAIN_MARIADB,
    }
}

/// The default collation a server of `version` announces: MySQL 8's utf8mb4_0900_ai_ci, or
/// utf8mb4_general_ci for MariaDB (Debian's default character set is utf8mb4).
fn collation(version: &str) -> u8 {
    if version.contains("MariaDB") {
        45
    } else {
        0xff
    }
}
/// Largest packet payload we accept from a client (a login is a few hundred bytes).
pub const MAX_PACKET: usize = 16 * 1024;

const CLIENT_CONNECT_WITH_DB: u32 = 0x0000_0008;
const CLIENT_PROTOCOL_41: u32 = 0x0000_0200;
const CLIENT_SSL: u32 = 0x0000_0800;
const CLIENT_SECURE_CONNECTION: u32 = 0x0000_8000;
const CLIENT_PLUGIN_AUTH: u32 = 0x0008_0000;
const CLIENT_CONNECT_ATTRS: u32 = 0x0010_0000;
const CLIENT_PLUGIN_AUTH_LENENC: u32 = 0x0020_0000;
/// What the greeting advertises: everything a MySQL 8 server does except SSL, compression and
/// LOCAL INFILE.
const SERVER_CAPS: u32 = 0x01FF_F75F;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MysqlError {
    #[error("truncated packet")]
    Truncated,
    #[error("packet too large ({0} bytes)")]
    TooLarge(usize),
    #[error("client requested TLS")]
    SslRequest,
    #[error("not a protocol 4.1 client")]
    OldProtocol,
}

/// The parsed HandshakeResponse41.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Login {
    pub capabilities: u32,
    pub user: String,
    pub auth_response: Vec<u8>,
    pub database: String,
    pub plugin: String,
    pub attrs: Vec<(String, String)>,
}

/// Builds the Handshake v10 payload.
pub fn greeting(version: &str, connection_id: u32, salt: &[u8; 20]) -> Vec<u8> {
    let mut p = Vec::with_capacity(96);
    p.push(10);
    p.extend_from_slice(version.as_bytes());
    p.push(0);
    p.extend_from_slice(&connection_id.to_le_bytes());
    p.extend_from_slice(&salt[..8]);
    p.push(0);
    p.extend_from_slice(&(SERVER_CAPS as u16).to_le_bytes());
    p.push(collation(version));
    p.extend_from_slice(&0x0002u16.to_le_bytes()); // SERVER_STATUS_AUTOCOMMIT
    p.extend_from_slice(&((SERVER_CAPS >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 10]);
    p.extend_from_slice(&salt[8..]);
    p.push(0);
    p.extend_from_slice(b"mysql_native_password\0");
    p
}

/// Builds an ERR packet payload.
pub fn error_packet(code: u16, sql_state: &str, message: &str) -> Vec<u8> {
    let mut p = vec![0xff];
    p.extend_from_slice(&code.to_le_bytes());
    p.push(b'#');
    p.extend_from_slice(sql_state.as_bytes());
    p.extend_from_slice(message.as_bytes());
    p
}

/// Frames a payload as a MySQL packet with sequence number `seq`.
pub fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len().min(0xff_ffff) as u32;
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&len.to_le_bytes()[..3]);
    out.push(seq);
    out.extend_from_slice(&payload[..len as usize]);
    out
}

/// Parses a packet header: (payload length, sequence id).
pub fn parse_header(h: [u8; 4]) -> Result<(usize, u8), MysqlError> {
    let len = u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize;
    if len > MAX_PACKET {
        return Err(MysqlError::TooLarge(len));
    }
    Ok((len, h[3]))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MysqlError> {
        let end = self.pos.checked_add(n).ok_or(MysqlError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(MysqlError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, MysqlError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, MysqlError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn cstr(&mut self) -> Result<&'a [u8], MysqlError> {
        let rest = self.buf.get(self.pos..).ok_or(MysqlError::Truncated)?;
        let n = rest.iter().position(|&b| b == 0).ok_or(MysqlError::Truncated)?;
        let s = &rest[..n];
        self.pos += n + 1;
        Ok(s)
    }
    fn lenenc(&mut self) -> Result<u64, MysqlError> {
        Ok(match self.u8()? {
            n @ 0..=0xfa => n as u64,
            0xfc => {
                let b = self.take(2)?;
                u16::from_le_bytes([b[0], b[1]]) as u64
            }
            0xfd => {
                let b = self.take(3)?;
                u32::from_le_bytes([b[0], b[1], b[2], 0]) as u64
            }
            0xfe => {
                let b = self.take(8)?;
                u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            }
            _ => return Err(MysqlError::Truncated),
        })
    }
    fn lenenc_bytes(&mut self) -> Result<&'a [u8], MysqlError> {
        let n = self.lenenc()?;
        // `take` checks n against what is really there, so a huge length allocates nothing.
        self.take(usize::try_from(n).map_err(|_| MysqlError::Truncated)?)
    }
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Parses a HandshakeResponse41 payload.
pub fn parse_login(payload: &[u8]) -> Result<Login, MysqlError> {
    let mut r = Reader { buf: payload, pos: 0 };
    let caps = r.u32()?;
    if caps & CLIENT_PROTOCOL_41 == 0 {
        return Err(MysqlError::OldProtocol);
    }
    let _max_packet = r.u32()?;
    let _charset = r.u8()?;
    r.take(23)?;
    if caps & CLIENT_SSL != 0 && r.done() {
        return Err(MysqlError::SslRequest);
    }
    let user = text(r.cstr()?);
    let auth_response = if caps & CLIENT_PLUGIN_AUTH_LENENC != 0 {
        r.lenenc_bytes()?.to_vec()
    } else if caps & CLIENT_SECURE_CONNECTION != 0 {
        let n = r.u8()? as usize;
        r.take(n)?.to_vec()
    } else {
        r.cstr()?.to_vec()
    };
    let mut login = Login { capabilities: caps, user, auth_response, ..Login::default() };
    if caps & CLIENT_CONNECT_WITH_DB != 0 && !r.done() {
        login.database = text(r.cstr()?);
    }
    if caps & CLIENT_PLUGIN_AUTH != 0 && !r.done() {
        login.plugin = text(r.cstr()?);
    }
    if caps & CLIENT_CONNECT_ATTRS != 0 && !r.done() {
        let attrs = r.lenenc_bytes()?;
        let mut a = Reader { buf: attrs, pos: 0 };
        while !a.done() && login.attrs.len() < 32 {
            let k = text(a.lenenc_bytes()?);
            let v = text(a.lenenc_bytes()?);
            login.attrs.push((k, v));
        }
    }
    Ok(login)
}

async fn read_packet(session: &mut Session) -> SessionResult<(Vec<u8>, u8)> {
    let mut h = [0u8; 4];
    session.read_exact(&mut h).await?;
    let (len, seq) = parse_header(h).map_err(|_| CloseReason::ProtocolError)?;
    let mut payload = vec![0u8; len];
    session.read_exact(&mut payload).await?;
    Ok((payload, seq))
}

pub(crate) async fn handle(session: &mut Session, svc: &ServiceSection) -> SessionResult<()> {
    let version = svc.banner_or(server_version(session.persona()));
    let mut salt = [0u8; 20];
    for b in salt.iter_mut() {
        // Printable, non-NUL salt bytes, as real servers send.
        *b = rand::random::<u8>() % 94 + 33;
    }
    let conn_id = (session.id as u32) & 0x00ff_ffff;
    session.write_all(&frame(0, &greeting(version, conn_id, &salt))).await?;
    let (payload, seq) = read_packet(session).await?;
    let login = match parse_login(&payload) {
        Ok(l) => l,
        Err(MysqlError::SslRequest) => {
            let err = error_packet(2026, "HY000", "SSL connection error: SSL is not enabled on the server");
            session.write_all(&frame(seq.wrapping_add(1), &err)).await?;
            return Err(CloseReason::ProtocolError);
        }
        Err(_) => {
            let err = error_packet(1043, "08S01", "Bad handshake");
            session.write_all(&frame(seq.wrapping_add(1), &err)).await?;
            return Err(CloseReason::ProtocolError);
        }
    };
    let mut extra = vec![("auth_plugin".to_string(), login.plugin.clone())];
    if !login.database.is_empty() {
        extra.push(("database".to_string(), login.database.clone()));
    }
    for (k, v) in login.attrs.iter().take(16) {
        extra.push((format!("attr{k}"), v.clone()));
    }
    extra.push(("salt".to_string(), String::from_utf8_lossy(&salt).into_owned()));
    let using_password = !login.auth_response.is_empty();
    let format = if login.plugin.is_empty() { "mysql-native-hex".to_string() } else { format!("{}-hex", login.plugin) };
    session.emit(Detail::Login {
        username: login.user.clone(),
        secret: if using_password {
            Secret::Hash { format, value: hex::encode(&login.auth_response) }
        } else {
            Secret::None
        },
        success: false,
        extra,
    });
    let msg = format!(
        "Access denied for user '{}'@'{}' (using password: {})",
        login.user,
        session.peer.ip(),
        if using_password { "YES" } else { "NO" }
    );
    session.write_all(&frame(seq.wrapping_add(1), &error_packet(1045, "28000", &msg))).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(user: &str, auth: &[u8], db: &str, plugin: &str) -> Vec<u8> {
        let caps = CLIENT_PROTOCOL_41
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH
            | CLIENT_CONNECT_WITH_DB
            | CLIENT_CONNECT_ATTRS;
        let mut p = caps.to_le_bytes().to_vec();
        p.extend_from_slice(&(1u32 << 24).to_le_bytes());
        p.push(33);
        p.extend_from_slice(&[0; 23]);
        p.extend_from_slice(user.as_bytes());
        p.push(0);
        p.push(auth.len() as u8);
        p.extend_from_slice(auth);
        p.extend_from_slice(db.as_bytes());
        p.push(0);
        p.extend_from_slice(plugin.as_bytes());
        p.push(0);
        let attrs = [3u8, b'_', b'o', b's', 5, b'L', b'i', b'n', b'u', b'x'];
        p.push(attrs.len() as u8);
        p.extend_from_slice(&attrs);
        p
    }

    #[test]
    fn parses_a_login() {
        let l = parse_login(&response("root", &[1; 20], "mysql", "mysql_native_password")).unwrap();
        assert_eq!(l.user, "root");
        assert_eq!(l.auth_response, vec![1; 20]);
        assert_eq!(l.database, "mysql");
        assert_eq!(l.plugin, "mysql_native_password");
        assert_eq!(l.attrs, vec![("_os".to_string(), "Linux".to_string())]);
    }

    #[test]
    fn greeting_is_well_formed() {
        let g = greeting("8.0.36", 7, &[b'a'; 20]);
        assert_eq!(g[0], 10);
        assert!(g.ends_with(b"mysql_native_password\0"));
        let framed = frame(0, &g);
        assert_eq!(parse_header([framed[0], framed[1], framed[2], framed[3]]).unwrap(), (g.len(), 0));
    }

    #[test]
    fn personas_pick_one_product() {
        assert_eq!(server_version(Persona::Mixed), "8.0.36");
        assert_eq!(server_version(Persona::WindowsServer), "8.0.36");
        assert_eq!(server_version(Persona::LinuxServer), "5.5.5-10.11.6-MariaDB-0+deb12u1");
        assert!(server_version(Persona::IotRouter).contains("MariaDB"));
        let g = greeting(DEBIAN_MARIADB, 1, &[b'a'; 20]);
        assert_eq!(&g[1..1 + DEBIAN_MARIADB.len()], DEBIAN_MARIADB.as_bytes());
        // protocol, version, NUL, connection id, 8 salt bytes, filler, low caps: then collation
        assert_eq!(g[1 + DEBIAN_MARIADB.len() + 1 + 4 + 8 + 1 + 2], 45);
        assert_eq!(greeting("8.0.36", 1, &[b'a'; 20])[1 + 6 + 1 + 4 + 8 + 1 + 2], 0xff);
    }

    #[test]
    fn hostile_input_never_panics() {
        let good = response("admin", &[9; 20], "db", "caching_sha2_password");
        for t in crate::protocols::hostile::truncations(&good) {
            let _ = parse_login(t);
        }
        let mut huge = good.clone();
        // A lenenc attribute block claiming 2^64-1 bytes.
        let pos = huge.len() - 11;
        huge.truncate(pos);
        huge.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(parse_login(&huge).is_err());
        for buf in crate::protocols::hostile::random_inputs(0x9e3779b97f4a7c15, 20_000, 200, false) {
            let _ = parse_login(&buf);
        }
        assert_eq!(parse_header([0xff, 0xff, 0xff, 0]), Err(MysqlError::TooLarge(0xff_ffff)));
    }
}
